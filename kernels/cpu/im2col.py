"""CPU im2col family (Caffe's layout), the lowering that Convolution, Deconvolution and Im2col share.

For one image: data is flat C·H·W; col is flat, (C·kh·kw) rows × (out_h·out_w) columns, row
(c·kh + ki)·kw + kj, column oh·out_w + ow, holding data[c, oh·stride_h − pad_h + ki·dilation_h,
ow·stride_w − pad_w + kj·dilation_w], or 0 where the window reads padding; along each axis
out = (in + 2·pad − (dilation·(k − 1) + 1)) // stride + 1. col2im is the adjoint (the gradient):
data is zeroed, then every col entry is added back to the pixel it came from.

The per-image kernels are serial @njit functions, so that the batch drivers of this module
(im2col_images, col2im_images, conv_forward, conv_backward_data, conv_backward_weight and the
direct depthwise kernels) call them under prange over runs of images, each run with its own
slice of a workspace the layer owns (nothing is allocated per call). col and data never alias.
Measured on a 2-core AVX-512 machine (one thread, CPU time, LeNet's and CIFAR-10-quick's
layers): per-image im2col + one np.dot per group reaches 45-67 GFLOP/s of forward, against
62-97 GFLOP/s for np.dot alone at the same GEMM shapes (SciPy's OpenBLAS picks its AVX2
kernels on that CPU).
"""
import math

import numpy as np
from numba import njit, prange
from numba import uint64 as u64

from .blas import _gemm


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
    """to_col: col = im2col(data); else data += the adjoint of col (data is not zeroed here).

    The inner loops index with unsigned integers (u64): numba then drops its negative-index
    wraparound test, and the short line copies vectorize (two to three times faster than with
    slices or signed indices at LeNet's and CIFAR-10's sizes). Every index is non-negative."""
    out_h = _out_size(height, kernel_h, pad_h, stride_h, dilation_h)
    out_w = _out_size(width, kernel_w, pad_w, stride_w, dilation_w)
    zero = col.dtype.type(0)
    sw = u64(stride_w)
    for c in range(channels):
        for ki in range(kernel_h):
            h0 = ki * dilation_h - pad_h
            oh_lo, oh_hi = _inside(h0, stride_h, height, out_h)
            for kj in range(kernel_w):
                w0 = kj * dilation_w - pad_w
                ow_lo, ow_hi = _inside(w0, stride_w, width, out_w)
                lo, hi, width_out = u64(ow_lo), u64(ow_hi), u64(out_w)
                row = u64(((c * kernel_h + ki) * kernel_w + kj) * out_h * out_w)
                if to_col:                       # the lines that read only padding
                    for i in range(row, row + u64(oh_lo * out_w)):
                        col[i] = zero
                    for i in range(row + u64(oh_hi * out_w), row + u64(out_h * out_w)):
                        col[i] = zero
                for oh in range(oh_lo, oh_hi):
                    line = row + u64(oh * out_w)
                    # the input pixels this line reads: from w0 + ow_lo·stride_w, every stride_w
                    src = u64((c * height + h0 + oh * stride_h) * width + w0 + ow_lo * stride_w)
                    dst = line + lo
                    if to_col:
                        for j in range(line, dst):
                            col[j] = zero
                        for j in range(line + hi, line + width_out):
                            col[j] = zero
                        if sw == 1:
                            for j in range(hi - lo):
                                col[dst + j] = data[src + j]
                        else:
                            for j in range(hi - lo):
                                col[dst + j] = data[src + j * sw]
                    elif sw == 1:
                        for j in range(hi - lo):
                            data[src + j] += col[dst + j]
                    else:
                        for j in range(hi - lo):
                            data[src + j * sw] += col[dst + j]


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


# --------------------------------------------------------------------------- batches of images
# The drivers below work on a batch: num images, flat one after the other. Geometry arrays
# (shape, kernel, pad, stride, dilation: int64, one entry per spatial axis) describe the
# convolution's input; 2-D uses im2col/col2im unless force_nd, other axis counts im2col_nd.
# The work is split into nchunks runs of consecutive images (nchunks <= 1: serial, no thread
# pool); run k uses its own slice k of the col workspace, so the runs never share a buffer.
@njit(cache=True)
def _geometry(shape, kernel, pad, stride, dilation):
    """(in_count, out_count, kernel_count, is_1x1): pixels per input and output channel,
    kernel taps, and whether im2col is the identity (kernel 1, stride 1, pad 0 everywhere)."""
    in_count = 1
    out_count = 1
    kernel_count = 1
    is_1x1 = True
    for a in range(shape.size):
        in_count *= shape[a]
        out_count *= _out_size(shape[a], kernel[a], pad[a], stride[a], dilation[a])
        kernel_count *= kernel[a]
        if kernel[a] != 1 or stride[a] != 1 or pad[a] != 0:
            is_1x1 = False
    return in_count, out_count, kernel_count, is_1x1


@njit(cache=True)
def _col_count(channels, shape, kernel, pad, stride, dilation):
    """Elements of one image's col matrix for the convolution drivers (0 when im2col is the identity)."""
    _, out_count, kernel_count, is_1x1 = _geometry(shape, kernel, pad, stride, dilation)
    return 0 if is_1x1 else channels * kernel_count * out_count


@njit(cache=True)
def _col_transfer(data, channels, in_count, shape, kernel, pad, stride, dilation, force_nd, col,
                  to_col):
    """to_col: col = im2col(data), else data = col2im(col); one image, 2-D or N-D."""
    if not to_col:
        data[:channels * in_count] = 0
    if shape.size == 2 and not force_nd:
        _im2col_2d(data, channels, shape[0], shape[1], kernel[0], kernel[1], pad[0], pad[1],
                   stride[0], stride[1], dilation[0], dilation[1], col, to_col)
    else:
        _im2col_nd(data, channels, shape, kernel, pad, stride, dilation, col, to_col)


@njit(cache=True)
def _run(k, num, nchunks):
    """Units [lo, hi) of run k when num units (images, planes, channels) are split into nchunks runs."""
    return k * num // nchunks, (k + 1) * num // nchunks


# what a batch driver does (the mode argument of _batch and the other _*_batch drivers)
_IM2COL, _COL2IM, _FORWARD, _BACKWARD_DATA, _BACKWARD_WEIGHT = 0, 1, 2, 3, 4
# The public drivers (conv_forward, hwc_backward_data, ...) are plain Python functions that call
# a batch driver with its mode. Jitted, each would link the whole batch driver into its own code
# and generate it again (about 1.5 s each on an empty numba cache); called from Python, the mode
# is a run-time int64, so one compiled batch driver serves all its modes.


@njit(cache=True)
def _im2col_run(mode, a, c, lo, hi, channels, shape, kernel, pad, stride, dilation, force_nd):
    """_IM2COL: c[n] = im2col(a[n]); _COL2IM: c[n] = col2im(a[n]), for the images in [lo, hi)."""
    in_count, out_count, kernel_count, _ = _geometry(shape, kernel, pad, stride, dilation)
    image = channels * in_count
    cols = channels * kernel_count * out_count
    to_col = mode == _IM2COL            # a run-time flag: one _col_transfer for both directions
    for n in range(lo, hi):
        if to_col:
            _col_transfer(a[n * image:(n + 1) * image], channels, in_count, shape, kernel, pad,
                          stride, dilation, force_nd, c[n * cols:(n + 1) * cols], to_col)
        else:
            _col_transfer(c[n * image:(n + 1) * image], channels, in_count, shape, kernel, pad,
                          stride, dilation, force_nd, a[n * cols:(n + 1) * cols], to_col)


# Caffe's BaseConvolutionLayer GEMMs, per image and group g (og = num_output / group outputs,
# kdim = channels / group · kernel_count rows of col per group):
#   forward         y[n, g]  = w[g] · col(x[n])[g]                 (og × kdim)·(kdim × out)
#   backward data   col[g]   = w[g]ᵀ · dy[n, g];  dx[n] = col2im(col)
#   backward weight dw[g]   += dy[n, g] · col(x[n])[g]ᵀ
# With a 1×1 kernel, stride 1 and no padding the image is its own col matrix (no im2col).
# Deconvolution runs these with the roles swapped (its forward is backward data).
@njit(cache=True)
def _add_channel_bias(z, b, channels, count):
    """z[c, i] += b[c] over one image (channels × count)."""
    for c in range(channels):
        line = z[c * count:(c + 1) * count]
        bc = b[c]
        for j in range(count):
            line[j] += bc


@njit(cache=True)
def _conv_run(mode, a, w, b, c, col, acc, tmp, lo, hi, channels, num_output, group, shape, kernel,
              pad, stride, dilation, force_nd):
    """The images [lo, hi) of a convolution driver, with this run's col, acc and tmp:
    _FORWARD: c = conv(a; w) + b; _BACKWARD_DATA: c = conv's adjoint of a, + b over the input
    channels; _BACKWARD_WEIGHT: acc = Σ_n a[n, g]·col(w[n])[g]ᵀ with a = dy, w = x (tmp: scratch)."""
    in_count, out_count, kernel_count, is_1x1 = _geometry(shape, kernel, pad, stride, dilation)
    og = num_output // group
    kdim = channels // group * kernel_count
    image = channels * in_count
    out_image = num_output * out_count
    if mode == _BACKWARD_WEIGHT:
        acc[:] = 0
    # im2col, except col2im for the data gradient (a run-time flag, not a literal True or
    # False: one compiled _col_transfer, whose flag is tested once per output line)
    to_col = mode != _BACKWARD_DATA
    for n in range(lo, hi):
        if mode == _FORWARD:
            src, dst = a[n * image:(n + 1) * image], c[n * out_image:(n + 1) * out_image]
        elif mode == _BACKWARD_DATA:
            src, dst = a[n * out_image:(n + 1) * out_image], c[n * image:(n + 1) * image]
        else:
            src, dst = a[n * out_image:(n + 1) * out_image], w[n * image:(n + 1) * image]
        if kdim == 0 or out_count == 0:
            if mode != _BACKWARD_WEIGHT:
                dst[:] = 0
        elif mode == _FORWARD:                   # dst = y[n], src = x[n]
            if not is_1x1:
                _col_transfer(src, channels, in_count, shape, kernel, pad, stride, dilation, force_nd,
                              col, to_col)
                src = col
            for g in range(group):
                np.dot(w[g * og * kdim:(g + 1) * og * kdim].reshape(og, kdim),
                       src[g * kdim * out_count:(g + 1) * kdim * out_count].reshape(kdim, out_count),
                       dst[g * og * out_count:(g + 1) * og * out_count].reshape(og, out_count))
        elif mode == _BACKWARD_DATA:             # dst = dx[n], src = dy[n]
            cols = dst if is_1x1 else col
            for g in range(group):
                np.dot(w[g * og * kdim:(g + 1) * og * kdim].reshape(og, kdim).T,
                       src[g * og * out_count:(g + 1) * og * out_count].reshape(og, out_count),
                       cols[g * kdim * out_count:(g + 1) * kdim * out_count].reshape(kdim, out_count))
            if not is_1x1:
                _col_transfer(dst, channels, in_count, shape, kernel, pad, stride, dilation, force_nd,
                              col, to_col)
        else:                                    # src = dy[n], dst = x[n]; accᵀ += col·dyᵀ
            cols = dst
            if not is_1x1:
                _col_transfer(dst, channels, in_count, shape, kernel, pad, stride, dilation, force_nd,
                              col, to_col)
                cols = col
            # transposed (kdim × og per group, _add_partials transposes back): col (kdim × out)
            # · dyᵀ runs 1.3-1.6x faster in OpenBLAS than dy (og × out) · colᵀ at LeNet's and
            # CIFAR-10-quick's shapes (one thread, AVX-512 EPYC), and accumulates in place
            for g in range(group):
                _gemm(False, True, kdim, og, out_count, 1.0, cols[g * kdim * out_count:], out_count,
                      src[g * og * out_count:], out_count, 1.0, acc[g * og * kdim:], og)
        if b.size > 0 and mode == _FORWARD:
            _add_channel_bias(dst, b, num_output, out_count)
        elif b.size > 0 and mode == _BACKWARD_DATA:
            _add_channel_bias(dst, b, channels, in_count)


