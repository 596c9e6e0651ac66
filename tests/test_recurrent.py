"""The recurrent layers (issue 13) beyond their rows in tests/layer_cases.py.

The table checks the LSTM's default (fused) engine and the RNN against the numpy oracle, the
gradient to x and the parameters, and GPU against CPU. Here: both LSTM engines (the fused
whole-sequence kernels and Caffe's unrolled net of LSTMUnit, InnerProduct, Scale, ... layers)
under the same oracle and the same gradient checks, now to every input a sample has (x,
x_static, the exposed initial h and c) and every parameter, with cont resetting mid-sequence;
the engines against each other; the state a layer carries between forwards; Caffe's
parameter blobs and their order (weights written as Caffe writes them load); and the bad
inputs the issue names.
"""
from unittest import mock

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import jitnet
from jitnet.layers.recurrent import LSTM
from jitnet.proto import pb
from jitnet.testing import KinkError, check_gradients, run_layer_on

import reference as ref
from layer_cases import CASES_BY_TYPE, recurrent_lp, recurrent_params, ref_recurrent

ENGINES = [("LSTM", "fused"), ("LSTM", "unrolled"), ("RNN", "unrolled")]
IDS = [f"{t}-{e}" for t, e in ENGINES]


def _engine(type_name, engine):
    """LSTM's engine for the duration of a test (RNN has only the unrolled one)."""
    if type_name == "LSTM":
        return mock.patch.object(LSTM, "engine", engine)
    return mock.patch.object(jitnet.layers.recurrent.RNN, "engine", engine)


def _draw(data, type_name, purpose, workdir):
    return data.draw(CASES_BY_TYPE[type_name].samples(purpose, workdir), label="sample")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("recurrent")


@pytest.mark.parametrize("type_name,engine", ENGINES, ids=IDS)
@settings(max_examples=10)
@given(data=st.data())
def test_forward_matches_the_equations(type_name, engine, workdir, data):
    sample = _draw(data, type_name, "forward", workdir)
    with _engine(type_name, engine):
        run = run_layer_on("cpu", sample.layer_param, sample.bottoms, dtype=np.float64,
                           params=sample.params, backward=False)
    assert run.layer.engine_used == engine
    for k, (got, want) in enumerate(zip(run.tops, ref_recurrent(sample), strict=True)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, err_msg=f"top {k}")


@pytest.mark.parametrize("type_name,engine", ENGINES, ids=IDS)
@settings(max_examples=8)
@given(data=st.data())
def test_gradients_to_every_input_and_parameter(type_name, engine, workdir, data):
    """float64 central differences for x, x_static, the exposed h_0 (and c_0) and every
    parameter; cont (drawn with resets mid-sequence) gets none."""
    sample = _draw(data, type_name, "gradient", workdir)
    checked = tuple(i for i in range(len(sample.bottoms)) if i != 1)
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    with _engine(type_name, engine):
        try:
            report = check_gradients(sample.layer_param, sample.bottoms, check_bottoms=checked,
                                     check_params=True, params=sample.params, seed=seed,
                                     rtol=1e-5, atol=1e-6)
        except KinkError:
            assume(False)
    assert [r.name for r in report.inputs] == ([f"bottom {i}" for i in checked]
                                               + [f"param {j}" for j in range(len(sample.params))])


@settings(max_examples=10)
@given(data=st.data())
def test_lstm_engines_agree(workdir, data):
    """The fused engine and the unrolled net: the same tops, bottom diffs and param diffs."""
    sample = _draw(data, "LSTM", "parity", workdir)
    runs = {}
    for engine in ("fused", "unrolled"):
        with _engine("LSTM", engine):
            runs[engine] = run_layer_on("cpu", sample.layer_param, sample.bottoms, dtype=np.float64,
                                        params=sample.params, propagate_down=sample.propagate_down,
                                        seed=3)
    fused, unrolled = runs["fused"], runs["unrolled"]
    for what, a, b in ([(f"top {k}", a, b) for k, (a, b) in enumerate(zip(fused.tops, unrolled.tops))]
                       + [(f"bottom {i} diff", a, b) for i, (a, b)
                          in enumerate(zip(fused.bottom_diffs, unrolled.bottom_diffs)) if a is not None]
                       + [(f"param {j} diff", a, b) for j, (a, b)
                          in enumerate(zip(fused.param_diffs, unrolled.param_diffs))]):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=what)


# =========================================================================== the carried state
def _layer(lp, bottoms, params):
    bottom = []
    for a in bottoms:
        blob = jitnet.Blob(np.shape(a), dtype=np.float64)
        blob.data[...] = a
        bottom.append(blob)
    top = [jitnet.Blob(dtype=np.float64) for _ in lp.top]
    layer = jitnet.layer.create_layer(lp, jitnet.TRAIN)
    layer.setup_layer(bottom, top)
    for blob, value in zip(layer.blobs, params):
        blob.data[...] = value
    return layer, bottom, top


