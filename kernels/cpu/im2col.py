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
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba import uint64 as u64
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np import linalg as _linalg


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


# what a batch driver does (the mode argument of _batch)
_IM2COL, _COL2IM, _FORWARD, _BACKWARD_DATA, _BACKWARD_WEIGHT = 0, 1, 2, 3, 4


@njit(cache=True)
def _mode(mode, num):
    """mode as a run-time value (numba would otherwise compile the drivers once per constant)."""
    return mode + 0 * num


@njit(cache=True)
def _im2col_run(mode, a, c, lo, hi, channels, shape, kernel, pad, stride, dilation, force_nd):
    """_IM2COL: c[n] = im2col(a[n]); _COL2IM: c[n] = col2im(a[n]), for the images in [lo, hi)."""
    in_count, out_count, kernel_count, _ = _geometry(shape, kernel, pad, stride, dilation)
    image = channels * in_count
    cols = channels * kernel_count * out_count
    for n in range(lo, hi):
        if mode == _IM2COL:
            _col_transfer(a[n * image:(n + 1) * image], channels, in_count, shape, kernel, pad,
                          stride, dilation, force_nd, c[n * cols:(n + 1) * cols], True)
        else:
            _col_transfer(c[n * image:(n + 1) * image], channels, in_count, shape, kernel, pad,
                          stride, dilation, force_nd, a[n * cols:(n + 1) * cols], False)


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
                              col, True)
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
                              col, False)
        else:                                    # src = dy[n], dst = x[n]; acc += dy·colᵀ
            cols = dst
            if not is_1x1:
                _col_transfer(dst, channels, in_count, shape, kernel, pad, stride, dilation, force_nd,
                              col, True)
                cols = col
            into = acc if n == lo else tmp
            for g in range(group):
                np.dot(src[g * og * out_count:(g + 1) * og * out_count].reshape(og, out_count),
                       cols[g * kdim * out_count:(g + 1) * kdim * out_count].reshape(kdim, out_count).T,
                       into[g * og * kdim:(g + 1) * og * kdim].reshape(og, kdim))
            if n != lo:
                for i in range(acc.size):
                    acc[i] += tmp[i]
        if b.size > 0 and mode == _FORWARD:
            _add_channel_bias(dst, b, num_output, out_count)
        elif b.size > 0 and mode == _BACKWARD_DATA:
            _add_channel_bias(dst, b, channels, in_count)


