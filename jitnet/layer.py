"""The Layer contract and the registry of layer types.

Every layer type is a subclass of :class:`Layer` registered under its Caffe type
name with ``@register("ReLU")``. The base class owns the fixed sequence Caffe's
Layer owns, so no subclass can skip a step of it:

* ``setup_layer(bottom, top)``: check the number of bottoms and tops, run the
  shared checks on the bottoms, call the ``setup`` hook (read parameters, create
  the learnable ``self.blobs`` with their fillers), then reshape.
* ``reshape_layer(bottom, top)``: the shared checks, then the ``reshape`` hook.
* ``run_forward(bottom, top)``: pick the device, reshape as above, call the
  ``forward`` hook, and return this layer's share of the net's loss,
  Σ loss_weight · sum(top).
* ``run_backward(top, propagate_down, bottom)``: call the ``backward`` hook.

Every error a hook raises as a :class:`JitnetError` comes out as a
:class:`LayerError` naming the layer.

Subclasses fill in only the hooks:

* ``setup(bottom, top)``      read parameters, create ``self.blobs``.
* ``reshape(bottom, top)``    size the tops from the bottoms; cheap when nothing changed.
* ``forward(bottom, top)``    compute the tops.
* ``backward(top, propagate_down, bottom)``  compute the bottoms' diffs where
  ``propagate_down[i]`` is true, overwriting them; add the parameters' gradients
  into ``self.blobs[k].diff`` (they accumulate over ``iter_size`` passes and the
  solver clears them).

Inside the hooks, ``K = self.kernels(family)`` is the kernel module of that
family for the device the layer runs on (``jitnet.kernels.cpu.neuron`` or
``jitnet.kernels.gpu.neuron``: the functions have the same names on both
sides), and ``d = self.device`` (``"cpu"`` or ``"gpu"``) is the side to ask
blobs for: ``blob.data_on(d)``, ``blob.mutable_diff_on(d)``.

Class attributes declare what the planner and the Net need to know without
building the layer:

* the arity: ``exact_bottoms``, ``min_bottoms``, ``max_bottoms`` and the same for tops;
* ``is_loss``: a loss layer's first top gets loss_weight 1 by default;
* ``auto_top_blobs``: a layer written with fewer tops than it needs gets anonymous ones
  (Caffe's AutoTopBlobs, set for the loss layers);
* ``in_place``: whether a top may be one of its bottoms (ReLU's ``top: "h"
  bottom: "h"``); the planner refuses in-place use of any other layer
  (``can_run_in_place(param)`` refines it per parameter set);
* ``host_only``: the layer computes on the host with numpy (data layers, a
  user's numpy layer); in GPU mode it still runs on the host and its blobs are
  copied to the device when a GPU layer asks for them;
* ``no_gradient_bottoms``: bottoms that never get a gradient (labels);
* ``min_axes``: how many axes every bottom needs (a tuple: one per bottom);
* ``param_count(param)``: how many learnable blobs it creates, and
  ``param_specs(param)``: their ParamSpecs as the net uses them (lr_mult and
  decay_mult default to 1; a layer whose blobs are not learned, BatchNorm's
  statistics, forces lr_mult 0 here).
"""
import contextlib

import numpy as np

from . import common
from .errors import JitnetError, LayerError, NetDefinitionError
from .proto import pb

LAYERS = common.Registry("layer", NetDefinitionError)


def register(type_name):
    """Class decorator: register a Layer subclass under its Caffe type name."""
    return LAYERS.register(type_name)


def _load_builtin_layers():
    from . import layers  # noqa: F401  (importing the families registers them)


def layer_class(type_name, layer_name=None):
    """The class registered as ``type_name``; NetDefinitionError listing the known types if none."""
    _load_builtin_layers()
    return LAYERS.get(type_name, f"layer '{layer_name}': " if layer_name else "")


def layer_type_list():
    """The registered type names, sorted (pycaffe's ``layer_type_list``)."""
    _load_builtin_layers()
    return LAYERS.names()


def create_layer(layer_param, phase):
    """Instantiate the layer a LayerParameter describes, for ``phase`` (jitnet.TRAIN / TEST)."""
    return layer_class(layer_param.type, layer_param.name)(layer_param, phase)


