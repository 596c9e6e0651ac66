"""GPU loss / accuracy kernels. Labels are flat float arrays holding integer values (one per (o, i))."""
import math

import numpy as np
from numba import cuda, float64

from ._launch import MAX_THREADS, REDUCE_BLOCKS, grid_1d, grid_stride, launch_1d
from ._reduce import tree_sum

FLT_MIN = 1.17549435e-38
LOG_THRESHOLD = 1e-20       # Caffe's kLOG_THRESHOLD (MultinomialLogisticLoss, InfogainLoss)


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


# --------------------------------------------------------------------------- log losses
# One block-partial reduction kernel (_sums) for SoftmaxWithLoss, MultinomialLogisticLoss,
# InfogainLoss (_LOG, _INFOGAIN) and SigmoidCrossEntropyLoss (_SIGMOID_CE), as on the CPU.
_LOG, _INFOGAIN, _SIGMOID_CE = range(3)


@cuda.jit(device=True)
def _log_term(op, prob, label, h, p, channels, inner, has_ignore, ignore_label, floor):
    """(loss, valid, bad) at position p: _LOG −log max(p[label], floor); _INFOGAIN
    −Σ_k h[label, k]·log max(p[k], floor)"""
    l = _label_at(label, p, has_ignore, ignore_label, channels)
    if l == -2:
        return 0.0, 0.0, 1.0
    if l < 0:
        return 0.0, 0.0, 0.0
    o = p // inner
    i = p - o * inner
    s = 0.0
    if op == _LOG:
        q = float64(prob[(o * channels + l) * inner + i])
        if q < floor:
            q = floor
        s = -math.log(q)
    else:
        base = o * channels * inner + i
        for k in range(channels):
            q = float64(prob[base + k * inner])
            if q < floor:
                q = floor
            s -= float64(h[l * channels + k]) * math.log(q)
    return s, 1.0, 0.0


@cuda.jit(device=True)
def _sigmoid_ce_term(x, target, j, has_ignore, ignore_label):
    """(loss, valid, bad) at value j: −x·(t − [x >= 0]) + log(1 + e^−|x|)"""
    t = float64(target[j])
    if t != t:
        return 0.0, 0.0, 1.0
    if has_ignore and abs(t) < 2147483648.0 and int(t) == ignore_label:
        return 0.0, 0.0, 0.0
    if t < 0 or t > 1:
        return 0.0, 0.0, 1.0
    xv = float64(x[j])
    positive = 1.0 if xv >= 0 else 0.0
    return -(xv * (t - positive) - math.log1p(math.exp(xv - 2.0 * xv * positive))), 1.0, 0.0


@cuda.jit
def _sums_kernel(op, a, b, h, n, channels, inner, has_ignore, ignore_label, floor,
                 loss_part, valid_part, bad_part):
    """Kernel (grid-stride, per-block partials) of _sums"""
    sm_loss = cuda.shared.array(MAX_THREADS, float64)
    sm_valid = cuda.shared.array(MAX_THREADS, float64)
    sm_bad = cuda.shared.array(MAX_THREADS, float64)
    tid = cuda.threadIdx.x
    s = 0.0
    v = 0.0
    c = 0.0
    for p in range(cuda.grid(1), n, cuda.gridsize(1)):
        if op == _SIGMOID_CE:
            ds, dv, dc = _sigmoid_ce_term(a, b, p, has_ignore, ignore_label)
        else:
            ds, dv, dc = _log_term(op, a, b, h, p, channels, inner, has_ignore, ignore_label, floor)
        s += ds
        v += dv
        c += dc
    sm_loss[tid] = s
    sm_valid[tid] = v
    sm_bad[tid] = c
    tree_sum(sm_loss, tid)
    tree_sum(sm_valid, tid)
    tree_sum(sm_bad, tid)
    if tid == 0:
        loss_part[cuda.blockIdx.x] = sm_loss[0]
        valid_part[cuda.blockIdx.x] = sm_valid[0]
        bad_part[cuda.blockIdx.x] = sm_bad[0]


def _sums(op, a, b, h, n, channels, inner, has_ignore, ignore_label, floor):
    """(Σ loss, valid count, bad label count) of the loss ``op`` over n positions"""
    blocks, threads = grid_1d(n, REDUCE_BLOCKS)
    loss_part = cuda.device_array(blocks, dtype=np.float64)
    valid_part = cuda.device_array(blocks, dtype=np.float64)
    bad_part = cuda.device_array(blocks, dtype=np.float64)
    _sums_kernel[blocks, threads](op, a, b, h, n, channels, inner, bool(has_ignore),
                                  int(ignore_label), floor, loss_part, valid_part, bad_part)
    return (float(loss_part.copy_to_host().sum()), int(round(valid_part.copy_to_host().sum())),
            int(round(bad_part.copy_to_host().sum())))