@njit(cache=True)
def _add_partials(part, nchunks, dw, lo, hi):
    """dw[i] += Σ_k part[k·dw.size + i] for i in [lo, hi), summed in k order."""
    size = dw.size
    for i in range(lo, hi):
        s = dw[i]
        for k in range(nchunks):
            s += part[k * size + i]
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
    if runs == 1:
        _batch_run(mode, a, w, b, c, col[:cols], part[:size], part[size:2 * size], 0, num, channels,
                   num_output, group, shape, kernel, pad, stride, dilation, force_nd)
        if mode == _BACKWARD_WEIGHT:
            _add_partials(part, 1, c, 0, size)
        return
    for k in prange(runs):
        lo, hi = _run(k, num, runs)
        _batch_run(mode, a, w, b, c, col[k * cols:(k + 1) * cols], part[k * size:(k + 1) * size],
                   part[(runs + k) * size:(runs + k + 1) * size], lo, hi, channels, num_output, group,
                   shape, kernel, pad, stride, dilation, force_nd)
    if mode == _BACKWARD_WEIGHT:
        for k in prange(runs):
            _add_partials(part, runs, c, k * size // runs, (k + 1) * size // runs)


@njit(cache=True)
def im2col_images(data, col, num, channels, shape, kernel, pad, stride, dilation, force_nd, nchunks):
    """col[n] = im2col(data[n]) for num images (Caffe's Im2col layer), 2-D unless force_nd or another axis count"""
    none = data[:0]                     # no weights, bias, workspace; num_output and group unused
    _batch(_mode(_IM2COL, num), data, none, none, col, none, none, num, channels, num, num, shape,
           kernel, pad, stride, dilation, force_nd, nchunks)


@njit(cache=True)
def col2im_images(col, data, num, channels, shape, kernel, pad, stride, dilation, force_nd, nchunks):
    """data[n] = col2im(col[n]) for num images (im2col_images' adjoint: data is overwritten)"""
    none = data[:0]                     # as im2col_images
    _batch(_mode(_COL2IM, num), col, none, none, data, none, none, num, channels, num, num, shape,
           kernel, pad, stride, dilation, force_nd, nchunks)


@njit(cache=True)
def conv_forward(x, w, b, y, col, num, channels, num_output, group, shape, kernel, pad, stride,
                 dilation, force_nd, nchunks):
    """y[n, o] = Σ_{c in o's group, k} w[o, c, k]·x[n, c, q·stride − pad + k·dilation] + b[o] (no bias when b is empty); col: nchunks·channels·kernel_count·out_count workspace"""
    _batch(_mode(_FORWARD, num), x, w, b, y, col, col[:0], num, channels, num_output, group, shape,
           kernel, pad, stride, dilation, force_nd, nchunks)


@njit(cache=True)
def conv_backward_data(dy, w, b, dx, col, num, channels, num_output, group, shape, kernel, pad,
                       stride, dilation, force_nd, nchunks):
    """dx = the adjoint of conv_forward applied to dy: dx[n] = col2im(w[g]ᵀ·dy[n, g] per group), + b[c] over the input channels (none when b is empty; Deconvolution's forward)"""
    _batch(_mode(_BACKWARD_DATA, num), dy, w, b, dx, col, col[:0], num, channels, num_output, group,
           shape, kernel, pad, stride, dilation, force_nd, nchunks)


@njit(cache=True)
def conv_backward_weight(x, dy, dw, col, part, num, channels, num_output, group, shape, kernel, pad,
                         stride, dilation, force_nd, nchunks):
    """dw[g] += Σ_n dy[n, g]·im2col(x[n])[g]ᵀ per group (accumulates); part: 2·nchunks·dw.size workspace of per-run sums (the GPU adds into dw directly), col as conv_forward"""
    _batch(_mode(_BACKWARD_WEIGHT, num), dy, x, x[:0], dw, col, part, num, channels, num_output,
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
        _depthwise_run(mode, a, w, b, c, work[:size], 0, units, num, channels, shape, kernel, pad,
                       stride, dilation)
    else:
        for k in prange(nchunks):
            lo, hi = _run(k, units, nchunks)
            _depthwise_run(mode, a, w, b, c, work[k * size:(k + 1) * size], lo, hi, num, channels,
                           shape, kernel, pad, stride, dilation)


@njit(cache=True)
def depthwise_forward(x, w, b, y, work, num, channels, shape, kernel, pad, stride, dilation, nchunks):
    """y[n, c] = Σ_{ki,kj} w[c, ki, kj]·x[n, c, oh·sh − ph + ki·dh, ow·sw − pw + kj·dw] + b[c] (0 in the padding; no bias when b is empty); 2-D, group == channels == num_output; work: nchunks·depthwise_workspace(...)"""
    _depthwise_batch(_mode(_FORWARD, num), x, w, b, y, work, num, channels, shape, kernel, pad, stride,
                     dilation, nchunks)


@njit(cache=True)
def depthwise_backward_data(dy, w, b, dx, work, num, channels, shape, kernel, pad, stride, dilation,
                            nchunks):
    """dx = depthwise_forward's adjoint applied to dy, + b[c] (none when b is empty; a depthwise Deconvolution's forward); shape is dx's spatial shape"""
    _depthwise_batch(_mode(_BACKWARD_DATA, num), dy, w, b, dx, work, num, channels, shape, kernel, pad,
                     stride, dilation, nchunks)


@njit(cache=True)
def depthwise_backward_weight(x, dy, dw, work, num, channels, shape, kernel, pad, stride, dilation,
                              nchunks):
    """dw[c, ki, kj] += Σ_{n, oh, ow} dy[n, c, oh, ow]·x[n, c, oh·sh − ph + ki·dh, ow·sw − pw + kj·dw] (accumulates; float64 sums per channel); work as depthwise_forward"""
    _depthwise_batch(_mode(_BACKWARD_WEIGHT, num), dy, x, x[:0], dw, work, num, channels, shape, kernel,
                     pad, stride, dilation, nchunks)


# --------------------------------------------------------------------------- BLAS, every argument
@intrinsic
def _xgemm(typingctx, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """Row-major C (m × n, rows ldc apart) = alpha·op(A)·op(B) + beta·C through the BLAS that
    numba's np.dot calls (SciPy's, through numba's helper numba_xxgemm, which is resolved when
    the code is linked, so the caller caches): the operands are the arrays' data pointers, op(A)
    m × k with rows lda apart as stored, op(B) k × n with rows ldb apart. Unchecked: _gemm checks."""
    arrays = (a, b, c)
    if not all(isinstance(t, types.Array) for t in arrays):
        return None
    dtype = c.dtype
    if dtype not in (types.float32, types.float64) or a.dtype != dtype or b.dtype != dtype:
        return None
    sig = types.intc(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

    def codegen(context, builder, signature, args):
        _linalg.ensure_blas()
        char = ir.IntType(8)
        void_p = char.as_pointer()
        intp = cgutils.intp_t
        fnty = ir.FunctionType(ir.IntType(32), [char, char, char, intp, intp, intp, void_p, void_p,
                                                intp, void_p, intp, void_p, void_p, intp])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "numba_xxgemm")
        sa = signature.args

        def integer(i):
            return context.cast(builder, args[i], sa[i], types.intp)

        def flag(i):
            return builder.select(builder.icmp_unsigned("!=", integer(i), intp(0)),
                                  char(ord("t")), char(ord("n")))

        def scalar(i):
            value = context.cast(builder, args[i], sa[i], dtype)
            return builder.bitcast(cgutils.alloca_once_value(builder, value), void_p)

        def data(i):
            return builder.bitcast(context.make_array(sa[i])(context, builder, args[i]).data, void_p)
        kind = char(ord("s" if dtype == types.float32 else "d"))
        # row-major C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ
        return builder.call(fn, (kind, flag(1), flag(0), integer(3), integer(2), integer(4),
                                 scalar(5), data(8), integer(9), data(6), integer(7), scalar(10),
                                 data(11), integer(12)))
    return sig, codegen


@njit(cache=True)
def _gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """Row-major C (m × n, rows ldc apart, from c[0]) = alpha·op(A)·op(B) + beta·C, A and B
    stored from a[0] and b[0] with rows lda and ldb apart (op(A) = Aᵀ when trans_a: A stored
    k × m); the extents are checked against the arrays (flat, contiguous) before BLAS runs."""
    if m <= 0 or n <= 0:
        return
    if k <= 0:
        for i in range(m):
            for j in range(n):
                c[i * ldc + j] = beta * c[i * ldc + j] if beta != 0 else 0
        return
    rows_a, cols_a = (k, m) if trans_a else (m, k)
    rows_b, cols_b = (n, k) if trans_b else (k, n)
    if (lda < cols_a or ldb < cols_b or ldc < n or (rows_a - 1) * lda + cols_a > a.size
            or (rows_b - 1) * ldb + cols_b > b.size or (m - 1) * ldc + n > c.size):
        raise ValueError("_gemm: an operand is smaller than its extent")
    _xgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)


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
                    _transpose_into(dy, og, pixels, pixels, yt[(n - n0) * pixels * og:], og, b[:0], 0)
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
        _hwc_run(mode, a, w, b, c, wr, work[wsize:wsize + size], 0, num, channels, num_output,
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


@njit(cache=True)
def hwc_forward(x, w, b, y, work, num, channels, num_output, group, shape, kernel, pad, stride,
                dilation, nchunks):
    """conv_forward for 2 spatial axes through channels-last windows and transposed GEMMs: y[n, o] = Σ_{c in o's group, k} w[o, c, k]·x[n, c, q·stride − pad + k·dilation] + b[o] (no bias when b is empty); work: hwc_workspace(...) elements"""
    _hwc_batch(_mode(_FORWARD, num), x, w, b, y, work, num, channels, num_output, group, shape,
               kernel, pad, stride, dilation, nchunks)


@njit(cache=True)
def hwc_backward_data(dy, w, b, dx, work, num, channels, num_output, group, shape, kernel, pad,
                      stride, dilation, nchunks):
    """conv_backward_data through the hwc layout: dx = the adjoint of hwc_forward applied to dy, + b[c] over the input channels (none when b is empty)"""
    _hwc_batch(_mode(_BACKWARD_DATA, num), dy, w, b, dx, work, num, channels, num_output, group,
               shape, kernel, pad, stride, dilation, nchunks)


@njit(cache=True)
def hwc_backward_weight(x, dy, dw, work, num, channels, num_output, group, shape, kernel, pad, stride,
                        dilation, nchunks):
    """conv_backward_weight through the hwc layout: dw[g] += Σ_n dy[n, g]·im2col(x[n])[g]ᵀ per group (accumulates; the runs' sums added in run order)"""
    _hwc_batch(_mode(_BACKWARD_WEIGHT, num), dy, x, x[:0], dw, work, num, channels, num_output,
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
        _implicit_run(mode, a, w, b, c, wr, work[base:base + size], 0, num, channels, num_output,
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


@njit(cache=True)
def implicit_forward(x, w, b, y, work, num, channels, num_output, group, shape, kernel, pad, stride,
                     dilation, nchunks):
    """conv_forward for 2 spatial axes and stride 1 as one GEMM per tap over the padded channels-last image, no im2col: y[n, o] = Σ_{c in o's group, k} w[o, c, k]·x[n, c, q − pad + k·dilation] + b[o] (no bias when b is empty); work: implicit_workspace(...) elements"""
    _implicit_batch(_mode(_FORWARD, num), x, w, b, y, work, num, channels, num_output, group, shape,
                    kernel, pad, stride, dilation, nchunks)


@njit(cache=True)
def implicit_backward_data(dy, w, b, dx, work, num, channels, num_output, group, shape, kernel, pad,
                           stride, dilation, nchunks):
    """conv_backward_data through the implicit GEMMs (stride 1): dx = the adjoint of implicit_forward applied to dy, + b[c] over the input channels (none when b is empty)"""
    _implicit_batch(_mode(_BACKWARD_DATA, num), dy, w, b, dx, work, num, channels, num_output, group,
                    shape, kernel, pad, stride, dilation, nchunks)


@njit(cache=True)
def implicit_backward_weight(x, dy, dw, work, num, channels, num_output, group, shape, kernel, pad,
                             stride, dilation, nchunks):
    """conv_backward_weight through the implicit GEMMs (stride 1): dw[g] += Σ_n dy[n, g]·im2col(x[n])[g]ᵀ per group (accumulates; the runs' sums added in run order)"""
    _implicit_batch(_mode(_BACKWARD_WEIGHT, num), dy, x, x[:0], dw, work, num, channels, num_output,
                    group, shape, kernel, pad, stride, dilation, nchunks)
