"""Learning-rate policies with Caffe's formulas (SGDSolver::GetLearningRate):
``learning_rate(param, it)`` is base_lr times the policy's multiplier at iteration ``it``;
each parameter's rate is then × its lr_mult.

    fixed      1
    step       gamma ^ floor(iter / stepsize)
    exp        gamma ^ iter
    inv        (1 + gamma·iter) ^ (−power)
    multistep  gamma ^ current_step  (current_step advances by at most one per iteration,
               when iter >= stepvalue[current_step])
    poly       (1 − iter / max_iter) ^ power
    sigmoid    1 / (1 + exp(−gamma·(iter − stepsize)))

The rate is computed as Caffe computes it, in double precision with the C library's ``pow``
and ``exp`` (Python's math module), and IEEE's results where Python would raise: an ``exp``
that overflows is infinity, so sigmoid's warm-up starts at a rate of 0, and a power that
underflows is 0. Where Caffe's rate would be NaN or infinite (``pow`` of a negative base to a fractional power, ``0 · inf``,
an overflowing power), the rate is a SolverError naming the policy, the iteration and the
parameters, never a Python arithmetic exception. A float32 net gets its rate as a float, as
Caffe's ``Dtype rate``, so a rate beyond float32's range is infinite there.
"""
import logging
import math

import numpy as np

from ..errors import SolverError

log = logging.getLogger("jitnet")


def int_div(a, b):
    """C's integer division (truncates toward zero), as Caffe's iter_ / stepsize."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def c_float(x):
    """A double, as C converts an int (inf past the double range instead of OverflowError)."""
    try:
        return float(x)
    except OverflowError:
        return math.copysign(math.inf, x)


def _odd_integer(y):
    return math.isfinite(y) and y == math.floor(y) and math.fmod(y, 2.0) != 0


def c_pow(x, y):
    """C's pow (math.pow is the C library's), with the IEEE results where Python raises:
    overflow is ±inf, 0 to a negative power is a pole (±inf), a negative base to a
    fractional power is NaN."""
    try:
        return math.pow(x, y)
    except OverflowError:
        return -math.inf if x < 0 and _odd_integer(y) else math.inf
    except ValueError:
        if x == 0:
            return -math.inf if math.copysign(1.0, x) < 0 and _odd_integer(y) else math.inf
        return math.nan


def c_exp(x):
    """C's exp: inf where it overflows."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def c_sqrt(x):
    """C's sqrt: NaN for a negative number (math.sqrt raises)."""
    return math.sqrt(x) if not x < 0 else math.nan


def c_div(a, b):
    """IEEE division: x/0 is ±inf, 0/0 and NaN operands NaN (Python raises instead)."""
    if b == 0:
        if a == 0 or math.isnan(a):
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


def _fixed(p, it, step):
    return 1.0


def _step(p, it, step):
    return c_pow(p.gamma, c_float(int_div(it, p.stepsize)))


def _exp_policy(p, it, step):
    return c_pow(p.gamma, c_float(it))


def _inv(p, it, step):
    return c_pow(1.0 + p.gamma * c_float(it), -p.power)


def _multistep(p, it, step):
    return c_pow(p.gamma, c_float(step))


def _poly(p, it, step):
    return c_pow(1.0 - c_div(c_float(it), c_float(p.max_iter)), p.power)


def _sigmoid(p, it, step):
    return 1.0 / (1.0 + c_exp(-p.gamma * (c_float(it) - c_float(p.stepsize))))


LR_POLICIES = {
    "fixed": _fixed,
    "step": _step,
    "exp": _exp_policy,
    "inv": _inv,
    "multistep": _multistep,
    "poly": _poly,
    "sigmoid": _sigmoid,
}

#: The parameters each policy reads (named in error messages).
POLICY_FIELDS = {
    "fixed": (),
    "step": ("gamma", "stepsize"),
    "exp": ("gamma",),
    "inv": ("gamma", "power"),
    "multistep": ("gamma", "stepvalue"),
    "poly": ("power", "max_iter"),
    "sigmoid": ("gamma", "stepsize"),
}


