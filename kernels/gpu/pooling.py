"""GPU pooling kernels (Caffe's PoolingLayer: MAX, AVE, STOCHASTIC). Mirrors kernels/cpu/pooling.py
(same names, arguments, layouts and window rules; see its docstring). Forward passes run one thread
per output; backward passes one thread per bottom value, which gathers from the windows holding it
(as Caffe's GPU kernels: no atomics)."""
from numba import cuda

from ._launch import grid_stride

FLT_MAX = 3.4028234663852886e38
FLT_MIN = 1.1754943508222875e-38


@cuda.jit(device=True)
def _windows(pos, pad, kernel, stride, pooled):
    """(first, end): the outputs along one axis whose window covers position ``pos``."""
    p = pos + pad
    first = 0 if p < kernel else (p - kernel) // stride + 1
    end = min(p // stride + 1, pooled)
    return first, end


@cuda.jit(device=True)
def _position(e, channels, rows, cols):
    """(n, c, row, col, plane) of element e of a flat (num, channels, rows, cols) array."""
    col = e % cols
    row = (e // cols) % rows
    plane = e // (cols * rows)
    return plane // channels, plane % channels, row, col, plane


@cuda.jit(device=True)
def _covering(e, channels, height, width, pooled_h, pooled_w, kernel_h, kernel_w, stride_h, stride_w,
              pad_h, pad_w, top_stride, top_offset):
    """For bottom value e: (oh0, oh1, ow0, ow1) the outputs whose windows hold it, the offset of its
    output plane in the top layout, and its position h·width + w in its plane."""
    n, c, h, w, _ = _position(e, channels, height, width)
    oh0, oh1 = _windows(h, pad_h, kernel_h, stride_h, pooled_h)
    ow0, ow1 = _windows(w, pad_w, kernel_w, stride_w, pooled_w)
    return oh0, oh1, ow0, ow1, n * top_stride + top_offset + c * pooled_h * pooled_w, h * width + w


@cuda.jit(device=True)
def _weights(x, xo, width, hs, he, ws, we):
    """(S, Q) = (FLT_MIN + Σ x, Σ x²) over rows hs..he, columns ws..we of the plane at xo."""
    total = FLT_MIN
    squares = 0.0
    for h in range(hs, he):
        for w in range(ws, we):
            v = x[xo + h * width + w]
            total += v
            squares += v * v
    return total, squares


# =========================================================================== MAX
@grid_stride(lambda num, channels, pooled_h, pooled_w: num * channels * pooled_h * pooled_w)
@cuda.jit
def max_pool_forward(x, num, channels, height, width, pooled_h, pooled_w, kernel_h, kernel_w,
                     stride_h, stride_w, pad_h, pad_w, top_stride, top_offset, y, mask):
    """y = max over each window (first maximum from −FLT_MAX), mask = its index h·width + w in the plane (−1: none)"""
    for e in range(cuda.grid(1), num * channels * pooled_h * pooled_w, cuda.gridsize(1)):
        n, c, oh, ow, plane = _position(e, channels, pooled_h, pooled_w)
        hs = oh * stride_h - pad_h
        ws = ow * stride_w - pad_w
        he = min(hs + kernel_h, height)
        we = min(ws + kernel_w, width)
        xo = plane * height * width
        best = -FLT_MAX
        idx = -1
        for h in range(max(hs, 0), he):
            for w in range(max(ws, 0), we):
                v = x[xo + h * width + w]
                if v > best:
                    best = v
                    idx = h * width + w
        o = n * top_stride + top_offset + (c * pooled_h + oh) * pooled_w + ow
        y[o] = best
        mask[o] = idx


@grid_stride(lambda num, channels, height, width: num * channels * height * width)
@cuda.jit
def max_pool_backward(dy, mask, num, channels, height, width, pooled_h, pooled_w, kernel_h, kernel_w,
                      stride_h, stride_w, pad_h, pad_w, top_stride, top_offset, accumulate, dx):
    """dx = (accumulate ? dx : 0) + dy routed to each window's argmax, mask[o] (none where it is −1)"""
    for e in range(cuda.grid(1), num * channels * height * width, cuda.gridsize(1)):
        oh0, oh1, ow0, ow1, yo, at = _covering(e, channels, height, width, pooled_h, pooled_w, kernel_h,
                                               kernel_w, stride_h, stride_w, pad_h, pad_w, top_stride,
                                               top_offset)
        g = dx[e] if accumulate else 0.0
        for oh in range(oh0, oh1):
            for ow in range(ow0, ow1):
                o = yo + oh * pooled_w + ow
                if mask[o] == at:
                    g += dy[o]
        dx[e] = g


# =========================================================================== AVE
@grid_stride(lambda num, channels, pooled_h, pooled_w: num * channels * pooled_h * pooled_w)
@cuda.jit
def ave_pool_forward(x, num, channels, height, width, pooled_h, pooled_w, kernel_h, kernel_w,
                     stride_h, stride_w, pad_h, pad_w, top_stride, top_offset, y):
    """y = Σ window / pool_size, the window clipped to the padded extent for the divisor and to the image for the sum"""
    for e in range(cuda.grid(1), num * channels * pooled_h * pooled_w, cuda.gridsize(1)):
        n, c, oh, ow, plane = _position(e, channels, pooled_h, pooled_w)
        hs = oh * stride_h - pad_h
        ws = ow * stride_w - pad_w
        pool_size = (min(hs + kernel_h, height + pad_h) - hs) * (min(ws + kernel_w, width + pad_w) - ws)
        he = min(hs + kernel_h, height)
        we = min(ws + kernel_w, width)
        xo = plane * height * width
        s = 0.0
        values = 0
        for h in range(max(hs, 0), he):
            for w in range(max(ws, 0), we):
                s += x[xo + h * width + w]
                values += 1
        o = n * top_stride + top_offset + (c * pooled_h + oh) * pooled_w + ow
        y[o] = s / pool_size if values > 0 else 0.0


@grid_stride(lambda num, channels, height, width: num * channels * height * width)
@cuda.jit
def ave_pool_backward(dy, num, channels, height, width, pooled_h, pooled_w, kernel_h, kernel_w,
                      stride_h, stride_w, pad_h, pad_w, top_stride, top_offset, accumulate, dx):
    """dx = (accumulate ? dx : 0) + Σ over the windows holding each pixel of dy / pool_size"""
    for e in range(cuda.grid(1), num * channels * height * width, cuda.gridsize(1)):
        oh0, oh1, ow0, ow1, yo, _ = _covering(e, channels, height, width, pooled_h, pooled_w, kernel_h,
                                              kernel_w, stride_h, stride_w, pad_h, pad_w, top_stride,
                                              top_offset)
        g = dx[e] if accumulate else 0.0
        for oh in range(oh0, oh1):
            hs = oh * stride_h - pad_h
            rows = min(hs + kernel_h, height + pad_h) - hs
            for ow in range(ow0, ow1):
                ws = ow * stride_w - pad_w
                g += dy[yo + oh * pooled_w + ow] / (rows * (min(ws + kernel_w, width + pad_w) - ws))
        dx[e] = g


# =========================================================================== STOCHASTIC (no padding)
# TRAIN's backward routes dy to the sampled positions as MAX's does to its argmax: max_pool_backward.
@grid_stride(lambda planes, pooled_h, pooled_w: planes * pooled_h * pooled_w)
@cuda.jit
def stochastic_pool_forward_train(x, uniforms, planes, height, width, pooled_h, pooled_w, kernel_h,
                                  kernel_w, stride_h, stride_w, y, index):
    """index = the first window position where the running sum reaches uniforms·Σ window, y = x[index]"""
    for o in range(cuda.grid(1), planes * pooled_h * pooled_w, cuda.gridsize(1)):
        _, _, oh, ow, plane = _position(o, 1, pooled_h, pooled_w)
        xo = plane * height * width
        hs = oh * stride_h
        ws = ow * stride_w
        he = min(hs + kernel_h, height)
        we = min(ws + kernel_w, width)
        total = 0.0
        for h in range(hs, he):
            for w in range(ws, we):
                total += x[xo + h * width + w]
        threshold = uniforms[o] * total
        pick = -1
        cumsum = 0.0
        for h in range(hs, he):
            for w in range(ws, we):
                if pick < 0:
                    cumsum += x[xo + h * width + w]
                    if cumsum >= threshold:
                        pick = h * width + w
        if pick < 0 and he > hs and we > ws:
            pick = (he - 1) * width + we - 1
        index[o] = pick
        y[o] = x[xo + pick] if pick >= 0 else 0.0


@grid_stride(lambda planes, pooled_h, pooled_w: planes * pooled_h * pooled_w)
@cuda.jit
def stochastic_pool_forward_test(x, planes, height, width, pooled_h, pooled_w, kernel_h, kernel_w,
                                 stride_h, stride_w, y):
    """y = Σ x² / (FLT_MIN + Σ x) over each window (the activation-weighted average)"""
    for o in range(cuda.grid(1), planes * pooled_h * pooled_w, cuda.gridsize(1)):
        _, _, oh, ow, plane = _position(o, 1, pooled_h, pooled_w)
        xo = plane * height * width
        total, squares = _weights(x, xo, width, oh * stride_h, min(oh * stride_h + kernel_h, height),
                                  ow * stride_w, min(ow * stride_w + kernel_w, width))
        y[o] = squares / total


@grid_stride(lambda planes, height, width: planes * height * width)
@cuda.jit
def stochastic_pool_backward_test(x, dy, planes, height, width, pooled_h, pooled_w, kernel_h, kernel_w,
                                  stride_h, stride_w, dx):
    """dx = Σ over the windows holding each pixel of dy·(2x·S − Q)/S², S = FLT_MIN + Σ x, Q = Σ x² (TEST's gradient)"""
    for e in range(cuda.grid(1), planes * height * width, cuda.gridsize(1)):
        _, _, h0, w0, plane = _position(e, 1, height, width)
        xo = plane * height * width
        yo = plane * pooled_h * pooled_w
        oh0, oh1 = _windows(h0, 0, kernel_h, stride_h, pooled_h)
        ow0, ow1 = _windows(w0, 0, kernel_w, stride_w, pooled_w)
        g = 0.0
        for oh in range(oh0, oh1):
            for ow in range(ow0, ow1):
                total, squares = _weights(x, xo, width, oh * stride_h,
                                          min(oh * stride_h + kernel_h, height), ow * stride_w,
                                          min(ow * stride_w + kernel_w, width))
                g += dy[yo + oh * pooled_w + ow] * (2 * x[e] * total - squares) / (total * total)
        dx[e] = g