@njit(cache=True)
def _add_partials(part, nchunks, dw, lo, hi, kdim, og):
    """dw[i] += Σ_k part[k·dw.size + i'] for i in [lo, hi), summed in k order, where part holds
    each group's og × kdim block transposed (i = (g·og + o)·kdim + j, i' = g·og·kdim + j·og + o)."""
    size = dw.size
    block = og * kdim
    for i in range(lo, hi):
        g, r = i // block, i % block
        at = g * block + (r % kdim) * og + r // kdim
        s = dw[i]
        for k in range(nchunks):
            s += part[k * size + at]
        dw[i] = s


@njit(cache=True)
def _batch_run(mode, a, w, b, c, col, acc, tmp, lo, hi, channels, num_output, group, shape, kernel,
               pad, stride, dilation, force_nd):
    if mode == _IM2COL or mode == _COL2IM:
        _im2col_run(mode, a, c, lo, hi, channels, shape, kernel, pad, stride, dilation, force_nd)
    else:
        _conv_run(mode, a, w, b, c, col, acc, tmp, lo, hi, channels, num_output, group, shape,
                  kernel, pad, stride, dilation, force_nd)


@njit(cache=True, parallel=True)
def _batch(mode, a, w, b, c, col, part, num, channels, num_output, group, shape, kernel, pad, stride,
           dilation, force_nd, nchunks):
    """Every batch driver: num images split into nchunks runs (one: serial, no thread pool), run
    k with its own slice k of col (and, for the weight gradient, of part: sums, then scratch;
    the runs' sums are added into c at the end, in run order)."""
    runs = nchunks if nchunks > 1 else 1
    cols = _col_count(channels, shape, kernel, pad, stride, dilation) if mode >= _FORWARD else 0
    size = c.size if mode == _BACKWARD_WEIGHT else 0
    og, kdim = 1, 1                      # the weight gradient's per-group blocks (og × kdim)
    if mode == _BACKWARD_WEIGHT:         # (im2col_images passes num for num_output and group)
        og = max(num_output // group, 1)
        kdim = size // (og * group)
    if runs == 1:
        # np.int64(0), not 0: numba would compile the callee again for the literal 0
        _batch_run(mode, a, w, b, c, col[:cols], part[:size], part[size:2 * size], np.int64(0), num,
                   channels, num_output, group, shape, kernel, pad, stride, dilation, force_nd)
        if mode == _BACKWARD_WEIGHT:
            _add_partials(part, runs, c, np.int64(0), size, kdim, og)
        return
    for k in prange(runs):
        lo, hi = _run(k, num, runs)
        _batch_run(mode, a, w, b, c, col[k * cols:(k + 1) * cols], part[k * size:(k + 1) * size],
                   part[(runs + k) * size:(runs + k + 1) * size], lo, hi, channels, num_output, group,
                   shape, kernel, pad, stride, dilation, force_nd)
    if mode == _BACKWARD_WEIGHT:
        for k in prange(runs):
            _add_partials(part, runs, c, k * size // runs, (k + 1) * size // runs, kdim, og)


def im2col_images(data, col, num, channels, shape, kernel, pad, stride, dilation, force_nd, nchunks):
    """col[n] = im2col(data[n]) for num images (Caffe's Im2col layer), 2-D unless force_nd or another axis count"""
    none = data[:0]                     # no weights, bias, workspace; num_output and group unused
    _batch(_IM2COL, data, none, none, col, none, none, num, channels, num, num, shape,
           kernel, pad, stride, dilation, force_nd, nchunks)


def col2im_images(col, data, num, channels, shape, kernel, pad, stride, dilation, force_nd, nchunks):
    """data[n] = col2im(col[n]) for num images (im2col_images' adjoint: data is overwritten)"""
    none = data[:0]                     # as im2col_images
    _batch(_COL2IM, col, none, none, data, none, none, num, channels, num, num, shape,
           kernel, pad, stride, dilation, force_nd, nchunks)


def conv_forward(x, w, b, y, col, num, channels, num_output, group, shape, kernel, pad, stride,
                 dilation, force_nd, nchunks):
    """y[n, o] = Σ_{c in o's group, k} w[o, c, k]·x[n, c, q·stride − pad + k·dilation] + b[o] (no bias when b is empty); col: nchunks·channels·kernel_count·out_count workspace"""
    _batch(_FORWARD, x, w, b, y, col, col[:0], num, channels, num_output, group, shape,
           kernel, pad, stride, dilation, force_nd, nchunks)


def conv_backward_data(dy, w, b, dx, col, num, channels, num_output, group, shape, kernel, pad,
                       stride, dilation, force_nd, nchunks):
    """dx = the adjoint of conv_forward applied to dy: dx[n] = col2im(w[g]ᵀ·dy[n, g] per group), + b[c] over the input channels (none when b is empty; Deconvolution's forward)"""
    _batch(_BACKWARD_DATA, dy, w, b, dx, col, col[:0], num, channels, num_output, group,
           shape, kernel, pad, stride, dilation, force_nd, nchunks)


def conv_backward_weight(x, dy, dw, col, part, num, channels, num_output, group, shape, kernel, pad,
                         stride, dilation, force_nd, nchunks):
    """dw[g] += Σ_n dy[n, g]·im2col(x[n])[g]ᵀ per group (accumulates); part: 2·nchunks·dw.size workspace of per-run sums (the GPU adds into dw directly), col as conv_forward"""
    _batch(_BACKWARD_WEIGHT, dy, x, x[:0], dw, col, part, num, channels, num_output,
           group, shape, kernel, pad, stride, dilation, force_nd, nchunks)


# --------------------------------------------------------------------------- depthwise (direct)
# group == channels == num_output (MobileNet's depthwise layers), 2-D: each (n, c) plane is
# convolved with its own kh×kw filter. The GEMM path would run channels tiny (1 × kh·kw)·(kh·kw ×
# out) products on an im2col copy kh·kw times the image; these kernels work on the plane itself.
# A plane is first copied into a zero-padded plane xp (rows of wp = width + 2·pad_w, plus a tail
# of zeros), so no tap needs a bounds test. With stride 1 the output is computed "wide": row oh of
# the wide output has wp entries, the first out_w of them real, and tap (ki, kj) adds
# tap·xp[ki·dh·wp + kj·dw + i] to entry i, one long loop per tap over the whole plane (entries
# past out_w in a row read the next row's start and are dropped). Other strides go row by row.
# Workspace per run of planes: depthwise_workspace(...) elements.
@njit(cache=True)
def _depthwise_sizes(shape, kernel, pad, stride, dilation):
    """(out_h, out_w, hp, wp, padded, wide): output and padded sizes, the padded plane's length
    with its tail, and the wide output's length (out_h·wp)."""
    out_h = _out_size(shape[0], kernel[0], pad[0], stride[0], dilation[0])
    out_w = _out_size(shape[1], kernel[1], pad[1], stride[1], dilation[1])
    hp = shape[0] + 2 * pad[0]
    wp = shape[1] + 2 * pad[1]
    padded = hp * wp + (kernel[1] - 1) * dilation[1] + 1
    return out_h, out_w, hp, wp, padded, out_h * wp


@njit(cache=True)
def depthwise_workspace(shape, kernel, pad, stride, dilation):
    """Workspace elements one run of the depthwise kernels needs (on the CPU a padded plane and a wide output plane; the GPU kernels need none)"""
    _, _, _, _, padded, wide = _depthwise_sizes(shape, kernel, pad, stride, dilation)
    return padded + wide


@njit(cache=True)
def _pad_plane(x, height, width, ph, pw, wp, xp):
    """xp = x (height × width) placed at (ph, pw) in a zeroed plane of row length wp."""
    xp[:] = 0
    for h in range(height):
        dst = xp[(h + ph) * wp + pw:(h + ph) * wp + pw + width]
        src = x[h * width:(h + 1) * width]
        for j in range(width):
            dst[j] = src[j]


@njit(cache=True)
def _widen(y, out_h, out_w, wp, yw):
    """yw = the out_h × out_w plane y in rows of wp entries, the entries past out_w zero."""
    yw[:] = 0
    for oh in range(out_h):
        src = y[oh * out_w:(oh + 1) * out_w]
        dst = yw[oh * wp:oh * wp + out_w]
        for j in range(out_w):
            dst[j] = src[j]


@njit(cache=True)
def _depthwise_plane(x, w, bias, y, work, shape, kernel, pad, stride, dilation, forward):
    """forward: y = x ⋆ w + bias for one plane; else x = the adjoint applied to y, + bias."""
    out_h, out_w, hp, wp, padded, wide = _depthwise_sizes(shape, kernel, pad, stride, dilation)
    kh, kw, sh, sw, dh, dw = kernel[0], kernel[1], stride[0], stride[1], dilation[0], dilation[1]
    height, width = shape[0], shape[1]
    xp = work[:padded]
    if forward:
        _pad_plane(x, height, width, pad[0], pad[1], wp, xp)
    else:
        xp[:] = 0
    if sh == 1 and sw == 1:
        yw = work[padded:padded + wide]
        if forward:
            yw[:] = bias
        else:
            _widen(y, out_h, out_w, wp, yw)
        for ki in range(kh):
            for kj in range(kw):
                tap = w[ki * kw + kj]
                off = ki * dh * wp + kj * dw
                seg = xp[off:off + wide]
                if forward:
                    for i in range(wide):
                        yw[i] += tap * seg[i]
                else:
                    for i in range(wide):
                        seg[i] += tap * yw[i]
        if forward:
            for oh in range(out_h):
                src = yw[oh * wp:oh * wp + out_w]
                dst = y[oh * out_w:(oh + 1) * out_w]
                for j in range(out_w):
                    dst[j] = src[j]
    else:
        for oh in range(out_h):
            row = y[oh * out_w:(oh + 1) * out_w]
            if forward:
                row[:] = bias
            for ki in range(kh):
                for kj in range(kw):
                    tap = w[ki * kw + kj]
                    start = (oh * sh + ki * dh) * wp + kj * dw
                    seg = xp[start:start + (out_w - 1) * sw + 1]
                    if forward:
                        for j in range(out_w):
                            row[j] += tap * seg[j * sw]
                    else:
                        for j in range(out_w):
                            seg[j * sw] += tap * row[j]
    if not forward:
        for h in range(height):
            src = xp[(h + pad[0]) * wp + pad[1]:(h + pad[0]) * wp + pad[1] + width]
            dst = x[h * width:(h + 1) * width]
            for j in range(width):
                dst[j] = src[j] + bias


@njit(cache=True, fastmath=True)
def _dot_strided(a, b, stride, n):
    """Σ_{j<n} a[j]·b[j·stride] in float64 (fastmath: the sum may be reordered, so it vectorizes)."""
    s = 0.0
    if stride == 1:
        for j in range(n):
            s += np.float64(a[j]) * np.float64(b[j])
    else:
        for j in range(n):
            s += np.float64(a[j]) * np.float64(b[j * stride])
    return s


@njit(cache=True)
def _depthwise_weight_channel(x, dy, dw, work, c, num, channels, shape, kernel, pad, stride,
                              dilation):
    """dw[c] += Σ_n the taps' correlations of dy[n, c] with x[n, c] (float64 sums)."""
    out_h, out_w, hp, wp, padded, wide = _depthwise_sizes(shape, kernel, pad, stride, dilation)
    kh, kw, sh, sw, dh, dwl = kernel[0], kernel[1], stride[0], stride[1], dilation[0], dilation[1]
    image = shape[0] * shape[1]
    out_image = out_h * out_w
    taps = kh * kw
    xp = work[:padded]
    yw = work[padded:padded + wide]
    wide_ok = sh == 1 and sw == 1
    acc = np.zeros(taps, dtype=np.float64)
    for n in range(num):
        p = n * channels + c
        _pad_plane(x[p * image:(p + 1) * image], shape[0], shape[1], pad[0], pad[1], wp, xp)
        g = dy[p * out_image:(p + 1) * out_image]
        if wide_ok:
            _widen(g, out_h, out_w, wp, yw)
            for ki in range(kh):
                for kj in range(kw):
                    off = ki * dh * wp + kj * dwl
                    acc[ki * kw + kj] += _dot_strided(yw, xp[off:off + wide], 1, wide)
        else:
            for oh in range(out_h):
                row = g[oh * out_w:(oh + 1) * out_w]
                for ki in range(kh):
                    for kj in range(kw):
                        start = (oh * sh + ki * dh) * wp + kj * dwl
                        acc[ki * kw + kj] += _dot_strided(row, xp[start:start + (out_w - 1) * sw + 1],
                                                          sw, out_w)
    for t in range(taps):
        dw[c * taps + t] += acc[t]


@njit(cache=True)
def _depthwise_run(mode, a, w, b, c, work, lo, hi, num, channels, shape, kernel, pad, stride,
                   dilation):
    """Units [lo, hi) of a depthwise driver: _FORWARD, planes: c = a ⋆ w + b; _BACKWARD_DATA,
    planes: c = the adjoint applied to a, + b; _BACKWARD_WEIGHT, channels: c[ch] += the
    correlations of a = dy with w = x (a plane is the (n, ch) pair n·channels + ch)."""
    out_h, out_w, _, _, _, _ = _depthwise_sizes(shape, kernel, pad, stride, dilation)
    image, out_image = shape[0] * shape[1], out_h * out_w
    taps = kernel[0] * kernel[1]
    if mode == _BACKWARD_WEIGHT:
        for ch in range(lo, hi):
            _depthwise_weight_channel(w, a, c, work, ch, num, channels, shape, kernel, pad, stride,
                                      dilation)
        return
    for p in range(lo, hi):
        ch = p % channels
        bias = b[ch] if b.size > 0 else 0
        forward = mode == _FORWARD
        x, y = (a, c) if forward else (c, a)           # the plane's input and output sides
        _depthwise_plane(x[p * image:(p + 1) * image], w[ch * taps:(ch + 1) * taps], bias,
                         y[p * out_image:(p + 1) * out_image], work, shape, kernel, pad, stride,
                         dilation, forward)


@njit(cache=True, parallel=True)
def _depthwise_batch(mode, a, w, b, c, work, num, channels, shape, kernel, pad, stride, dilation,
                     nchunks):
    """Every depthwise driver: its units (the num·channels planes, or the channels for the
    weight gradient) split into nchunks runs, run k with its own slice k of work."""
    size = depthwise_workspace(shape, kernel, pad, stride, dilation)
    units = channels if mode == _BACKWARD_WEIGHT else num * channels
    if nchunks <= 1:
        _depthwise_run(mode, a, w, b, c, work[:size], np.int64(0), units, num, channels, shape, kernel, pad,
                       stride, dilation)
    else:
        for k in prange(nchunks):
            lo, hi = _run(k, units, nchunks)
            _depthwise_run(mode, a, w, b, c, work[k * size:(k + 1) * size], lo, hi, num, channels,
                           shape, kernel, pad, stride, dilation)


def depthwise_forward(x, w, b, y, work, num, channels, shape, kernel, pad, stride, dilation, nchunks):
    """y[n, c] = Σ_{ki,kj} w[c, ki, kj]·x[n, c, oh·sh − ph + ki·dh, ow·sw − pw + kj·dw] + b[c] (0 in the padding; no bias when b is empty); 2-D, group == channels == num_output; work: nchunks·depthwise_workspace(...)"""
    _depthwise_batch(_FORWARD, x, w, b, y, work, num, channels, shape, kernel, pad, stride,
                     dilation, nchunks)


def depthwise_backward_data(dy, w, b, dx, work, num, channels, shape, kernel, pad, stride, dilation,
                            nchunks):
    """dx = depthwise_forward's adjoint applied to dy, + b[c] (none when b is empty; a depthwise Deconvolution's forward); shape is dx's spatial shape"""
    _depthwise_batch(_BACKWARD_DATA, dy, w, b, dx, work, num, channels, shape, kernel, pad,
                     stride, dilation, nchunks)


def depthwise_backward_weight(x, dy, dw, work, num, channels, shape, kernel, pad, stride, dilation,
                              nchunks):
    """dw[c, ki, kj] += Σ_{n, oh, ow} dy[n, c, oh, ow]·x[n, c, oh·sh − ph + ki·dh, ow·sw − pw + kj·dw] (accumulates; float64 sums per channel); work as depthwise_forward"""
    _depthwise_batch(_BACKWARD_WEIGHT, dy, x, x[:0], dw, work, num, channels, shape, kernel,
                     pad, stride, dilation, nchunks)


# --------------------------------------------------------------------------- channels-last GEMMs
# The "hwc" drivers: 2-D convolution as one GEMM per group and batch of images with the output
# computed transposed, yᵀ (pixels × outputs) = colᵀ (pixels × taps) · wr (taps × outputs).
# Each image is first copied into a zero-padded channels-last plane xt (hp × wp × cg, the
# channel fastest), so a row of colᵀ, one output pixel's window, is kh runs of kw·cg contiguous
# values (kh·kw runs of cg with dilation along w): wr orders the taps (ki, kj, c) to match.
# Measured on a 2-core AVX-512 machine (SciPy's OpenBLAS, one thread, CIFAR-10-quick's conv2:
# 256 × 800 · 800 × 32) the transposed GEMM runs at about 185 GFLOP/s against 120 for Caffe's
# orientation (32 × 800 · 800 × 256), and building colᵀ from xt is a few long copies per pixel.
# Backward data: dcolᵀ = dyᵀ · wrᵀ, added back into xt window by window, cropped out of the
# padding into dx. Backward weight: dwr += colᵀᵀ · dyᵀ, per run, the runs' sums added in order.
# Workspace: w.size (wr) + nchunks · hwc_run_size(...) elements (hwc_workspace).
_HWC_ROWS = 256        # GEMM rows (output pixels) a batch of images aims at
_HWC_COL = 1 << 17     # ... without colᵀ growing past this many elements (half a MiB in float32)


@njit(cache=True)
def _hwc_sizes(channels, num_output, group, shape, kernel, pad, stride, dilation):
    """(out_h, out_w, cg, og, kg, hp, wp, nb): outputs, channels and outputs per group, taps
    per group (kh·kw·cg), the padded plane, and images per GEMM."""
    out_h = _out_size(shape[0], kernel[0], pad[0], stride[0], dilation[0])
    out_w = _out_size(shape[1], kernel[1], pad[1], stride[1], dilation[1])
    cg, og = channels // group, num_output // group
    kg = kernel[0] * kernel[1] * cg
    pixels = max(out_h * out_w, 1)
    nb = max(1, min((_HWC_ROWS + pixels - 1) // pixels, _HWC_COL // max(pixels * kg, 1)))
    return out_h, out_w, cg, og, kg, shape[0] + 2 * pad[0], shape[1] + 2 * pad[1], nb


@njit(cache=True)
def _hwc_run_size(channels, num_output, group, shape, kernel, pad, stride, dilation):
    """Elements of one run's slice: xt, colᵀ, yᵀ and the run's weight-gradient sums."""
    out_h, out_w, cg, og, kg, hp, wp, nb = _hwc_sizes(channels, num_output, group, shape, kernel,
                                                      pad, stride, dilation)
    return hp * wp * cg + nb * out_h * out_w * (kg + og) + group * kg * og


@njit(cache=True)
def hwc_workspace(channels, num_output, group, shape, kernel, pad, stride, dilation, nchunks):
    """Workspace elements of the hwc drivers for nchunks runs (the GPU's hwc drivers are its im2col drivers and need nchunks·channels·kernel_count·out_count)"""
    _, _, cg, og, kg, _, _, _ = _hwc_sizes(channels, num_output, group, shape, kernel, pad, stride,
                                           dilation)
    return group * kg * og + max(nchunks, 1) * _hwc_run_size(channels, num_output, group, shape,
                                                             kernel, pad, stride, dilation)


@njit(cache=True)
def _hwc_order_weights(w, wr, group, og, cg, taps, to_hwc):
    """to_hwc: wr[g][(t, c), o] = w[g·og + o, c, t] (t the tap ki·kw + kj); else w[...] += wr[...]."""
    for g in range(group):
        for o in range(og):
            for c in range(cg):
                src = ((g * og + o) * cg + c) * taps
                for t in range(taps):
                    dst = ((g * taps + t) * cg + c) * og + o
                    if to_hwc:
                        wr[dst] = w[src + t]
                    else:
                        w[src + t] += wr[dst]


@njit(cache=True)
def _to_hwc(x, cg, height, width, pad_h, pad_w, wp, xt):
    """xt[(h + pad_h)·wp + w + pad_w, c] = x[c, h, w] (the padding is left as it is)."""
    for h in range(height):
        for w in range(width):
            dst = u64(((h + pad_h) * wp + w + pad_w) * cg)
            src = u64(h * width + w)
            plane = u64(height * width)
            for c in range(u64(cg)):
                xt[dst + c] = x[src + c * plane]


@njit(cache=True)
def _from_hwc(xt, cg, height, width, pad_h, pad_w, wp, x, b, bias):
    """x[c, h, w] = xt[(h + pad_h)·wp + w + pad_w, c] (+ b[bias + c] when b is not empty)."""
    for c in range(cg):
        add = b[bias + c] if b.size > 0 else 0
        for h in range(height):
            src = u64(((h + pad_h) * wp + pad_w) * cg + c)
            dst = u64((c * height + h) * width)
            for w in range(u64(width)):
                x[dst + w] = xt[src + w * u64(cg)] + add


@njit(cache=True)
def _to_phases(x, cg, height, width, pad_h, pad_w, wq, xt):
    """xt[((h + pad_h)·4 + p)·wq·cg + q·cg + c] = x[c, h, w] where w + pad_w = 4q + p: a padded
    channels-last plane with each row's columns split by their phase mod 4, so that the
    columns 4q + p of every q lie together (the padding is left as it is). _to_hwc with a
    literal 4: one function with a run-time phase count (1 for _to_hwc) made the Winograd
    forward 30-60% slower, measured."""
    plane = u64(height * width)
    for h in range(height):
        for w in range(width):
            col = w + pad_w
            dst = u64((((h + pad_h) * 4 + col % 4) * wq + col // 4) * cg)
            src = u64(h * width + w)
            for c in range(u64(cg)):
                xt[dst + c] = x[src + c * plane]


@njit(cache=True)
def _from_phases(xt, cg, height, width, wq, x, b, bias):
    """x[c, h, w] = xt[((h·4 + w mod 4)·wq + w div 4)·cg + c] (+ b[bias + c] when b is not
    empty): the inverse of _to_phases, unpadded."""
    for c in range(cg):
        add = b[bias + c] if b.size > 0 else 0
        for h in range(height):
            for p in range(4):
                src = u64(((h * 4 + p) * wq) * cg + c)
                dst = u64((c * height + h) * width + p)
                for q in range(u64((width - p + 3) // 4)):
                    x[dst + 4 * q] = xt[src + q * u64(cg)] + add


@njit(cache=True)
def _hwc_windows(xt, colt, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w, dilation_h,
                 dilation_w, wp, cg, to_col):
    """to_col: colᵀ[oh·out_w + ow, (ki·kw + kj)·cg + c] = xt[oh·sh + ki·dh, ow·sw + kj·dw, c];
    else xt[...] += colᵀ[...] (every window added back)."""
    kg = u64(kernel_h * kernel_w * cg)
    line = u64(kernel_w * cg) if dilation_w == 1 else u64(cg)
    for oh in range(out_h):
        for ow in range(out_w):
            row = u64(oh * out_w + ow) * kg
            for ki in range(kernel_h):
                base = ((oh * stride_h + ki * dilation_h) * wp + ow * stride_w) * cg
                for kj in range(kernel_w if dilation_w != 1 else 1):
                    src = u64(base + kj * dilation_w * cg)
                    dst = row + u64((ki * kernel_w + kj) * cg)
                    if to_col:
                        for j in range(line):
                            colt[dst + j] = xt[src + j]
                    else:
                        for j in range(line):
                            xt[src + j] += colt[dst + j]


@njit(cache=True)
def _transpose_into(a, rows, cols, lda, t, ldt, b, bias):
    """t[j·ldt + i] = a[i·lda + j] (+ b[bias + j] when b is not empty), for i < rows, j < cols."""
    for j in range(cols):
        add = b[bias + j] if b.size > 0 else 0
        dst = u64(j * ldt)
        for i in range(u64(rows)):
            t[dst + i] = a[i * u64(lda) + u64(j)] + add


@njit(cache=True)
def _hwc_run(mode, a, w, b, c, wr, work, lo, hi, channels, num_output, group, shape, kernel, pad,
             stride, dilation):
    """The images [lo, hi) of an hwc driver with this run's work slice: _FORWARD c = conv(a) + b;
    _BACKWARD_DATA c = conv's adjoint of a, + b over the input channels; _BACKWARD_WEIGHT the
    run's sums of dwr (left in the slice's last group·kg·og elements), a = dy, w = x."""
    out_h, out_w, cg, og, kg, hp, wp, nb = _hwc_sizes(channels, num_output, group, shape, kernel,
                                                      pad, stride, dilation)
    height, width = shape[0], shape[1]
    pixels = out_h * out_w
    in_count = height * width
    xt = work[:hp * wp * cg]
    colt = work[hp * wp * cg:hp * wp * cg + nb * pixels * kg]
    yt = work[hp * wp * cg + nb * pixels * kg:hp * wp * cg + nb * pixels * (kg + og)]
    acc = work[hp * wp * cg + nb * pixels * (kg + og):]
    xt[:] = 0
    if mode == _BACKWARD_WEIGHT:
        acc[:] = 0
    for g in range(group):
        wg = wr[g * kg * og:(g + 1) * kg * og]
        for n0 in range(lo, hi, nb):
            n1 = min(n0 + nb, hi)
            m = (n1 - n0) * pixels
            if mode != _FORWARD:            # dyᵀ, the pixels of n0..n1 one below the other
                for n in range(n0, n1):
                    dy = a[(n * num_output + g * og) * pixels:(n * num_output + (g + 1) * og) * pixels]
                    _transpose_into(dy, og, pixels, pixels, yt[(n - n0) * pixels * og:], og, b[:0], np.int64(0))
            if mode != _BACKWARD_DATA:      # colᵀ of the images' windows
                x = a if mode == _FORWARD else w
                for n in range(n0, n1):
                    _to_hwc(x[(n * channels + g * cg) * in_count:(n * channels + (g + 1) * cg) * in_count],
                            cg, height, width, pad[0], pad[1], wp, xt)
                    _hwc_windows(xt, colt[(n - n0) * pixels * kg:], out_h, out_w, kernel[0], kernel[1],
                                 stride[0], stride[1], dilation[0], dilation[1], wp, cg, True)
            if mode == _FORWARD:
                _gemm(False, False, m, og, kg, 1.0, colt, kg, wg, og, 0.0, yt, og)
                for n in range(n0, n1):
                    _transpose_into(yt[(n - n0) * pixels * og:], pixels, og, og,
                                    c[(n * num_output + g * og) * pixels:], pixels, b, g * og)
            elif mode == _BACKWARD_WEIGHT:
                _gemm(True, False, kg, og, m, 1.0, colt, kg, yt, og, 1.0, acc[g * kg * og:], og)
            else:
                _gemm(False, True, m, kg, og, 1.0, yt, og, wg, og, 0.0, colt, kg)
                for n in range(n0, n1):
                    xt[:] = 0
                    _hwc_windows(xt, colt[(n - n0) * pixels * kg:], out_h, out_w, kernel[0],
                                 kernel[1], stride[0], stride[1], dilation[0], dilation[1], wp, cg,
                                 False)
                    _from_hwc(xt, cg, height, width, pad[0], pad[1], wp,
                              c[(n * channels + g * cg) * in_count:], b, g * cg)


@njit(cache=True, parallel=True)
def _hwc_batch(mode, a, w, b, c, work, num, channels, num_output, group, shape, kernel, pad, stride,
               dilation, nchunks):
    """Every hwc driver: wr from w (the weights in the drivers' tap order; not for the weight
    gradient), then num images in nchunks runs, run k with its own work slice k; the weight
    gradient's run sums are added into c in run order."""
    runs = nchunks if nchunks > 1 else 1
    _, _, cg, og, kg, _, _, _ = _hwc_sizes(channels, num_output, group, shape, kernel, pad, stride,
                                           dilation)
    taps = kernel[0] * kernel[1]
    wsize = group * kg * og
    size = _hwc_run_size(channels, num_output, group, shape, kernel, pad, stride, dilation)
    wr = work[:wsize]
    if mode != _BACKWARD_WEIGHT:
        _hwc_order_weights(w, wr, group, og, cg, taps, True)
    if runs == 1:
        _hwc_run(mode, a, w, b, c, wr, work[wsize:wsize + size], np.int64(0), num, channels, num_output,
                 group, shape, kernel, pad, stride, dilation)
    else:
        for k in prange(runs):
            lo, hi = _run(k, num, runs)
            _hwc_run(mode, a, w, b, c, wr, work[wsize + k * size:wsize + (k + 1) * size], lo, hi,
                     channels, num_output, group, shape, kernel, pad, stride, dilation)
    if mode == _BACKWARD_WEIGHT:
        for k in range(runs):
            _hwc_order_weights(c, work[wsize + (k + 1) * size - wsize:wsize + (k + 1) * size], group,
                               og, cg, taps, False)


def hwc_forward(x, w, b, y, work, num, channels, num_output, group, shape, kernel, pad, stride,
                dilation, nchunks):
    """conv_forward for 2 spatial axes through channels-last windows and transposed GEMMs: y[n, o] = Σ_{c in o's group, k} w[o, c, k]·x[n, c, q·stride − pad + k·dilation] + b[o] (no bias when b is empty); work: hwc_workspace(...) elements"""
    _hwc_batch(_FORWARD, x, w, b, y, work, num, channels, num_output, group, shape,
               kernel, pad, stride, dilation, nchunks)


def hwc_backward_data(dy, w, b, dx, work, num, channels, num_output, group, shape, kernel, pad,
                      stride, dilation, nchunks):
    """conv_backward_data through the hwc layout: dx = the adjoint of hwc_forward applied to dy, + b[c] over the input channels (none when b is empty)"""
    _hwc_batch(_BACKWARD_DATA, dy, w, b, dx, work, num, channels, num_output, group,
               shape, kernel, pad, stride, dilation, nchunks)


def hwc_backward_weight(x, dy, dw, work, num, channels, num_output, group, shape, kernel, pad, stride,
                        dilation, nchunks):
    """conv_backward_weight through the hwc layout: dw[g] += Σ_n dy[n, g]·im2col(x[n])[g]ᵀ per group (accumulates; the runs' sums added in run order)"""
    _hwc_batch(_BACKWARD_WEIGHT, dy, x, x[:0], dw, work, num, channels, num_output,
               group, shape, kernel, pad, stride, dilation, nchunks)


# --------------------------------------------------------------------------- implicit GEMMs
# The "implicit" drivers: 2-D convolution with stride 1 and no im2col at all. In the padded
# channels-last plane xt (hp × wp × cg, then a tail of zero pixels) the window of output pixel
# (oh, ow) at tap (ki, kj) starts at pixel (oh + ki·dh)·wp + ow + kj·dw: for a fixed tap, the
# pixels r = oh·wp + ow of a "wide" output (wp columns per row, the last ones not real outputs)
# read the rows r of the matrix xt[tap's offset:] with rows cg apart. So the output is
#   yw (rows × og) = Σ_taps xt[offset(tap):] (rows × cg) · wr[tap] (cg × og),
# one GEMM per tap with k = cg, accumulating (beta 1), its first row at the tap's offset; the
# wide columns are dropped when yw is written out. Backward data adds dyw · wrb[tap] into xt at
# each tap's offset (dyw: dy in the wide layout, zero in the wide columns); backward weight adds
# xt[offset]ᵀ · dyw into the tap's (cg × og) block. Rows are taken in blocks so that a block of
# yw stays in cache across the taps. Measured on a 2-core AVX-512 machine (one thread, SciPy's
# OpenBLAS): these k = 32 GEMMs run at about 240 GFLOP/s (its small-matrix kernels), against
# 185 for the hwc GEMMs, and nothing is copied but the image and its output; the wide columns
# cost wp / out_w extra work (1.25x at CIFAR-10-quick's conv2).
# Workspace: 2·w.size (wr, wrb) + nchunks · implicit_run_size(...) elements (implicit_workspace).
_IMPLICIT_BLOCK = 1 << 15     # elements of a yw row block (128 KiB in float32)


@njit(cache=True)
def _implicit_sizes(channels, num_output, group, shape, kernel, pad, dilation):
    """(out_h, out_w, cg, og, hp, wp, plane, rows, block): outputs, per-group channels and
    outputs, the padded plane and its length with the tail (pixels), wide output rows, and
    the rows of a block."""
    out_h = _out_size(shape[0], kernel[0], pad[0], 1, dilation[0])
    out_w = _out_size(shape[1], kernel[1], pad[1], 1, dilation[1])
    cg, og = channels // group, num_output // group
    hp, wp = shape[0] + 2 * pad[0], shape[1] + 2 * pad[1]
    plane = hp * wp + (kernel[1] - 1) * dilation[1]
    block = max(16, _IMPLICIT_BLOCK // max(og, cg, 1))
    return out_h, out_w, cg, og, hp, wp, plane, out_h * wp, block


@njit(cache=True)
def _implicit_run_size(channels, num_output, group, shape, kernel, pad, dilation):
    """Elements of one run's slice: xt, yw and the run's weight-gradient sums."""
    out_h, out_w, cg, og, hp, wp, plane, rows, block = _implicit_sizes(
        channels, num_output, group, shape, kernel, pad, dilation)
    return plane * cg + rows * og + group * kernel[0] * kernel[1] * cg * og


@njit(cache=True)
def implicit_workspace(channels, num_output, group, shape, kernel, pad, stride, dilation, nchunks):
    """Workspace elements of the implicit drivers for nchunks runs (stride 1 only; the GPU's implicit drivers are its im2col drivers and need nchunks·channels·kernel_count·out_count)"""
    wsize = num_output * (channels // group) * kernel[0] * kernel[1]
    return 2 * wsize + max(nchunks, 1) * _implicit_run_size(channels, num_output, group, shape,
                                                             kernel, pad, dilation)


@njit(cache=True)
def _implicit_order_weights(w, wr, group, og, cg, taps, mode):
    """_FORWARD: wr[g][t][c][o] = w[g·og + o, c, t]; _BACKWARD_DATA: wr[g][t][o][c] = w[g·og + o,
    c, t]; _BACKWARD_WEIGHT: w[g·og + o, c, t] += wr[g][t][c][o] (t the tap ki·kw + kj)."""
    for g in range(group):
        for o in range(og):
            for c in range(cg):
                src = ((g * og + o) * cg + c) * taps
                for t in range(taps):
                    if mode == _BACKWARD_DATA:
                        wr[((g * taps + t) * og + o) * cg + c] = w[src + t]
                    elif mode == _FORWARD:
                        wr[((g * taps + t) * cg + c) * og + o] = w[src + t]
                    else:
                        w[src + t] += wr[((g * taps + t) * cg + c) * og + o]


@njit(cache=True)
def _wide(y, og, out_h, out_w, wp, yw, b, bias, to_wide):
    """to_wide: yw[(oh·wp + ow)·og + o] = y[o, oh, ow], 0 in the wide columns; else
    y[o, oh, ow] = yw[...] (+ b[bias + o] when b is not empty)."""
    ldw = u64(og)
    for o in range(og):
        add = b[bias + o] if b.size > 0 and not to_wide else 0
        for oh in range(out_h):
            line = u64((o * out_h + oh) * out_w)
            wide = u64(oh * wp * og + o)
            if to_wide:
                for ow in range(u64(out_w)):
                    yw[wide + ow * ldw] = y[line + ow]
                for ow in range(u64(out_w), u64(wp)):
                    yw[wide + ow * ldw] = 0
            else:
                for ow in range(u64(out_w)):
                    y[line + ow] = yw[wide + ow * ldw] + add


@njit(cache=True)
def _implicit_run(mode, a, w, b, c, wr, work, lo, hi, channels, num_output, group, shape, kernel,
                  pad, dilation):
    """The images [lo, hi) of an implicit driver with this run's work slice: _FORWARD c = conv(a)
    + b; _BACKWARD_DATA c = conv's adjoint of a, + b over the input channels; _BACKWARD_WEIGHT
    the run's sums (the slice's last w.size elements, [g][t][c][o]), a = dy, w = x."""
    out_h, out_w, cg, og, hp, wp, plane, rows, block = _implicit_sizes(
        channels, num_output, group, shape, kernel, pad, dilation)
    height, width = shape[0], shape[1]
    in_count, pixels = height * width, out_h * out_w
    taps = kernel[0] * kernel[1]
    xt = work[:plane * cg]
    yw = work[plane * cg:plane * cg + rows * og]
    acc = work[plane * cg + rows * og:]
    xt[:] = 0
    if mode == _BACKWARD_WEIGHT:
        acc[:] = 0
    for n in range(lo, hi):
        for g in range(group):
            x_at = (n * channels + g * cg) * in_count
            y_at = (n * num_output + g * og) * pixels
            if mode == _BACKWARD_DATA:
                xt[:] = 0
            else:
                x = a if mode == _FORWARD else w
                _to_hwc(x[x_at:x_at + cg * in_count], cg, height, width, pad[0], pad[1], wp, xt)
            if mode != _FORWARD:
                _wide(a[y_at:y_at + og * pixels], og, out_h, out_w, wp, yw, b[:0], 0, True)
            for r0 in range(0, rows, block):
                m = min(block, rows - r0)
                for t in range(taps):
                    ki, kj = t // kernel[1], t - (t // kernel[1]) * kernel[1]
                    at = (r0 + ki * dilation[0] * wp + kj * dilation[1]) * cg
                    wt = (g * taps + t) * cg * og
                    if mode == _FORWARD:
                        _gemm(False, False, m, og, cg, 1.0, xt[at:], cg, wr[wt:wt + cg * og], og,
                              0.0 if t == 0 else 1.0, yw[r0 * og:], og)
                    elif mode == _BACKWARD_DATA:
                        _gemm(False, False, m, cg, og, 1.0, yw[r0 * og:], og, wr[wt:wt + cg * og],
                              cg, 1.0, xt[at:], cg)
                    else:
                        _gemm(True, False, cg, og, m, 1.0, xt[at:], cg, yw[r0 * og:], og, 1.0,
                              acc[wt:wt + cg * og], og)
            if mode == _FORWARD:
                _wide(c[y_at:y_at + og * pixels], og, out_h, out_w, wp, yw, b, g * og, False)
            elif mode == _BACKWARD_DATA:
                _from_hwc(xt, cg, height, width, pad[0], pad[1], wp, c[x_at:x_at + cg * in_count],
                          b, g * cg)


@njit(cache=True, parallel=True)
def _implicit_batch(mode, a, w, b, c, work, num, channels, num_output, group, shape, kernel, pad,
                    stride, dilation, nchunks):
    """Every implicit driver: the weights reordered for its GEMMs, then num images in nchunks
    runs, run k with its own work slice k; the weight gradient's run sums added into c in run
    order."""
    if stride[0] != 1 or stride[1] != 1:
        raise ValueError("the implicit convolution drivers need stride 1")
    runs = nchunks if nchunks > 1 else 1
    cg, og = channels // group, num_output // group
    taps = kernel[0] * kernel[1]
    wsize = num_output * cg * taps
    size = _implicit_run_size(channels, num_output, group, shape, kernel, pad, dilation)
    wr = work[:wsize]
    if mode != _BACKWARD_WEIGHT:
        _implicit_order_weights(w, wr, group, og, cg, taps, mode)
    base = 2 * wsize
    if runs == 1:
        _implicit_run(mode, a, w, b, c, wr, work[base:base + size], np.int64(0), num, channels, num_output,
                      group, shape, kernel, pad, dilation)
    else:
        for k in prange(runs):
            lo, hi = _run(k, num, runs)
            _implicit_run(mode, a, w, b, c, wr, work[base + k * size:base + (k + 1) * size], lo, hi,
                          channels, num_output, group, shape, kernel, pad, dilation)
    if mode == _BACKWARD_WEIGHT:
        for k in range(runs):
            end = base + (k + 1) * size
            _implicit_order_weights(c, work[end - wsize:end], group, og, cg, taps, _BACKWARD_WEIGHT)


def implicit_forward(x, w, b, y, work, num, channels, num_output, group, shape, kernel, pad, stride,
                     dilation, nchunks):
    """conv_forward for 2 spatial axes and stride 1 as one GEMM per tap over the padded channels-last image, no im2col: y[n, o] = Σ_{c in o's group, k} w[o, c, k]·x[n, c, q − pad + k·dilation] + b[o] (no bias when b is empty); work: implicit_workspace(...) elements"""
    _implicit_batch(_FORWARD, x, w, b, y, work, num, channels, num_output, group, shape,
                    kernel, pad, stride, dilation, nchunks)


def implicit_backward_data(dy, w, b, dx, work, num, channels, num_output, group, shape, kernel, pad,
                           stride, dilation, nchunks):
    """conv_backward_data through the implicit GEMMs (stride 1): dx = the adjoint of implicit_forward applied to dy, + b[c] over the input channels (none when b is empty)"""
    _implicit_batch(_BACKWARD_DATA, dy, w, b, dx, work, num, channels, num_output, group,
                    shape, kernel, pad, stride, dilation, nchunks)


def implicit_backward_weight(x, dy, dw, work, num, channels, num_output, group, shape, kernel, pad,
                             stride, dilation, nchunks):
    """conv_backward_weight through the implicit GEMMs (stride 1): dw[g] += Σ_n dy[n, g]·im2col(x[n])[g]ᵀ per group (accumulates; the runs' sums added in run order)"""
    _implicit_batch(_BACKWARD_WEIGHT, dy, x, x[:0], dw, work, num, channels, num_output,
                    group, shape, kernel, pad, stride, dilation, nchunks)


# --------------------------------------------------------------------------- Winograd
# The "winograd" drivers: 2-D convolution with stride 1, no dilation, a square r × r kernel
# (r = 3: F(4×4, 3×3); r = 5: F(4×4, 5×5)) by Winograd's minimal filtering (Lavin and Gray,
# "Fast Algorithms for Convolutional Neural Networks", 2016). An m × m tile of outputs is
#   Y = Aᵀ [ Σ_c (G w[o, c] Gᵀ) ⊙ (Bᵀ d[c] B) ] A
# with d[c] the α × α input tile (α = m + r − 1): α² products per tile and channel pair where
# direct convolution needs m²·r² (F(4×4, 3×3): 36 for 144, F(4×4, 5×5): 64 for 400). The sum
# over c is one GEMM per transform point ξ (α² of them): M[ξ] (tiles × og) = V[ξ] (tiles × cg)
# · U[ξ] (cg × og). Input tiles are read from the padded channels-last plane (as the implicit
# drivers), the transforms run over the channels, the fastest axis. The weights' transform
# G w Gᵀ is one GEMM over all kernels (w ↦ G w Gᵀ as an α² × r² matrix). Backward data is the
# same computation on dy with the flipped, transposed kernel and padding r − 1 − pad; backward
# weight is the gradient of the forward map: dU[ξ] += V[ξ]ᵀ·(A dY Aᵀ)[ξ], dw = Gᵀ dU G.
# The matrices come from Toom-Cook interpolation at the points 0, −1, 1, 1/2, −2 (α = 6) and
# 0, −1, 1, 1/2, −2, 2, −1/2 (α = 8), the points Barabasz et al. (2018) found most accurate.
# Against direct convolution in float64 (32 input channels, normal data), a float32 output of
# any pass is off by up to about 2·10⁻⁶ (F(4×4, 3×3)) and 4·10⁻⁶ (F(4×4, 5×5)) times Σ|w·x| at
# that output, where Caffe's im2col + GEMM is off by up to 3·10⁻⁷ (tests/test_conv_algorithms.py
# pins these). F(2×2, 5×5) was off by 5·10⁻⁷, but its 36 products per 4 outputs made
# CIFAR-10-quick's 5 × 5 convolutions 1.8x slower (benchmarks/RESULTS.md).
_WINOGRAD_TILES = 192         # tiles a batch of images aims at (one GEMM per point and batch)


@njit(cache=True)
def winograd_tile(kernel):
    """The output tile m of the Winograd drivers for an r × r kernel (0: none; the GPU's winograd drivers are its im2col drivers)"""
    if kernel == 3:
        return 4
    if kernel == 5:
        return 4
    return 0


@njit(cache=True)
def _winograd_sizes(cin, cout, in_h, in_w, pad_h, pad_w, r, m):
    """(out_h, out_w, th, tw, hpt, wpt, nb): outputs, tiles per axis, the padded plane that
    holds every tile's input, and images per batch."""
    alpha = m + r - 1
    out_h = in_h + 2 * pad_h - r + 1
    out_w = in_w + 2 * pad_w - r + 1
    th, tw = (out_h + m - 1) // m, (out_w + m - 1) // m
    tiles = max(th * tw, 1)
    nb = max(1, min(_WINOGRAD_TILES // tiles, (1 << 18) // (alpha * alpha * tiles * (cin + cout))))
    return out_h, out_w, th, tw, th * m + r - 1, tw * m + r - 1, nb


@njit(cache=True)
def _winograd_run_size(cin, cout, in_h, in_w, pad_h, pad_w, r, m, group):
    """Elements of one run's slice: the input and output planes (_to_phases), V, M, a transform
    scratch of α rows and the weight gradient's sums (α²·cin·cout·group, cin and cout per group)."""
    alpha = m + r - 1
    out_h, out_w, th, tw, hpt, wpt, nb = _winograd_sizes(cin, cout, in_h, in_w, pad_h, pad_w, r, m)
    tiles = nb * th * tw
    xrow, yrow = m * ((wpt + m - 1) // m) * cin, m * tw * cout
    return (hpt * xrow + th * m * yrow + alpha * alpha * tiles * (cin + cout)
            + alpha * max(xrow, yrow) + group * alpha * alpha * cin * cout)


@njit(cache=True)
def winograd_workspace(channels, num_output, group, shape, kernel, pad, stride, dilation, nchunks):
    """Workspace elements of the winograd drivers for nchunks runs (stride 1, no dilation, a square 3 × 3 or 5 × 5 kernel; the GPU's winograd drivers are its im2col drivers and need nchunks·channels·kernel_count·out_count)"""
    r = kernel[0]
    m = winograd_tile(r)
    alpha = m + r - 1
    cg, og = channels // group, num_output // group
    out_h = shape[0] + 2 * pad[0] - r + 1
    out_w = shape[1] + 2 * pad[1] - r + 1
    forward = _winograd_run_size(cg, og, shape[0], shape[1], pad[0], pad[1], r, m, group)
    back = _winograd_run_size(og, cg, out_h, out_w, r - 1 - pad[0], r - 1 - pad[1], r, m, group)
    return (2 * group * alpha * alpha * cg * og + alpha * alpha * r * r
            + max(nchunks, 1) * max(forward, back))


@njit(cache=True)
def _winograd_kron(kmat, m, r, flip):
    """kmat[ξ·r² + k·r + l] = G[i, k]·G[j, l] (ξ = i·α + j): the map w ↦ G w Gᵀ of an r × r kernel
    as an α² × r² matrix (flip: of the kernel turned by 180°, w[r − 1 − k, r − 1 − l]); m = 4."""
    alpha = m + r - 1
    g = np.array(_G6) if r == 3 else np.array(_G8)
    rr = r * r
    for i in range(alpha):
        for j in range(alpha):
            for k in range(r):
                for l in range(r):
                    col = rr - 1 - (k * r + l) if flip else k * r + l
                    kmat[(i * alpha + j) * rr + col] = g[i * r + k] * g[j * r + l]


@njit(cache=True)
def _winograd_weights(w, u, kmat, scratch, group, og, cg, r, alpha, mode):
    """One GEMM per group with kmat (_winograd_kron): _FORWARD: u[gr][ξ][c][o] = (G w[gr·og + o,
    c] Gᵀ)[ξ]; _BACKWARD_DATA: u[gr][ξ][o][c] = the same of the flipped kernel (kmat flipped);
    _BACKWARD_WEIGHT: w[gr·og + o, c] += Gᵀ u[gr][ξ][c][o] G. scratch: α²·og·cg elements."""
    a2, rr, f = alpha * alpha, r * r, og * cg
    for gr in range(group):
        wg = w[gr * f * rr:(gr + 1) * f * rr]
        ug = u[gr * a2 * f:(gr + 1) * a2 * f]
        if mode == _BACKWARD_WEIGHT:          # scratch[ξ][o][c] = u[ξ][c][o]; w += scratchᵀ kmat
            for xi in range(a2):
                _transpose_into(ug[xi * f:], cg, og, og, scratch[xi * f:], cg, w[:0], 0)
            _gemm(True, False, f, rr, a2, 1.0, scratch, f, kmat, rr, 1.0, wg, rr)
        elif mode == _BACKWARD_DATA:
            _gemm(False, True, a2, f, rr, 1.0, kmat, rr, wg, rr, 0.0, ug, f)
        else:                                 # scratch[ξ][o][c], then u[ξ][c][o]
            _gemm(False, True, a2, f, rr, 1.0, kmat, rr, wg, rr, 0.0, scratch, f)
            for xi in range(a2):
                _transpose_into(scratch[xi * f:], og, cg, cg, ug[xi * f:], og, w[:0], 0)


def _toom_cook(m, r):
    """(Aᵀ (m × α), G (α × r), Bᵀ (α × α)) as nested lists, by Toom-Cook at the finite points p
    and ∞: Aᵀ[i, j] = p_j^i; G[j, k] = p_j^k / Π_{l≠j}(p_j − p_l); Bᵀ[j] the coefficients of
    Π_{l≠j}(x − p_l), low first; the point ∞ gives Aᵀ[m − 1, α − 1] = 1, G[α − 1, r − 1] = 1 and
    the coefficients of Π_l (x − p_l). In plain Python, for the constant tuples below (the
    transforms' compiled code then drops the zero and unit coefficients)."""
    alpha = m + r - 1
    n = alpha - 1
    p = [0.0, -1.0, 1.0, 0.5, -2.0, 2.0, -0.5][:n]
    at = [[p[j] ** i if j < n else float(i == m - 1) for j in range(alpha)] for i in range(m)]
    g = [[(p[j] ** k / math.prod(p[j] - p[l] for l in range(n) if l != j)) if j < n
          else float(k == r - 1) for k in range(r)] for j in range(alpha)]
    bt = []
    for j in range(alpha):
        poly = [1.0]
        for l in range(n):
            if l != j:
                poly = [(poly[e - 1] if e else 0.0) - p[l] * (poly[e] if e < len(poly) else 0.0)
                        for e in range(len(poly) + 1)]
        bt.append(poly + [0.0] * (alpha - len(poly)))
    return at, g, bt


_BT6 = tuple(v for row in _toom_cook(4, 3)[2] for v in row)      # F(4×4, 3×3)'s Bᵀ (6 × 6)
_AT6 = tuple(v for row in _toom_cook(4, 3)[0] for v in row)      # ... and Aᵀ (4 × 6)
_BT8 = tuple(v for row in _toom_cook(4, 5)[2] for v in row)      # F(4×4, 5×5)'s Bᵀ (8 × 8)
_AT8 = tuple(v for row in _toom_cook(4, 5)[0] for v in row)      # ... and Aᵀ (4 × 8)
_G6 = tuple(v for row in _toom_cook(4, 3)[1] for v in row)       # F(4×4, 3×3)'s G (6 × 3)
_G8 = tuple(v for row in _toom_cook(4, 5)[1] for v in row)       # F(4×4, 5×5)'s G (8 × 5)
# The transforms' fast-math flags let the compiler drop the zero coefficients' terms (0·x is
# only 0 without NaN and infinity) and fuse multiply-adds; sums are not reordered.
_EXACT_ZEROS = {"nnan", "ninf", "nsz", "contract"}


@njit(cache=True, fastmath=_EXACT_ZEROS)
def _bt_rows(src, so, si, sj, dst, do, sd, n, alpha):
    """dst[do + a·sd + c] = Σ_{j<α} Bᵀ[a, j]·src[s_j + c] for a < α (6 or 8), c < n, where s_j =
    so + (j mod 4)·si + (j div 4)·sj (sj = 4·si: evenly spaced rows; else the columns of a
    _to_phases plane); one pass over c, the α inputs in registers, Bᵀ's entries compiled in."""
    t = dst.dtype.type
    s0, s1, s2, s3, s4, s5 = u64(so), u64(so + si), u64(so + 2 * si), u64(so + 3 * si), u64(so + sj), u64(so + si + sj)
    d0, d1, d2, d3, d4, d5 = u64(do), u64(do + sd), u64(do + 2 * sd), u64(do + 3 * sd), u64(do + 4 * sd), u64(do + 5 * sd)
    if alpha == 6:
        b = _BT6
        for c in range(u64(n)):
            x0, x1, x2, x3, x4, x5 = src[s0 + c], src[s1 + c], src[s2 + c], src[s3 + c], src[s4 + c], src[s5 + c]
            dst[d0 + c] = t(b[0]) * x0 + t(b[1]) * x1 + t(b[2]) * x2 + t(b[3]) * x3 + t(b[4]) * x4 + t(b[5]) * x5
            dst[d1 + c] = t(b[6]) * x0 + t(b[7]) * x1 + t(b[8]) * x2 + t(b[9]) * x3 + t(b[10]) * x4 + t(b[11]) * x5
            dst[d2 + c] = t(b[12]) * x0 + t(b[13]) * x1 + t(b[14]) * x2 + t(b[15]) * x3 + t(b[16]) * x4 + t(b[17]) * x5
            dst[d3 + c] = t(b[18]) * x0 + t(b[19]) * x1 + t(b[20]) * x2 + t(b[21]) * x3 + t(b[22]) * x4 + t(b[23]) * x5
            dst[d4 + c] = t(b[24]) * x0 + t(b[25]) * x1 + t(b[26]) * x2 + t(b[27]) * x3 + t(b[28]) * x4 + t(b[29]) * x5
            dst[d5 + c] = t(b[30]) * x0 + t(b[31]) * x1 + t(b[32]) * x2 + t(b[33]) * x3 + t(b[34]) * x4 + t(b[35]) * x5
        return
    b = _BT8
    s6, s7 = u64(so + 2 * si + sj), u64(so + 3 * si + sj)
    d6, d7 = u64(do + 6 * sd), u64(do + 7 * sd)
    for c in range(u64(n)):
        x0, x1, x2, x3, x4, x5 = src[s0 + c], src[s1 + c], src[s2 + c], src[s3 + c], src[s4 + c], src[s5 + c]
        x6, x7 = src[s6 + c], src[s7 + c]
        dst[d0 + c] = (t(b[0]) * x0 + t(b[1]) * x1 + t(b[2]) * x2 + t(b[3]) * x3 + t(b[4]) * x4 + t(b[5]) * x5
                       + t(b[6]) * x6 + t(b[7]) * x7)
        dst[d1 + c] = (t(b[8]) * x0 + t(b[9]) * x1 + t(b[10]) * x2 + t(b[11]) * x3 + t(b[12]) * x4 + t(b[13]) * x5
                       + t(b[14]) * x6 + t(b[15]) * x7)
        dst[d2 + c] = (t(b[16]) * x0 + t(b[17]) * x1 + t(b[18]) * x2 + t(b[19]) * x3 + t(b[20]) * x4 + t(b[21]) * x5
                       + t(b[22]) * x6 + t(b[23]) * x7)
        dst[d3 + c] = (t(b[24]) * x0 + t(b[25]) * x1 + t(b[26]) * x2 + t(b[27]) * x3 + t(b[28]) * x4 + t(b[29]) * x5
                       + t(b[30]) * x6 + t(b[31]) * x7)
        dst[d4 + c] = (t(b[32]) * x0 + t(b[33]) * x1 + t(b[34]) * x2 + t(b[35]) * x3 + t(b[36]) * x4 + t(b[37]) * x5
                       + t(b[38]) * x6 + t(b[39]) * x7)
        dst[d5 + c] = (t(b[40]) * x0 + t(b[41]) * x1 + t(b[42]) * x2 + t(b[43]) * x3 + t(b[44]) * x4 + t(b[45]) * x5
                       + t(b[46]) * x6 + t(b[47]) * x7)
        dst[d6 + c] = (t(b[48]) * x0 + t(b[49]) * x1 + t(b[50]) * x2 + t(b[51]) * x3 + t(b[52]) * x4 + t(b[53]) * x5
                       + t(b[54]) * x6 + t(b[55]) * x7)
        dst[d7 + c] = (t(b[56]) * x0 + t(b[57]) * x1 + t(b[58]) * x2 + t(b[59]) * x3 + t(b[60]) * x4 + t(b[61]) * x5
                       + t(b[62]) * x6 + t(b[63]) * x7)


@njit(cache=True, fastmath=_EXACT_ZEROS)
def _at_rows(src, so, si, dst, do, sd, n, alpha):
    """dst[do + a·sd + c] = Σ_{i<α} Aᵀ[a, i]·src[so + i·si + c] for a < 4, c < n (α 6 or 8)."""
    t = dst.dtype.type
    s0, s1, s2, s3, s4, s5 = u64(so), u64(so + si), u64(so + 2 * si), u64(so + 3 * si), u64(so + 4 * si), u64(so + 5 * si)
    d0, d1, d2, d3 = u64(do), u64(do + sd), u64(do + 2 * sd), u64(do + 3 * sd)
    if alpha == 6:
        a = _AT6
        for c in range(u64(n)):
            x0, x1, x2, x3, x4, x5 = src[s0 + c], src[s1 + c], src[s2 + c], src[s3 + c], src[s4 + c], src[s5 + c]
            dst[d0 + c] = t(a[0]) * x0 + t(a[1]) * x1 + t(a[2]) * x2 + t(a[3]) * x3 + t(a[4]) * x4 + t(a[5]) * x5
            dst[d1 + c] = t(a[6]) * x0 + t(a[7]) * x1 + t(a[8]) * x2 + t(a[9]) * x3 + t(a[10]) * x4 + t(a[11]) * x5
            dst[d2 + c] = t(a[12]) * x0 + t(a[13]) * x1 + t(a[14]) * x2 + t(a[15]) * x3 + t(a[16]) * x4 + t(a[17]) * x5
            dst[d3 + c] = t(a[18]) * x0 + t(a[19]) * x1 + t(a[20]) * x2 + t(a[21]) * x3 + t(a[22]) * x4 + t(a[23]) * x5
        return
    a = _AT8
    s6, s7 = u64(so + 6 * si), u64(so + 7 * si)
    for c in range(u64(n)):
        x0, x1, x2, x3, x4, x5 = src[s0 + c], src[s1 + c], src[s2 + c], src[s3 + c], src[s4 + c], src[s5 + c]
        x6, x7 = src[s6 + c], src[s7 + c]
        dst[d0 + c] = (t(a[0]) * x0 + t(a[1]) * x1 + t(a[2]) * x2 + t(a[3]) * x3 + t(a[4]) * x4 + t(a[5]) * x5
                       + t(a[6]) * x6 + t(a[7]) * x7)
        dst[d1 + c] = (t(a[8]) * x0 + t(a[9]) * x1 + t(a[10]) * x2 + t(a[11]) * x3 + t(a[12]) * x4 + t(a[13]) * x5
                       + t(a[14]) * x6 + t(a[15]) * x7)
        dst[d2 + c] = (t(a[16]) * x0 + t(a[17]) * x1 + t(a[18]) * x2 + t(a[19]) * x3 + t(a[20]) * x4 + t(a[21]) * x5
                       + t(a[22]) * x6 + t(a[23]) * x7)
        dst[d3 + c] = (t(a[24]) * x0 + t(a[25]) * x1 + t(a[26]) * x2 + t(a[27]) * x3 + t(a[28]) * x4 + t(a[29]) * x5
                       + t(a[30]) * x6 + t(a[31]) * x7)


@njit(cache=True, fastmath=_EXACT_ZEROS)
def _at_cols(src, so, si, dst, do, sd, n, alpha):
    """dst[do + i·sd + c] = Σ_{a<4} Aᵀ[a, i]·src[so + a·si + c] for i < α (6 or 8), c < n (the
    transpose of _at_rows' map)."""
    t = dst.dtype.type
    s0, s1, s2, s3 = u64(so), u64(so + si), u64(so + 2 * si), u64(so + 3 * si)
    d0, d1, d2, d3, d4, d5 = u64(do), u64(do + sd), u64(do + 2 * sd), u64(do + 3 * sd), u64(do + 4 * sd), u64(do + 5 * sd)
    if alpha == 6:
        a = _AT6
        for c in range(u64(n)):
            x0, x1, x2, x3 = src[s0 + c], src[s1 + c], src[s2 + c], src[s3 + c]
            dst[d0 + c] = t(a[0]) * x0 + t(a[6]) * x1 + t(a[12]) * x2 + t(a[18]) * x3
            dst[d1 + c] = t(a[1]) * x0 + t(a[7]) * x1 + t(a[13]) * x2 + t(a[19]) * x3
            dst[d2 + c] = t(a[2]) * x0 + t(a[8]) * x1 + t(a[14]) * x2 + t(a[20]) * x3
            dst[d3 + c] = t(a[3]) * x0 + t(a[9]) * x1 + t(a[15]) * x2 + t(a[21]) * x3
            dst[d4 + c] = t(a[4]) * x0 + t(a[10]) * x1 + t(a[16]) * x2 + t(a[22]) * x3
            dst[d5 + c] = t(a[5]) * x0 + t(a[11]) * x1 + t(a[17]) * x2 + t(a[23]) * x3
        return
    a = _AT8
    d6, d7 = u64(do + 6 * sd), u64(do + 7 * sd)
    for c in range(u64(n)):
        x0, x1, x2, x3 = src[s0 + c], src[s1 + c], src[s2 + c], src[s3 + c]
        dst[d0 + c] = t(a[0]) * x0 + t(a[8]) * x1 + t(a[16]) * x2 + t(a[24]) * x3
        dst[d1 + c] = t(a[1]) * x0 + t(a[9]) * x1 + t(a[17]) * x2 + t(a[25]) * x3
        dst[d2 + c] = t(a[2]) * x0 + t(a[10]) * x1 + t(a[18]) * x2 + t(a[26]) * x3
        dst[d3 + c] = t(a[3]) * x0 + t(a[11]) * x1 + t(a[19]) * x2 + t(a[27]) * x3
        dst[d4 + c] = t(a[4]) * x0 + t(a[12]) * x1 + t(a[20]) * x2 + t(a[28]) * x3
        dst[d5 + c] = t(a[5]) * x0 + t(a[13]) * x1 + t(a[21]) * x2 + t(a[29]) * x3
        dst[d6 + c] = t(a[6]) * x0 + t(a[14]) * x1 + t(a[22]) * x2 + t(a[30]) * x3
        dst[d7 + c] = t(a[7]) * x0 + t(a[15]) * x1 + t(a[23]) * x2 + t(a[31]) * x3


@njit(cache=True)
def _winograd_run(weight, src, aux, u, b, dst, work, lo, hi, cin, cout, group, in_h, in_w, pad_h,
                  pad_w, r, m):
    """The images [lo, hi) of a winograd driver with this run's slice. Not weight: dst =
    conv(src; u) + b (src cin·group channels of in_h × in_w, dst cout·group channels, u
    [gr][ξ][cin][cout]); weight: the run's dU sums ([gr][ξ][cin][cout], the slice's end) from
    src = x and aux = dy. Per image: the padded input plane xt and the output plane yt (th·m ×
    tw·m), channels-last with columns split by phase (_to_phases); per row of tiles, each
    transform's first stage runs along whole rows, its second along the row of tiles (n =
    tw·channels): v[ξ][t] = (Bᵀ d B)[ξ] (and dy's mm[ξ][t] = (A dY Aᵀ)[ξ]), then α² GEMMs per
    batch, then yt = Aᵀ M A (m = 4)."""
    alpha = m + r - 1
    a2 = alpha * alpha
    out_h, out_w, th, tw, hpt, wpt, nb = _winograd_sizes(cin, cout, in_h, in_w, pad_h, pad_w, r, m)
    per_image = th * tw
    tiles = nb * per_image
    in_count, pixels = in_h * in_w, out_h * out_w
    wq = (wpt + m - 1) // m
    xrow, yrow = m * wq * cin, m * tw * cout       # one row of xt, of yt
    none = np.int64(0)          # no padding (not 0: numba would compile _to_phases again for it)
    at_ = 0
    xt = work[at_:at_ + hpt * xrow]
    at_ += hpt * xrow
    yt = work[at_:at_ + th * m * yrow]
    at_ += th * m * yrow
    v = work[at_:at_ + a2 * tiles * cin]
    at_ += a2 * tiles * cin
    mm = work[at_:at_ + a2 * tiles * cout]
    at_ += a2 * tiles * cout
    big = alpha * max(xrow, yrow)
    tmp = work[at_:at_ + big]
    acc = work[at_ + big:at_ + big + group * a2 * cin * cout]
    xt[:] = 0
    yt[:] = 0
    if weight:
        acc[:] = 0
    for gr in range(group):
        ug = u[gr * a2 * cin * cout:(gr + 1) * a2 * cin * cout]
        for n0 in range(lo, hi, nb):
            n1 = min(n0 + nb, hi)
            count = (n1 - n0) * per_image
            for n in range(n0, n1):
                x_at = (n * group * cin + gr * cin) * in_count
                y_at = (n * group * cout + gr * cout) * pixels
                _to_phases(src[x_at:x_at + cin * in_count], cin, in_h, in_w, pad_h, pad_w, wq, xt)
                if weight:
                    _to_phases(aux[y_at:y_at + cout * pixels], cout, out_h, out_w, none, none, tw, yt)
                for ti in range(th):
                    t0 = (n - n0) * per_image + ti * tw
                    # tmp[a] = Σ_i Bᵀ[a, i]·(row m·ti + i), then v[a·α + b][t0 + tj] = Σ_j
                    # Bᵀ[b, j]·tmp[a] at column m·tj + j, for the whole row of tiles at once
                    _bt_rows(xt, ti * m * xrow, xrow, m * xrow, tmp, 0, xrow, xrow, alpha)
                    for a in range(alpha):
                        _bt_rows(tmp, a * xrow, wq * cin, cin, v, (a * alpha * tiles + t0) * cin,
                                 tiles * cin, tw * cin, alpha)
                    if weight:                  # mm[i·α + j][t0 + tj] = (A dY Aᵀ)[i, j]
                        _at_cols(yt, ti * m * yrow, yrow, tmp, 0, yrow, yrow, alpha)
                        for i in range(alpha):
                            _at_cols(tmp, i * yrow, tw * cout, mm, (i * alpha * tiles + t0) * cout,
                                     tiles * cout, tw * cout, alpha)
            for xi in range(a2):
                if weight:
                    _gemm(True, False, cin, cout, count, 1.0, v[xi * tiles * cin:], cin,
                          mm[xi * tiles * cout:], cout, 1.0, acc[(gr * a2 + xi) * cin * cout:], cout)
                else:
                    _gemm(False, False, count, cout, cin, 1.0, v[xi * tiles * cin:], cin,
                          ug[xi * cin * cout:(xi + 1) * cin * cout], cout, 0.0,
                          mm[xi * tiles * cout:], cout)
            if weight:
                continue
            for n in range(n0, n1):
                for ti in range(th):
                    t0 = (n - n0) * per_image + ti * tw
                    # tmp[a][p] = Σ_b Aᵀ[p, b]·M[a·α + b] over the row of tiles, then the yt rows
                    # m·ti + p' = Σ_a Aᵀ[p', a]·tmp[a]
                    for a in range(alpha):
                        _at_rows(mm, (a * alpha * tiles + t0) * cout, tiles * cout, tmp, a * yrow,
                                 tw * cout, tw * cout, alpha)
                    _at_rows(tmp, 0, yrow, yt, ti * m * yrow, yrow, yrow, alpha)
                y_at = (n * group * cout + gr * cout) * pixels
                _from_phases(yt, cout, out_h, out_w, tw, dst[y_at:y_at + cout * pixels], b, gr * cout)


@njit(cache=True, parallel=True)
def _winograd_batch(mode, a, w, b, c, work, num, channels, num_output, group, shape, kernel, pad,
                    stride, dilation, nchunks):
    """Every winograd driver: the weights transformed (flipped for backward data), then num
    images in nchunks runs, run k with its own slice k; the weight gradient's run sums are
    transformed back and added into c in run order."""
    r = kernel[0]
    m = winograd_tile(r)
    if (m == 0 or kernel[1] != r or stride[0] != 1 or stride[1] != 1 or dilation[0] != 1
            or dilation[1] != 1 or pad[0] > r - 1 or pad[1] > r - 1):
        raise ValueError("the winograd drivers need stride 1, no dilation, pad < r and an r × r "
                         "kernel, r 3 or 5")
    alpha = m + r - 1
    a2 = alpha * alpha
    runs = nchunks if nchunks > 1 else 1
    cg, og = channels // group, num_output // group
    out_h = shape[0] + 2 * pad[0] - r + 1
    out_w = shape[1] + 2 * pad[1] - r + 1
    usize = group * a2 * cg * og
    if mode == _BACKWARD_DATA:       # the forward convolution of dy with the flipped kernel
        cin, cout, in_h, in_w, ph, pw = og, cg, out_h, out_w, r - 1 - pad[0], r - 1 - pad[1]
    else:
        cin, cout, in_h, in_w, ph, pw = cg, og, shape[0], shape[1], pad[0], pad[1]
    size = max(_winograd_run_size(cg, og, shape[0], shape[1], pad[0], pad[1], r, m, group),
               _winograd_run_size(og, cg, out_h, out_w, r - 1 - pad[0], r - 1 - pad[1], r, m, group))
    u = work[:usize]                 # then kmat (α² × r²), a scratch of usize, the runs' slices
    kmat = work[usize:usize + a2 * r * r]
    scratch = work[usize + a2 * r * r:2 * usize + a2 * r * r]
    at = 2 * usize + a2 * r * r
    _winograd_kron(kmat, m, r, mode == _BACKWARD_DATA)
    weight = mode == _BACKWARD_WEIGHT
    if not weight:
        _winograd_weights(w, u, kmat, scratch, group, og, cg, r, alpha, mode)
    src, aux = (w, a) if weight else (a, a[:0])
    if runs == 1:
        _winograd_run(weight, src, aux, u, b, c, work[at:at + size], np.int64(0), num, cin, cout, group,
                      in_h, in_w, ph, pw, r, m)
    else:
        for k in prange(runs):
            lo, hi = _run(k, num, runs)
            _winograd_run(weight, src, aux, u, b, c, work[at + k * size:at + (k + 1) * size],
                          lo, hi, cin, cout, group, in_h, in_w, ph, pw, r, m)
    if weight:                       # the runs' dU summed in run order, then w += Gᵀ dU G
        acc = at + _winograd_run_size(cin, cout, in_h, in_w, ph, pw, r, m, group) - usize
        total = work[acc:acc + usize]
        for k in range(1, runs):
            total += work[acc + k * size:acc + k * size + usize]
        _winograd_weights(c, total, kmat, scratch, group, og, cg, r, alpha, mode)


def winograd_forward(x, w, b, y, work, num, channels, num_output, group, shape, kernel, pad, stride,
                     dilation, nchunks):
    """conv_forward by Winograd's minimal filtering (2 spatial axes, stride 1, no dilation, an r × r kernel, r 3 or 5): y[n, o] = Σ_{c in o's group, k} w[o, c, k]·x[n, c, q − pad + k] + b[o] (no bias when b is empty); work: winograd_workspace(...) elements"""
    _winograd_batch(_FORWARD, x, w, b, y, work, num, channels, num_output, group, shape,
                    kernel, pad, stride, dilation, nchunks)


def winograd_backward_data(dy, w, b, dx, work, num, channels, num_output, group, shape, kernel, pad,
                           stride, dilation, nchunks):
    """conv_backward_data by Winograd's minimal filtering (the flipped kernel over dy): dx = the adjoint of the convolution applied to dy, + b[c] over the input channels (none when b is empty)"""
    _winograd_batch(_BACKWARD_DATA, dy, w, b, dx, work, num, channels, num_output, group,
                    shape, kernel, pad, stride, dilation, nchunks)


def winograd_backward_weight(x, dy, dw, work, num, channels, num_output, group, shape, kernel, pad,
                             stride, dilation, nchunks):
    """conv_backward_weight by Winograd's minimal filtering: dw[g] += Σ_n dy[n, g]·im2col(x[n])[g]ᵀ per group, as the gradient of the Winograd forward (accumulates; the runs' sums added in run order)"""
    _winograd_batch(_BACKWARD_WEIGHT, dy, x, x[:0], dw, work, num, channels, num_output,
                    group, shape, kernel, pad, stride, dilation, nchunks)
