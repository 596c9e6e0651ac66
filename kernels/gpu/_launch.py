"""Launch-configuration helpers shared by the GPU kernel modules (no numba compilation here),
and the grid_stride decorator that makes a grid-stride kernel its own launcher."""
import functools
import inspect

MAX_THREADS = 256       # threads per block for 1-D launches (power of two; reduction kernels rely on it)
MAX_BLOCKS = 1024       # cap on blocks for elementwise grid-stride kernels
REDUCE_BLOCKS = 128     # cap on blocks for reductions (partials are copied back to the host)
TILE = 16               # tile edge of the 2-D (GEMM) launches


def threads_for(n):
    """Threads per block: smallest power of two >= n, clamped to [32, MAX_THREADS]."""
    t = 32
    while t < n and t < MAX_THREADS:
        t *= 2
    return t


def grid_1d(n, max_blocks=MAX_BLOCKS):
    """(blocks, threads) for n work items: blocks = ceil(n / threads) clamped to [1, max_blocks]."""
    threads = threads_for(n)
    blocks = (max(int(n), 1) + threads - 1) // threads
    return max(1, min(blocks, max_blocks)), threads


def launch_1d(kernel, n, max_blocks=MAX_BLOCKS):
    """kernel[blocks, threads] configured for a grid-stride loop over n items."""
    blocks, threads = grid_1d(n, max_blocks)
    return kernel[blocks, threads]


def grid_tiles(rows, cols, tile=TILE, max_blocks=MAX_BLOCKS):
    """((bx, by), (tile, tile)) covering a rows x cols matrix with tile x tile blocks (x = columns)."""
    bx = max(1, min((int(cols) + tile - 1) // tile, max_blocks))
    by = max(1, min((int(rows) + tile - 1) // tile, max_blocks))
    return (bx, by), (tile, tile)


def launch_tiles(kernel, rows, cols, tile=TILE, max_blocks=MAX_BLOCKS):
    """kernel[(bx, by), (tile, tile)] for a tile-stride loop over a rows x cols output."""
    blocks, threads = grid_tiles(rows, cols, tile, max_blocks)
    return kernel[blocks, threads]


def launch_blocks(kernel, groups, items_per_group, max_blocks=MAX_BLOCKS):
    """kernel[blocks, threads] with one block per group (block-stride over groups) and
    threads_for(items_per_group) threads cooperating inside each group."""
    blocks = max(1, min(int(groups), max_blocks))
    return kernel[blocks, threads_for(items_per_group)]


def _python_function(kernel):
    """The Python function behind a @cuda.jit dispatcher (py_func), or the simulator's stand-in (fn)."""
    func = getattr(kernel, "py_func", None)
    return func if func is not None else kernel.fn


def grid_stride(size, max_blocks=MAX_BLOCKS):
    """Decorator over @cuda.jit: the grid-stride kernel becomes its own launcher.

    ``size`` says how many work items a call has: the name of an array argument (its
    ``.size``), or a function whose parameters name kernel arguments::

        @grid_stride("x")                                     # x.size items
        @cuda.jit
        def relu_forward(x, y, negative_slope):
            for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
                ...

        @grid_stride(lambda outer, inner: outer * inner)      # computed from two int arguments

    The launcher keeps the kernel's name, module, signature and docstring, and calls
    ``launch_1d(kernel, items, max_blocks)(*args)``; the dispatcher stays reachable as
    ``launcher.kernel``. Nothing is compiled before the first call.
    """
    def decorate(kernel):
        func = _python_function(kernel)
        signature = inspect.signature(func)
        params = list(signature.parameters)
        if callable(size):
            names, count = list(inspect.signature(size).parameters), size
        else:
            names, count = [size], _array_size
        unknown = [n for n in names if n not in params]
        if unknown:
            raise TypeError(f"grid_stride on {func.__name__}: no argument named {unknown}")
        where = [params.index(n) for n in names]

        @functools.wraps(func)
        def launcher(*args, **kwargs):
            if kwargs:
                args = signature.bind(*args, **kwargs).args
            launch_1d(kernel, count(*(args[i] for i in where)), max_blocks)(*args)

        launcher.kernel = kernel
        return launcher

    return decorate


def _array_size(a):
    return a.size
