"""Per-layer timing through the Net's callback seams (what ``jitnet time`` prints).

``LayerTimer(net)`` adds callbacks before and after every layer's forward and
backward and accumulates wall-clock milliseconds per layer; in GPU mode it
synchronises the device before each reading, so a layer's time includes its
kernels. Use it as a context manager, which removes the callbacks again::

    with LayerTimer(net) as timer:
        for _ in range(10):
            net.forward()
            net.backward_from_to(every_layer=True)
    timer.forward_ms / 10          # numpy array, one entry per layer
"""
import time

import numpy as np

from . import common


def synchronize():
    """Wait for the device's queued kernels (a no-op in CPU mode)."""
    if common.mode() == common.GPU:
        from numba import cuda
        cuda.synchronize()


class LayerTimer:
    """Accumulated forward and backward milliseconds per layer of ``net``."""

    def __init__(self, net):
        self.net = net
        self.forward_ms = np.zeros(len(net.steps))
        self.backward_ms = np.zeros(len(net.steps))
        self._start = None
        self._callbacks = ((net.before_forward, self._begin), (net.after_forward, self._end_forward),
                           (net.before_backward, self._begin), (net.after_backward, self._end_backward))

    def __enter__(self):
        for callbacks, callback in self._callbacks:
            callbacks.append(callback)
        return self

    def __exit__(self, *exc):
        for callbacks, callback in self._callbacks:
            callbacks.remove(callback)

    def _begin(self, step):
        synchronize()
        self._start = time.perf_counter()

    def _elapsed_ms(self):
        synchronize()
        return (time.perf_counter() - self._start) * 1e3

    def _end_forward(self, step):
        self.forward_ms[step.index] += self._elapsed_ms()

    def _end_backward(self, step):
        self.backward_ms[step.index] += self._elapsed_ms()