@pytest.mark.parametrize("type_name,engine", ENGINES, ids=IDS)
def test_each_forward_starts_where_the_last_ended(type_name, engine):
    """Without expose_hidden the layer carries h (and c) from one forward to the next, as
    Caffe's does; cont = 0 at a step forgets it; a change of N starts from zero."""
    rng = np.random.default_rng(4)
    steps, num, hidden, features = 3, 2, 3, 4
    params = recurrent_params(lambda s: rng.normal(scale=0.5, size=s), type_name, hidden, features)
    first, second = rng.normal(size=(2, steps, num, features))
    cont = np.ones((steps, num))
    cont[0, 1] = 0.0                     # stream 1 starts a new sequence in the second batch
    with _engine(type_name, engine):
        layer, bottom, top = _layer(recurrent_lp(type_name, hidden), [first, cont], params)
        layer.run_forward(bottom, top)
        bottom[0].data[...] = second
        layer.run_forward(bottom, top)
        got = top[0].data.copy()
        args = (params[0], params[1], params[2]) if type_name == "LSTM" else tuple(params)
        oracle = ref.lstm if type_name == "LSTM" else ref.rnn
        states = oracle(first, np.ones((steps, num)), *args)[1:]
        want = oracle(second, cont, *args, *([None, None] + list(states)))[0]
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
        # N changes: zero state
        third = rng.normal(size=(steps, 3, features))
        bottom[0].reshape(third.shape)
        bottom[0].data[...] = third
        bottom[1].reshape((steps, 3))
        bottom[1].data[...] = 1.0
        layer.reshape_layer(bottom, top)
        layer.run_forward(bottom, top)
        np.testing.assert_allclose(top[0].data, oracle(third, np.ones((steps, 3)), *args)[0],
                                   rtol=1e-10, atol=1e-12)


# =========================================================================== Caffe's blobs
CAFFE_BLOBS = {   # (type, static) -> shapes with H = 3, D = 4, D_static = 2, in Caffe's order
    ("LSTM", False): [(12, 4), (12,), (12, 3)],
    ("LSTM", True): [(12, 4), (12,), (12, 2), (12, 3)],
    ("RNN", False): [(3, 4), (3,), (3, 3), (3, 3), (3,)],
    ("RNN", True): [(3, 4), (3,), (3, 2), (3, 3), (3, 3), (3,)],
}


def _net_param(type_name, static, expose=False, steps=2, num=2):
    net = pb.NetParameter(name="recurrent")
    inputs = net.layer.add(name="input", type="Input", top=["x", "cont"] + ["x_static"] * static)
    shapes = [(steps, num, 4), (steps, num)] + [(num, 2)] * static
    for shape in shapes:
        inputs.input_param.shape.add().dim.extend(shape)
    lp = recurrent_lp(type_name, 3, static, expose, name="rec")
    lp.recurrent_param.weight_filler.type = "gaussian"
    lp.recurrent_param.bias_filler.type = "gaussian"
    net.layer.add().CopyFrom(lp)
    return net, shapes


@pytest.mark.parametrize("engine", ["fused", "unrolled"])
@pytest.mark.parametrize("type_name,static", sorted(CAFFE_BLOBS))
def test_caffe_weights_load_in_caffes_order(type_name, static, engine, tmp_path):
    """The layer's blobs are Caffe's, in Caffe's order and shapes; a caffemodel holding them
    (written blob by blob, as Caffe writes them) loads, and the forward is the equations'
    with those weights."""
    if type_name == "RNN" and engine == "fused":
        pytest.skip("RNN has only the unrolled engine")
    net_param, shapes = _net_param(type_name, static)
    rng = np.random.default_rng(7)
    weights = [rng.normal(scale=0.5, size=s) for s in CAFFE_BLOBS[type_name, static]]
    model = pb.NetParameter(name="recurrent")
    layer = model.layer.add(name="rec", type=type_name)
    for w in weights:
        blob = layer.blobs.add()
        blob.shape.dim.extend(w.shape)
        blob.data.extend(w.astype(np.float32).ravel().tolist())
    path = tmp_path / "rec.caffemodel"
    path.write_bytes(model.SerializeToString())
    with _engine(type_name, engine):
        net = jitnet.Net(net_param, jitnet.TEST, weights=str(path))
        assert [p.data.shape for p in net.params["rec"]] == CAFFE_BLOBS[type_name, static]
        x, cont = rng.normal(size=shapes[0]), np.array([[0.0, 0.0], [1.0, 0.0]])
        feeds = {"x": x, "cont": cont}
        if static:
            feeds["x_static"] = rng.normal(size=shapes[2])
        out = net.forward(**feeds)
    w = [np.float32(a).astype(np.float64) for a in weights]
    feeds = {k: np.float32(v).astype(np.float64) for k, v in feeds.items()}
    extra = (feeds["x_static"], w[2]) if static else (None, None)
    if type_name == "LSTM":
        want = ref.lstm(feeds["x"], cont, w[0], w[1], w[-1], *extra)[0]
    else:
        want = ref.rnn(feeds["x"], cont, w[0], w[1], *w[-3:], *extra)[0]
    np.testing.assert_allclose(out["h" if type_name == "LSTM" else "o"], want, rtol=1e-5, atol=1e-6)


