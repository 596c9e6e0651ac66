"""Recurrent layers, from Caffe's LRCN work (recurrent_layer.cpp, lstm_layer.cpp, rnn_layer.cpp,
lstm_unit_layer.cpp): LSTMUnit, one LSTM timestep; LSTM and RNN over whole sequences.

Inputs are time-major, as Caffe's: x (T, N, ...) holds T timesteps of N independent streams,
cont (T, N) the sequence-continuation indicators (0 where a new sequence begins: the previous
state is multiplied by cont_t, so it is forgotten), an optional static input x_static (N, ...)
seen at every step. ``recurrent_param.expose_hidden`` makes the initial state extra bottoms and
the final state extra tops, so a caller can carry it across batches itself; without it the
layer carries it: each forward starts from the state the previous one ended with (a new
sequence starts where cont is 0), as Caffe's does.

LSTM and RNN are built as Caffe builds them: the layer unrolls into a net of existing layers
(Input, Slice, InnerProduct, Scale, Eltwise, LSTMUnit or TanH, Concat, Split, Reshape) over the T
steps, planned and run by a jitnet Net, the steps sharing their parameters by name; the
layer's blobs are that net's parameters, in Caffe's order, so Caffe-trained weights load. The
LSTM also has a fused engine, one kernel pair for the whole sequence (kernels/*/recurrent.py),
which it uses unless ``LSTM.engine = "unrolled"`` (or ``recurrent_param.debug_info``, which
reports the unrolled net's layers): both compute the same numbers and are tested alike.

Deviations from Caffe, both additions: the exposed initial state gets its gradient (Caffe
shares only its data), and the exposed final state's diff flows back into the sequence (Caffe
ignores it); with nothing downstream of those blobs the numbers are Caffe's.
"""
import contextlib

from .. import threads
from ..blob import Blob
from ..errors import LayerError, NetDefinitionError
from ..fillers import fill
from ..layer import Layer, register
from ..proto import pb


@register("LSTMUnit")
class LSTMUnit(Layer):
    """One LSTM timestep (Caffe's LSTMUnitLayer): bottoms c_prev (1, N, H), the gate
    pre-activations x (1, N, 4H) in the order i, f, o, g, and cont (1, N); tops c and h (1, N, H).

    i = σ(x_i), f = cont·σ(x_f) (0 where cont = 0), o = σ(x_o), g = tanh(x_g);
    c = f·c_prev + i·g, h = o·tanh(c).
    c̄ = ∂E/∂c + ∂E/∂h·o·(1 − tanh²c); ∂E/∂c_prev = c̄·f; ∂E/∂x_i = c̄·g·i(1 − i);
    ∂E/∂x_f = c̄·c_prev·f(1 − f); ∂E/∂x_o = ∂E/∂h·tanh(c)·o(1 − o); ∂E/∂x_g = c̄·i(1 − g²)
    (Caffe's formulas: exact for cont in {0, 1}). No gradient to cont.
    """

    exact_bottoms, exact_tops = 3, 2
    no_gradient_bottoms = (2,)

    def reshape(self, bottom, top):
        num = bottom[0].shape[1] if bottom[0].num_axes > 1 else None
        for i, (blob, axes) in enumerate(zip(bottom, (3, 3, 2))):
            if blob.num_axes != axes or blob.shape[0] != 1 or blob.shape[1] != num:
                raise self.error(
                    f"bottom {i} ('{self.param.bottom[i]}') has shape {blob.shape}; LSTMUnit takes "
                    f"one timestep: c_prev (1, N, H), gate inputs (1, N, 4H) and cont (1, N)")
        self.num, self.hidden = num, bottom[0].shape[2]
        if bottom[1].shape[2] != 4 * self.hidden:
            raise self.error(f"the gate inputs (bottom 1) have {bottom[1].shape[2]} values per "
                             f"stream, but c_prev has H = {self.hidden}: they need 4·H = "
                             f"{4 * self.hidden} (i, f, o, g)")
        top[0].reshape(bottom[0].shape)
        top[1].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        d = self.device
        self.kernels("recurrent").lstm_unit_forward(
            bottom[0].data_on(d), bottom[1].data_on(d), bottom[2].data_on(d),
            top[0].mutable_data_on(d), top[1].mutable_data_on(d), self.num, self.hidden)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[2]:
            raise self.error("cannot backpropagate to the sequence continuation indicators (bottom 2)")
        if not (propagate_down[0] or propagate_down[1]):
            return
        d = self.device
        dc_prev = bottom[0].mutable_diff_on(d) if propagate_down[0] else bottom[0].diff_on(d)
        dx = bottom[1].mutable_diff_on(d) if propagate_down[1] else bottom[1].diff_on(d)
        self.kernels("recurrent").lstm_unit_backward(
            bottom[0].data_on(d), bottom[1].data_on(d), bottom[2].data_on(d), top[0].data_on(d),
            top[0].diff_on(d), top[1].diff_on(d), dc_prev, dx, self.num, self.hidden,
            propagate_down[0], propagate_down[1])


