"""Stochastic gradient descent with momentum, as Caffe's SGDSolver:
v ← momentum·v + local_rate·g;  w ← w − v   (the learning rate lives inside the history)."""
from .. import common
from .solver import Solver, register_solver


@register_solver("SGD")
class SGDSolver(Solver):
    history_count = 1

    def compute_update(self, i, rate):
        blob, device = self.net.learnable_params[i], common.mode()
        (history,) = self.histories(i)
        self.kernels("solver").sgd_update(blob.mutable_data_on(device), blob.mutable_diff_on(device),
                                          history.mutable_data_on(device),
                                          rate * self.net.params_lr[i], self.param.momentum)
