"""The shared-memory tree sum that the GPU reductions use (blas sums, gemv, the math channel
reductions, loss partials). GPU kernels are not cached on disk, so sharing a device function
across modules carries no stale-cache risk (unlike the CPU @njit helpers)."""
from numba import cuda


@cuda.jit(device=True)
def tree_sum(sm, tid):
    """sm[0] = Σ sm[0:blockDim.x] (blockDim.x a power of two), in place.

    Each thread has written its own sm[tid] before the call; the barrier at the start
    makes those writes visible, the one after each halving keeps the steps apart."""
    cuda.syncthreads()
    s = cuda.blockDim.x // 2
    while s > 0:
        if tid < s:
            sm[tid] += sm[tid + s]
        cuda.syncthreads()
        s //= 2
