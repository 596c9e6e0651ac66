"""GPU im2col family (Caffe's layout). Mirrors kernels/cpu/im2col.py: one image, data flat C·H·W,
col flat (C·kh·kw) rows × (out_h·out_w) columns; col and data never alias. im2col runs one thread
per col entry; col2im one thread per pixel, which gathers every col entry read from it (no atomics,
as Caffe's GPU col2im)."""
import numpy as np
from numba import cuda

from ._launch import grid_stride, launch_1d


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
