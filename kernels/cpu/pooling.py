"""CPU pooling kernels (Caffe's PoolingLayer: MAX, AVE, STOCHASTIC), 2-D over the last two axes.
GPU twins: kernels/gpu/pooling.py.

The bottom x is flat (num, channels, height, width); a plane is one (n, c). Output (oh, ow) of a
plane pools the window of rows hs = oh·stride_h − pad_h .. hs + kernel_h and columns
ws = ow·stride_w − pad_w .. ws + kernel_w, clipped to the image (padding holds no values):

* MAX: the first maximum in row-major scan order, starting from −FLT_MAX with a strict ">" as
  Caffe does (a window holding no value gives −FLT_MAX and index −1, which gets no gradient);
  ``mask`` (int32) gets the flat index h·width + w within the plane.
* AVE: the sum of the image values over pool_size, the window clipped to the *padded* extent
  (rows hs .. min(hs + kernel_h, height + pad_h)), so padding counts in the divisor.
* STOCHASTIC (no padding): TRAIN picks, with one uniform u per output, the first index where the
  running sum reaches u·Σ (probability ∝ activation); TEST gives Σx² / (FLT_MIN + Σx).

MAX and AVE write their top in a layout that also serves SPP's concatenated levels: the output
plane (n, c) starts at n·top_stride + top_offset + c·pooled_h·pooled_w (a plain pooling top has
top_stride = channels·pooled_h·pooled_w, top_offset = 0). Their backward passes overwrite dx, or
add to it when ``accumulate`` (SPP's levels after the first).

Every kernel runs planes in parallel (prange over chunks of whole planes, each done by a serial
helper of this module); one chunk, on the calling thread, below _CHUNK_MIN values. With 2×2 and
3×3 windows at stride 2 (LeNet, CIFAR-10, CaffeNet, GoogLeNet) and 3×3 at stride 1 (GoogLeNet's
inception modules), the windows wholly inside the image take a path compiled for that shape (the
window unrolled, the row vectorized; 5-15x faster than the general loop), the outputs around them
the general loop: one compiled copy for the borders of every window shape, and one for planes
with no inner block (its literal zeros are kept: as run-time values they made GoogLeNet's
inception pools, before they had their own path, 40% slower). Indices are cast to unsigned
(U) where arrays are read or written: numba then skips its negative-index wraparound, which
otherwise keeps LLVM from vectorizing (4-5x measured).
"""
import numpy as np
from numba import njit, prange
from numba import uintp as U

FLT_MAX = 3.4028234663852886e38        # Caffe's window start for MAX (also in float64)
FLT_MIN = 1.1754943508222875e-38       # Caffe's start of the sum in STOCHASTIC's TEST forward
_MAX_CHUNKS = 64
_CHUNK_MIN = 16384                     # values of work below which one thread does it all


@njit(cache=True)
def _nchunks(planes, values):
    """Chunks of whole planes for ``values`` values of work: clamp(values // _CHUNK_MIN, 1, min(planes, 64))."""
    c = values // _CHUNK_MIN
    if c > _MAX_CHUNKS:
        c = _MAX_CHUNKS
    if c > planes:
        c = planes
    if c < 1:
        c = 1
    return c


@njit(cache=True)
def _inside_range(pad, stride, kernel, size, pooled):
    """(lo, hi): the outputs o in [0, pooled) whose window o·stride − pad .. + kernel lies in [0, size)."""
    if size + pad - kernel < 0:
        return 0, 0
    lo = (pad + stride - 1) // stride
    hi = (size + pad - kernel) // stride + 1
    if hi > pooled:
        hi = pooled
    if lo > hi:
        lo = hi
    return lo, hi