def test_the_unrolled_net_shares_its_parameters_across_steps():
    with _engine("LSTM", "unrolled"):
        net = jitnet.Net(_net_param("LSTM", False, steps=3)[0], jitnet.TRAIN)
    inner = net.layer_dict["rec"].net
    units = [layer for layer in inner.layers if layer.type == "LSTMUnit"]
    assert len(units) == 3
    assert len(net.layer_dict["rec"].blobs) == 3 and len(inner.learnable_params) == 3


# =========================================================================== bad input
def _prototxt_net(type_name, bottoms, expose):
    text = f"""
        layer {{ name: "in" type: "Input" top: "x" top: "cont" top: "s" top: "h0" top: "c0"
                input_param {{ shape {{ dim: 2 dim: 1 dim: 3 }} shape {{ dim: 2 dim: 1 }}
                              shape {{ dim: 1 dim: 2 }} shape {{ dim: 1 dim: 1 dim: 4 }}
                              shape {{ dim: 1 dim: 1 dim: 4 }} }} }}
        layer {{ name: "rnn_under_test" type: "{type_name}" {' '.join(f'bottom: "{b}"' for b in bottoms)}
                top: "y" {'top: "hT" top: "cT"' if type_name == "LSTM" and expose else ''}
                {'top: "hT"' if type_name == "RNN" and expose else ''}
                recurrent_param {{ num_output: 4 expose_hidden: {str(expose).lower()} }} }}
        layer {{ name: "silence" type: "Silence" bottom: "s" bottom: "h0" bottom: "c0" }}
    """
    from google.protobuf import text_format
    return text_format.Parse(text, pb.NetParameter())


@pytest.mark.parametrize("type_name,bottoms", [
    ("LSTM", ["x", "cont", "h0"]),                    # c_0 missing
    ("LSTM", ["x", "cont", "s", "h0", "c0", "c0"]),   # one too many
    ("RNN", ["x", "cont"]),                           # h_0 missing
])
def test_expose_hidden_with_the_wrong_number_of_bottoms_names_the_layer(type_name, bottoms):
    with pytest.raises(jitnet.JitnetError, match=r"rnn_under_test.*expose_hidden"):
        jitnet.Net(_prototxt_net(type_name, bottoms, True), jitnet.TEST)


@pytest.mark.parametrize("type_name,engine", ENGINES, ids=IDS)
def test_a_changed_number_of_timesteps_names_the_layer(type_name, engine):
    """Caffe fixes T at setup ("input number of timesteps changed"); N may change."""
    with _engine(type_name, engine):
        lp = recurrent_lp(type_name, 2, name="seq")
        rng = np.random.default_rng(1)
        params = recurrent_params(lambda s: rng.normal(size=s), type_name, 2, 3)
        layer, bottom, top = _layer(lp, [np.ones((4, 2, 3)), np.ones((4, 2))], params)
        bottom[0].reshape((4, 5, 3))
        bottom[1].reshape((4, 5))
        layer.reshape_layer(bottom, top)                  # more streams: fine
        bottom[0].reshape((5, 5, 3))
        bottom[1].reshape((5, 5))
        with pytest.raises(jitnet.LayerError, match=r"'seq'.*timesteps changed.*T = 4"):
            layer.reshape_layer(bottom, top)


@pytest.mark.parametrize("type_name,engine", ENGINES, ids=IDS)
def test_no_gradient_to_cont(type_name, engine):
    with _engine(type_name, engine):
        lp = recurrent_lp(type_name, 2, name="seq")
        layer, bottom, top = _layer(lp, [np.ones((2, 1, 3)), np.ones((2, 1))],
                                    recurrent_params(np.ones, type_name, 2, 3))
        layer.run_forward(bottom, top)
        with pytest.raises(jitnet.LayerError, match=r"'seq'.*continuation"):
            layer.run_backward(top, [True, True], bottom)
