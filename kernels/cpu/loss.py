"""CPU loss / accuracy kernels. Labels are flat float arrays holding integer values (one per (o, i))."""
import numpy as np
from numba import njit, prange

FLT_MIN = 1.17549435e-38
LOG_THRESHOLD = 1e-20       # Caffe's kLOG_THRESHOLD (MultinomialLogisticLoss, InfogainLoss)
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


# --------------------------------------------------------------------------- log losses
# SoftmaxWithLoss, MultinomialLogisticLoss and InfogainLoss take −log of a clipped probability
# at each labelled position; SigmoidCrossEntropyLoss a cross-entropy at each value. One chunked
# driver (_sums) sums any of them, one serial helper per loss doing the work of a chunk.
_LOG, _INFOGAIN, _SIGMOID_CE = range(3)


@njit(cache=True)
def _log_chunk(op, prob, label, h, start, end, channels, inner, has_ignore, ignore_label, floor):
    """(Σ loss, valid, bad) over positions [start, end) of a flat (outer, channels, inner)
    array: _LOG −log max(p[label], floor); _INFOGAIN −Σ_k h[label, k]·log max(p[k], floor)."""
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
            if op == _LOG:
                q = np.float64(prob[(o * channels + l) * inner + i])
                if q < floor:
                    q = floor
                s -= np.log(q)
            else:
                base = o * channels * inner + i
                for k in range(channels):
                    q = np.float64(prob[base + k * inner])
                    if q < floor:
                        q = floor
                    s -= np.float64(h[l * channels + k]) * np.log(q)
            v += 1
    return s, v, b


@njit(cache=True)
def _sigmoid_ce_chunk(x, target, start, end, has_ignore, ignore_label):
    """(Σ loss, valid, bad) over values [start, end): loss = −x·(t − [x >= 0]) + log(1 + e^−|x|);
    a target t whose int(t) is ignore_label is skipped, NaN or outside [0, 1] is bad."""
    s = 0.0
    v = 0
    b = 0
    for j in range(start, end):
        t = np.float64(target[j])
        if t != t:
            b += 1
        elif has_ignore and abs(t) < 2147483648.0 and int(t) == ignore_label:
            continue
        elif t < 0 or t > 1:
            b += 1
        else:
            xv = np.float64(x[j])
            positive = 1.0 if xv >= 0 else 0.0
            s -= xv * (t - positive) - np.log1p(np.exp(xv - 2.0 * xv * positive))
            v += 1
    return s, v, b


@njit(cache=True, parallel=True)
def _sums(op, a, b, h, n, channels, inner, has_ignore, ignore_label, floor):
    """(Σ loss, valid count, bad label count) of the loss ``op`` over n positions, in
    _nchunks(n) slices with one float64 partial each (deterministic for given sizes)"""
    nc = _nchunks(n)
    loss_part = np.zeros(nc, dtype=np.float64)
    valid_part = np.zeros(nc, dtype=np.int64)
    bad_part = np.zeros(nc, dtype=np.int64)
    for k in prange(nc):
        lo, hi = k * n // nc, (k + 1) * n // nc
        if op == _SIGMOID_CE:
            s, v, c = _sigmoid_ce_chunk(a, b, lo, hi, has_ignore, ignore_label)
        else:
            s, v, c = _log_chunk(op, a, b, h, lo, hi, channels, inner, has_ignore, ignore_label,
                                 floor)
        loss_part[k] = s
        valid_part[k] = v
        bad_part[k] = c
    return loss_part.sum(), valid_part.sum(), bad_part.sum()


@njit(cache=True)
def softmax_loss_forward(prob, label, outer, channels, inner, has_ignore, ignore_label):
    """(Σ −log(max(prob[label], FLT_MIN)), valid count, bad label count): ignored labels are
    skipped; labels outside [0, channels) and NaN are counted as bad and left out"""
    return _sums(_LOG, prob, label, prob, outer * inner, channels, inner, has_ignore,
                 ignore_label, FLT_MIN)


@njit(cache=True, parallel=True)
def _class_backward(op, prob, label, h, dx, outer, channels, inner, has_ignore, ignore_label, scale):
    """dx at each position: _LOG scale·(prob − onehot(label)); _INFOGAIN
    scale·(prob·Σ_k h[label, k] − h[label, :]); all channels 0 at ignored and bad positions"""
    for p in prange(outer * inner):
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
                row += np.float64(h[l * channels + c])
            for c in range(channels):
                k = base + c * inner
                dx[k] = scale * (prob[k] * row - h[l * channels + c])


@njit(cache=True)
def softmax_loss_backward(prob, label, dx, outer, channels, inner, has_ignore, ignore_label, scale):
    """dx = scale·(prob − onehot(label)); all channels of ignored or out-of-range positions get 0"""
    _class_backward(_LOG, prob, label, prob, dx, outer, channels, inner, has_ignore, ignore_label,
                    scale)


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


# --------------------------------------------------------------------------- catalogue losses
@njit(cache=True)
def multinomial_logistic_loss_forward(prob, label, num, dim):
    """(Σ −log(max(prob[label], 1e-20)), bad label count): one label per row of a (num, dim)
    array of probabilities; labels outside [0, dim) and NaN are counted as bad and left out"""
    loss, valid, bad = _sums(_LOG, prob, label, prob, num, dim, 1, False, 0, LOG_THRESHOLD)
    return loss, bad