def softmax_loss_forward(prob, label, outer, channels, inner, has_ignore, ignore_label):
    """(Σ −log(max(prob[label], FLT_MIN)), valid count, bad label count): ignored labels are
    skipped; labels outside [0, channels) and NaN are counted as bad and left out"""
    return _sums(_LOG, prob, label, prob, outer * inner, channels, inner, has_ignore,
                 ignore_label, FLT_MIN)


@cuda.jit
def _class_backward(op, prob, label, h, dx, outer, channels, inner, has_ignore, ignore_label, scale):
    """Kernel (grid-stride): _LOG scale·(prob − onehot(label)); _INFOGAIN
    scale·(prob·Σ_k h[label, k] − h[label, :]); all channels 0 at ignored and bad positions"""
    for p in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        o = p // inner
        i = p - o * inner
        base = o * channels * inner + i
        l = _label_at(label, p, has_ignore, ignore_label, channels)
        if l < 0:
            for c in range(channels):
                dx[base + c * inner] = 0
        elif op == _LOG:
            for c in range(channels):
                k = base + c * inner
                dx[k] = scale * prob[k]
            k = base + l * inner
            dx[k] = scale * (prob[k] - 1)
        else:
            row = 0.0
            for c in range(channels):
                row += float64(h[l * channels + c])
            for c in range(channels):
                k = base + c * inner
                dx[k] = scale * (prob[k] * row - h[l * channels + c])


def softmax_loss_backward(prob, label, dx, outer, channels, inner, has_ignore, ignore_label, scale):
    """dx = scale·(prob − onehot(label)); all channels of ignored or out-of-range positions get 0"""
    launch_1d(_class_backward, outer * inner)(
        _LOG, prob, label, prob, dx, outer, channels, inner, bool(has_ignore), int(ignore_label), scale)


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


# --------------------------------------------------------------------------- catalogue losses
def multinomial_logistic_loss_forward(prob, label, num, dim):
    """(Σ −log(max(prob[label], 1e-20)), bad label count): one label per row of a (num, dim)
    array of probabilities; labels outside [0, dim) and NaN are counted as bad and left out"""
    loss, _, bad = _sums(_LOG, prob, label, prob, num, dim, 1, False, 0, LOG_THRESHOLD)
    return loss, bad


@grid_stride(lambda num: num)
@cuda.jit
def multinomial_logistic_loss_backward(prob, label, dx, num, dim, scale):
    """dx = 0 except dx[i, label_i] = scale / max(prob[i, label_i], 1e-20)"""
    for r in range(cuda.grid(1), num, cuda.gridsize(1)):
        base = r * dim
        for j in range(dim):
            dx[base + j] = 0
        l = _label_at(label, r, False, 0, dim)
        if l >= 0:
            q = float64(prob[base + l])
            if q < LOG_THRESHOLD:
                q = LOG_THRESHOLD
            dx[base + l] = scale / q


def infogain_loss_forward(prob, label, h, outer, channels, inner, has_ignore, ignore_label):
    """(−Σ_k h[label, k]·log(max(prob[k], 1e-20)) summed over positions, valid count, bad label
    count): h is (channels, channels); ignored labels are skipped, out-of-range and NaN are bad"""
    return _sums(_INFOGAIN, prob, label, h, outer * inner, channels, inner, has_ignore,
                 ignore_label, LOG_THRESHOLD)


def infogain_loss_backward(prob, label, h, dx, outer, channels, inner, has_ignore, ignore_label,
                           scale):
    """dx = scale·(prob·Σ_k h[label, k] − h[label, :]); all channels of ignored or out-of-range
    positions get 0"""
    launch_1d(_class_backward, outer * inner)(
        _INFOGAIN, prob, label, h, dx, outer, channels, inner, bool(has_ignore), int(ignore_label),
        scale)


def sigmoid_cross_entropy_loss_forward(x, target, has_ignore, ignore_label):
    """(Σ −x·(t − [x >= 0]) + log(1 + e^−|x|), valid count, bad target count): targets whose
    int(t) is ignore_label are skipped; NaN and targets outside [0, 1] are bad and left out"""
    return _sums(_SIGMOID_CE, x, target, x, x.size, 1, 1, has_ignore, ignore_label, 0.0)


@grid_stride("x")
@cuda.jit
def sigmoid_cross_entropy_loss_backward(x, target, dx, has_ignore, ignore_label, scale):
    """dx = scale·(σ(x) − t); 0 where int(t) is ignore_label"""
    for j in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        t = float64(target[j])
        if has_ignore and abs(t) < 2147483648.0 and int(t) == ignore_label:
            dx[j] = 0
            continue
        v = float64(x[j])
        if v >= 0:
            sig = 1.0 / (1.0 + math.exp(-v))
        else:
            e = math.exp(v)
            sig = e / (1.0 + e)
        dx[j] = scale * (sig - t)


