"""GPU loss / accuracy kernels. Labels are flat float arrays holding integer values (one per (o, i))."""
import math

import numpy as np
from numba import cuda, float64

from ._launch import MAX_THREADS, REDUCE_BLOCKS, grid_1d, launch_1d
from ._reduce import tree_sum

FLT_MIN = 1.17549435e-38


@cuda.jit(device=True)
def _label_at(label, p, has_ignore, ignore_label, channels):
    """The class index at position p; -1 for an ignored label, -2 for a bad one
    (outside [0, channels) or NaN: int(NaN) is 0 on a GPU, so NaN is tested first)."""
    if label[p] != label[p]:
        return -2
    l = int(label[p])
    if has_ignore and l == ignore_label:
        return -1
    if l < 0 or l >= channels:
        return -2
    return l


@cuda.jit
def _softmax_loss_forward(prob, label, outer, channels, inner, has_ignore, ignore_label,
                          loss_part, valid_part, bad_part):
    """Kernel (grid-stride, per-block partials): Σ −log(max(prob[label], FLT_MIN)), valid and bad counts"""
    sm_loss = cuda.shared.array(MAX_THREADS, float64)
    sm_valid = cuda.shared.array(MAX_THREADS, float64)
    sm_bad = cuda.shared.array(MAX_THREADS, float64)
    tid = cuda.threadIdx.x
    s = 0.0
    v = 0.0
    b = 0.0
    for p in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        l = _label_at(label, p, has_ignore, ignore_label, channels)
        if l == -2:
            b += 1.0
        if l < 0:
            continue
        o = p // inner
        i = p - o * inner
        q = float64(prob[(o * channels + l) * inner + i])
        if q < FLT_MIN:
            q = FLT_MIN
        s -= math.log(q)
        v += 1.0
    sm_loss[tid] = s
    sm_valid[tid] = v
    sm_bad[tid] = b
    tree_sum(sm_loss, tid)
    tree_sum(sm_valid, tid)
    tree_sum(sm_bad, tid)
    if tid == 0:
        loss_part[cuda.blockIdx.x] = sm_loss[0]
        valid_part[cuda.blockIdx.x] = sm_valid[0]
        bad_part[cuda.blockIdx.x] = sm_bad[0]


def softmax_loss_forward(prob, label, outer, channels, inner, has_ignore, ignore_label):
    """(Σ −log(max(prob[label], FLT_MIN)), valid count, bad label count): ignored labels are
    skipped; labels outside [0, channels) and NaN are counted as bad and left out"""
    blocks, threads = grid_1d(outer * inner, REDUCE_BLOCKS)
    loss_part = cuda.device_array(blocks, dtype=np.float64)
    valid_part = cuda.device_array(blocks, dtype=np.float64)
    bad_part = cuda.device_array(blocks, dtype=np.float64)
    _softmax_loss_forward[blocks, threads](prob, label, outer, channels, inner, bool(has_ignore),
                                           int(ignore_label), loss_part, valid_part, bad_part)
    return (float(loss_part.copy_to_host().sum()), int(round(valid_part.copy_to_host().sum())),
            int(round(bad_part.copy_to_host().sum())))


@cuda.jit
def _softmax_loss_backward(prob, label, dx, outer, channels, inner, has_ignore, ignore_label, scale):
    """Kernel (grid-stride): dx = scale·(prob − onehot(label)); all channels of ignored or out-of-range positions get 0"""
    for p in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        o = p // inner
        i = p - o * inner
        base = o * channels * inner + i
        l = _label_at(label, p, has_ignore, ignore_label, channels)
        if l < 0:
            for c in range(channels):
                dx[base + c * inner] = 0
        else:
            for c in range(channels):
                k = base + c * inner
                dx[k] = scale * prob[k]
            k = base + l * inner
            dx[k] = scale * (prob[k] - 1)


def softmax_loss_backward(prob, label, dx, outer, channels, inner, has_ignore, ignore_label, scale):
    """dx = scale·(prob − onehot(label)); all channels of ignored or out-of-range positions get 0"""
    launch_1d(_softmax_loss_backward, outer * inner)(
        prob, label, dx, outer, channels, inner, bool(has_ignore), int(ignore_label), scale)


@cuda.jit
def _zero2(a, b):
    """Kernel (grid-stride): a[:] = 0; b[:] = 0"""
    for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        a[i] = 0.0
        b[i] = 0.0


@cuda.jit
def _accuracy_forward(scores, label, outer, channels, inner, top_k, has_ignore, ignore_label,
                      class_correct, class_count, bad):
    """Kernel (grid-stride, atomics): class_count[l] += 1; class_correct[l] += [#{c : score[c] >= score[l]} <= top_k];
    bad[0] += 1 for an out-of-range or NaN label"""
    for p in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        l = _label_at(label, p, has_ignore, ignore_label, channels)
        if l == -2:
            cuda.atomic.add(bad, 0, 1.0)
        if l < 0:
            continue
        o = p // inner
        i = p - o * inner
        base = o * channels * inner + i
        t = scores[base + l * inner]
        better = 0
        for c in range(channels):
            if scores[base + c * inner] >= t:
                better += 1
        cuda.atomic.add(class_count, l, 1.0)
        if better <= top_k:
            cuda.atomic.add(class_correct, l, 1.0)


def accuracy_forward(scores, label, outer, channels, inner, top_k, has_ignore, ignore_label,
                     class_correct, class_count):
    """(correct, count, bad): correct iff #{c : score[c] >= score[label]} <= top_k; bad counts
    out-of-range (and NaN) labels, which are left out; zeroes then fills per-class correct/count"""
    launch_1d(_zero2, channels)(class_correct, class_count)
    bad = cuda.to_device(np.zeros(1, dtype=np.float64))
    launch_1d(_accuracy_forward, outer * inner)(
        scores, label, outer, channels, inner, int(top_k), bool(has_ignore), int(ignore_label),
        class_correct, class_count, bad)
    correct = class_correct.copy_to_host().sum()
    count = class_count.copy_to_host().sum()
    return int(round(correct)), int(round(count)), int(round(bad.copy_to_host()[0]))


@cuda.jit
def _euclidean_loss_forward(a, b, diff, partials):
    """Kernel (grid-stride, per-block partials): diff = a − b; partials of Σ diff²"""
    sm = cuda.shared.array(MAX_THREADS, float64)
    tid = cuda.threadIdx.x
    s = 0.0
    for j in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        diff[j] = a[j] - b[j]
        d = float64(diff[j])
        s += d * d
    sm[tid] = s
    tree_sum(sm, tid)
    if tid == 0:
        partials[cuda.blockIdx.x] = sm[0]


def euclidean_loss_forward(a, b, diff):
    """diff = a − b; returns Σ diff² (float64 accumulation)"""
    blocks, threads = grid_1d(a.size, REDUCE_BLOCKS)
    part = cuda.device_array(blocks, dtype=np.float64)
    _euclidean_loss_forward[blocks, threads](a, b, diff, part)
    return float(part.copy_to_host().sum())