def _arity_text(exact, lo, hi):
    if exact is not None:
        return f"exactly {exact}"
    if lo is not None and hi is not None:
        return f"{lo} to {hi}"
    if lo is not None:
        return f"at least {lo}"
    return f"at most {hi}"


class Layer:
    """Base class of every layer; see the module docstring for the contract."""

    type = None
    exact_bottoms = min_bottoms = max_bottoms = None
    exact_tops = min_tops = max_tops = None
    is_loss = False
    auto_top_blobs = False
    in_place = False
    host_only = False
    no_gradient_bottoms = ()
    min_axes = ()

    def __init__(self, layer_param, phase):
        self.param = layer_param
        self.name = layer_param.name
        self.phase = phase
        self.blobs = []
        self.loss_weights = []
        self.device = common.CPU

    # -- what the planner asks before building ------------------------------------------------
    @classmethod
    def param_count(cls, layer_param):
        """How many learnable blobs this layer creates (0 unless the layer says otherwise)."""
        return 0

    @classmethod
    def param_specs(cls, layer_param):
        """One ParamSpec per learnable blob, as the planner and the net use them: the layer's
        ``param`` entries (fields left unset keep their defaults, lr_mult 1 and decay_mult 1),
        and default specs for blobs without an entry."""
        specs = []
        for j in range(cls.param_count(layer_param)):
            spec = pb.ParamSpec()
            if j < len(layer_param.param):
                spec.CopyFrom(layer_param.param[j])
            specs.append(spec)
        return specs

    @classmethod
    def allow_force_backward(cls, layer_param, bottom_index):
        return bottom_index not in cls.no_gradient_bottoms

    @classmethod
    def can_run_in_place(cls, layer_param):
        """(allowed, reason): whether a top of this layer may be one of its bottoms."""
        if cls.in_place:
            return True, ""
        return False, f"{cls.type} layers compute their top from a bottom they must not overwrite"

    @classmethod
    def check_arity(cls, layer_param):
        """NetDefinitionError naming the layer when it has the wrong number of bottoms or tops."""
        for what, n, exact, lo, hi in (
                ("bottom", len(layer_param.bottom), cls.exact_bottoms, cls.min_bottoms, cls.max_bottoms),
                ("top", len(layer_param.top), cls.exact_tops, cls.min_tops, cls.max_tops)):
            ok = ((exact is None or n == exact) and (lo is None or n >= lo)
                  and (hi is None or n <= hi))
            if not ok:
                raise NetDefinitionError(
                    f"layer '{layer_param.name}' (type {cls.type}) takes "
                    f"{_arity_text(exact, lo, hi)} {what}(s), but has {n}")

    # -- the fixed sequence --------------------------------------------------------------------
    def setup_layer(self, bottom, top, loss_weights=None):
        self.check_arity(self.param)
        for what, blobs, names in (("bottom", bottom, self.param.bottom), ("top", top, self.param.top)):
            if len(blobs) != len(names):
                raise self.error(f"set up with {len(blobs)} {what} blob(s), but the definition "
                                 f"names {len(names)} ({', '.join(names) or 'none'})")
        self.loss_weights = list(loss_weights) if loss_weights is not None else [0.0] * len(top)
        self.dtype = (bottom or top)[0].dtype if (bottom or top) else np.dtype(np.float32)
        with self._naming_errors():
            self.shared_checks(bottom)
            self.setup(bottom, top)
            # Which learnable blobs get gradients; Net turns off those with lr_mult 0.
            self.param_propagate_down = [True] * len(self.blobs)
            self.reshape(bottom, top)

    def reshape_layer(self, bottom, top):
        """The shared checks, then the ``reshape`` hook; errors name the layer."""
        with self._naming_errors():
            self.shared_checks(bottom)
            self.reshape(bottom, top)

    def run_forward(self, bottom, top):
        """Reshape, forward, and return Σ loss_weight · sum(top) over this layer's tops."""
        self._select_device()
        with self._naming_errors():
            self.shared_checks(bottom)
            self.reshape(bottom, top)
            self.forward(bottom, top)
        loss = 0.0
        for weight, blob in zip(self.loss_weights, top):
            if weight:
                with np.errstate(over="ignore", invalid="ignore"):   # the NaN guard reports it
                    loss += weight * float(blob.data_on(common.CPU).sum(dtype=np.float64))
        return loss

    def run_backward(self, top, propagate_down, bottom):
        self._select_device()
        with self._naming_errors():
            self.backward(top, propagate_down, bottom)

    def shared_checks(self, bottom):
        """Checks every layer of a family runs before its ``reshape`` hook, as Caffe's base
        classes check in their Reshape (LossLayer: the same first dimension). Family bases
        in this module extend it (calling super()); layer types leave it alone."""
        for i, blob in enumerate(bottom):
            need = self.min_axes[i] if i < len(self.min_axes) else 0
            if blob.num_axes < need:
                raise self.error(f"bottom {i} ('{self.param.bottom[i]}') has shape {blob.shape}, "
                                 f"but {self.type} needs at least {need} axis(es) there")

    @contextlib.contextmanager
    def _naming_errors(self):
        """A JitnetError raised inside the hooks (a bad axis, a shape) names this layer."""
        try:
            yield
        except LayerError:
            raise
        except JitnetError as e:
            raise LayerError(self.name, self.type, str(e)) from None

    def _select_device(self):
        device = common.mode()
        self.device = common.CPU if self.host_only else device

    def kernels(self, family):
        """The kernel module ``family`` for the device this layer runs on."""
        return common.kernels(family, self.device)

    # -- hooks -------------------------------------------------------------------------------
    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        raise NotImplementedError(f"{type(self).__name__} must implement reshape()")

    def forward(self, bottom, top):
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    def backward(self, top, propagate_down, bottom):
        if any(propagate_down):
            raise LayerError(self.name, self.type, "has no backward, but a bottom needs a gradient "
                             "(set propagate_down: false for it)")

    # -- helpers for subclasses ----------------------------------------------------------------
    def error(self, message):
        """A LayerError naming this layer."""
        return LayerError(self.name, self.type, message)

    def __repr__(self):
        return f"<{type(self).__name__} '{self.name}'>"


