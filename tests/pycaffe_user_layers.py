"""Python layers written as a pycaffe user writes them (``import jitnet as caffe``), for the
``Python`` layer's row in layer_cases.py and for tests/test_pycaffe_*.py. Imported by name
through ``python_param { module: "pycaffe_user_layers" }`` (tests/ is on sys.path)."""
import json

import numpy as np

import jitnet as caffe


class ScaleShift(caffe.Layer):
    """y = a·x + b with two learnable one-element blobs a and b, started from param_str
    ('{"a": 1.5, "b": -0.5}');  ∂E/∂x = a·∂E/∂y,  ∂E/∂a += Σ x·∂E/∂y,  ∂E/∂b += Σ ∂E/∂y.
    It keeps a copy of x, so it also runs in place."""

    def setup(self, bottom, top):
        if len(bottom) != 1 or len(top) != 1:
            raise ValueError("ScaleShift takes one bottom and one top")
        start = json.loads(self.param_str or "{}")
        self.blobs.add_blob(1)
        self.blobs.add_blob(1)
        self.blobs[0].data[...] = start.get("a", 1.0)
        self.blobs[1].data[...] = start.get("b", 0.0)

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].shape)

    def forward(self, bottom, top):
        self.x = bottom[0].data.copy()
        top[0].data[...] = self.blobs[0].data[0] * self.x + self.blobs[1].data[0]

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff
        self.blobs[0].diff[...] += np.sum(dy * self.x)
        self.blobs[1].diff[...] += np.sum(dy)
        if propagate_down[0]:
            bottom[0].diff[...] = self.blobs[0].data[0] * dy


class EuclideanLoss(caffe.Layer):
    """Caffe's examples/pyloss.py layer: Σ‖a − b‖² / (2N), written with the legacy ``num``."""

    def setup(self, bottom, top):
        if len(bottom) != 2:
            raise Exception("Need two inputs to compute distance.")

    def reshape(self, bottom, top):
        if bottom[0].count != bottom[1].count:
            raise Exception("Inputs must have the same dimension.")
        self.diff = np.zeros_like(bottom[0].data)
        top[0].reshape(1)

    def forward(self, bottom, top):
        self.diff[...] = bottom[0].data - bottom[1].data
        top[0].data[...] = np.sum(self.diff ** 2) / bottom[0].num / 2.0

    def backward(self, top, propagate_down, bottom):
        for i in range(2):
            if propagate_down[i]:
                sign = 1 if i == 0 else -1
                bottom[i].diff[...] = sign * top[0].diff[0] * self.diff / bottom[i].num


class PhaseAndParam:
    """Not derived from caffe.Layer (pycaffe allows any class): an identity layer recording the
    phase and param_str it was given."""

    def __init__(self, layer_param):
        self.name = layer_param.name

    def setup(self, bottom, top):
        self.seen = (self.phase, self.param_str)

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff


class RefusesInSetup(caffe.Layer):
    def setup(self, bottom, top):
        raise KeyError("no 'scale' in param_str")

    def reshape(self, bottom, top):
        pass
