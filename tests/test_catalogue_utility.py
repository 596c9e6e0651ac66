"""Behaviour of the utility layers and MVN (issue 9) that the layer table does not reach:
Caffe's tie rules (Eltwise MAX, ArgMax), gradients to every bottom, the bottoms Caffe gives no
gradient, views, in-place use, accumulation of repeated indices, Filter's first reshape,
Parameter in a training net, MVN's 4-D top and its backward with a large eps. Expected values
come from tests/reference.py or are written out here from Caffe's definitions.
"""
import numpy as np
import pytest
from google.protobuf import text_format

import jitnet
from jitnet import planner
from jitnet.layer import layer_class
from jitnet.proto import pb
from jitnet.testing import check_gradients, forward_layer, run_layer_on

import reference as ref

DEVICES = ["cpu", "gpu"]


def _lp(type_name, bottoms=("x",), tops=("y",), name="u", **fields):
    """A LayerParameter; ``fields`` maps a parameter message name to {field: value}."""
    lp = pb.LayerParameter(name=name, type=type_name, bottom=list(bottoms), top=list(tops))
    for message, values in fields.items():
        for key, value in values.items():
            target = getattr(lp, message)
            if isinstance(value, list):
                getattr(target, key).extend(value)
            else:
                setattr(target, key, value)
    return lp


def _rng(seed=0):
    return np.random.default_rng(seed)


# =========================================================================== Eltwise
@pytest.mark.parametrize("device", DEVICES)
def test_eltwise_max_ties_and_backward_to_the_winner(device):
    """Caffe: between bottoms 0 and 1 a tie goes to bottom 1; bottom 2 wins only when strictly
    greater; the gradient goes to the winner alone."""
    a = np.array([1.0, 2.0, 3.0, 5.0, 0.0, 4.0])
    b = np.array([1.0, 1.0, 3.0, 6.0, 0.0, 4.0])
    c = np.array([0.0, 2.0, 3.0, 7.0, 0.5, 4.0])
    lp = _lp("Eltwise", bottoms=("a", "b", "c"), eltwise_param={"operation": pb.EltwiseParameter.MAX})
    dy = np.arange(1.0, 7.0)
    run = run_layer_on(device, lp, [a, b, c], propagate_down=[True] * 3, top_diffs=[dy])
    y, winner = ref.eltwise([a, b, c], "MAX")
    np.testing.assert_array_equal(winner, [1, 0, 1, 2, 2, 1])     # the rule, spelled out
    np.testing.assert_array_equal(run.tops[0], y)
    for k in range(3):
        np.testing.assert_array_equal(run.bottom_diffs[k], np.where(winner == k, dy, 0.0))


@pytest.mark.parametrize("op", ["SUM", "PROD", "MAX"])
def test_eltwise_gradients_reach_every_bottom(op):
    rng = _rng(1)
    xs = [rng.uniform(0.5, 1.5, (2, 3)) * rng.choice([-1, 1], (2, 3)) for _ in range(3)]
    fields = {"operation": getattr(pb.EltwiseParameter, op)}
    if op == "SUM":
        fields["coeff"] = [0.5, -2.0, 1.0]
    check_gradients(_lp("Eltwise", bottoms=("a", "b", "c"), eltwise_param=fields), xs,
                    check_bottoms=[0, 1, 2])


@pytest.mark.parametrize("stable", [True, False])
def test_eltwise_prod_gradient_with_a_zero_input(stable):
    """The stable gradient is the product of the other inputs, also where an input is 0; the
    other form, top / bottom, is what Caffe computes there (0/0: NaN)."""
    a, b = np.array([0.0, 2.0]), np.array([3.0, -1.5])
    lp = _lp("Eltwise", bottoms=("a", "b"),
             eltwise_param={"operation": pb.EltwiseParameter.PROD, "stable_prod_grad": stable})
    run = run_layer_on("cpu", lp, [a, b], propagate_down=[True, True], top_diffs=[np.ones(2)])
    np.testing.assert_array_equal(run.bottom_diffs[1], a)
    if stable:
        np.testing.assert_array_equal(run.bottom_diffs[0], b)
    else:
        assert np.isnan(run.bottom_diffs[0][0]) and run.bottom_diffs[0][1] == b[1]


