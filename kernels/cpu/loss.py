"""CPU loss / accuracy kernels. Labels are flat float arrays holding integer values (one per (o, i))."""
import numpy as np
from numba import njit, prange

FLT_MIN = 1.17549435e-38
# Its own copy of blas._nchunks (with smaller chunks: a position here costs a loop over the
# classes): an @njit helper stays in the module of the kernels calling it, since numba's
# on-disk cache is per file and would keep stale code after a change in another module.
_MAX_CHUNKS = 64
_CHUNK_MIN = 256


@njit(cache=True)
def _nchunks(n):
    """Partial-result count for n positions: clamp(n // _CHUNK_MIN, 1, _MAX_CHUNKS)."""
    c = n // _CHUNK_MIN
    if c < 1:
        c = 1
    if c > _MAX_CHUNKS:
        c = _MAX_CHUNKS
    return c


@njit(cache=True)
def _label_at(label, p, has_ignore, ignore_label, channels):
    """The class index at position p; -1 for an ignored label, -2 for a bad one
    (outside [0, channels) or NaN, whatever int(NaN) gives on this machine)."""
    if label[p] != label[p]:
        return -2
    l = int(label[p])
    if has_ignore and l == ignore_label:
        return -1
    if l < 0 or l >= channels:
        return -2
    return l


@njit(cache=True)
def _loss_chunk(prob, label, start, end, channels, inner, has_ignore, ignore_label):
    """(Σ −log max(p, FLT_MIN), valid, bad) over positions [start, end)."""
    s = 0.0
    v = 0
    b = 0
    for p in range(start, end):
        l = _label_at(label, p, has_ignore, ignore_label, channels)
        if l == -2:
            b += 1
        elif l >= 0:
            o = p // inner
            i = p - o * inner
            q = np.float64(prob[(o * channels + l) * inner + i])
            if q < FLT_MIN:
                q = FLT_MIN
            s -= np.log(q)
            v += 1
    return s, v, b


@njit(cache=True, parallel=True)
def softmax_loss_forward(prob, label, outer, channels, inner, has_ignore, ignore_label):
    """(Σ −log(max(prob[label], FLT_MIN)), valid count, bad label count): ignored labels are
    skipped; labels outside [0, channels) and NaN are counted as bad and left out"""
    n = outer * inner
    nc = _nchunks(n)
    loss_part = np.zeros(nc, dtype=np.float64)
    valid_part = np.zeros(nc, dtype=np.int64)
    bad_part = np.zeros(nc, dtype=np.int64)
    for k in prange(nc):
        s, v, b = _loss_chunk(prob, label, k * n // nc, (k + 1) * n // nc, channels, inner,
                              has_ignore, ignore_label)
        loss_part[k] = s
        valid_part[k] = v
        bad_part[k] = b
    return loss_part.sum(), valid_part.sum(), bad_part.sum()


@njit(cache=True, parallel=True)
def softmax_loss_backward(prob, label, dx, outer, channels, inner, has_ignore, ignore_label, scale):
    """dx = scale·(prob − onehot(label)); all channels of ignored or out-of-range positions get 0"""
    for p in prange(outer * inner):
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


@njit(cache=True, parallel=True)
def accuracy_forward(scores, label, outer, channels, inner, top_k, has_ignore, ignore_label,
                     class_correct, class_count):
    """(correct, count, bad): correct iff #{c : score[c] >= score[label]} <= top_k; bad counts
    out-of-range (and NaN) labels, which are left out; zeroes then fills per-class correct/count"""
    n = outer * inner
    nc = _nchunks(n)
    corr = np.zeros((nc, channels), dtype=np.float64)
    cnt = np.zeros((nc, channels), dtype=np.float64)
    bad = np.zeros(nc, dtype=np.int64)
    for k in prange(nc):
        for p in range(k * n // nc, (k + 1) * n // nc):
            l = _label_at(label, p, has_ignore, ignore_label, channels)
            if l == -2:
                bad[k] += 1
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
            cnt[k, l] += 1.0
            if better <= top_k:
                corr[k, l] += 1.0
    correct = 0.0
    count = 0.0
    for c in range(channels):
        a = 0.0
        b = 0.0
        for k in range(nc):
            a += corr[k, c]
            b += cnt[k, c]
        class_correct[c] = a
        class_count[c] = b
        correct += a
        count += b
    return int(correct), int(count), bad.sum()


@njit(cache=True, parallel=True)
def euclidean_loss_forward(a, b, diff):
    """diff = a − b; returns Σ diff² (float64 accumulation)"""
    n = a.size
    nc = _nchunks(n)
    part = np.zeros(nc, dtype=np.float64)
    for k in prange(nc):
        s = 0.0
        for j in range(k * n // nc, (k + 1) * n // nc):
            d = a[j] - b[j]
            diff[j] = d
            dd = np.float64(diff[j])
            s += dd * dd
        part[k] = s
    return part.sum()