# =========================================================================== LSTM and RNN
def _layer(net_param, type_name, name, bottoms=(), tops=(), params=(), propagate_down=()):
    layer = net_param.layer.add(name=name, type=type_name, bottom=list(bottoms), top=list(tops))
    for param_name in params:
        layer.param.add(name=param_name)
    layer.propagate_down.extend(propagate_down)
    return layer


def _inner_product(net_param, name, bottom, top, num_output, axis, params, p, bias=False):
    layer = _layer(net_param, "InnerProduct", name, [bottom], [top], params)
    ip = layer.inner_product_param
    ip.num_output, ip.axis, ip.bias_term = num_output, axis, bias
    ip.weight_filler.CopyFrom(p.weight_filler)
    if bias:
        ip.bias_filler.CopyFrom(p.bias_filler)
    return layer


class _Recurrent(Layer):
    """Caffe's RecurrentLayer: bottoms x (T, N, ...), cont (T, N), an optional x_static (N, ...),
    then with expose_hidden the initial state (``state_names``); tops the output (T, N, H), then
    with expose_hidden the final state. A subclass states its unrolled net (``fill_unrolled_net``,
    as Caffe's FillUnrolledNet) and the names of its blobs."""

    no_gradient_bottoms = (1,)
    state_names = ()            # the initial state blobs of the unrolled net, in bottom order
    output_name = ""            # its output blob, concatenated over the steps
    param_names = ()            # its learned parameters without a static input, in Caffe's order
    engine = "unrolled"

    # -- what the planner asks ------------------------------------------------------------------
    @classmethod
    def _exposed(cls, layer_param):
        return len(cls.state_names) if layer_param.recurrent_param.expose_hidden else 0

    @classmethod
    def _has_static(cls, layer_param):
        return len(layer_param.bottom) > 2 + cls._exposed(layer_param)

    @classmethod
    def check_arity(cls, layer_param):
        exposed = cls._exposed(layer_param)
        least, tops = 2 + exposed, 1 + exposed
        nb, nt = len(layer_param.bottom), len(layer_param.top)
        if least <= nb <= least + 1 and nt == tops:
            return
        states = ", ".join(cls.state_names)
        if exposed:
            how = (f"with expose_hidden it takes the bottoms x, cont, an optional x_static and "
                   f"then the initial state {states} ({least} or {least + 1} bottoms), and gives "
                   f"the output and the final state ({tops} tops)")
        else:
            how = (f"it takes the bottoms x, cont and an optional x_static (2 or 3) and gives one "
                   f"top (with recurrent_param.expose_hidden the initial state {states} comes "
                   f"as {len(cls.state_names)} more bottom(s) and the final state as more tops)")
        raise NetDefinitionError(f"layer '{layer_param.name}' (type {cls.type}) has {nb} bottom(s) "
                                 f"and {nt} top(s): {how}")

    @classmethod
    def param_count(cls, layer_param):
        return len(cls.param_names) + cls._has_static(layer_param)

    # -- setup --------------------------------------------------------------------------------------
    def setup(self, bottom, top):
        p = self.param.recurrent_param
        if p.num_output <= 0:
            raise self.error("recurrent_param.num_output must be positive")
        self.hidden = p.num_output
        self.exposed = self._exposed(self.param)
        self.static = self._has_static(self.param)
        self.state_offset = 2 + self.static                 # index of the first exposed bottom
        self.T = None
        self._check_bottoms(bottom)
        self.T = bottom[0].shape[0]
        self.engine_used = "unrolled" if p.debug_info else type(self).engine
        self._carried_num = None
        if self.engine_used == "unrolled":
            self._setup_unrolled(bottom)
        else:
            self._setup_fused(bottom)

    def _check_bottoms(self, bottom):
        """Caffe's checks of RecurrentLayer::LayerSetUp and Reshape, with the names of the blobs."""
        x, cont = bottom[0], bottom[1]
        if x.num_axes < 2:
            raise self.error(f"bottom 0 (x, shape {x.shape}) must have at least 2 axes -- "
                             "(#timesteps, #streams, ...)")
        if x.num_axes < 3:
            raise self.error(f"bottom 0 (x, shape {x.shape}) has no feature axis: the input "
                             "transform is an InnerProduct from axis 2, so x is (#timesteps, "
                             "#streams, features...) (Caffe refuses a 2-axis x there too)")
        steps, num = x.shape[:2]
        if self.T is not None and steps != self.T:
            raise self.error(f"the number of timesteps changed: bottom 0 (x) has shape {x.shape}, "
                             f"but the layer was set up for T = {self.T} (the streams N may change, "
                             "T may not)")
        if steps == 0:
            raise self.error(f"bottom 0 (x, shape {x.shape}) has no timesteps")
        if cont.shape != (steps, num):
            raise self.error(f"bottom 1 (cont) must have exactly 2 axes -- (#timesteps, #streams) = "
                             f"{(steps, num)} as x {x.shape}; it has shape {cont.shape}")
        if self.static:
            xs = bottom[2]
            if xs.num_axes < 2 or xs.shape[0] != num:
                raise self.error(f"bottom 2 (x_static, shape {xs.shape}) must be (#streams, "
                                 f"features...) with #streams = {num} as x {x.shape}")
        for k, name in enumerate(self.state_names[:self.exposed]):
            blob = bottom[self.state_offset + k]
            if blob.shape != (1, num, self.hidden):
                raise self.error(f"bottom {self.state_offset + k} ({name}, shape {blob.shape}) must "
                                 f"match the hidden state input shape {(1, num, self.hidden)}")

    def _chunks(self):
        return threads.configure()["numba_threads"]

    # -- the unrolled net ---------------------------------------------------------------------------
    def fill_unrolled_net(self, net_param, num):
        raise NotImplementedError

    def _fill_inputs(self, net_param, num, states, w_x, b, rows):
        """The part Caffe's LSTM and RNN unrolled nets share: the zero initial states, cont
        sliced into steps, the input transform (``w_x``, ``b``: its blob names; ``rows``
        outputs) sliced into steps, the static input's transform (param ``w_x``_static),
        reshaped to one step; returns the Slice layers of cont and of the transformed input
        (their tops are added per step) and the static transform's blob names ([] or one)."""
        p, H = self.param.recurrent_param, self.hidden
        inputs = _layer(net_param, "Input", "state_input", tops=list(states))
        for _ in states:
            inputs.input_param.shape.add().dim.extend([1, num, H])
        cont_slice = _layer(net_param, "Slice", "cont_slice", ["cont"])
        cont_slice.slice_param.axis = 0
        _inner_product(net_param, "x_transform", "x", f"{w_x}_x", rows, 2, [w_x, b], p,
                       bias=True).propagate_down.append(True)
        static = []
        if self.static:
            name = f"{w_x}_x_static"
            _inner_product(net_param, name, "x_static", f"{name}_preshape", rows, 1, [f"{w_x}_static"],
                           p).propagate_down.append(True)
            reshape = _layer(net_param, "Reshape", f"{name}_reshape", [f"{name}_preshape"], [name])
            reshape.reshape_param.shape.dim.extend([1, -1, rows])
            static = [name]
        x_slice = _layer(net_param, "Slice", f"{w_x}_x_slice", [f"{w_x}_x"])
        x_slice.slice_param.axis = 0
        return cont_slice, x_slice, static

    def _fill_recurrence(self, net_param, t, name, w_h, rows):
        """Step t's h_conted_{t-1} = cont_t·h_{t-1} (Scale) and its transform by the
        parameter ``w_h`` into ``rows`` outputs (InnerProduct ``name``, top ``name``)."""
        scale = _layer(net_param, "Scale", f"h_conted_{t - 1}", [f"h_{t - 1}", f"cont_{t}"],
                       [f"h_conted_{t - 1}"])
        scale.scale_param.axis = 0
        _inner_product(net_param, name, f"h_conted_{t - 1}", name, rows, 2, [w_h],
                       self.param.recurrent_param)

    def final_state_names(self):
        """The blobs of the unrolled net holding the state after the last step, in top order."""
        raise NotImplementedError

    def _setup_unrolled(self, bottom):
        import jitnet                                   # the unrolled net is a jitnet.Net
        num = bottom[0].shape[1]
        net_param = pb.NetParameter(name=f"{self.name}_unrolled", force_backward=True)
        inputs = _layer(net_param, "Input", "input", tops=["x", "cont"] + ["x_static"] * self.static)
        for blob in bottom[:2 + self.static]:
            inputs.input_param.shape.add().dim.extend(blob.shape)
        self.fill_unrolled_net(net_param, num)
        if self.exposed:           # (jitnet's: the diff of the exposed h_T flows back)
            _layer(net_param, "Split", "h_T_copy", [f"h_{self.T}"], ["h_T"])
        outputs = [self.output_name] + (self.final_state_names() if self.exposed else [])
        for layer in net_param.layer:
            layer.name = f"{self.name}_{layer.name}"
        for name in outputs:           # Caffe's pseudo-losses: the planner then runs backward
            loss = _layer(net_param, "Reduction", f"{name}_pseudoloss", [name], [f"{name}_pseudoloss"])
            loss.loss_weight.append(1.0)
        with self._inner():
            self.net = jitnet.Net(net_param, self.phase, dtype=self.dtype)
        self.net.debug_info = self.param.recurrent_param.debug_info
        steps = self.net.steps
        self.last = len(steps) - 1 - len(outputs)
        if any(not s.name.endswith("_pseudoloss") for s in steps[self.last + 1:]):
            raise self.error("internal: the unrolled net's pseudo-losses are not its last layers")
        # Gradients into the bottoms go where the outer propagate_down says (set before each
        # backward); none ever goes to cont.
        sources = {"x": 0, "x_static": 2}
        sources.update((s, self.state_offset + k) for k, s in enumerate(self.state_names[:self.exposed]))
        self.sinks = []
        for step in steps:
            for b, name in enumerate(step.plan.bottoms):
                if name in sources:
                    self.sinks.append((step.plan.propagate_down, b, sources[name]))
                elif name in self.state_names or name == "cont" or name.startswith("cont_"):
                    step.plan.propagate_down[b] = False
        self.blobs = list(self.net.learnable_params)
        owners = {id(blob._data): k for k, blob in enumerate(self.blobs)}
        self.links = [(layer, j, blob, owners[id(blob._data)])
                      for layer in self.net.layers for j, blob in enumerate(layer.blobs)]
        self._shapes = None

    def _last_blob(self, state):
        """The unrolled net's blob holding ``state`` (h_0, c_0) after the last step."""
        return f"h_{self.T}" if state == "h_0" else "c_T"

    @contextlib.contextmanager
    def _inner(self):
        """An error of a layer of the unrolled net names this layer (and the inner one)."""
        try:
            yield
        except LayerError as e:
            raise self.error(f"in its unrolled net, {e}") from None

    def _reshape_unrolled(self, bottom, top):
        net, num = self.net, bottom[0].shape[1]
        shapes = tuple(blob.shape for blob in bottom)
        if shapes != self._shapes:
            for name, blob in zip(["x", "cont"] + ["x_static"] * self.static, bottom):
                net.blobs[name].reshape(blob.shape)
            for name in self.state_names:
                net.blobs[name].reshape((1, num, self.hidden))
            with self._inner():
                net.reshape()
            self._shapes = shapes
        # Caffe's sharing: the unrolled net reads the bottoms and writes the tops in place.
        net.blobs["x"].share_data(bottom[0])
        net.blobs["x"].share_diff(bottom[0])
        net.blobs["cont"].share_data(bottom[1])
        if self.static:
            net.blobs["x_static"].share_data(bottom[2])
            net.blobs["x_static"].share_diff(bottom[2])
        for k, name in enumerate(self.state_names[:self.exposed]):
            net.blobs[name].share_data(bottom[self.state_offset + k])
            net.blobs[name].share_diff(bottom[self.state_offset + k])
        outputs = [self.output_name] + (self.final_state_names() if self.exposed else [])
        for blob, name in zip(top, outputs):
            blob.reshape(net.blobs[name].shape)
            blob.share_data(net.blobs[name])
            blob.share_diff(net.blobs[name])

    def _forward_unrolled(self, bottom, top):
        net, blas, d = self.net, self.kernels("blas"), self.device
        for layer, j, blob, k in self.links:            # (an outer share_with may have moved them)
            blob.share_data(self.blobs[k])
            blob.share_diff(self.blobs[k])
        if not self.exposed:
            self._carry(lambda name: net.blobs[self._last_blob(name)], lambda name: net.blobs[name],
                        bottom[0].shape[1])
        with self._inner():
            net.forward_from_to(0, self.last)

    def _carry(self, final, initial, num):
        """Caffe's carried state: each forward starts where the previous one ended (zero at
        first, and after the number of streams changed)."""
        blas, d = self.kernels("blas"), self.device
        for name in self.state_names:
            if self._carried_num == num:
                blas.copy(final(name).data_on(d), initial(name).mutable_data_on(d))
            else:
                blas.set_value(initial(name).mutable_data_on(d), 0.0)
        self._carried_num = num

    def _backward_unrolled(self, top, propagate_down, bottom):
        for flags, b, source in self.sinks:
            flags[b] = bool(propagate_down[source])
        for layer, j, blob, k in self.links:
            layer.param_propagate_down[j] = self.param_propagate_down[k]
        with self._inner():
            self.net.backward_from_to(self.last, 0, seed_loss_diffs=False)

    # -- hooks ----------------------------------------------------------------------------------------
    def reshape(self, bottom, top):
        self._check_bottoms(bottom)
        if self.engine_used == "unrolled":
            self._reshape_unrolled(bottom, top)
        else:
            self._reshape_fused(bottom, top)

    def forward(self, bottom, top):
        if self.engine_used == "unrolled":
            self._forward_unrolled(bottom, top)
        else:
            self._forward_fused(bottom, top)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise self.error("cannot backpropagate to the sequence continuation indicators (bottom 1)")
        if self.engine_used == "unrolled":
            self._backward_unrolled(top, propagate_down, bottom)
        else:
            self._backward_fused(top, propagate_down, bottom)

    def reset(self):
        """Forget the carried state: the next forward starts from zero (Caffe's Reset)."""
        self._carried_num = None

    def _setup_fused(self, bottom):
        raise self.error(f"{self.type} has no fused engine (set {self.type}.engine = \"unrolled\")")


