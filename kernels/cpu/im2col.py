"""CPU im2col family (Caffe's layout), the lowering that Convolution, Deconvolution and Im2col share.

For one image: data is flat C·H·W; col is flat, (C·kh·kw) rows × (out_h·out_w) columns, row
(c·kh + ki)·kw + kj, column oh·out_w + ow, holding data[c, oh·stride_h − pad_h + ki·dilation_h,
ow·stride_w − pad_w + kj·dilation_w], or 0 where the window reads padding; along each axis
out = (in + 2·pad − (dilation·(k − 1) + 1)) // stride + 1. col2im is the adjoint (the gradient):
data is zeroed, then every col entry is added back to the pixel it came from.

The per-image kernels are serial @njit functions, so that the batched convolution drivers of this
module can call them under prange over images. col and data never alias.
"""
import numpy as np
from numba import njit


@njit(cache=True)
def _out_size(size, kernel, pad, stride, dilation):
    """Outputs along one axis: (size + 2·pad − (dilation·(kernel − 1) + 1)) // stride + 1, at least 0."""
    n = (size + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1
    return n if n > 0 else 0


@njit(cache=True)
def _inside(offset, stride, size, count):
    """(lo, hi): the outputs j in [0, count) whose input position offset + j·stride lies in [0, size)."""
    lo = 0 if offset >= 0 else (stride - 1 - offset) // stride
    hi = 0 if offset >= size else (size - 1 - offset) // stride + 1
    if hi > count:
        hi = count
    if lo > hi:
        lo = hi
    return lo, hi


@njit(cache=True)
def _im2col_2d(data, channels, height, width, kernel_h, kernel_w, pad_h, pad_w,
               stride_h, stride_w, dilation_h, dilation_w, col, to_col):
    """to_col: col = im2col(data); else data += the adjoint of col (data is not zeroed here)."""
    out_h = _out_size(height, kernel_h, pad_h, stride_h, dilation_h)
    out_w = _out_size(width, kernel_w, pad_w, stride_w, dilation_w)
    for c in range(channels):
        for ki in range(kernel_h):
            h0 = ki * dilation_h - pad_h
            oh_lo, oh_hi = _inside(h0, stride_h, height, out_h)
            for kj in range(kernel_w):
                w0 = kj * dilation_w - pad_w
                ow_lo, ow_hi = _inside(w0, stride_w, width, out_w)
                n = ow_hi - ow_lo
                row = ((c * kernel_h + ki) * kernel_w + kj) * out_h
                for oh in range(out_h):
                    line = col[(row + oh) * out_w:(row + oh + 1) * out_w]
                    inside = oh_lo <= oh < oh_hi
                    if to_col:
                        line[:ow_lo] = 0
                        line[ow_hi:] = 0
                        if not inside:
                            line[ow_lo:ow_hi] = 0
                    if not inside or n == 0:
                        continue
                    # the n input pixels this line reads: from w0 + ow_lo·stride_w, every stride_w
                    start = (c * height + h0 + oh * stride_h) * width + w0 + ow_lo * stride_w
                    src = data[start:start + (n - 1) * stride_w + 1]
                    dst = line[ow_lo:ow_hi]
                    if to_col and stride_w == 1:
                        for j in range(n):
                            dst[j] = src[j]
                    elif to_col:
                        for j in range(n):
                            dst[j] = src[j * stride_w]
                    elif stride_w == 1:
                        for j in range(n):
                            src[j] += dst[j]
                    else:
                        for j in range(n):
                            src[j * stride_w] += dst[j]


@njit(cache=True)
def im2col(data, channels, height, width, kernel_h, kernel_w, pad_h, pad_w,
           stride_h, stride_w, dilation_h, dilation_w, col):
    """col[(c·kh + ki)·kw + kj, oh·out_w + ow] = data[c, oh·sh − ph + ki·dh, ow·sw − pw + kj·dw] (0 in the padding); one image, flat"""
    _im2col_2d(data, channels, height, width, kernel_h, kernel_w, pad_h, pad_w,
               stride_h, stride_w, dilation_h, dilation_w, col, True)


@njit(cache=True)
def col2im(col, channels, height, width, kernel_h, kernel_w, pad_h, pad_w,
           stride_h, stride_w, dilation_h, dilation_w, data):
    """data = 0, then data[c, oh·sh − ph + ki·dh, ow·sw − pw + kj·dw] += col[(c·kh + ki)·kw + kj, oh·out_w + ow] (im2col's adjoint)"""
    data[:channels * height * width] = 0
    _im2col_2d(data, channels, height, width, kernel_h, kernel_w, pad_h, pad_w,
               stride_h, stride_w, dilation_h, dilation_w, col, False)


# --------------------------------------------------------------------------- N spatial axes
@njit(cache=True)
def _im2col_nd(data, channels, shape, kernel, pad, stride, dilation, col, to_col):
    """to_col: col = im2col_nd(data); else data += the adjoint of col. Axes row-major, the last fastest."""
    nd = shape.size
    out = np.empty(nd, dtype=np.int64)
    image_count = 1
    kernel_count = 1
    out_count = 1
    for a in range(nd):
        out[a] = _out_size(shape[a], kernel[a], pad[a], stride[a], dilation[a])
        image_count *= shape[a]
        kernel_count *= kernel[a]
        out_count *= out[a]
    if out_count == 0:
        return
    offset = np.empty(nd, dtype=np.int64)     # kernel offset of the current col row, per axis
    pos = np.empty(nd, dtype=np.int64)        # output position of the current col column, per axis
    for r in range(channels * kernel_count):
        c = r // kernel_count
        rest = r - c * kernel_count
        for a in range(nd - 1, -1, -1):
            offset[a] = rest % kernel[a]
            rest //= kernel[a]
        pos[:] = 0
        base = c * image_count
        for q in range(out_count):
            index = 0
            inside = True
            for a in range(nd):
                p = pos[a] * stride[a] - pad[a] + offset[a] * dilation[a]
                if p < 0 or p >= shape[a]:
                    inside = False
                    break
                index = index * shape[a] + p
            j = r * out_count + q
            if to_col:
                col[j] = data[base + index] if inside else 0
            elif inside:
                data[base + index] += col[j]
            for a in range(nd - 1, -1, -1):  # next output position (an odometer)
                pos[a] += 1
                if pos[a] < out[a]:
                    break
                pos[a] = 0


@njit(cache=True)
def im2col_nd(data, channels, shape, kernel, pad, stride, dilation, col):
    """im2col over len(shape) spatial axes (int arrays shape/kernel/pad/stride/dilation): col[c·K + k, q] = data[c, q·stride − pad + k·dilation] (0 in the padding); one image, flat"""
    _im2col_nd(data, channels, shape, kernel, pad, stride, dilation, col, True)


@njit(cache=True)
def col2im_nd(col, channels, shape, kernel, pad, stride, dilation, data):
    """data = 0, then data[c, q·stride − pad + k·dilation] += col[c·K + k, q] over len(shape) spatial axes (im2col_nd's adjoint)"""
    count = channels
    for a in range(shape.size):
        count *= shape[a]
    data[:count] = 0
    _im2col_nd(data, channels, shape, kernel, pad, stride, dilation, col, False)