@njit(cache=True)
def _fast_shape(kernel_h, kernel_w, stride_h, stride_w):
    """1: 2×2 windows with stride 2, 2: 3×3 with stride 2, 3: 3×3 with stride 1 (GoogLeNet's
    inception pools) (the unrolled paths); 0: the general loop."""
    if kernel_h != kernel_w or stride_h != stride_w:
        return 0
    if stride_w == 2 and kernel_w == 2:
        return 1
    if stride_w == 2 and kernel_w == 3:
        return 2
    if stride_w == 1 and kernel_w == 3:
        return 3
    return 0


# =========================================================================== MAX
@njit(cache=True, inline="always")
def _max_block(x, xo, width, pooled_w, oh_lo, oh_hi, lo, hi, kernel, stride, pad_h, pad_w, y, mask, yo):
    """The inner block of outputs, windows wholly inside the image. Inlined with literal kernel and
    stride, so that LLVM unrolls the window and vectorizes along the row."""
    for oh in range(oh_lo, oh_hi):
        r0 = (oh * stride - pad_h) * width
        row = yo + oh * pooled_w
        for ow in range(lo, hi):
            w0 = r0 + ow * stride - pad_w
            best = -FLT_MAX
            idx = -1
            for i in range(kernel):
                for j in range(kernel):
                    a = w0 + i * width + j
                    v = x[U(xo + a)]
                    up = v > best
                    best = v if up else best
                    idx = a if up else idx
            y[U(row + ow)] = best
            mask[U(row + ow)] = idx


@njit(cache=True, inline="always")
def _max_output(x, xo, height, width, hs, ws, kernel_h, kernel_w):
    """(max, index) of one window from (hs, ws), clipped to the image as Caffe clips it."""
    best = x.dtype.type(-FLT_MAX)
    idx = -1
    h0, h1 = max(hs, 0), min(hs + kernel_h, height)
    w0, w1 = max(ws, 0), min(ws + kernel_w, width)
    for h in range(h0, h1):
        for w in range(w0, w1):
            a = h * width + w
            v = x[U(xo + a)]
            up = v > best
            best = v if up else best
            idx = a if up else idx
    return best, idx


@njit(cache=True)
def _max_border(x, xo, height, width, pooled_h, pooled_w, kernel_h, kernel_w, stride_h, stride_w,
                pad_h, pad_w, y, mask, yo, oh_lo, oh_hi, lo, hi):
    """Every output of the plane outside the inner block [oh_lo, oh_hi) × [lo, hi) (all of them
    when the block is empty)."""
    for oh in range(pooled_h):
        row = yo + oh * pooled_w
        inner = oh_lo <= oh < oh_hi
        ow = 0
        while ow < pooled_w:
            if inner and ow == lo and hi > lo:
                ow = hi                              # skip the inner block
                continue
            best, idx = _max_output(x, xo, height, width, oh * stride_h - pad_h, ow * stride_w - pad_w,
                                    kernel_h, kernel_w)
            y[U(row + ow)] = best
            mask[U(row + ow)] = idx
            ow += 1


@njit(cache=True, inline="always")
def _max_run(x, p0, p1, channels, height, width, pooled_h, pooled_w, kernel, stride, pad_h, pad_w,
             top_stride, top_offset, y, mask):
    """Planes p0..p1 with kernel × kernel windows, stride ``stride``: the inner block of windows
    wholly inside the image, then the outputs around it. Inlined by _max_planes with literal
    kernel and stride."""
    oh_lo, oh_hi = _inside_range(pad_h, stride, kernel, height, pooled_h)
    lo, hi = _inside_range(pad_w, stride, kernel, width, pooled_w)
    border = oh_lo > 0 or oh_hi < pooled_h or lo > 0 or hi < pooled_w
    n, c = p0 // channels, p0 % channels
    for p in range(p0, p1):
        xo, yo = p * height * width, n * top_stride + top_offset + c * pooled_h * pooled_w
        _max_block(x, xo, width, pooled_w, oh_lo, oh_hi, lo, hi, kernel, stride, pad_h, pad_w, y, mask, yo)
        if border:
            k, s = np.int64(kernel), np.int64(stride)     # one border for every window shape
            _max_border(x, xo, height, width, pooled_h, pooled_w, k, k, s, s, pad_h, pad_w, y, mask, yo,
                        oh_lo, oh_hi, lo, hi)
        n, c = (n + 1, 0) if c + 1 == channels else (n, c + 1)