def test_eltwise_in_place_for_sum_and_max_but_not_prod():
    for op in ("SUM", "MAX"):
        planner._check_in_place([_lp("Eltwise", bottoms=("a", "b"), tops=("a",),
                                     eltwise_param={"operation": getattr(pb.EltwiseParameter, op)})])
    with pytest.raises(jitnet.NetDefinitionError, match="'u'.*cannot run in place.*PROD"):
        planner._check_in_place([_lp("Eltwise", bottoms=("a", "b"), tops=("a",),
                                     eltwise_param={"operation": pb.EltwiseParameter.PROD})])


# =========================================================================== Concat, Slice
def test_concat_gradients_reach_every_bottom():
    rng = _rng(2)
    xs = [rng.normal(size=(2, k, 3)) for k in (1, 3, 2)]
    check_gradients(_lp("Concat", bottoms=("a", "b", "c"), concat_param={"axis": -2}), xs,
                    check_bottoms=[0, 1, 2])


@pytest.mark.parametrize("type_name,message", [("Concat", "concat_param"), ("Slice", "slice_param")])
def test_one_bottom_concat_and_one_top_slice_share_the_blob(type_name, message):
    """As Caffe: the top shares the bottom's data and diff (no copy, no kernel)."""
    x = _rng(3).normal(size=(2, 3))
    lp = _lp(type_name)
    layer = jitnet.layer.create_layer(lp, jitnet.TRAIN)
    bottom, top = [jitnet.Blob((2, 3), dtype=np.float64)], [jitnet.Blob(dtype=np.float64)]
    bottom[0].data[...] = x
    layer.setup_layer(bottom, top)
    layer.run_forward(bottom, top)
    assert top[0]._data is bottom[0]._data and top[0]._diff is bottom[0]._diff
    np.testing.assert_array_equal(top[0].data, x)


def test_slice_at_the_end_of_the_axis_gives_an_empty_top():
    """Caffe allows a last slice_point equal to the axis size: the last top is empty."""
    x = _rng(4).normal(size=(2, 3))
    tops = forward_layer(_lp("Slice", tops=("a", "b", "c"), slice_param={"slice_point": [1, 3]}), [x])
    assert [t.shape for t in tops] == [(2, 1), (2, 2), (2, 0)]