@register("LSTM")
class LSTM(_Recurrent):
    """Long short-term memory over T steps (Caffe's LSTMLayer), H = recurrent_param.num_output.

    Blobs, in Caffe's order: W_xc (4H, D), b_c (4H), [W_xc_static (4H, D_static) with a static
    input], W_hc (4H, H); gate rows i, f, o, g; weight_filler for the matrices, bias_filler for b_c.
    Per step t (h_0, c_0: the carried or exposed state):

        gates_t = W_xc·x_t + b_c + W_xc_static·x_static + W_hc·(cont_t·h_{t−1})
        i, f, o, g = σ, cont_t·σ, σ, tanh of the gates;  c_t = f·c_{t−1} + i·g;  h_t = o·tanh(c_t)

    Tops: h (T, N, H), and with expose_hidden h_T and c_T (1, N, H) after the bottoms h_0, c_0
    (1, N, H). Backward through time over the T steps (Caffe's LSTMUnit gradient formulas); no
    gradient to cont.

    ``LSTM.engine``: "fused" (the default: the whole sequence in kernels/*/recurrent.py) or
    "unrolled" (Caffe's unrolled net of LSTMUnit, InnerProduct, Scale, ... layers).
    """

    state_names = ("h_0", "c_0")
    output_name = "h"
    param_names = ("W_xc", "b_c", "W_hc")
    engine = "fused"

    def final_state_names(self):
        return ["h_T", "c_T"]

    def fill_unrolled_net(self, net_param, num):
        """Caffe's LSTMLayer::FillUnrolledNet."""
        H, T = self.hidden, self.T
        cont_slice, x_slice, gate_bottoms = self._fill_inputs(net_param, num, ("c_0", "h_0"), "W_xc",
                                                              "b_c", 4 * H)
        concat = pb.LayerParameter(name="h_concat", type="Concat", top=["h"])
        concat.concat_param.axis = 0
        for t in range(1, T + 1):
            cont_slice.top.append(f"cont_{t}")
            x_slice.top.append(f"W_xc_x_{t}")
            self._fill_recurrence(net_param, t, f"W_hc_h_{t - 1}", "W_hc", 4 * H)
            _layer(net_param, "Eltwise", f"gate_input_{t}",
                   [f"W_hc_h_{t - 1}", f"W_xc_x_{t}"] + gate_bottoms, [f"gate_input_{t}"])
            _layer(net_param, "LSTMUnit", f"unit_{t}", [f"c_{t - 1}", f"gate_input_{t}", f"cont_{t}"],
                   [f"c_{t}", f"h_{t}"])
            concat.bottom.append(f"h_{t}")
        _layer(net_param, "Split", "c_T_copy", [f"c_{T}"], ["c_T"])
        net_param.layer.add().CopyFrom(concat)

    # -- the fused engine -------------------------------------------------------------------------
    def _setup_fused(self, bottom):
        p, H, dtype = self.param.recurrent_param, self.hidden, self.dtype
        shapes = [(4 * H, bottom[0].count_range(2)), (4 * H,)]
        names = ["weight_filler", "bias_filler"]
        if self.static:
            shapes.append((4 * H, bottom[2].count_range(1)))
            names.append("weight_filler")
        shapes.append((4 * H, H))
        names.append("weight_filler")
        self.blobs = [Blob(shape, dtype=dtype) for shape in shapes]
        for blob, name in zip(self.blobs, names):
            fill(getattr(p, name), blob, f"layer '{self.name}' {name}")
        (self.gates, self.hc, self.cells, self.rec, self.h0, self.c0, self.carried_h,
         self.carried_c, self.dgates, self.carry, self.zeros, self.dh0, self.dc0, self.static_gates,
         self.scratch, self.ones) = (Blob(dtype=dtype) for _ in range(16))
        self._fused_shape = None

    def _reshape_fused(self, bottom, top):
        T, N, H = self.T, bottom[0].shape[1], self.hidden
        for i, axis, blob in ((0, 2, self.blobs[0]), (2, 1, self.blobs[2] if self.static else None)):
            if blob is not None and bottom[i].count_range(axis) != blob.shape[1]:
                raise self.error(f"bottom {i} of shape {bottom[i].shape} gives {bottom[i].count_range(axis)} "
                                 f"inputs per stream from axis {axis}, but the weights were made for "
                                 f"{blob.shape[1]}")
        top[0].reshape((T, N, H))
        for blob in top[1:]:
            blob.reshape((1, N, H))
        if self._fused_shape == (N, self.device):
            return
        self._fused_shape = (N, self.device)
        for blob in (self.gates, self.dgates):
            blob.reshape((T, N, 4 * H))
        for blob in (self.hc, self.cells):
            blob.reshape((T, N, H))
        for blob in (self.h0, self.c0, self.carried_h, self.carried_c, self.zeros, self.dh0, self.dc0):
            blob.reshape((N, H))
        self.carry.reshape((2, N, H))
        self.rec.reshape((N, 4 * H))
        self.static_gates.reshape((N, 4 * H))      # (self.zeros is never written: all 0)
        self.ones.reshape((T * N,))                # sums over rows as GEMVs (set in backward)

    def _weights(self):
        """(W_xc, b_c, W_xc_static or None, W_hc) as blobs."""
        w = self.blobs
        return w[0], w[1], (w[2] if self.static else None), w[-1]

    def _forward_fused(self, bottom, top):
        d, R, M = self.device, self.kernels("recurrent"), self.kernels("math")
        T, N, H = self.T, bottom[0].shape[1], self.hidden
        w_xc, b_c, w_static, w_hc = self._weights()
        gates = self.gates.mutable_data_on(d)
        R.gemm_rows(bottom[0].data_on(d).reshape(T * N, w_xc.shape[1]), w_xc.data_on(d).reshape(w_xc.shape),
                    gates.reshape(T * N, 4 * H), True, self._chunks())
        M.channel_add(gates, b_c.data_on(d), gates, T * N, 4 * H, 1)
        if self.static:
            static = self.static_gates.mutable_data_on(d)
            self.kernels("blas").gemm(False, True, 1.0, bottom[2].data_on(d).reshape(N, w_static.shape[1]),
                                      w_static.data_on(d).reshape(w_static.shape), 0.0, static.reshape(N, 4 * H))
            M.channel_add(gates, static, gates, T, N * 4 * H, 1)
        if self.exposed:
            h0, c0 = bottom[self.state_offset], bottom[self.state_offset + 1]
        else:
            self._carry(lambda name: self.carried_h if name == "h_0" else self.carried_c,
                        lambda name: self.h0 if name == "h_0" else self.c0, N)
            h0, c0 = self.h0, self.c0
        h, c = top[0].mutable_data_on(d), self.cells.mutable_data_on(d)
        R.lstm_forward(gates, w_hc.data_on(d), bottom[1].data_on(d), h0.data_on(d), c0.data_on(d),
                       self.hc.mutable_data_on(d), c, h, self.rec.mutable_data_on(d), T, N, H, self._chunks())
        last = slice((T - 1) * N * H, T * N * H)
        blas = self.kernels("blas")
        for source, final in ((h, top[1] if self.exposed else self.carried_h),
                              (c, top[2] if self.exposed else self.carried_c)):
            blas.copy(source[last], final.mutable_data_on(d))

    def _backward_fused(self, top, propagate_down, bottom):
        d, R = self.device, self.kernels("recurrent")
        T, N, H = self.T, bottom[0].shape[1], self.hidden
        w_xc, b_c, w_static, w_hc = self._weights()
        learn = self.param_propagate_down
        c0 = (bottom[self.state_offset + 1] if self.exposed else self.c0).data_on(d)
        sinks = []
        for k, workspace in enumerate((self.dh0, self.dc0)):
            j = self.state_offset + k
            wanted = self.exposed and propagate_down[j]
            sinks.append(bottom[j].mutable_diff_on(d) if wanted else workspace.mutable_data_on(d))
        dh_last, dc_last = ((top[1].diff_on(d), top[2].diff_on(d)) if self.exposed
                            else (self.zeros.data_on(d), self.zeros.data_on(d)))
        dgates = self.dgates.mutable_data_on(d)
        R.lstm_backward(self.gates.data_on(d), w_hc.data_on(d), bottom[1].data_on(d), c0,
                        self.cells.data_on(d), top[0].diff_on(d), dh_last, dc_last, dgates, sinks[0],
                        sinks[1], self.carry.mutable_data_on(d), T, N, H, self._chunks())
        rows, chunks = dgates.reshape(T * N, 4 * H), self._chunks()
        x = bottom[0].data_on(d).reshape(T * N, w_xc.shape[1])
        if d == "cpu":                  # gemm_tn's partial products (the GPU's needs none)
            blocks = max(1, min(chunks, T * N // 64))
            self.scratch.reshape(blocks * 4 * H * max(w_xc.shape[1], H))
        scratch = self.scratch.mutable_data_on(d)
        if learn[0]:
            R.gemm_tn(rows, x, w_xc.mutable_diff_on(d).reshape(w_xc.shape), scratch, chunks)
        blas, ones = self.kernels("blas"), self.ones.mutable_data_on(d)
        blas.set_value(ones, 1.0)
        if learn[1]:            # Σ over the T·N rows of ∂E/∂gates
            blas.gemv(True, 1.0, rows, ones, 1.0, b_c.mutable_diff_on(d))
        if learn[-1]:
            R.gemm_tn(rows, self.hc.data_on(d).reshape(T * N, H), w_hc.mutable_diff_on(d).reshape(w_hc.shape),
                      scratch, chunks)
        if propagate_down[0]:
            R.gemm_rows(rows, w_xc.data_on(d).reshape(w_xc.shape),
                        bottom[0].mutable_diff_on(d).reshape(x.shape), False, chunks)
        if self.static and (learn[2] or propagate_down[2]):
            ds = self.static_gates.mutable_data_on(d)
            blas.gemv(True, 1.0, dgates.reshape(T, N * 4 * H), ones[:T], 0.0, ds)   # Σ_t ∂E/∂gates_t
            ds2, ws = ds.reshape(N, 4 * H), w_static.shape
            if learn[2]:
                blas.gemm(True, False, 1.0, ds2, bottom[2].data_on(d).reshape(N, ws[1]), 1.0,
                          w_static.mutable_diff_on(d).reshape(ws))
            if propagate_down[2]:
                blas.gemm(False, False, 1.0, ds2, w_static.data_on(d).reshape(ws), 0.0,
                          bottom[2].mutable_diff_on(d).reshape(N, ws[1]))


@register("RNN")
class RNN(_Recurrent):
    """A simple recurrent net over T steps (Caffe's RNNLayer), H = recurrent_param.num_output.

    Blobs, in Caffe's order: W_xh (H, D), b_h (H), [W_xh_static (H, D_static) with a static
    input], W_hh (H, H), W_ho (H, H), b_o (H). Per step t (h_0: the carried or exposed state):

        h_t = tanh(W_xh·x_t + b_h + W_xh_static·x_static + W_hh·(cont_t·h_{t−1}))
        o_t = tanh(W_ho·h_t + b_o)

    Tops: o (T, N, H), and with expose_hidden h_T (1, N, H) after the bottom h_0 (1, N, H).
    Backward through time by the unrolled net; no gradient to cont.
    """

    state_names = ("h_0",)
    output_name = "o"
    param_names = ("W_xh", "b_h", "W_hh", "W_ho", "b_o")

    def final_state_names(self):
        return ["h_T"]

    def fill_unrolled_net(self, net_param, num):
        """Caffe's RNNLayer::FillUnrolledNet."""
        p, H, T = self.param.recurrent_param, self.hidden, self.T
        cont_slice, x_slice, sum_bottoms = self._fill_inputs(net_param, num, ("h_0",), "W_xh", "b_h", H)
        concat = pb.LayerParameter(name="o_concat", type="Concat", top=["o"])
        concat.concat_param.axis = 0
        for t in range(1, T + 1):
            cont_slice.top.append(f"cont_{t}")
            x_slice.top.append(f"W_xh_x_{t}")
            self._fill_recurrence(net_param, t, f"W_hh_h_{t - 1}", "W_hh", H)
            _layer(net_param, "Eltwise", f"h_input_sum_{t}", [f"W_hh_h_{t - 1}", f"W_xh_x_{t}"] + sum_bottoms,
                   [f"h_neuron_input_{t}"])
            _layer(net_param, "TanH", f"h_neuron_{t}", [f"h_neuron_input_{t}"], [f"h_{t}"])
            _inner_product(net_param, f"W_ho_h_{t}", f"h_{t}", f"W_ho_h_{t}", H, 2, ["W_ho", "b_o"], p,
                           bias=True)
            _layer(net_param, "TanH", f"o_neuron_{t}", [f"W_ho_h_{t}"], [f"o_{t}"])
            concat.bottom.append(f"o_{t}")
        net_param.layer.add().CopyFrom(concat)
