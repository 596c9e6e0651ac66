"""The six solver types of Caffe. Each only says how many history blobs it keeps per
parameter, what it checks, and which update kernel (kernels/{cpu,gpu}/solver.py) it
calls; the rest of the iteration is the Solver pipeline. Formulas, with g the
regularized gradient and lr the parameter's local rate:

- SGD:      v ← μv + lr·g;  w ← w − v
- Nesterov: v' ← μv + lr·g;  w ← w − ((1 + μ)v' − μv)
- AdaGrad:  h ← h + g²;  w ← w − lr·g / (√h + δ)
- RMSProp:  h ← ρh + (1 − ρ)g²;  w ← w − lr·g / (√h + δ)           (ρ = rms_decay)
- AdaDelta: h ← ρh + (1 − ρ)g²;  s = g·√((h2 + δ)/(h + δ));  h2 ← ρh2 + (1 − ρ)s²;  w ← w − lr·s   (ρ = momentum)
- Adam:     m ← β1m + (1 − β1)g;  v ← β2v + (1 − β2)g²;  w ← w − lr·√(1 − β2ᵗ)/(1 − β1ᵗ)·m/(√v + ε)
            (β1 = momentum, β2 = momentum2, ε = delta, t = iter + 1)
"""
import math

from ..errors import SolverError
from .lr_policies import c_div, c_pow, c_sqrt
from .solver import Solver, register_solver


@register_solver("SGD")
class SGDSolver(Solver):
    def compute_update(self, i, rate):
        self.kernels("solver").sgd_update(*self.buffers(i), self.local_rate(i, rate), self.param.momentum)


@register_solver("Nesterov")
class NesterovSolver(Solver):
    def compute_update(self, i, rate):
        self.kernels("solver").nesterov_update(*self.buffers(i), self.local_rate(i, rate),
                                               self.param.momentum)


def _no_momentum(solver, name):
    if solver.param.momentum != 0:
        raise SolverError(f"{solver.where}: momentum cannot be used with {name} "
                          f"(got momentum: {solver.param.momentum:g})")


@register_solver("AdaGrad")
class AdaGradSolver(Solver):
    def check_param(self):
        super().check_param()
        _no_momentum(self, "AdaGrad")

    def compute_update(self, i, rate):
        self.kernels("solver").adagrad_update(*self.buffers(i), self.local_rate(i, rate), self.param.delta)


@register_solver("RMSProp")
class RMSPropSolver(Solver):
    def check_param(self):
        super().check_param()
        _no_momentum(self, "RMSProp")
        if not 0 <= self.param.rms_decay < 1:
            raise SolverError(f"{self.where}: rms_decay must be in [0, 1), got {self.param.rms_decay:g}")

    def compute_update(self, i, rate):
        self.kernels("solver").rmsprop_update(*self.buffers(i), self.local_rate(i, rate),
                                              self.param.rms_decay, self.param.delta)


@register_solver("AdaDelta")
class AdaDeltaSolver(Solver):
    history_count = 2

    def compute_update(self, i, rate):
        self.kernels("solver").adadelta_update(*self.buffers(i), self.local_rate(i, rate),
                                               self.param.momentum, self.param.delta)


@register_solver("Adam")
class AdamSolver(Solver):
    history_count = 2

    def correction(self, t):
        """Adam's bias correction √(1 − β2ᵗ) / (1 − β1ᵗ) as Caffe computes it (C's pow and
        sqrt in double); SolverError where it is NaN or infinite (β1 = 1, β2 > 1, ...)."""
        p = self.param
        value = c_div(c_sqrt(1.0 - c_pow(p.momentum2, float(t))), 1.0 - c_pow(p.momentum, float(t)))
        if not math.isfinite(value):
            raise SolverError(f"{self.where}: Adam's bias correction √(1 − momentum2^t) / "
                              f"(1 − momentum^t) is {value} at iteration {self.iter} (t = {t}, "
                              f"momentum: {p.momentum:g}, momentum2: {p.momentum2:g})")
        return value

    def compute_update(self, i, rate):
        p, t = self.param, self.iter + 1
        correction = self.correction(t)
        self.kernels("solver").adam_update(*self.buffers(i), self.local_rate(i, rate), p.momentum,
                                           p.momentum2, p.delta, correction)