class LossLayer(Layer):
    """Two bottoms (prediction, target) with the same first dimension, one loss top (a
    scalar); loss_weight 1 by default. Caffe's LossLayer."""

    is_loss = True
    auto_top_blobs = True        # Caffe's AutoTopBlobs: a loss layer without a top gets one
    min_bottoms, max_bottoms = 2, 2
    min_tops, max_tops = 1, 1
    no_gradient_bottoms = (1,)
    min_axes = (1, 1)

    def shared_checks(self, bottom):
        super().shared_checks(bottom)
        if bottom[0].shape[0] != bottom[1].shape[0]:
            raise self.error(f"the data and label should have the same first dimension (num): "
                             f"bottom '{self.param.bottom[0]}' has shape {bottom[0].shape}, "
                             f"bottom '{self.param.bottom[1]}' has shape {bottom[1].shape}")

    def reshape(self, bottom, top):
        top[0].reshape(())

    def loss_weight_of(self, top):
        """The weight the net put into the loss top's diff before backward (Caffe's convention)."""
        return float(top[0].diff_on(common.CPU)[0])


class NeuronLayer(Layer):
    """One bottom, one top of the same shape; top[i] depends on bottom[i] only.

    A pointwise layer states only its kernels: ``forward_kernel(K, x, y)`` and
    ``backward_kernel(K, x, y, dy, dx)``, where K is the kernel module ``kernel_family``
    (None for a host-only layer that computes with numpy) and x, y, dy, dx are the
    flat buffers of the bottom and top on the layer's device. Neuron layers may run in
    place; then x *is* y (the bottom was overwritten), so a layer whose backward needs
    the original x refuses in-place use (``in_place = False`` or ``can_run_in_place``).
    """

    exact_bottoms = exact_tops = 1
    in_place = True
    kernel_family = "neuron"

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        d = self.device
        self.forward_kernel(self._family_kernels(), bottom[0].data_on(d), top[0].mutable_data_on(d))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            d = self.device
            self.backward_kernel(self._family_kernels(), bottom[0].data_on(d), top[0].data_on(d),
                                 top[0].diff_on(d), bottom[0].mutable_diff_on(d))

    def _family_kernels(self):
        return self.kernels(self.kernel_family) if self.kernel_family else None

    def forward_kernel(self, K, x, y):
        raise NotImplementedError(f"{type(self).__name__} must implement forward_kernel()")

    def backward_kernel(self, K, x, y, dy, dx):
        raise NotImplementedError(f"{type(self).__name__} must implement backward_kernel()")