def check_policy(p, where="solver"):
    """SolverError for an unknown policy or one Caffe's GetLearningRate would refuse (its
    CHECKs: gamma >= 0 for step, exp, inv, multistep and sigmoid; stepsize > 0 for step and
    sigmoid). What Caffe accepts but is likely a slip gets a warning."""
    if not p.HasField("lr_policy"):
        raise SolverError(f"{where}: lr_policy is not set; give one of " + ", ".join(LR_POLICIES))
    policy = p.lr_policy
    if policy not in LR_POLICIES:
        raise SolverError(f"{where}: unknown lr_policy '{policy}'; known: " + ", ".join(LR_POLICIES))
    if policy in ("step", "sigmoid") and p.stepsize <= 0:
        raise SolverError(f"{where}: lr_policy '{policy}' needs a positive stepsize "
                          f"(got stepsize: {p.stepsize})")
    if "gamma" in POLICY_FIELDS[policy] and not p.gamma >= 0:        # NaN fails too, as in Caffe
        raise SolverError(f"{where}: lr_policy '{policy}' needs gamma >= 0 (got gamma: {p.gamma:g})")
    if policy == "multistep":
        values = list(p.stepvalue)
        if not values:
            log.warning("%s: lr_policy 'multistep' without stepvalue entries keeps the rate at "
                        "base_lr", where)
        for a, b in zip(values, values[1:]):
            if b <= a:
                log.warning("%s: stepvalue entries do not increase (%d then %d); as in Caffe, "
                            "the step counter still advances by one at each iteration that "
                            "reaches the next entry", where, a, b)
                break


def multistep_index(p, it):
    """Caffe's multistep current_step at iteration ``it`` of a run started at iteration 0:
    the counter advances by at most one per iteration, at the first iteration >= the next
    stepvalue entry."""
    step, reached = 0, -1               # reached: the iteration at which the counter last moved
    for value in p.stepvalue:
        reached = max(value, reached + 1)
        if reached > it:
            break
        step += 1
    return step


def advance_step(p, it, current_step):
    """Caffe's current_step after GetLearningRate at iteration ``it`` (a side effect of it):
    iter / stepsize for 'step', one further for 'multistep' when ``it`` reaches the next
    stepvalue, unchanged otherwise."""
    if p.lr_policy == "step" and p.stepsize > 0:
        return int_div(it, p.stepsize)
    if (p.lr_policy == "multistep" and 0 <= current_step < len(p.stepvalue)
            and it >= p.stepvalue[current_step]):
        return current_step + 1
    return current_step


def _describe(p):
    values = [f"base_lr: {p.base_lr:g}"]
    for name in POLICY_FIELDS[p.lr_policy]:
        value = getattr(p, name)
        values.append(f"{name}: {list(value) if name == 'stepvalue' else format(value, 'g')}")
    return ", ".join(values)


def learning_rate(p, it, current_step=None, where="solver", dtype=np.float64):
    """base_lr × the policy's multiplier at iteration ``it``, as a Python float.

    ``current_step`` is multistep's counter after this iteration's advance
    (:func:`advance_step`); None means a run from iteration 0 (:func:`multistep_index`).
    ``dtype`` is the net's: a float32 net's rate must be finite as a float32.
    SolverError when the rate is NaN or infinite."""
    if current_step is None:
        current_step = multistep_index(p, it)
    rate = p.base_lr * LR_POLICIES[p.lr_policy](p, it, current_step)
    finite = math.isfinite(rate)
    if finite and np.dtype(dtype) != np.float64:
        with np.errstate(over="ignore"):
            finite = bool(np.isfinite(np.asarray(rate).astype(dtype)))
    if not finite:
        what = ("a NaN" if math.isnan(rate) else "an infinite" if math.isinf(rate) else
                f"a {np.dtype(dtype).name}-overflowing ({rate:g})")
        step = f" (step {current_step})" if p.lr_policy == "multistep" else ""
        raise SolverError(f"{where}: lr_policy '{p.lr_policy}' gives {what} learning rate at "
                          f"iteration {it}{step} ({_describe(p)})")
    return float(rate)