@njit(cache=True)
def _max_planes(x, p0, p1, channels, height, width, pooled_h, pooled_w, kernel_h, kernel_w,
                stride_h, stride_w, pad_h, pad_w, top_stride, top_offset, y, mask):
    """Planes p0..p1 (one thread's share)."""
    fast = _fast_shape(kernel_h, kernel_w, stride_h, stride_w)
    if fast == 1:
        _max_run(x, p0, p1, channels, height, width, pooled_h, pooled_w, 2, 2, pad_h, pad_w, top_stride,
                 top_offset, y, mask)
    elif fast == 2:
        _max_run(x, p0, p1, channels, height, width, pooled_h, pooled_w, 3, 2, pad_h, pad_w, top_stride,
                 top_offset, y, mask)
    elif fast == 3:
        _max_run(x, p0, p1, channels, height, width, pooled_h, pooled_w, 3, 1, pad_h, pad_w, top_stride,
                 top_offset, y, mask)
    else:
        for p in range(p0, p1):
            yo = (p // channels) * top_stride + top_offset + (p % channels) * pooled_h * pooled_w
            _max_border(x, p * height * width, height, width, pooled_h, pooled_w, kernel_h, kernel_w,
                        stride_h, stride_w, pad_h, pad_w, y, mask, yo, 0, 0, 0, 0)


@njit(cache=True, parallel=True)
def max_pool_forward(x, num, channels, height, width, pooled_h, pooled_w, kernel_h, kernel_w,
                     stride_h, stride_w, pad_h, pad_w, top_stride, top_offset, y, mask):
    """y = max over each window (first maximum from −FLT_MAX), mask = its index h·width + w in the plane (−1: none)"""
    planes = num * channels
    nc = _nchunks(planes, planes * height * width)
    if nc == 1:
        # np.int64(0), not 0: numba would compile the callee again for the literal 0
        _max_planes(x, np.int64(0), planes, channels, height, width, pooled_h, pooled_w, kernel_h, kernel_w,
                    stride_h, stride_w, pad_h, pad_w, top_stride, top_offset, y, mask)
    else:
        for k in prange(nc):
            _max_planes(x, k * planes // nc, (k + 1) * planes // nc, channels, height, width,
                        pooled_h, pooled_w, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                        top_stride, top_offset, y, mask)


@njit(cache=True)
def _max_backward_planes(dy, mask, p0, p1, channels, height, width, pooled_h, pooled_w,
                         top_stride, top_offset, accumulate, dx):
    size = height * width
    count = pooled_h * pooled_w
    for p in range(p0, p1):
        xo = p * size
        if not accumulate:
            for i in range(size):
                dx[U(xo + i)] = 0
        yo = (p // channels) * top_stride + top_offset + (p % channels) * count
        for o in range(count):
            i = int(mask[U(yo + o)])
            if i >= 0:
                dx[U(xo + i)] += dy[U(yo + o)]


@njit(cache=True, parallel=True)
def max_pool_backward(dy, mask, num, channels, height, width, pooled_h, pooled_w, kernel_h, kernel_w,
                      stride_h, stride_w, pad_h, pad_w, top_stride, top_offset, accumulate, dx):
    """dx = (accumulate ? dx : 0) + dy routed to each window's argmax, mask[o] (none where it is −1)"""
    planes = num * channels
    nc = _nchunks(planes, planes * height * width)
    if nc == 1:
        _max_backward_planes(dy, mask, np.int64(0), planes, channels, height, width, pooled_h, pooled_w,
                             top_stride, top_offset, accumulate, dx)
    else:
        for k in prange(nc):
            _max_backward_planes(dy, mask, k * planes // nc, (k + 1) * planes // nc, channels, height,
                                 width, pooled_h, pooled_w, top_stride, top_offset, accumulate, dx)


# =========================================================================== AVE
@njit(cache=True, inline="always")
def _ave_block(x, xo, width, pooled_w, oh_lo, oh_hi, lo, hi, kernel, stride, pad_h, pad_w, y, yo):
    """The inner block of outputs, windows wholly inside the image (pool_size = kernel²), summed in
    Caffe's row-major order. Inlined with literal kernel and stride."""
    for oh in range(oh_lo, oh_hi):
        r0 = (oh * stride - pad_h) * width
        row = yo + oh * pooled_w
        for ow in range(lo, hi):
            w0 = xo + r0 + ow * stride - pad_w
            s = x[U(w0)]
            for i in range(kernel):
                for j in range(kernel):
                    if i + j > 0:
                        s += x[U(w0 + i * width + j)]
            y[U(row + ow)] = s / (kernel * kernel)


@njit(cache=True, inline="always")
def _ave_output(x, xo, height, width, hs, ws, kernel_h, kernel_w, pad_h, pad_w):
    """One clipped window from (hs, ws): Σ of its image values (summed in the data's type, in
    row-major order, as Caffe sums) / pool_size, the window clipped to the padded extent for
    pool_size; 0 for a window past the image (stride > kernel, CEIL, no padding), where Caffe
    divides 0 by a pool_size <= 0."""
    pool_size = (min(hs + kernel_h, height + pad_h) - hs) * (min(ws + kernel_w, width + pad_w) - ws)
    h0, h1 = max(hs, 0), min(hs + kernel_h, height)
    w0, w1 = max(ws, 0), min(ws + kernel_w, width)
    s = x.dtype.type(0)
    for h in range(h0, h1):
        for w in range(w0, w1):
            s += x[U(xo + h * width + w)]
    return s / pool_size if h1 > h0 and w1 > w0 else 0.0


@njit(cache=True)
def _ave_border(x, xo, height, width, pooled_h, pooled_w, kernel_h, kernel_w, stride_h, stride_w,
                pad_h, pad_w, y, yo, oh_lo, oh_hi, lo, hi):
    """Every output of the plane outside the inner block [oh_lo, oh_hi) × [lo, hi) (all of them
    when the block is empty)."""
    for oh in range(pooled_h):
        row = yo + oh * pooled_w
        inner = oh_lo <= oh < oh_hi
        ow = 0
        while ow < pooled_w:
            if inner and ow == lo and hi > lo:
                ow = hi                              # skip the inner block
                continue
            y[U(row + ow)] = _ave_output(x, xo, height, width, oh * stride_h - pad_h,
                                         ow * stride_w - pad_w, kernel_h, kernel_w, pad_h, pad_w)
            ow += 1


@njit(cache=True, inline="always")
def _ave_run(x, p0, p1, channels, height, width, pooled_h, pooled_w, kernel, stride, pad_h, pad_w,
             top_stride, top_offset, y):
    """Planes p0..p1 with kernel × kernel windows, stride ``stride``: the inner block, then the
    outputs around it. Inlined by _ave_planes with literal kernel and stride."""
    oh_lo, oh_hi = _inside_range(pad_h, stride, kernel, height, pooled_h)
    lo, hi = _inside_range(pad_w, stride, kernel, width, pooled_w)
    border = oh_lo > 0 or oh_hi < pooled_h or lo > 0 or hi < pooled_w
    n, c = p0 // channels, p0 % channels
    for p in range(p0, p1):
        xo, yo = p * height * width, n * top_stride + top_offset + c * pooled_h * pooled_w
        _ave_block(x, xo, width, pooled_w, oh_lo, oh_hi, lo, hi, kernel, stride, pad_h, pad_w, y, yo)
        if border:
            k, s = np.int64(kernel), np.int64(stride)     # one border for every window shape
            _ave_border(x, xo, height, width, pooled_h, pooled_w, k, k, s, s, pad_h, pad_w, y, yo,
                        oh_lo, oh_hi, lo, hi)
        n, c = (n + 1, 0) if c + 1 == channels else (n, c + 1)


@njit(cache=True)
def _ave_planes(x, p0, p1, channels, height, width, pooled_h, pooled_w, kernel_h, kernel_w,
                stride_h, stride_w, pad_h, pad_w, top_stride, top_offset, y):
    """Planes p0..p1 (one thread's share)."""
    fast = _fast_shape(kernel_h, kernel_w, stride_h, stride_w)
    if fast == 1:
        _ave_run(x, p0, p1, channels, height, width, pooled_h, pooled_w, 2, 2, pad_h, pad_w, top_stride,
                 top_offset, y)
    elif fast == 2:
        _ave_run(x, p0, p1, channels, height, width, pooled_h, pooled_w, 3, 2, pad_h, pad_w, top_stride,
                 top_offset, y)
    elif fast == 3:
        _ave_run(x, p0, p1, channels, height, width, pooled_h, pooled_w, 3, 1, pad_h, pad_w, top_stride,
                 top_offset, y)
    else:
        for p in range(p0, p1):
            yo = (p // channels) * top_stride + top_offset + (p % channels) * pooled_h * pooled_w
            _ave_border(x, p * height * width, height, width, pooled_h, pooled_w, kernel_h, kernel_w,
                        stride_h, stride_w, pad_h, pad_w, y, yo, 0, 0, 0, 0)


@njit(cache=True, parallel=True)
def ave_pool_forward(x, num, channels, height, width, pooled_h, pooled_w, kernel_h, kernel_w,
                     stride_h, stride_w, pad_h, pad_w, top_stride, top_offset, y):
    """y = Σ window / pool_size, the window clipped to the padded extent for the divisor and to the image for the sum"""
    planes = num * channels
    nc = _nchunks(planes, planes * height * width)
    if nc == 1:
        _ave_planes(x, np.int64(0), planes, channels, height, width, pooled_h, pooled_w, kernel_h, kernel_w,
                    stride_h, stride_w, pad_h, pad_w, top_stride, top_offset, y)
    else:
        for k in prange(nc):
            _ave_planes(x, k * planes // nc, (k + 1) * planes // nc, channels, height, width,
                        pooled_h, pooled_w, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                        top_stride, top_offset, y)


@njit(cache=True, inline="always")
def _ave_backward_run(dy, p0, p1, channels, height, width, pooled_h, pooled_w, kernel_h, kernel_w,
                      stride_h, stride_w, pad_h, pad_w, top_stride, top_offset, accumulate, dx):
    """Planes p0..p1: every output adds dy / pool_size to the image pixels of its window. Inlined
    by _ave_backward_planes with literal kernel and stride for the common window shapes."""
    size = height * width
    n, c = p0 // channels, p0 % channels
    for p in range(p0, p1):
        xo = p * size
        if not accumulate:
            for i in range(size):
                dx[U(xo + i)] = 0
        yo = n * top_stride + top_offset + c * pooled_h * pooled_w
        for oh in range(pooled_h):
            hs = oh * stride_h - pad_h
            rows = min(hs + kernel_h, height + pad_h) - hs
            for ow in range(pooled_w):
                ws = ow * stride_w - pad_w
                pool_size = rows * (min(ws + kernel_w, width + pad_w) - ws)
                if pool_size <= 0:
                    continue
                g = dy[U(yo + oh * pooled_w + ow)] / pool_size
                for i in range(kernel_h):
                    h = hs + i
                    if 0 <= h < height:
                        for j in range(kernel_w):
                            w = ws + j
                            if 0 <= w < width:
                                dx[U(xo + h * width + w)] += g
        c += 1
        if c == channels:
            n, c = n + 1, 0


@njit(cache=True)
def _ave_backward_planes(dy, p0, p1, channels, height, width, pooled_h, pooled_w, kernel_h,
                         kernel_w, stride_h, stride_w, pad_h, pad_w, top_stride, top_offset,
                         accumulate, dx):
    """Planes p0..p1 (one thread's share), by _ave_backward_run compiled for the window shape."""
    fast = _fast_shape(kernel_h, kernel_w, stride_h, stride_w)
    if fast == 1:
        _ave_backward_run(dy, p0, p1, channels, height, width, pooled_h, pooled_w, 2, 2, 2, 2, pad_h,
                          pad_w, top_stride, top_offset, accumulate, dx)
    elif fast == 2:
        _ave_backward_run(dy, p0, p1, channels, height, width, pooled_h, pooled_w, 3, 3, 2, 2, pad_h,
                          pad_w, top_stride, top_offset, accumulate, dx)
    elif fast == 3:
        _ave_backward_run(dy, p0, p1, channels, height, width, pooled_h, pooled_w, 3, 3, 1, 1, pad_h,
                          pad_w, top_stride, top_offset, accumulate, dx)
    else:
        _ave_backward_run(dy, p0, p1, channels, height, width, pooled_h, pooled_w, kernel_h, kernel_w,
                          stride_h, stride_w, pad_h, pad_w, top_stride, top_offset, accumulate, dx)


@njit(cache=True, parallel=True)
def ave_pool_backward(dy, num, channels, height, width, pooled_h, pooled_w, kernel_h, kernel_w,
                      stride_h, stride_w, pad_h, pad_w, top_stride, top_offset, accumulate, dx):
    """dx = (accumulate ? dx : 0) + Σ over the windows holding each pixel of dy / pool_size"""
    planes = num * channels
    nc = _nchunks(planes, planes * height * width)
    if nc == 1:
        _ave_backward_planes(dy, np.int64(0), planes, channels, height, width, pooled_h, pooled_w, kernel_h,
                             kernel_w, stride_h, stride_w, pad_h, pad_w, top_stride, top_offset,
                             accumulate, dx)
    else:
        for k in prange(nc):
            _ave_backward_planes(dy, k * planes // nc, (k + 1) * planes // nc, channels, height, width,
                                 pooled_h, pooled_w, kernel_h, kernel_w, stride_h, stride_w, pad_h,
                                 pad_w, top_stride, top_offset, accumulate, dx)


# =========================================================================== STOCHASTIC (no padding)
# TRAIN's backward routes dy to the sampled positions as MAX's does to its argmax: max_pool_backward.
@njit(cache=True)
def _stochastic_train_planes(x, uniforms, p0, p1, height, width, pooled_h, pooled_w, kernel_h, kernel_w,
                             stride_h, stride_w, y, index):
    size = height * width
    count = pooled_h * pooled_w
    for p in range(p0, p1):
        xo = p * size
        for oh in range(pooled_h):
            hs = oh * stride_h
            he = min(hs + kernel_h, height)
            for ow in range(pooled_w):
                ws = ow * stride_w
                we = min(ws + kernel_w, width)
                o = p * count + oh * pooled_w + ow
                total = 0.0
                for h in range(hs, he):
                    for w in range(ws, we):
                        total += x[U(xo + h * width + w)]
                threshold = uniforms[U(o)] * total
                pick = -1
                cumsum = 0.0
                for h in range(hs, he):
                    for w in range(ws, we):
                        if pick < 0:
                            cumsum += x[U(xo + h * width + w)]
                            if cumsum >= threshold:
                                pick = h * width + w
                if pick < 0 and he > hs and we > ws:
                    pick = (he - 1) * width + we - 1     # negative inputs: the window's last value
                index[U(o)] = pick
                y[U(o)] = x[U(xo + pick)] if pick >= 0 else 0


@njit(cache=True, parallel=True)
def stochastic_pool_forward_train(x, uniforms, planes, height, width, pooled_h, pooled_w, kernel_h,
                                  kernel_w, stride_h, stride_w, y, index):
    """index = the first window position where the running sum reaches uniforms·Σ window, y = x[index]"""
    nc = _nchunks(planes, planes * height * width)
    if nc == 1:
        _stochastic_train_planes(x, uniforms, np.int64(0), planes, height, width, pooled_h,
                                 pooled_w, kernel_h, kernel_w, stride_h, stride_w, y, index)
    else:
        for k in prange(nc):
            _stochastic_train_planes(x, uniforms, k * planes // nc, (k + 1) * planes // nc, height, width,
                                     pooled_h, pooled_w, kernel_h, kernel_w, stride_h, stride_w, y, index)


@njit(cache=True, inline="always")
def _weights(x, xo, width, hs, he, ws, we):
    """(S, Q) = (FLT_MIN + Σ x, Σ x²) over rows hs..he, columns ws..we of the plane at xo."""
    total = FLT_MIN
    squares = 0.0
    for h in range(hs, he):
        for w in range(ws, we):
            v = x[U(xo + h * width + w)]
            total += v
            squares += v * v
    return total, squares


@njit(cache=True, error_model="numpy")
def _stochastic_test_planes(x, dy, p0, p1, height, width, pooled_h, pooled_w, kernel_h, kernel_w,
                            stride_h, stride_w, forward, out):
    """forward: out = y = Q / S per window; else out = dx = Σ dy·(2x·S − Q)/S² over the windows."""
    size = height * width
    count = pooled_h * pooled_w
    for p in range(p0, p1):
        xo = p * size
        if not forward:
            for i in range(size):
                out[U(xo + i)] = 0
        for oh in range(pooled_h):
            hs = oh * stride_h
            he = min(hs + kernel_h, height)
            for ow in range(pooled_w):
                ws = ow * stride_w
                we = min(ws + kernel_w, width)
                o = p * count + oh * pooled_w + ow
                total, squares = _weights(x, xo, width, hs, he, ws, we)
                if forward:
                    out[U(o)] = squares / total
                    continue
                g = dy[U(o)] / (total * total)
                for h in range(hs, he):
                    for w in range(ws, we):
                        i = xo + h * width + w
                        out[U(i)] += g * (2 * x[U(i)] * total - squares)


@njit(cache=True, parallel=True)
def _stochastic_test(x, dy, planes, height, width, pooled_h, pooled_w, kernel_h, kernel_w, stride_h,
                     stride_w, forward, out):
    nc = _nchunks(planes, planes * height * width)
    if nc == 1:
        _stochastic_test_planes(x, dy, np.int64(0), planes, height, width, pooled_h, pooled_w,
                                kernel_h, kernel_w, stride_h, stride_w, forward, out)
    else:
        for k in prange(nc):
            _stochastic_test_planes(x, dy, k * planes // nc, (k + 1) * planes // nc, height, width,
                                    pooled_h, pooled_w, kernel_h, kernel_w, stride_h, stride_w, forward, out)


@njit(cache=True)
def stochastic_pool_forward_test(x, planes, height, width, pooled_h, pooled_w, kernel_h, kernel_w,
                                 stride_h, stride_w, y):
    """y = Σ x² / (FLT_MIN + Σ x) over each window (the activation-weighted average)"""
    _stochastic_test(x, y, planes, height, width, pooled_h, pooled_w, kernel_h, kernel_w, stride_h,
                     stride_w, True, y)


@njit(cache=True)
def stochastic_pool_backward_test(x, dy, planes, height, width, pooled_h, pooled_w, kernel_h, kernel_w,
                                  stride_h, stride_w, dx):
    """dx = Σ over the windows holding each pixel of dy·(2x·S − Q)/S², S = FLT_MIN + Σ x, Q = Σ x² (TEST's gradient)"""
    _stochastic_test(x, dy, planes, height, width, pooled_h, pooled_w, kernel_h, kernel_w, stride_h,
                     stride_w, False, dx)
