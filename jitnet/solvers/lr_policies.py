"""Learning-rate policies: pure functions of (SolverParameter, iteration) giving the
multiplier of ``base_lr``, with Caffe's formulas. ``learning_rate(param, it)`` is
base_lr times that multiplier; each parameter's rate is then × its lr_mult.
"""
import math

from ..errors import SolverError


def _fixed(p, it):
    return 1.0


def _step(p, it):
    return p.gamma ** (it // p.stepsize)


def _exp(p, it):
    return p.gamma ** it


def _inv(p, it):
    return (1.0 + p.gamma * it) ** (-p.power)


def multistep_index(p, it):
    """How many ``stepvalue`` entries are <= it (Caffe's current_step)."""
    return sum(1 for v in p.stepvalue if it >= v)


def _multistep(p, it):
    return p.gamma ** multistep_index(p, it)


def _poly(p, it):
    return (1.0 - it / p.max_iter) ** p.power


def _sigmoid(p, it):
    return 1.0 / (1.0 + math.exp(-p.gamma * (it - p.stepsize)))


LR_POLICIES = {
    "fixed": _fixed,
    "step": _step,
    "exp": _exp,
    "inv": _inv,
    "multistep": _multistep,
    "poly": _poly,
    "sigmoid": _sigmoid,
}


def check_policy(p, where="solver"):
    """SolverError for an unknown policy or one missing what it needs."""
    if not p.HasField("lr_policy"):
        raise SolverError(f"{where}: lr_policy is not set; give one of " + ", ".join(LR_POLICIES))
    if p.lr_policy not in LR_POLICIES:
        raise SolverError(f"{where}: unknown lr_policy '{p.lr_policy}'; known: "
                          + ", ".join(LR_POLICIES))
    if p.lr_policy in ("step", "sigmoid") and p.stepsize <= 0:
        raise SolverError(f"{where}: lr_policy '{p.lr_policy}' needs a positive stepsize")
    if p.lr_policy == "multistep":
        if not p.stepvalue:
            raise SolverError(f"{where}: lr_policy 'multistep' needs stepvalue entries")
        values = list(p.stepvalue)
        for a, b in zip(values, values[1:]):
            if b <= a:
                raise SolverError(f"{where}: stepvalue entries must increase, got {a} then {b}")
    if p.lr_policy == "poly" and p.max_iter <= 0:
        raise SolverError(f"{where}: lr_policy 'poly' needs a positive max_iter")


def learning_rate(p, it):
    """base_lr × the policy's multiplier at iteration ``it``."""
    return p.base_lr * LR_POLICIES[p.lr_policy](p, it)