@cuda.jit
def _hinge_loss_forward(x, label, margins, num, dim, bad):
    """Kernel (grid-stride over rows, atomics): margins of hinge_loss_forward; bad[0] += 1 per bad label"""
    for r in range(cuda.grid(1), num, cuda.gridsize(1)):
        base = r * dim
        l = _label_at(label, r, False, 0, dim)
        if l < 0:
            cuda.atomic.add(bad, 0, 1.0)
            for j in range(dim):
                margins[base + j] = 0
            continue
        for j in range(dim):
            v = 1.0 - x[base + j] if j == l else 1.0 + x[base + j]
            margins[base + j] = v if v > 0 else 0.0


def hinge_loss_forward(x, label, margins, num, dim):
    """margins = max(0, 1 − t·x) with t = +1 at the row's label and −1 elsewhere (a row with
    a bad label gets 0); returns the count of labels outside [0, dim) or NaN"""
    bad = cuda.to_device(np.zeros(1, dtype=np.float64))
    launch_1d(_hinge_loss_forward, num)(x, label, margins, num, dim, bad)
    return int(round(bad.copy_to_host()[0]))


@grid_stride(lambda num: num)
@cuda.jit
def hinge_loss_backward(margins, label, dx, num, dim, l2, scale):
    """dx = scale·(2·margin if l2 else sign(margin)), negated at the row's label"""
    for r in range(cuda.grid(1), num, cuda.gridsize(1)):
        base = r * dim
        l = _label_at(label, r, False, 0, dim)
        for j in range(dim):
            m = margins[base + j]
            g = 2.0 * m if l2 else (1.0 if m > 0 else 0.0)
            dx[base + j] = scale * (-g if j == l else g)


@cuda.jit
def _contrastive_loss_forward(diff, sim, dist_sq, num, dim, margin, legacy, loss_part, bad_part):
    """Kernel (grid-stride over rows, per-block partials): dist_sq, and partials of the loss and bad count"""
    sm_loss = cuda.shared.array(MAX_THREADS, float64)
    sm_bad = cuda.shared.array(MAX_THREADS, float64)
    tid = cuda.threadIdx.x
    s = 0.0
    b = 0.0
    for r in range(cuda.grid(1), num, cuda.gridsize(1)):
        base = r * dim
        d2 = 0.0
        for j in range(dim):
            v = float64(diff[base + j])
            d2 += v * v
        dist_sq[r] = d2
        y = sim[r]
        if y != y:
            b += 1.0
        elif int(y) != 0:
            s += d2
        elif legacy:
            s += max(margin - d2, 0.0)
        else:
            m = max(margin - math.sqrt(d2), 0.0)
            s += m * m
    sm_loss[tid] = s
    sm_bad[tid] = b
    tree_sum(sm_loss, tid)
    tree_sum(sm_bad, tid)
    if tid == 0:
        loss_part[cuda.blockIdx.x] = sm_loss[0]
        bad_part[cuda.blockIdx.x] = sm_bad[0]


def contrastive_loss_forward(diff, sim, dist_sq, num, dim, margin, legacy):
    """dist_sq[i] = Σ_j diff[i, j]² over the rows of a (num, dim) array; returns (Σ_i d_i² if
    similar else max(margin − d_i, 0)² (legacy: max(margin − d_i², 0)), bad): row i is similar
    when int(sim_i) != 0; a NaN sim is bad and left out"""
    blocks, threads = grid_1d(num, REDUCE_BLOCKS)
    loss_part = cuda.device_array(blocks, dtype=np.float64)
    bad_part = cuda.device_array(blocks, dtype=np.float64)
    _contrastive_loss_forward[blocks, threads](diff, sim, dist_sq, num, dim, margin, bool(legacy),
                                               loss_part, bad_part)
    return float(loss_part.copy_to_host().sum()), int(round(bad_part.copy_to_host().sum()))


@grid_stride(lambda num, dim: num * dim)
@cuda.jit
def contrastive_loss_backward(diff, dist_sq, sim, dx, num, dim, margin, legacy, alpha):
    """dx[i] = alpha·diff[i] for similar rows; for the others −alpha·diff[i] (legacy) or
    −alpha·(margin − d)/(d + 1e-4)·diff[i] (Caffe's 1e-4), where margin − d (legacy margin − d²)
    is > 0, else 0"""
    for k in range(cuda.grid(1), num * dim, cuda.gridsize(1)):
        r = k // dim
        coef = alpha
        active = True
        if int(sim[r]) == 0:
            d2 = float64(dist_sq[r])
            if legacy:
                m = margin - d2
                coef = -alpha
            else:
                d = math.sqrt(d2)
                m = margin - d
                coef = -alpha * m / (d + 1e-4)
            active = m > 0
        dx[k] = coef * diff[k] if active else 0.0