# =========================================================================== ArgMax
@pytest.mark.parametrize("device", DEVICES)
def test_argmax_ties_rank_the_larger_index_first(device):
    """std::partial_sort with std::greater on (value, index) pairs: equal values, larger index first."""
    x = np.array([[1.0, 3.0, 3.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    lp = _lp("ArgMax", argmax_param={"top_k": 3, "out_max_val": True})
    (y,) = run_layer_on(device, lp, [x], backward=False).tops
    assert y.shape == (2, 2, 3)
    np.testing.assert_array_equal(y[0], [[4, 2, 1], [3, 3, 3]])
    np.testing.assert_array_equal(y[1], [[4, 3, 2], [0, 0, 0]])


def test_argmax_top_shape_without_axis_pads_to_the_bottom_axes():
    x = _rng(5).normal(size=(2, 3, 2, 2))
    (y,) = forward_layer(_lp("ArgMax", argmax_param={"top_k": 2}), [x])
    assert y.shape == (2, 1, 2, 1)
    np.testing.assert_array_equal(y, ref.argmax(x, 2))
    (y,) = forward_layer(_lp("ArgMax", argmax_param={"axis": 2, "out_max_val": True}), [x])
    assert y.shape == (2, 3, 1, 2)
    np.testing.assert_array_equal(y, x.max(axis=2, keepdims=True))


def test_argmax_nan_ranks_last():
    """(Caffe leaves NaN undefined: partial_sort needs an order.) NaN comes after every number."""
    x = np.array([[np.nan, 1.0, np.nan, -5.0]])
    (y,) = forward_layer(_lp("ArgMax", argmax_param={"top_k": 4}), [x])
    np.testing.assert_array_equal(y.ravel(), [1, 3, 2, 0])


# =========================================================================== no gradient
@pytest.mark.parametrize("type_name,bottoms,arrays,which,fields", [
    ("ArgMax", ("x",), [np.ones((2, 3))], 0, {}),
    ("BatchReindex", ("x", "i"), [np.ones((2, 3)), np.array([1.0])], 1, {}),
    ("Filter", ("x", "s"), [np.ones((2, 3)), np.array([1.0, 0.0])], 1, {}),
    ("Embed", ("x",), [np.array([1.0, 0.0])], 0, {"embed_param": {"input_dim": 2, "num_output": 3}}),
])
def test_a_gradient_caffe_does_not_define_is_a_layer_error(type_name, bottoms, arrays, which, fields):
    """Caffe dies (LOG(FATAL), CHECK or NOT_IMPLEMENTED) when asked for these gradients;
    force_backward does not ask for them in jitnet."""
    lp = _lp(type_name, bottoms=bottoms, name="nograd", **fields)
    down = [k == which for k in range(len(bottoms))]
    with pytest.raises(jitnet.LayerError, match="'nograd'"):
        run_layer_on("cpu", lp, arrays, propagate_down=down)
    assert not layer_class(type_name).allow_force_backward(lp, which)


# =========================================================================== BatchReindex, Embed
@pytest.mark.parametrize("device", DEVICES)
def test_batch_reindex_backward_adds_repeated_rows(device):
    rng = _rng(6)
    x = rng.normal(size=(4, 2))
    idx = np.array([3.0, 0.0, 3.0, 3.0, 1.0])
    dy = rng.normal(size=(5, 2))
    run = run_layer_on(device, _lp("BatchReindex", bottoms=("x", "i")), [x, idx],
                       propagate_down=[True, False], top_diffs=[dy])
    np.testing.assert_array_equal(run.tops[0], x[[3, 0, 3, 3, 1]])
    expected = np.zeros_like(x)
    np.add.at(expected, [3, 0, 3, 3, 1], dy)
    np.testing.assert_allclose(run.bottom_diffs[0], expected, rtol=1e-14)
    assert not expected[2].any()                     # a row nobody picked gets 0


@pytest.mark.parametrize("device", DEVICES)
def test_embed_weight_gradient_adds_repeated_indices(device):
    rng = _rng(7)
    idx = np.array([[2.0, 0.0, 2.0], [2.0, 4.0, 0.0]])
    w, b = rng.normal(size=(5, 3)), rng.normal(size=3)
    dy = rng.normal(size=(2, 3, 3))
    lp = _lp("Embed", embed_param={"input_dim": 5, "num_output": 3})
    run = run_layer_on(device, lp, [idx], params=[w, b], top_diffs=[dy], propagate_down=[False])
    np.testing.assert_allclose(run.tops[0], ref.embed(idx, w, b), rtol=1e-14)
    dw = np.zeros_like(w)
    np.add.at(dw, idx.ravel().astype(int), dy.reshape(-1, 3))
    np.testing.assert_allclose(run.param_diffs[0], dw, rtol=1e-14)
    np.testing.assert_allclose(run.param_diffs[1], dy.reshape(-1, 3).sum(0), rtol=1e-14)


@pytest.mark.parametrize("type_name,bad", [("Embed", 2.5), ("Embed", 7.0), ("BatchReindex", 3.0),
                                           ("BatchReindex", -0.5)])
def test_bad_index_is_a_layer_error_naming_the_value(type_name, bad):
    if type_name == "Embed":
        lp, arrays = _lp("Embed", name="emb", embed_param={"input_dim": 4, "num_output": 2}), \
            [np.array([1.0, bad])]
    else:
        lp, arrays = _lp("BatchReindex", bottoms=("x", "i"), name="emb"), [np.ones((3, 2)), np.array([1.0, bad])]
    with pytest.raises(jitnet.LayerError, match=rf"'emb'.*{bad:g} \(position 1\)"):
        forward_layer(lp, arrays)


def test_embed_index_check_runs_in_gpu_mode_too():
    lp = _lp("Embed", name="emb", embed_param={"input_dim": 3, "num_output": 2})
    with pytest.raises(jitnet.LayerError, match="'emb'.*5"):
        run_layer_on("gpu", lp, [np.array([0.0, 5.0])], backward=False)


# =========================================================================== Filter
def test_filter_gradients_reach_every_data_bottom():
    rng = _rng(14)
    xs = [rng.normal(size=(4, 2)), rng.normal(size=(4, 1, 3))]
    check_gradients(_lp("Filter", bottoms=("a", "b", "s"), tops=("ya", "yb")),
                    xs + [np.array([1.0, 0.0, 3.0, 1.0])], check_bottoms=[0, 1])


def test_filter_first_reshape_keeps_every_row_then_the_selection():
    """Caffe sizes the tops at setup with all N rows (no selector data yet); every forward
    reshapes them to the selected rows."""
    lp = _lp("Filter", bottoms=("x", "s"))
    layer = jitnet.layer.create_layer(lp, jitnet.TRAIN)
    x, s = jitnet.Blob((4, 2), dtype=np.float64), jitnet.Blob(4, dtype=np.float64)
    x.data[...] = np.arange(8.0).reshape(4, 2)
    s.data[...] = [0.0, 1.0, 0.0, np.nan]               # NaN is not zero: kept, as in Caffe
    top = [jitnet.Blob(dtype=np.float64)]
    layer.setup_layer([x, s], top)
    assert top[0].shape == (4, 2)
    layer.run_forward([x, s], top)
    np.testing.assert_array_equal(top[0].data, [[2.0, 3.0], [6.0, 7.0]])
    s.data[...] = 0.0
    layer.run_forward([x, s], top)
    assert top[0].shape == (0, 2)


@pytest.mark.parametrize("device", DEVICES)
def test_filter_backward_scatters_and_zeroes_the_rest(device):
    rng = _rng(8)
    x, s = rng.normal(size=(5, 3)), np.array([1.0, 0.0, 0.0, -1.0, 2.0]).reshape(5, 1)
    dy = rng.normal(size=(3, 3))
    run = run_layer_on(device, _lp("Filter", bottoms=("x", "s")), [x, s], top_diffs=[dy],
                       propagate_down=[True, False])
    expected = np.zeros_like(x)
    expected[[0, 3, 4]] = dy
    np.testing.assert_array_equal(run.bottom_diffs[0], expected)


# =========================================================================== Silence, Parameter
def test_silence_zeroes_only_the_propagated_diffs():
    lp = _lp("Silence", bottoms=("a", "b"), tops=())
    layer = jitnet.layer.create_layer(lp, jitnet.TRAIN)
    bottom = [jitnet.Blob((2, 2), dtype=np.float64), jitnet.Blob(3, dtype=np.float64)]
    layer.setup_layer(bottom, [])
    for blob in bottom:
        blob.diff[...] = 7.0
    layer.run_forward(bottom, [])
    layer.run_backward([], [True, False], bottom)
    assert not bottom[0].diff.any() and (bottom[1].diff == 7.0).all()


def test_parameter_learns_in_a_net():
    """A Parameter blob trained toward a target with EuclideanLoss: it starts at 0 (no filler,
    as in Caffe), its top is the blob's data, and SGD moves it to the target."""
    net_param = text_format.Parse("""
        layer { name: "target" type: "Input" top: "t" input_param { shape { dim: 2 dim: 3 } } }
        layer { name: "p" type: "Parameter" top: "w" parameter_param { shape { dim: 2 dim: 3 } } }
        layer { name: "loss" type: "EuclideanLoss" bottom: "w" bottom: "t" top: "loss" }""",
                                  pb.NetParameter())
    solver_param = pb.SolverParameter(base_lr=1.0, lr_policy="fixed", max_iter=1000)
    solver_param.net_param.CopyFrom(net_param)
    solver = jitnet.SGDSolver(solver_param)
    net = solver.net
    assert not net.params["p"][0].data.any()
    target = np.arange(6.0).reshape(2, 3)
    net.blobs["t"].data[...] = target
    solver.step(30)
    np.testing.assert_allclose(net.params["p"][0].data, target, rtol=1e-4)
    net.forward()
    np.testing.assert_array_equal(net.blobs["w"].data, net.params["p"][0].data)


def test_parameter_gradient_accumulates():
    lp = _lp("Parameter", bottoms=(), parameter_param={})
    lp.parameter_param.shape.dim.extend([3])
    layer = jitnet.layer.create_layer(lp, jitnet.TRAIN)
    top = [jitnet.Blob(dtype=np.float64)]
    layer.setup_layer([], top)
    for _ in range(2):
        layer.run_forward([], top)
        top[0].diff[...] = [1.0, 2.0, 3.0]
        layer.run_backward(top, [], [])
    np.testing.assert_array_equal(layer.blobs[0].diff, [2.0, 4.0, 6.0])


# =========================================================================== Reduction, Tile
def test_reduction_defaults_to_a_0_d_sum():
    x = _rng(9).normal(size=(2, 3, 4))
    (y,) = forward_layer(_lp("Reduction"), [x])
    assert y.shape == () and y == pytest.approx(x.sum(), rel=1e-14)


@pytest.mark.parametrize("device", DEVICES)
def test_reduction_asum_gradient_is_zero_at_zero(device):
    """Caffe's caffe_cpu_sign: sign(0) = 0."""
    lp = _lp("Reduction", reduction_param={"operation": pb.ReductionParameter.ASUM, "coeff": 2.0})
    run = run_layer_on(device, lp, [np.array([-1.5, 0.0, 2.0])], propagate_down=[True],
                       top_diffs=[np.array(0.5)])
    np.testing.assert_array_equal(run.bottom_diffs[0], [-1.0, 0.0, 1.0])


# =========================================================================== MVN
def test_mvn_top_is_4_d():
    """Caffe reshapes the top with the legacy (num, channels, height, width)."""
    x = _rng(10).normal(size=(3, 5))
    (y,) = forward_layer(_lp("MVN", mvn_param={"across_channels": True}), [x])
    assert y.shape == (3, 5, 1, 1)
    np.testing.assert_allclose(y.reshape(3, 5), (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True),
                               rtol=1e-8)


def _caffe_mvn_backward(y, dy, sigma_plus_eps, planes):
    """Caffe's MVNLayer::Backward_cpu (normalize_variance): (dy − mean(dy) − y·mean(y·dy)) / (σ + eps)."""
    y2, dy2 = y.reshape(planes, -1), dy.reshape(planes, -1)
    dx = dy2 - dy2.mean(1, keepdims=True) - y2 * (y2 * dy2).mean(1, keepdims=True)
    return (dx / sigma_plus_eps[:, None]).reshape(y.shape)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("across", [False, True])
def test_mvn_backward_is_caffes_with_a_large_eps(device, across):
    """Caffe's backward leaves out the factor σ / (σ + eps) of the exact gradient; with eps
    comparable to σ that shows, and jitnet computes what Caffe computes."""
    rng = _rng(11)
    x = rng.normal(size=(2, 3, 2, 2)) * 0.05
    dy = rng.normal(size=x.shape)
    eps = 0.03
    lp = _lp("MVN", mvn_param={"eps": eps, "across_channels": across})
    run = run_layer_on(device, lp, [x], propagate_down=[True], top_diffs=[dy])
    eps = lp.mvn_param.eps                                 # as stored (float32)
    y = ref.mvn(x, eps=eps, across_channels=across)
    np.testing.assert_allclose(run.tops[0], y, rtol=1e-10)
    planes = 2 if across else 6
    sigma = x.reshape(planes, -1).std(1)
    np.testing.assert_allclose(run.bottom_diffs[0], _caffe_mvn_backward(y, dy, sigma + eps, planes),
                               rtol=1e-10, atol=1e-12)


def test_mvn_constant_plane_gives_zero():
    x = np.full((1, 2, 2, 2), 3.0)
    x[0, 1] = np.arange(4.0).reshape(2, 2)
    run = run_layer_on("cpu", _lp("MVN"), [x], propagate_down=[True], top_diffs=[np.ones(x.shape)])
    assert not run.tops[0][0, 0].any() and not run.bottom_diffs[0][0, 0].any()


# =========================================================================== in a net
def _net(text, **kwargs):
    return jitnet.Net(text_format.Parse(text, pb.NetParameter()), jitnet.TRAIN, **kwargs)


def test_slices_sums_and_concats_in_a_net():
    """x → Slice (a, b) → Slice b (c, d) → s = a − c + d/2 → Concat (s, a) along axis 2 → loss
    = Reduction SUMSQ × 0.5; 'a' fans out through a Split; ArgMax → Silence sits on the side."""
    net = _net("""
        force_backward: true
        layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 6 dim: 3 } } }
        layer { name: "s1" type: "Slice" bottom: "x" top: "a" top: "b" slice_param { slice_point: 2 } }
        layer { name: "s2" type: "Slice" bottom: "b" top: "c" top: "d" }
        layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "c" bottom: "d" top: "s"
                eltwise_param { coeff: 1 coeff: -1 coeff: 0.5 } }
        layer { name: "cat" type: "Concat" bottom: "s" bottom: "a" top: "cat" concat_param { axis: 2 } }
        layer { name: "loss" type: "Reduction" bottom: "cat" top: "loss" loss_weight: 1
                reduction_param { operation: SUMSQ coeff: 0.5 } }
        layer { name: "best" type: "ArgMax" bottom: "x" top: "best" }
        layer { name: "quiet" type: "Silence" bottom: "best" }""")
    x = _rng(12).normal(size=(2, 6, 3))
    net.blobs["x"].data[...] = x
    loss = net.forward()["loss"]
    x = net.blobs["x"].data.astype(np.float64)
    a, c, d = x[:, :2], x[:, 2:4], x[:, 4:]
    s = a - c + 0.5 * d
    assert loss == pytest.approx(0.5 * ((s ** 2).sum() + (a ** 2).sum()), rel=1e-6)
    net.backward()
    np.testing.assert_allclose(net.blobs["x"].diff, np.concatenate([a + s, -s, 0.5 * s], 1),
                               rtol=1e-5, atol=1e-6)


def test_force_backward_leaves_index_bottoms_alone():
    """Caffe would die here (force_backward asks every bottom for a gradient); jitnet does
    not ask the index bottoms of Embed and BatchReindex."""
    net = _net("""
        force_backward: true
        layer { name: "in" type: "Input" top: "idx" top: "rows" top: "t"
                input_param { shape { dim: 3 } shape { dim: 2 } shape { dim: 2 dim: 8 } } }
        layer { name: "emb" type: "Embed" bottom: "idx" top: "e"
                embed_param { input_dim: 5 num_output: 4 weight_filler { type: "gaussian" } } }
        layer { name: "pick" type: "BatchReindex" bottom: "e" bottom: "rows" top: "p" }
        layer { name: "tile" type: "Tile" bottom: "p" top: "q" tile_param { tiles: 2 } }
        layer { name: "loss" type: "EuclideanLoss" bottom: "q" bottom: "t" top: "loss" }""")
    net.blobs["idx"].data[...] = [4, 0, 4]
    net.blobs["rows"].data[...] = [2, 2]                  # both rows pick e[2] = W[4]
    net.blobs["t"].data[...] = _rng(13).normal(size=(2, 8))
    net.forward()
    net.backward()
    w, t = net.params["emb"][0].data.astype(np.float64), net.blobs["t"].data.reshape(2, 2, 4)
    expected = np.zeros((5, 4))
    expected[4] = (w[4] - t).sum((0, 1)) / 2              # ∂(Σ (q − t)² / 2N)/∂q, N = 2
    np.testing.assert_allclose(net.params["emb"][0].diff, expected, rtol=1e-5, atol=1e-6)


# =========================================================================== CPU kernels at sizes past one task
# (The layer table's shapes are small: these reach the parallel blocks, the column splits of a
# few long rows, and the narrow-row paths.)
from jitnet.kernels.cpu import mvn as kmvn  # noqa: E402
from jitnet.kernels.cpu import utility as ku  # noqa: E402

DTYPES = [np.float32, np.float64]


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("rows,width", [(3, 20011), (9000, 3)])
def test_copy_block_into_a_strided_slab(dt, rows, width):
    rng = _rng(20)
    src = rng.normal(size=rows * width).astype(dt)
    dst = np.full(rows * (width + 5), np.nan, dt)
    ku.copy_block(src, width, 0, dst, width + 5, 2, rows, width, 1)
    d = dst.reshape(rows, width + 5)
    np.testing.assert_array_equal(d[:, 2:2 + width], src.reshape(rows, width))
    assert np.isnan(d[:, :2]).all() and np.isnan(d[:, 2 + width:]).all()


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("outer,inner,tiles", [(20000, 1, 3), (3, 7001, 4), (500, 3, 11), (2, 1, 50000)])
def test_tile_kernels(dt, outer, inner, tiles):
    rng = _rng(21)
    x = rng.normal(size=outer * inner).astype(dt)
    y = np.full(outer * tiles * inner, np.nan, dt)
    ku.copy_block(x, inner, 0, y, inner, 0, outer, inner, tiles)
    np.testing.assert_array_equal(y, np.tile(x.reshape(outer, 1, inner), (1, tiles, 1)).ravel())
    dy = rng.normal(size=y.size).astype(dt).reshape(outer, tiles, inner)
    dx = np.full(x.size, np.nan, dt)
    ku.tile_backward(dy.ravel(), dx, outer, inner, tiles)
    expected = dy[:, 0].copy()
    for t in range(1, tiles):                       # Caffe's order: copy, then add tile by tile
        expected += dy[:, t]
    np.testing.assert_array_equal(dx, expected.ravel())


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("inner", [1, 40000])
def test_gather_rows_and_ordered_row_sums(dt, inner):
    rng = _rng(22)
    n_src, rows = 5, np.array([4, -1, 0, 4, 2, 4], dtype=np.int32)
    src = rng.normal(size=n_src * inner).astype(dt)
    dst = np.full(rows.size * inner, np.nan, dt)
    ku.gather_rows(src, rows, dst, inner)
    expected = np.where(rows[:, None] >= 0, src.reshape(n_src, inner)[rows], 0)
    np.testing.assert_array_equal(dst.reshape(-1, inner), expected)
    # the positions holding rows 0, 2 and 4 (as BatchReindex groups them), summed back in order
    order, starts, targets = (np.array(a, dtype=np.int32) for a in ([2, 4, 0, 3, 5], [0, 1, 2, 5], [0, 2, 4]))
    acc0 = rng.normal(size=n_src * inner).astype(dt)
    acc = acc0.copy()
    ku.sum_rows_into(dst, order, starts, targets, acc, inner)
    d, want = dst.reshape(-1, inner), acc0.reshape(n_src, inner).copy()
    want[2] += d[4]
    want[0] += d[2]
    for p in (0, 3, 5):
        want[4] += d[p]
    np.testing.assert_array_equal(acc.reshape(n_src, inner), want)


@pytest.mark.parametrize("op,f,g", [(1, lambda x: x, lambda x: np.ones_like(x)), (2, np.abs, np.sign),
                                    (3, np.square, lambda x: 2 * x)])
@pytest.mark.parametrize("num,dim", [(1, 100003), (4, 9), (3000, 7)])
def test_reduction_kernels(op, f, g, num, dim):
    rng = _rng(23)
    x = rng.normal(size=num * dim).astype(np.float32)
    x[::7] = 0
    y = np.full(num, np.nan, np.float32)
    ku.reduction_forward(x, y, num, dim, op, 0.5)
    want = 0.5 * f(x.astype(np.float64)).reshape(num, dim).sum(1)
    np.testing.assert_allclose(y, want, rtol=2e-7, atol=1e-6)
    dy = rng.normal(size=num).astype(np.float32)
    dx = np.full(x.size, np.nan, np.float32)
    ku.reduction_backward(x, dy, dx, num, dim, op, 0.5)
    np.testing.assert_allclose(dx, (0.5 * dy[:, None] * g(x.astype(np.float64)).reshape(num, dim)).ravel(),
                               rtol=1e-6)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("planes,size", [(3, 30001), (2000, 9)])
@pytest.mark.parametrize("normalize_variance", [True, False])
def test_mvn_kernels(dt, planes, size, normalize_variance):
    rng = _rng(24)
    x = (rng.normal(size=planes * size) * 3 + 1).astype(dt)
    y = np.full(x.size, np.nan, dt)
    scale = np.full(planes, np.nan, dt)
    kmvn.mvn_forward(x, y, scale, planes, size, normalize_variance, 1e-9)
    x2 = x.astype(np.float64).reshape(planes, size)
    centred = x2 - x2.mean(1, keepdims=True)
    want = centred / (x2.std(1, keepdims=True) + 1e-9) if normalize_variance else centred
    tol = 1e-5 if dt == np.float32 else 1e-12
    np.testing.assert_allclose(y.reshape(planes, size), want, rtol=tol, atol=tol)
    dy = rng.normal(size=x.size).astype(dt)
    dx = np.full(x.size, np.nan, dt)
    kmvn.mvn_backward(y, dy, scale, dx, planes, size, normalize_variance)
    y2, dy2 = y.astype(np.float64).reshape(planes, size), dy.astype(np.float64).reshape(planes, size)
    want = dy2 - dy2.mean(1, keepdims=True)
    if normalize_variance:
        want = (want - y2 * (y2 * dy2).mean(1, keepdims=True)) * scale.astype(np.float64)[:, None]
    np.testing.assert_allclose(dx.reshape(planes, size), want, rtol=tol, atol=tol)