@njit(cache=True, parallel=True)
def multinomial_logistic_loss_backward(prob, label, dx, num, dim, scale):
    """dx = 0 except dx[i, label_i] = scale / max(prob[i, label_i], 1e-20)"""
    for r in prange(num):
        base = r * dim
        for j in range(dim):
            dx[base + j] = 0
        l = _label_at(label, r, False, 0, dim)
        if l >= 0:
            q = np.float64(prob[base + l])
            if q < LOG_THRESHOLD:
                q = LOG_THRESHOLD
            dx[base + l] = scale / q


@njit(cache=True)
def infogain_loss_forward(prob, label, h, outer, channels, inner, has_ignore, ignore_label):
    """(−Σ_k h[label, k]·log(max(prob[k], 1e-20)) summed over positions, valid count, bad label
    count): h is (channels, channels); ignored labels are skipped, out-of-range and NaN are bad"""
    return _sums(_INFOGAIN, prob, label, h, outer * inner, channels, inner, has_ignore,
                 ignore_label, LOG_THRESHOLD)


@njit(cache=True)
def infogain_loss_backward(prob, label, h, dx, outer, channels, inner, has_ignore, ignore_label,
                           scale):
    """dx = scale·(prob·Σ_k h[label, k] − h[label, :]); all channels of ignored or out-of-range
    positions get 0"""
    _class_backward(_INFOGAIN, prob, label, h, dx, outer, channels, inner, has_ignore,
                    ignore_label, scale)


@njit(cache=True)
def sigmoid_cross_entropy_loss_forward(x, target, has_ignore, ignore_label):
    """(Σ −x·(t − [x >= 0]) + log(1 + e^−|x|), valid count, bad target count): targets whose
    int(t) is ignore_label are skipped; NaN and targets outside [0, 1] are bad and left out"""
    return _sums(_SIGMOID_CE, x, target, x, x.size, 1, 1, has_ignore, ignore_label, 0.0)


@njit(cache=True, parallel=True)
def sigmoid_cross_entropy_loss_backward(x, target, dx, has_ignore, ignore_label, scale):
    """dx = scale·(σ(x) − t); 0 where int(t) is ignore_label"""
    for j in prange(x.size):
        t = np.float64(target[j])
        if has_ignore and abs(t) < 2147483648.0 and int(t) == ignore_label:
            dx[j] = 0
            continue
        v = np.float64(x[j])
        if v >= 0:
            sig = 1.0 / (1.0 + np.exp(-v))
        else:
            e = np.exp(v)
            sig = e / (1.0 + e)
        dx[j] = scale * (sig - t)


@njit(cache=True, parallel=True)
def hinge_loss_forward(x, label, margins, num, dim):
    """margins = max(0, 1 − t·x) with t = +1 at the row's label and −1 elsewhere (a row with
    a bad label gets 0); returns the count of labels outside [0, dim) or NaN"""
    bad = 0
    for r in prange(num):
        base = r * dim
        l = _label_at(label, r, False, 0, dim)
        if l < 0:
            bad += 1
            for j in range(dim):
                margins[base + j] = 0
            continue
        for j in range(dim):
            v = 1.0 - x[base + j] if j == l else 1.0 + x[base + j]
            margins[base + j] = v if v > 0 else 0.0
    return bad


@njit(cache=True, parallel=True)
def hinge_loss_backward(margins, label, dx, num, dim, l2, scale):
    """dx = scale·(2·margin if l2 else sign(margin)), negated at the row's label"""
    for r in prange(num):
        base = r * dim
        l = _label_at(label, r, False, 0, dim)
        for j in range(dim):
            m = margins[base + j]
            g = 2.0 * m if l2 else (1.0 if m > 0 else 0.0)
            dx[base + j] = scale * (-g if j == l else g)


@njit(cache=True, parallel=True)
def contrastive_loss_forward(diff, sim, dist_sq, num, dim, margin, legacy):
    """dist_sq[i] = Σ_j diff[i, j]² over the rows of a (num, dim) array; returns (Σ_i d_i² if
    similar else max(margin − d_i, 0)² (legacy: max(margin − d_i², 0)), bad): row i is similar
    when int(sim_i) != 0; a NaN sim is bad and left out"""
    loss = 0.0
    bad = 0
    for r in prange(num):
        base = r * dim
        d2 = 0.0
        for j in range(dim):
            v = np.float64(diff[base + j])
            d2 += v * v
        dist_sq[r] = d2
        y = sim[r]
        if y != y:
            bad += 1
        elif int(y) != 0:
            loss += d2
        elif legacy:
            loss += max(margin - d2, 0.0)
        else:
            m = max(margin - np.sqrt(d2), 0.0)
            loss += m * m
    return loss, bad


@njit(cache=True, parallel=True)
def contrastive_loss_backward(diff, dist_sq, sim, dx, num, dim, margin, legacy, alpha):
    """dx[i] = alpha·diff[i] for similar rows; for the others −alpha·diff[i] (legacy) or
    −alpha·(margin − d)/(d + 1e-4)·diff[i] (Caffe's 1e-4), where margin − d (legacy margin − d²)
    is > 0, else 0"""
    for r in prange(num):
        base = r * dim
        coef = alpha
        active = True
        if int(sim[r]) == 0:
            d2 = np.float64(dist_sq[r])
            if legacy:
                m = margin - d2
                coef = -alpha
            else:
                d = np.sqrt(d2)
                m = margin - d
                coef = -alpha * m / (d + 1e-4)
            active = m > 0
        for j in range(dim):
            dx[base + j] = coef * diff[base + j] if active else 0.0
