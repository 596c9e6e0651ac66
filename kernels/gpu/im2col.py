"""GPU im2col family (Caffe's layout). Mirrors kernels/cpu/im2col.py: one image, data flat C·H·W,
col flat (C·kh·kw) rows × (out_h·out_w) columns; col and data never alias. im2col runs one thread
per col entry; col2im one thread per pixel, which gathers every col entry read from it (no atomics,
as Caffe's GPU col2im).

The convolution drivers launch, per image, the im2col kernel and one tiled GEMM per group
(kernels/gpu/blas.py; GPU kernels are not cached on disk, so calling across modules is safe),
and add the bias with the math vocabulary; the depthwise drivers are direct kernels."""
import numpy as np
from numba import cuda, float64

from . import blas as _blas
from . import math as _math
from ._launch import MAX_THREADS, grid_stride, launch_1d, launch_blocks
from ._reduce import tree_sum


@cuda.jit(device=True)
def _out_size(size, kernel, pad, stride, dilation):
    """Outputs along one axis: (size + 2·pad − (dilation·(kernel − 1) + 1)) // stride + 1, at least 0."""
    n = (size + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1
    return n if n > 0 else 0


@grid_stride("col")
@cuda.jit
def im2col(data, channels, height, width, kernel_h, kernel_w, pad_h, pad_w,
           stride_h, stride_w, dilation_h, dilation_w, col):
    """col[(c·kh + ki)·kw + kj, oh·out_w + ow] = data[c, oh·sh − ph + ki·dh, ow·sw − pw + kj·dw] (0 in the padding); one image, flat"""
    out_h = _out_size(height, kernel_h, pad_h, stride_h, dilation_h)
    out_w = _out_size(width, kernel_w, pad_w, stride_w, dilation_w)
    for e in range(cuda.grid(1), channels * kernel_h * kernel_w * out_h * out_w, cuda.gridsize(1)):
        ow = e % out_w
        t = e // out_w
        oh = t % out_h
        t //= out_h
        kj = t % kernel_w
        t //= kernel_w
        ki = t % kernel_h
        c = t // kernel_h
        h = oh * stride_h - pad_h + ki * dilation_h
        w = ow * stride_w - pad_w + kj * dilation_w
        if 0 <= h < height and 0 <= w < width:
            col[e] = data[(c * height + h) * width + w]
        else:
            col[e] = 0


@grid_stride("data")
@cuda.jit
def col2im(col, channels, height, width, kernel_h, kernel_w, pad_h, pad_w,
           stride_h, stride_w, dilation_h, dilation_w, data):
    """data = 0, then data[c, oh·sh − ph + ki·dh, ow·sw − pw + kj·dw] += col[(c·kh + ki)·kw + kj, oh·out_w + ow] (im2col's adjoint)"""
    out_h = _out_size(height, kernel_h, pad_h, stride_h, dilation_h)
    out_w = _out_size(width, kernel_w, pad_w, stride_w, dilation_w)
    for e in range(cuda.grid(1), channels * height * width, cuda.gridsize(1)):
        w = e % width
        t = e // width
        h = t % height
        c = t // height
        v = 0.0
        for ki in range(kernel_h):
            sh = h + pad_h - ki * dilation_h          # = oh·stride_h for the output row reading h
            if sh < 0:
                break
            oh = sh // stride_h
            if oh * stride_h != sh or oh >= out_h:
                continue
            for kj in range(kernel_w):
                sw = w + pad_w - kj * dilation_w
                if sw < 0:
                    break
                ow = sw // stride_w
                if ow * stride_w != sw or ow >= out_w:
                    continue
                v += col[(((c * kernel_h + ki) * kernel_w + kj) * out_h + oh) * out_w + ow]
        data[e] = v


# --------------------------------------------------------------------------- N spatial axes
# geometry: one int64 device array [shape | kernel | pad | stride | dilation | out], nd entries each.
@cuda.jit
def _im2col_nd(data, channels, nd, geometry, image_count, kernel_count, out_count, col):
    """Kernel (grid-stride over col entries): col = im2col_nd(data)"""
    for e in range(cuda.grid(1), channels * kernel_count * out_count, cuda.gridsize(1)):
        q = e % out_count
        r = e // out_count
        c = r // kernel_count
        k = r - c * kernel_count
        index = 0
        scale = 1
        inside = True
        for a in range(nd - 1, -1, -1):
            size = geometry[a]
            ka = k % geometry[nd + a]
            k //= geometry[nd + a]
            qa = q % geometry[5 * nd + a]
            q //= geometry[5 * nd + a]
            p = qa * geometry[3 * nd + a] - geometry[2 * nd + a] + ka * geometry[4 * nd + a]
            if p < 0 or p >= size:
                inside = False
            index += p * scale
            scale *= size
        if inside:
            col[e] = data[c * image_count + index]
        else:
            col[e] = 0


@cuda.jit
def _col2im_nd(col, channels, nd, geometry, image_count, kernel_count, out_count, data):
    """Kernel (grid-stride over pixels): data = col2im_nd(col), each pixel gathering its col entries"""
    for e in range(cuda.grid(1), channels * image_count, cuda.gridsize(1)):
        c = e // image_count
        v = 0.0
        for k in range(kernel_count):
            pixel = e - c * image_count
            rest = k
            q = 0
            scale = 1
            hit = True
            for a in range(nd - 1, -1, -1):
                xa = pixel % geometry[a]
                pixel //= geometry[a]
                ka = rest % geometry[nd + a]
                rest //= geometry[nd + a]
                s = xa + geometry[2 * nd + a] - ka * geometry[4 * nd + a]   # = qa·stride
                stride = geometry[3 * nd + a]
                qa = s // stride
                if s < 0 or qa * stride != s or qa >= geometry[5 * nd + a]:
                    hit = False
                    break
                q += qa * scale
                scale *= geometry[5 * nd + a]
            if hit:
                v += col[(c * kernel_count + k) * out_count + q]
        data[e] = v


def _host_ints(a):
    """A host int64 array from a list, a numpy array or a device array."""
    if hasattr(a, "copy_to_host"):
        a = a.copy_to_host()
    return np.asarray(a, dtype=np.int64).ravel()


def _geometry(shape, kernel, pad, stride, dilation):
    """(device geometry array, nd, image_count, kernel_count, out_count)."""
    shape, kernel, pad, stride, dilation = (_host_ints(v) for v in (shape, kernel, pad, stride, dilation))
    out = np.maximum((shape + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1, 0)
    geometry = cuda.to_device(np.concatenate([shape, kernel, pad, stride, dilation, out]))
    return (geometry, shape.size, int(np.prod(shape)), int(np.prod(kernel)), int(np.prod(out)))


def im2col_nd(data, channels, shape, kernel, pad, stride, dilation, col):
    """im2col over len(shape) spatial axes (int arrays shape/kernel/pad/stride/dilation): col[c·K + k, q] = data[c, q·stride − pad + k·dilation] (0 in the padding); one image, flat"""
    geometry, nd, image_count, kernel_count, out_count = _geometry(shape, kernel, pad, stride, dilation)
    n = channels * kernel_count * out_count
    if n > 0:
        launch_1d(_im2col_nd, n)(data, channels, nd, geometry, image_count, kernel_count, out_count, col)


def col2im_nd(col, channels, shape, kernel, pad, stride, dilation, data):
    """data = 0, then data[c, q·stride − pad + k·dilation] += col[c·K + k, q] over len(shape) spatial axes (im2col_nd's adjoint)"""
    geometry, nd, image_count, kernel_count, out_count = _geometry(shape, kernel, pad, stride, dilation)
    n = channels * image_count
    if n > 0:
        launch_1d(_col2im_nd, n)(col, channels, nd, geometry, image_count, kernel_count, out_count, data)


# --------------------------------------------------------------------------- batches of images
# Mirrors the CPU drivers: images one after the other, geometry as int arrays (host or device),
# one im2col/col2im launch per image and one tiled GEMM (kernels/gpu/blas.py) per image and group.
# nchunks only sizes the CPU's workspaces; the GPU uses the first image's slice of col.
def _geometry_of(shape, kernel, pad, stride, dilation):
    """Host int tuples (shape, kernel, pad, stride, dilation, out) and (in_count, out_count,
    kernel_count, is_1x1)."""
    shape, kernel, pad, stride, dilation = (tuple(int(v) for v in _host_ints(a))
                                            for a in (shape, kernel, pad, stride, dilation))
    out = tuple(max((n + 2 * p - (d * (k - 1) + 1)) // s + 1, 0)
                for n, k, p, s, d in zip(shape, kernel, pad, stride, dilation))
    is_1x1 = all(k == 1 and s == 1 and p == 0 for k, s, p in zip(kernel, stride, pad))
    counts = (int(np.prod(shape, dtype=np.int64)), int(np.prod(out, dtype=np.int64)),
              int(np.prod(kernel, dtype=np.int64)), is_1x1)
    return (shape, kernel, pad, stride, dilation, out), counts


def _col_transfer(data, channels, geometry, force_nd, col, to_col):
    """to_col: col = im2col(data), else data = col2im(col); one image, 2-D or N-D."""
    shape, kernel, pad, stride, dilation, _ = geometry
    if len(shape) == 2 and not force_nd:
        args = (channels, shape[0], shape[1], kernel[0], kernel[1], pad[0], pad[1], stride[0],
                stride[1], dilation[0], dilation[1])
        if to_col:
            im2col(data, *args, col)
        else:
            col2im(col, *args, data)
    elif to_col:
        im2col_nd(data, channels, shape, kernel, pad, stride, dilation, col)
    else:
        col2im_nd(col, channels, shape, kernel, pad, stride, dilation, data)


def im2col_images(data, col, num, channels, shape, kernel, pad, stride, dilation, force_nd, nchunks):
    """col[n] = im2col(data[n]) for num images (Caffe's Im2col layer), 2-D unless force_nd or another axis count"""
    geometry, (in_count, out_count, kernel_count, _) = _geometry_of(shape, kernel, pad, stride, dilation)
    image, cols = channels * in_count, channels * kernel_count * out_count
    if image == 0 or cols == 0:
        return
    for n in range(num):
        _col_transfer(data[n * image:(n + 1) * image], channels, geometry, force_nd,
                      col[n * cols:(n + 1) * cols], True)


def col2im_images(col, data, num, channels, shape, kernel, pad, stride, dilation, force_nd, nchunks):
    """data[n] = col2im(col[n]) for num images (im2col_images' adjoint: data is overwritten)"""
    geometry, (in_count, out_count, kernel_count, _) = _geometry_of(shape, kernel, pad, stride, dilation)
    image, cols = channels * in_count, channels * kernel_count * out_count
    if image == 0:
        return
    if cols == 0:
        _fill(data, 0.0)
        return
    for n in range(num):
        _col_transfer(data[n * image:(n + 1) * image], channels, geometry, force_nd,
                      col[n * cols:(n + 1) * cols], False)


# --------------------------------------------------------------------------- convolution drivers
@grid_stride("x")
@cuda.jit
def _fill(x, value):
    """x[:] = value"""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        x[i] = value


def _views(num, channels, num_output, group, counts):
    in_count, out_count, kernel_count, is_1x1 = counts
    og = num_output // group
    kdim = channels // group * kernel_count
    return og, kdim, channels * in_count, num_output * out_count, out_count, is_1x1


def _gemm_groups(group, trans_a, a, a_shape, trans_b, b, b_shape, beta, c, c_shape):
    """Per group g: c[g] = op(a[g])·op(b[g]) + beta·c[g], the flat operands cut into one block
    per group of the stored (rows, columns) shapes given."""
    sa, sb, sc = (rows * cols for rows, cols in (a_shape, b_shape, c_shape))
    for g in range(group):
        _blas.gemm(trans_a, trans_b, 1.0, a[g * sa:(g + 1) * sa].reshape(a_shape),
                   b[g * sb:(g + 1) * sb].reshape(b_shape), beta, c[g * sc:(g + 1) * sc].reshape(c_shape))


def conv_forward(x, w, b, y, col, num, channels, num_output, group, shape, kernel, pad, stride,
                 dilation, force_nd, nchunks):
    """y[n, o] = Σ_{c in o's group, k} w[o, c, k]·x[n, c, q·stride − pad + k·dilation] + b[o] (no bias when b is empty); col: nchunks·channels·kernel_count·out_count workspace"""
    geometry, counts = _geometry_of(shape, kernel, pad, stride, dilation)
    og, kdim, image, out_image, out_count, is_1x1 = _views(num, channels, num_output, group, counts)
    if num == 0 or out_image == 0:
        return
    if kdim == 0:
        _fill(y, 0.0)
    for n in range(num if kdim > 0 else 0):
        src = x[n * image:(n + 1) * image]
        if not is_1x1:
            _col_transfer(src, channels, geometry, force_nd, col[:kdim * group * out_count], True)
            src = col
        _gemm_groups(group, False, w, (og, kdim), False, src, (kdim, out_count), 0.0,
                     y[n * out_image:(n + 1) * out_image], (og, out_count))
    if b.size > 0:
        _math.channel_add(y, b, y, num, num_output, out_count)


def conv_backward_data(dy, w, b, dx, col, num, channels, num_output, group, shape, kernel, pad,
                       stride, dilation, force_nd, nchunks):
    """dx = the adjoint of conv_forward applied to dy: dx[n] = col2im(w[g]ᵀ·dy[n, g] per group), + b[c] over the input channels (none when b is empty; Deconvolution's forward)"""
    geometry, counts = _geometry_of(shape, kernel, pad, stride, dilation)
    og, kdim, image, out_image, out_count, is_1x1 = _views(num, channels, num_output, group, counts)
    if num == 0 or image == 0:
        return
    if kdim == 0 or out_count == 0:
        _fill(dx, 0.0)
    for n in range(num if kdim > 0 and out_count > 0 else 0):
        dxn = dx[n * image:(n + 1) * image]
        _gemm_groups(group, True, w, (og, kdim), False, dy[n * out_image:(n + 1) * out_image],
                     (og, out_count), 0.0, dxn if is_1x1 else col, (kdim, out_count))
        if not is_1x1:
            _col_transfer(dxn, channels, geometry, force_nd, col[:kdim * group * out_count], False)
    if b.size > 0:
        _math.channel_add(dx, b, dx, num, channels, counts[0])


def conv_backward_weight(x, dy, dw, col, part, num, channels, num_output, group, shape, kernel, pad,
                         stride, dilation, force_nd, nchunks):
    """dw[g] += Σ_n dy[n, g]·im2col(x[n])[g]ᵀ per group (accumulates); part: 2·nchunks·dw.size workspace of per-run sums (the GPU adds into dw directly), col as conv_forward"""
    geometry, counts = _geometry_of(shape, kernel, pad, stride, dilation)
    og, kdim, image, out_image, out_count, is_1x1 = _views(num, channels, num_output, group, counts)
    for n in range(num if kdim > 0 and out_count > 0 else 0):
        src = x[n * image:(n + 1) * image]
        if not is_1x1:
            _col_transfer(src, channels, geometry, force_nd, col[:kdim * group * out_count], True)
            src = col
        _gemm_groups(group, False, dy[n * out_image:(n + 1) * out_image], (og, out_count), True, src,
                     (kdim, out_count), 1.0, dw, (og, kdim))


# --------------------------------------------------------------------------- depthwise (direct)
# One thread per output (forward), per input pixel gathering from the outputs that read it
# (backward data, no atomics), and one block per (channel, tap) summing over images and outputs
# (backward weight). geometry: (h, w, kh, kw, ph, pw, sh, sw, dh, dw, out_h, out_w) as ints.
def depthwise_workspace(shape, kernel, pad, stride, dilation):
    """Workspace elements one run of the depthwise kernels needs (on the CPU a padded plane and a wide output plane; the GPU kernels need none)"""
    return 0


def _depthwise_geometry(shape, kernel, pad, stride, dilation):
    (shape, kernel, pad, stride, dilation, out), _ = _geometry_of(shape, kernel, pad, stride, dilation)
    return (shape[0], shape[1], kernel[0], kernel[1], pad[0], pad[1], stride[0], stride[1],
            dilation[0], dilation[1], out[0], out[1])


@cuda.jit(device=True)
def _unravel(e, rows, cols, channels):
    """(column, row, plane, channel) of flat index e over planes of rows × cols (plane = n·channels + c)."""
    j = e % cols
    t = e // cols
    return j, t % rows, t // rows, (t // rows) % channels


@cuda.jit
def _depthwise_forward(x, w, b, y, planes, channels, height, width, kh, kw, ph, pw, sh, sw, dh, dw,
                       out_h, out_w):
    """Kernel (grid-stride over outputs): y = x ⋆ w + b per (n, c) plane"""
    for e in range(cuda.grid(1), planes * out_h * out_w, cuda.gridsize(1)):
        ow, oh, p, c = _unravel(e, out_h, out_w, channels)
        v = b[c] if b.size > 0 else 0.0
        for ki in range(kh):
            h = oh * sh - ph + ki * dh
            if 0 <= h < height:
                for kj in range(kw):
                    iw = ow * sw - pw + kj * dw
                    if 0 <= iw < width:
                        v += w[c * kh * kw + ki * kw + kj] * x[(p * height + h) * width + iw]
        y[e] = v


@cuda.jit
def _depthwise_backward_data(dy, w, b, dx, planes, channels, height, width, kh, kw, ph, pw, sh, sw,
                             dh, dw, out_h, out_w):
    """Kernel (grid-stride over input pixels): dx = the adjoint of the depthwise forward applied to dy, + b"""
    for e in range(cuda.grid(1), planes * height * width, cuda.gridsize(1)):
        iw, h, p, c = _unravel(e, height, width, channels)
        v = b[c] if b.size > 0 else 0.0
        for ki in range(kh):
            s = h + ph - ki * dh                     # = oh·sh for an output row reading h
            oh = s // sh
            if s < 0 or oh * sh != s or oh >= out_h:
                continue
            for kj in range(kw):
                r = iw + pw - kj * dw
                ow = r // sw
                if r < 0 or ow * sw != r or ow >= out_w:
                    continue
                v += w[c * kh * kw + ki * kw + kj] * dy[(p * out_h + oh) * out_w + ow]
        dx[e] = v


@cuda.jit
def _depthwise_backward_weight(x, dy, dwt, num, channels, height, width, kh, kw, ph, pw, sh, sw,
                               dh, dw, out_h, out_w):
    """Kernel (block per (c, tap), block-stride; threads split images × outputs): dw[c, tap] += the correlation of dy and x"""
    sm = cuda.shared.array(MAX_THREADS, float64)
    tid = cuda.threadIdx.x
    taps = kh * kw
    for q in range(cuda.blockIdx.x, channels * taps, cuda.gridDim.x):
        c = q // taps
        ki = (q % taps) // kw
        kj = q % kw
        s = 0.0
        for e in range(tid, num * out_h * out_w, cuda.blockDim.x):
            ow = e % out_w
            t = e // out_w
            oh = t % out_h
            n = t // out_h
            h = oh * sh - ph + ki * dh
            iw = ow * sw - pw + kj * dw
            if 0 <= h < height and 0 <= iw < width:
                p = n * channels + c
                s += float64(dy[(p * out_h + oh) * out_w + ow]) * float64(x[(p * height + h) * width + iw])
        sm[tid] = s
        tree_sum(sm, tid)
        if tid == 0:
            dwt[q] += sm[0]
        cuda.syncthreads()                 # sm is written again for the next (c, tap)


def depthwise_forward(x, w, b, y, work, num, channels, shape, kernel, pad, stride, dilation, nchunks):
    """y[n, c] = Σ_{ki,kj} w[c, ki, kj]·x[n, c, oh·sh − ph + ki·dh, ow·sw − pw + kj·dw] + b[c] (0 in the padding; no bias when b is empty); 2-D, group == channels == num_output; work: nchunks·depthwise_workspace(...)"""
    g = _depthwise_geometry(shape, kernel, pad, stride, dilation)
    n = num * channels * g[10] * g[11]
    if n > 0:
        launch_1d(_depthwise_forward, n)(x, w, b, y, num * channels, channels, *g)


def depthwise_backward_data(dy, w, b, dx, work, num, channels, shape, kernel, pad, stride, dilation,
                            nchunks):
    """dx = depthwise_forward's adjoint applied to dy, + b[c] (none when b is empty; a depthwise Deconvolution's forward); shape is dx's spatial shape"""
    g = _depthwise_geometry(shape, kernel, pad, stride, dilation)
    n = num * channels * g[0] * g[1]
    if n > 0:
        launch_1d(_depthwise_backward_data, n)(dy, w, b, dx, num * channels, channels, *g)


def depthwise_backward_weight(x, dy, dw, work, num, channels, shape, kernel, pad, stride, dilation,
                              nchunks):
    """dw[c, ki, kj] += Σ_{n, oh, ow} dy[n, c, oh, ow]·x[n, c, oh·sh − ph + ki·dh, ow·sw − pw + kj·dw] (accumulates; float64 sums per channel); work as depthwise_forward"""
    g = _depthwise_geometry(shape, kernel, pad, stride, dilation)
    if channels * g[2] * g[3] > 0 and num * g[10] * g[11] > 0:
        launch_blocks(_depthwise_backward_weight, channels * g[2] * g[3], num * g[10] * g[11])(
            x, dy, dw, num, channels, *g)


# --------------------------------------------------------------------------- hwc and implicit
# The CPU's channels-last and implicit GEMM drivers exist for its BLAS; on the GPU they are the
# im2col drivers above (the same results), with the workspace those need.
def _im2col_work(channels, shape, kernel, pad, stride, dilation):
    _, (in_count, out_count, kernel_count, is_1x1) = _geometry_of(shape, kernel, pad, stride, dilation)
    return 0 if is_1x1 else channels * kernel_count * out_count


def hwc_workspace(channels, num_output, group, shape, kernel, pad, stride, dilation, nchunks):
    """Workspace elements of the hwc drivers for nchunks runs (the GPU's hwc drivers are its im2col drivers and need nchunks·channels·kernel_count·out_count)"""
    return max(nchunks, 1) * _im2col_work(channels, shape, kernel, pad, stride, dilation)


def implicit_workspace(channels, num_output, group, shape, kernel, pad, stride, dilation, nchunks):
    """Workspace elements of the implicit drivers for nchunks runs (stride 1 only; the GPU's implicit drivers are its im2col drivers and need nchunks·channels·kernel_count·out_count)"""
    return max(nchunks, 1) * _im2col_work(channels, shape, kernel, pad, stride, dilation)


def hwc_forward(x, w, b, y, work, num, channels, num_output, group, shape, kernel, pad, stride,
                dilation, nchunks):
    """conv_forward for 2 spatial axes through channels-last windows and transposed GEMMs: y[n, o] = Σ_{c in o's group, k} w[o, c, k]·x[n, c, q·stride − pad + k·dilation] + b[o] (no bias when b is empty); work: hwc_workspace(...) elements"""
    conv_forward(x, w, b, y, work, num, channels, num_output, group, shape, kernel, pad, stride,
                 dilation, False, nchunks)


def hwc_backward_data(dy, w, b, dx, work, num, channels, num_output, group, shape, kernel, pad,
                      stride, dilation, nchunks):
    """conv_backward_data through the hwc layout: dx = the adjoint of hwc_forward applied to dy, + b[c] over the input channels (none when b is empty)"""
    conv_backward_data(dy, w, b, dx, work, num, channels, num_output, group, shape, kernel, pad,
                       stride, dilation, False, nchunks)


def hwc_backward_weight(x, dy, dw, work, num, channels, num_output, group, shape, kernel, pad, stride,
                        dilation, nchunks):
    """conv_backward_weight through the hwc layout: dw[g] += Σ_n dy[n, g]·im2col(x[n])[g]ᵀ per group (accumulates; the runs' sums added in run order)"""
    conv_backward_weight(x, dy, dw, work, work[:0], num, channels, num_output, group, shape, kernel,
                         pad, stride, dilation, False, nchunks)


def implicit_forward(x, w, b, y, work, num, channels, num_output, group, shape, kernel, pad, stride,
                     dilation, nchunks):
    """conv_forward for 2 spatial axes and stride 1 as one GEMM per tap over the padded channels-last image, no im2col: y[n, o] = Σ_{c in o's group, k} w[o, c, k]·x[n, c, q − pad + k·dilation] + b[o] (no bias when b is empty); work: implicit_workspace(...) elements"""
    hwc_forward(x, w, b, y, work, num, channels, num_output, group, shape, kernel, pad, stride,
                dilation, nchunks)


def implicit_backward_data(dy, w, b, dx, work, num, channels, num_output, group, shape, kernel, pad,
                           stride, dilation, nchunks):
    """conv_backward_data through the implicit GEMMs (stride 1): dx = the adjoint of implicit_forward applied to dy, + b[c] over the input channels (none when b is empty)"""
    hwc_backward_data(dy, w, b, dx, work, num, channels, num_output, group, shape, kernel, pad,
                      stride, dilation, nchunks)


def implicit_backward_weight(x, dy, dw, work, num, channels, num_output, group, shape, kernel, pad,
                             stride, dilation, nchunks):
    """conv_backward_weight through the implicit GEMMs (stride 1): dw[g] += Σ_n dy[n, g]·im2col(x[n])[g]ᵀ per group (accumulates; the runs' sums added in run order)"""
    hwc_backward_weight(x, dy, dw, work, num, channels, num_output, group, shape, kernel, pad,
                        stride, dilation, nchunks)


def winograd_tile(kernel):
    """The output tile m of the Winograd drivers for an r × r kernel (0: none; the GPU's winograd drivers are its im2col drivers)"""
    return {3: 4, 5: 4}.get(int(kernel), 0)


def winograd_workspace(channels, num_output, group, shape, kernel, pad, stride, dilation, nchunks):
    """Workspace elements of the winograd drivers for nchunks runs (stride 1, no dilation, a square 3 × 3 or 5 × 5 kernel; the GPU's winograd drivers are its im2col drivers and need nchunks·channels·kernel_count·out_count)"""
    return max(nchunks, 1) * _im2col_work(channels, shape, kernel, pad, stride, dilation)


def winograd_forward(x, w, b, y, work, num, channels, num_output, group, shape, kernel, pad, stride,
                     dilation, nchunks):
    """conv_forward by Winograd's minimal filtering (2 spatial axes, stride 1, no dilation, an r × r kernel, r 3 or 5): y[n, o] = Σ_{c in o's group, k} w[o, c, k]·x[n, c, q − pad + k] + b[o] (no bias when b is empty); work: winograd_workspace(...) elements"""
    hwc_forward(x, w, b, y, work, num, channels, num_output, group, shape, kernel, pad, stride,
                dilation, nchunks)


def winograd_backward_data(dy, w, b, dx, work, num, channels, num_output, group, shape, kernel, pad,
                           stride, dilation, nchunks):
    """conv_backward_data by Winograd's minimal filtering (the flipped kernel over dy): dx = the adjoint of the convolution applied to dy, + b[c] over the input channels (none when b is empty)"""
    hwc_backward_data(dy, w, b, dx, work, num, channels, num_output, group, shape, kernel, pad,
                      stride, dilation, nchunks)


def winograd_backward_weight(x, dy, dw, work, num, channels, num_output, group, shape, kernel, pad,
                             stride, dilation, nchunks):
    """conv_backward_weight by Winograd's minimal filtering: dw[g] += Σ_n dy[n, g]·im2col(x[n])[g]ᵀ per group, as the gradient of the Winograd forward (accumulates; the runs' sums added in run order)"""
    hwc_backward_weight(x, dy, dw, work, num, channels, num_output, group, shape, kernel, pad,
                        stride, dilation, nchunks)
