"""Tests of jitnet.planner: the graph reasoning Caffe's Net::Init does.

Every expected value below comes from Caffe's rules (CAFFE-NOTES.md and Caffe's
net.cpp / insert_splits.cpp), worked out by hand for small prototxt strings.
"""
from pathlib import Path

import numpy as np
import re

import pytest
from google.protobuf import text_format

import jitnet
from jitnet import planner
from jitnet.errors import NetDefinitionError
from jitnet.planner import TEST, TRAIN
from jitnet.proto import pb, read_net, read_net_binary

MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"


def P(text):
    return text_format.Parse(text, pb.NetParameter())


def plan(text, phase=TRAIN, level=0, stages=()):
    return planner.plan(P(text), phase, level, stages)


def names(p):
    return [s.name for s in p.forward]


def step(p, name):
    matches = [s for s in p.forward if s.name == name]
    assert len(matches) == 1, f"{name} appears {len(matches)} times in {names(p)}"
    return matches[0]


def dummy(name, rules="", top=None):
    """A DummyData layer (no bottoms) with the given include/exclude rules."""
    return (f'layer {{ name: "{name}" type: "DummyData" top: "{top or name}" {rules} '
            f'dummy_data_param {{ shape {{ dim: 2 dim: 3 }} }} }}\n')


def require_models():
    if not MODELS.is_dir():
        pytest.skip(f"real Caffe model files not found at {MODELS}")


# A small classifier used by several tests.
MLP = """
name: "mlp"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 4 dim: 5 } shape { dim: 4 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        inner_product_param { num_output: 6 } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 3 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""


# ----------------------------------------------------------------------------------------------
# 1. state rules
# ----------------------------------------------------------------------------------------------
def test_phase_include_and_exclude():
    text = (dummy("always") + dummy("train_only", "include { phase: TRAIN }")
            + dummy("test_only", "include { phase: TEST }")
            + dummy("not_test", "exclude { phase: TEST }")
            + dummy("not_train", "exclude { phase: TRAIN }"))
    assert names(plan(text, TRAIN)) == ["always", "train_only", "not_test"]
    assert names(plan(text, TEST)) == ["always", "test_only", "not_train"]


def test_level_rules():
    text = (dummy("min1", "include { min_level: 1 }") + dummy("max1", "include { max_level: 1 }")
            + dummy("band", "include { min_level: 1 max_level: 2 }")
            + dummy("ex_min2", "exclude { min_level: 2 }"))
    assert names(plan(text, TRAIN, level=0)) == ["max1", "ex_min2"]
    assert names(plan(text, TRAIN, level=1)) == ["min1", "max1", "band", "ex_min2"]
    assert names(plan(text, TRAIN, level=2)) == ["min1", "band"]
    assert names(plan(text, TRAIN, level=3)) == ["min1"]


def test_stage_and_not_stage_rules():
    text = (dummy("a", 'include { stage: "a" }') + dummy("ab", 'include { stage: "a" stage: "b" }')
            + dummy("not_a", 'include { not_stage: "a" }')
            + dummy("a_or_b", 'include { stage: "a" } include { stage: "b" }')
            + dummy("ex_b", 'exclude { stage: "b" }')
            + dummy("a_test", 'include { phase: TEST stage: "a" }'))
    assert names(plan(text, TRAIN)) == ["not_a", "ex_b"]
    assert names(plan(text, TRAIN, stages=("a",))) == ["a", "a_or_b", "ex_b"]
    assert names(plan(text, TRAIN, stages=("b",))) == ["not_a", "a_or_b"]
    assert names(plan(text, TRAIN, stages=("a", "b"))) == ["a", "ab", "a_or_b"]
    assert names(plan(text, TEST, stages=("a",))) == ["a", "a_or_b", "ex_b", "a_test"]


def test_include_and_exclude_on_one_layer_is_an_error():
    text = dummy("ok") + dummy("both", "include { phase: TRAIN } exclude { phase: TEST }")
    with pytest.raises(NetDefinitionError, match="both"):
        plan(text, TRAIN)


def test_net_level_state_stages_are_merged():
    text = 'state { stage: "deploy" }\n' + dummy("dep", 'include { stage: "deploy" }') \
        + dummy("dep_x", 'include { stage: "deploy" stage: "x" }') \
        + dummy("no_dep", 'include { not_stage: "deploy" }')
    assert names(plan(text, TEST)) == ["dep"]
    p = plan(text, TEST, stages=("x",))
    assert names(p) == ["dep", "dep_x"]
    assert set(p.stages) == {"deploy", "x"}


def test_real_autoencoder_stage_rules():
    require_models()
    net = read_net(MODELS / "mnist_autoencoder" / "mnist_autoencoder.prototxt")

    def data_sources(phase, stages):
        kept = planner.filter_layers(net, phase, 0, stages)
        return [l.data_param.source for l in kept if l.type == "Data"]

    assert data_sources(TRAIN, ()) == ["examples/mnist/mnist_train_lmdb"]
    assert data_sources(TEST, ("test-on-train",)) == ["examples/mnist/mnist_train_lmdb"]
    assert data_sources(TEST, ("test-on-test",)) == ["examples/mnist/mnist_test_lmdb"]
    assert data_sources(TEST, ()) == []


# ----------------------------------------------------------------------------------------------
# 3. order
# ----------------------------------------------------------------------------------------------
def test_valid_prototxt_order_is_kept():
    # Two interleaved independent branches: a topological sort that is not
    # order-preserving could easily put b_relu before a_relu.
    text = (dummy("b") + dummy("a")
            + 'layer { name: "a_relu" type: "ReLU" bottom: "a" top: "a2" }\n'
            + 'layer { name: "b_relu" type: "ReLU" bottom: "b" top: "b2" }\n'
            + 'layer { name: "b_sig" type: "Sigmoid" bottom: "b2" top: "b3" }\n'
            + 'layer { name: "a_sig" type: "Sigmoid" bottom: "a2" top: "a3" }\n')
    p = plan(text)
    assert names(p) == ["b", "a", "a_relu", "b_relu", "b_sig", "a_sig"]
    assert [s.index for s in p.forward] == list(range(6))
    assert names(plan(MLP)) == ["data", "ip1", "relu1", "ip2", "loss"]


SHUFFLED_MLP = """
name: "mlp"
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1r" top: "ip2"
        inner_product_param { num_output: 3 } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1r" }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        inner_product_param { num_output: 6 } }
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 4 dim: 5 } shape { dim: 4 } } }
"""


def test_out_of_order_file_is_sorted_topologically_and_runs():
    p = planner.plan(P(SHUFFLED_MLP), TRAIN)
    assert names(p) == ["data", "ip1", "relu1", "ip2", "loss"]
    produced = set()
    for s in p.forward:
        assert all(b in produced for b in s.bottoms), s.name
        produced.update(s.tops)

    net = jitnet.Net(P(SHUFFLED_MLP), jitnet.TRAIN)
    rng = np.random.default_rng(0)
    for name, (w, b) in net.params.items():
        w.data[...] = rng.normal(size=w.shape)
        b.data[...] = rng.normal(size=b.shape)
    x = rng.normal(size=(4, 5)).astype(np.float32)
    label = np.array([0, 2, 1, 2], dtype=np.float32)
    out = net.forward(data=x, label=label)
    w1, b1 = (a.data.astype(np.float64) for a in net.params["ip1"])
    w2, b2 = (a.data.astype(np.float64) for a in net.params["ip2"])
    s = np.maximum(x @ w1.T + b1, 0) @ w2.T + b2
    logp = s - s.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    expected = -logp[np.arange(4), label.astype(int)].mean()
    assert float(out["loss"]) == pytest.approx(expected, rel=1e-5)


def test_cycle_is_an_error_naming_the_layers():
    text = (dummy("d")
            + 'layer { name: "cyc_a" type: "ReLU" bottom: "y" top: "x" }\n'
            + 'layer { name: "cyc_b" type: "Sigmoid" bottom: "x" top: "y" }\n')
    with pytest.raises(NetDefinitionError, match="cycle") as err:
        plan(text)
    assert "cyc_a" in str(err.value) and "cyc_b" in str(err.value)
    assert "'d'" not in str(err.value) and ", d" not in str(err.value)


# ----------------------------------------------------------------------------------------------
# 4. split insertion
# ----------------------------------------------------------------------------------------------
TWO_LOSSES = """
layer { name: "in" type: "Input" top: "x" top: "t"
        input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 3 } }
layer { name: "e1" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "l1" }
layer { name: "e2" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "l2" }
"""


def test_split_for_two_consumers():
    p = plan(TWO_LOSSES)
    # "t" is top 1 of "in" and feeds e1 and e2; "y" is top 0 of "ip" and feeds e1 and e2.
    assert names(p) == ["in", "t_in_1_split", "ip", "y_ip_0_split", "e1", "e2"]
    sp = step(p, "y_ip_0_split")
    assert sp.type == "Split"
    assert sp.bottoms == ["y"]
    assert sp.tops == ["y_ip_0_split_0", "y_ip_0_split_1"]
    assert step(p, "t_in_1_split").tops == ["t_in_1_split_0", "t_in_1_split_1"]
    assert step(p, "e1").bottoms == ["y_ip_0_split_0", "t_in_1_split_0"]
    assert step(p, "e2").bottoms == ["y_ip_0_split_1", "t_in_1_split_1"]
    # the rewired LayerParameter agrees with the step
    assert list(step(p, "e2").param.bottom) == ["y_ip_0_split_1", "t_in_1_split_1"]
    assert step(p, "ip").bottoms == ["x"]


def test_split_for_three_consumers_in_consumer_order():
    text = (dummy("d")
            + 'layer { name: "c" type: "ReLU" bottom: "d" top: "c" }\n'
            + 'layer { name: "a" type: "Sigmoid" bottom: "d" top: "a" }\n'
            + 'layer { name: "b" type: "TanH" bottom: "d" top: "b" }\n')
    p = plan(text)
    assert names(p) == ["d", "d_d_0_split", "c", "a", "b"]
    assert step(p, "d_d_0_split").tops == ["d_d_0_split_0", "d_d_0_split_1", "d_d_0_split_2"]
    assert [step(p, n).bottoms for n in ("c", "a", "b")] == [
        ["d_d_0_split_0"], ["d_d_0_split_1"], ["d_d_0_split_2"]]


def test_single_consumer_gets_no_split():
    assert all(s.type != "Split" for s in plan(MLP).forward)


LOSS_WEIGHT_AND_CONSUMER = """
layer { name: "in" type: "Input" top: "x" top: "t" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" loss_weight: 0.5
        inner_product_param { num_output: 3 } }
layer { name: "e" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "l" }
layer { name: "s" type: "Sigmoid" bottom: "y" top: "z" }
"""


def test_consumed_top_with_loss_weight_gets_an_extra_split_top():
    p = plan(LOSS_WEIGHT_AND_CONSUMER)
    # t is consumed once here (only by e), so there is no split for it
    assert names(p) == ["in", "ip", "y_ip_0_split", "e", "s"]
    sp = step(p, "y_ip_0_split")
    assert len(sp.tops) == 3                    # two consumers + the loss
    assert sorted(sp.loss_weights) == [0.0, 0.0, 0.5]
    loss_top = sp.tops[sp.loss_weights.index(0.5)]
    # the producer no longer carries the weight: the split top does
    assert step(p, "ip").loss_weights == [0.0]
    assert p.blob_loss_weights["y"] == 0.0
    assert p.blob_loss_weights[loss_top] == 0.5
    consumer_tops = {step(p, "e").bottoms[0], step(p, "s").bottoms[0]}
    assert consumer_tops == set(sp.tops) - {loss_top}
    assert all(t.startswith("y_ip_0_split_") for t in sp.tops)


def test_loss_weight_split_top_named_as_caffe():
    p = plan(LOSS_WEIGHT_AND_CONSUMER)
    sp = step(p, "y_ip_0_split")
    assert sp.tops == ["y_ip_0_split_0", "y_ip_0_split_1", "y_ip_0_split_2"]
    assert sp.loss_weights == [0.5, 0.0, 0.0]
    assert step(p, "e").bottoms[0] == "y_ip_0_split_1"
    assert step(p, "s").bottoms[0] == "y_ip_0_split_2"


def test_in_place_chain_splits_after_the_in_place_layer():
    text = (dummy("d")
            + 'layer { name: "ip" type: "InnerProduct" bottom: "d" top: "h" '
              'inner_product_param { num_output: 4 } }\n'
            + 'layer { name: "relu" type: "ReLU" bottom: "h" top: "h" }\n'
            + 'layer { name: "drop" type: "Dropout" bottom: "h" top: "h" }\n'
            + 'layer { name: "a" type: "Sigmoid" bottom: "h" top: "a" }\n'
            + 'layer { name: "b" type: "TanH" bottom: "h" top: "b" }\n')
    p = plan(text)
    assert names(p) == ["d", "ip", "relu", "drop", "h_drop_0_split", "a", "b"]
    assert step(p, "relu").bottoms == ["h"] and step(p, "relu").tops == ["h"]
    assert step(p, "drop").bottoms == ["h"] and step(p, "drop").tops == ["h"]
    assert step(p, "h_drop_0_split").bottoms == ["h"]
    assert step(p, "a").bottoms == ["h_drop_0_split_0"]
    assert step(p, "b").bottoms == ["h_drop_0_split_1"]


def test_split_names_match_a_real_caffe_trained_model():
    """Caffe wrote its auto-inserted Split layers into this caffemodel; the planner
    must produce the same names for the same graph (conv part replaced by an Input)."""
    require_models()
    model = read_net_binary(MODELS / "cifar10_quick_impact_scar"
                            / "cifar10_impact_scar_quick_iter_10000.caffemodel")
    caffe_names = [l.name for l in model.layer]
    text = """
    layer { name: "cifar" type: "Input" top: "data" top: "label"
            input_param { shape { dim: 2 dim: 1024 } shape { dim: 2 } } }
    layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
            inner_product_param { num_output: 64 } }
    layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
            inner_product_param { num_output: 3 } }
    layer { name: "accuracy" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy" }
    layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
    """
    ours = names(plan(text, TEST))
    conv_part = {"conv1", "pool1", "relu1", "conv2", "relu2", "pool2", "conv3", "relu3", "pool3"}
    assert [n for n in caffe_names if n not in conv_part] == ours
    assert "label_cifar_1_split" in ours and "ip2_ip2_0_split" in ours


# ----------------------------------------------------------------------------------------------
# in-place and duplicate tops
# ----------------------------------------------------------------------------------------------
def test_in_place_top_is_the_same_blob_in_net():
    net = jitnet.Net(P(MLP), jitnet.TRAIN)
    i = [l.name for l in net.layers].index("relu1")
    assert net.steps[i].bottoms[0] is net.steps[i].tops[0] is net.blobs["ip1"]
    assert list(net.blobs) == ["data", "label", "ip1", "ip2", "loss"]
    x = np.random.default_rng(1).normal(size=(4, 5)).astype(np.float32)
    net.forward(data=x, label=np.zeros(4, np.float32))
    w, b = (a.data.astype(np.float64) for a in net.params["ip1"])
    np.testing.assert_allclose(net.blobs["ip1"].data, np.maximum(x @ w.T + b, 0),
                               rtol=1e-5, atol=1e-6)


def test_top_produced_twice_is_an_error():
    text = (dummy("d")
            + 'layer { name: "r1" type: "ReLU" bottom: "d" top: "x" }\n'
            + 'layer { name: "r2" type: "Sigmoid" bottom: "d" top: "x" }\n')
    with pytest.raises(NetDefinitionError) as err:
        plan(text)
    msg = str(err.value)
    assert "'x'" in msg and "r1" in msg and "r2" in msg


# ----------------------------------------------------------------------------------------------
# 5. loss weights
# ----------------------------------------------------------------------------------------------
def test_default_loss_weights():
    text = MLP.replace(
        'top: "loss" }',
        'top: "loss" top: "prob" }\n'
        'layer { name: "acc" type: "Accuracy" bottom: "ip2" bottom: "label" top: "acc" }\n'
        'layer { name: "e" type: "EuclideanLoss" bottom: "data" bottom: "data" top: "el" }\n')
    p = plan(text)
    assert step(p, "loss").loss_weights == [1.0, 0.0]
    assert step(p, "acc").loss_weights == [0.0]
    assert step(p, "e").loss_weights == [1.0]
    assert step(p, "ip1").loss_weights == [0.0]
    assert step(p, "data").loss_weights == [0.0, 0.0]
    assert p.blob_loss_weights["loss"] == 1.0
    assert p.blob_loss_weights["prob"] == 0.0
    assert p.blob_loss_weights["el"] == 1.0
    assert p.blob_loss_weights["acc"] == 0.0


def test_explicit_loss_weights():
    text = MLP.replace('top: "loss" }', 'top: "loss" loss_weight: 0.3 }').replace(
        'top: "ip2"\n', 'top: "ip2" loss_weight: 2\n', 1)
    p = plan(text)
    assert step(p, "loss").loss_weights == [pytest.approx(0.3)]
    # ip2 is consumed by the loss and carries a weight: the weight moves to a split top
    sp = step(p, "ip2_ip2_0_split")
    assert sorted(sp.loss_weights) == [0.0, 2.0]
    # two tops of a loss layer with explicit weights
    text2 = MLP.replace('top: "loss" }', 'top: "loss" top: "prob" loss_weight: 0 loss_weight: 1 }')
    assert step(plan(text2), "loss").loss_weights == [0.0, 1.0]


def test_wrong_number_of_loss_weights_is_an_error():
    text = MLP.replace('top: "loss" }', 'top: "loss" loss_weight: 1 loss_weight: 2 }')
    with pytest.raises(NetDefinitionError, match="loss"):
        plan(text)


# ----------------------------------------------------------------------------------------------
# 6. need_backward
# ----------------------------------------------------------------------------------------------
def bw(p):
    return {s.name: (s.need_backward, list(s.propagate_down)) for s in p.forward}


def test_layers_with_params_need_backward_inputs_do_not():
    b = bw(plan(MLP))
    assert b["data"] == (False, [])
    assert b["ip1"] == (True, [False])         # data is an input: no gradient into it
    assert b["relu1"] == (True, [True])
    assert b["ip2"] == (True, [True])
    assert b["loss"] == (True, [True, False])   # labels never get a gradient


def test_lr_mult_zero_everywhere_means_no_backward():
    text = MLP.replace('top: "ip1"\n', 'top: "ip1" param { lr_mult: 0 } param { lr_mult: 0 }\n')
    b = bw(plan(text))
    assert b["ip1"] == (False, [False])
    assert b["relu1"] == (False, [False])
    assert b["ip2"] == (True, [False])
    assert b["loss"] == (True, [True, False])
    # only the weight frozen: the bias (lr_mult 1 by default) still needs backward
    text = MLP.replace('top: "ip1"\n', 'top: "ip1" param { lr_mult: 0 }\n')
    assert bw(plan(text))["ip1"] == (True, [False])
    assert bw(plan(text))["relu1"] == (True, [True])


def test_propagate_down_false():
    text = MLP.replace('bottom: "ip1" top: "ip2"', 'bottom: "ip1" top: "ip2" propagate_down: false')
    p = plan(text)
    b = bw(p)
    assert b["ip2"] == (True, [False])          # its own params still learn
    assert b["relu1"][0] is False               # nothing below ip2 gets a gradient
    assert b["ip1"][0] is False
    assert [s.name for s in p.backward] == ["loss", "ip2"]


def test_propagate_down_wrong_count_is_an_error():
    text = MLP.replace('bottom: "label" top: "loss"',
                       'bottom: "label" top: "loss" propagate_down: true')
    with pytest.raises(NetDefinitionError, match="propagate_down"):
        plan(text)


def test_layers_not_leading_to_a_loss_are_skipped():
    text = MLP + """
    layer { name: "acc" type: "Accuracy" bottom: "ip2" bottom: "label" top: "acc" }
    layer { name: "side" type: "InnerProduct" bottom: "ip1" top: "side"
            inner_product_param { num_output: 2 } }
    layer { name: "side_relu" type: "ReLU" bottom: "side" top: "side" }
    """
    p = plan(text)
    b = bw(p)
    assert b["acc"] == (False, [False, False])
    assert b["side"] == (False, [False])
    assert b["side_relu"] == (False, [False])
    assert b["ip1"] == (True, [False])
    backward = [s.name for s in p.backward]
    assert "acc" not in backward and "side" not in backward and "side_relu" not in backward
    # the split feeding the side branch still passes the loss branch's gradient
    assert "ip1_relu1_0_split" in backward


def test_force_backward_runs_every_layer_and_input_bottom():
    text = "force_backward: true\n" + MLP + """
    layer { name: "side" type: "Sigmoid" bottom: "ip2" top: "side" }
    """
    p = plan(text)
    assert p.force_backward
    b = bw(p)
    assert all(need for need, _ in b.values())
    assert b["ip1"] == (True, [True])           # into the input blob
    assert b["loss"] == (True, [True, False])   # but never into the labels
    assert b["side"] == (True, [True])


def test_force_backward_overrides_propagate_down_false():
    text = "force_backward: true\n" + MLP.replace(
        'bottom: "ip1" top: "ip2"', 'bottom: "ip1" top: "ip2" propagate_down: false')
    assert bw(plan(text))["ip2"] == (True, [True])


def test_backward_is_reverse_of_forward_restricted_to_need_backward():
    text = MLP + """
    layer { name: "acc" type: "Accuracy" bottom: "ip2" bottom: "label" top: "acc" }
    """
    p = plan(text)
    expected = [s for s in reversed(p.forward) if s.need_backward]
    assert [s.name for s in p.backward] == [s.name for s in expected]
    assert [s.name for s in p.backward] == ["loss", "ip2_ip2_0_split", "ip2", "relu1", "ip1"]


# ----------------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------------
def test_missing_bottom_names_layer_and_bottom():
    text = dummy("d") + 'layer { name: "consumer" type: "ReLU" bottom: "nowhere" top: "r" }\n'
    with pytest.raises(NetDefinitionError) as err:
        plan(text)
    assert "consumer" in str(err.value) and "nowhere" in str(err.value)


def test_bottom_only_produced_in_a_filtered_layer_is_missing():
    text = (dummy("d", "include { phase: TEST }")
            + 'layer { name: "r" type: "ReLU" bottom: "d" top: "r" }\n')
    plan(text, TEST)
    with pytest.raises(NetDefinitionError, match="'d'"):
        plan(text, TRAIN)


def test_unknown_type_lists_known_types():
    text = dummy("d") + 'layer { name: "weird" type: "NoSuchLayer" bottom: "d" top: "w" }\n'
    with pytest.raises(NetDefinitionError) as err:
        plan(text)
    msg = str(err.value)
    assert "NoSuchLayer" in msg and "weird" in msg
    for known in ("InnerProduct", "ReLU", "SoftmaxWithLoss", "Input"):
        assert known in msg


def test_wrong_number_of_bottoms_or_tops_names_the_layer():
    text = dummy("d") + 'layer { name: "lonely_loss" type: "SoftmaxWithLoss" bottom: "d" top: "l" }\n'
    with pytest.raises(NetDefinitionError, match="lonely_loss"):
        plan(text)
    text = dummy("d") + ('layer { name: "two_tops" type: "InnerProduct" bottom: "d" top: "a" top: "b" '
                         'inner_product_param { num_output: 2 } }\n')
    with pytest.raises(NetDefinitionError, match="two_tops"):
        plan(text)
    text = dummy("d") + 'layer { name: "no_top" type: "ReLU" bottom: "d" }\n'
    with pytest.raises(NetDefinitionError, match="no_top"):
        plan(text)


def test_duplicate_layer_names_are_accepted_as_in_caffe():
    """Caffe's Net::Init does not refuse two layers of one name (its own autoencoder example
    has two); the name then stands for the later layer."""
    text = dummy("d") + dummy("d", top="d2")
    assert [s.name for s in plan(text).forward] == ["d", "d"]
    net = jitnet.Net(P(text), TRAIN)
    assert net.layer_dict["d"] is net.layers[1]


def test_phase_must_be_train_or_test():
    with pytest.raises(NetDefinitionError):
        plan(MLP, phase=7)


# ----------------------------------------------------------------------------------------------
# inputs and outputs, lifetimes
# ----------------------------------------------------------------------------------------------
def test_inputs_outputs_and_lifetimes():
    p = plan(MLP + 'layer { name: "acc" type: "Accuracy" bottom: "ip2" bottom: "label" top: "acc" }')
    assert p.inputs == ["data", "label"]
    assert set(p.outputs) == {"loss", "acc"}
    life = p.lifetimes()
    idx = {s.name: s.index for s in p.forward}
    assert life["data"] == (idx["data"], idx["ip1"])
    assert life["ip1"] == (idx["ip1"], idx["ip2"])       # written by ip1 and relu1, read by ip2
    assert life["loss"] == (idx["loss"], idx["loss"])


def test_legacy_net_level_input_end_to_end(tmp_path):
    path = tmp_path / "legacy.prototxt"
    path.write_text("""
    name: "legacy"
    input: "data"
    input_dim: 2 input_dim: 3 input_dim: 1 input_dim: 1
    layers { name: "ip" type: INNER_PRODUCT bottom: "data" top: "ip"
             blobs_lr: 1 blobs_lr: 2
             inner_product_param { num_output: 4
               weight_filler { type: "constant" value: 0.5 }
               bias_filler { type: "constant" value: 0.25 } } }
    layers { name: "relu" type: RELU bottom: "ip" top: "ip" }
    """)
    net = jitnet.Net(path, jitnet.TEST)
    assert net.inputs == ["data"]
    assert net.blobs["data"].shape == (2, 3, 1, 1)
    assert net.outputs == ["ip"]
    assert [l.type for l in net.layers] == ["Input", "InnerProduct", "ReLU"]
    assert net.params_lr == [1.0, 2.0]
    x = np.arange(6, dtype=np.float32).reshape(2, 3, 1, 1) - 2
    out = net.forward(data=x)
    expected = np.maximum(x.reshape(2, 3).sum(1, keepdims=True) * 0.5 + 0.25, 0) * np.ones((1, 4))
    np.testing.assert_allclose(out["ip"], expected, rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# real model files: their unregistered layer types fail clearly
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("relpath, phase, missing", [
    ("lenet_mnist/lenet.prototxt", TEST, {"Convolution", "Pooling"}),
    ("lenet_mnist/lenet_train_test.prototxt", TRAIN, {"Convolution", "Pooling"}),
    ("cifar10_quick/cifar10_quick.prototxt", TEST, {"Convolution", "Pooling"}),
    ("bvlc_googlenet/deploy.prototxt", TEST, {"Convolution", "Pooling", "LRN", "Concat"}),
    ("bvlc_googlenet/train_val.prototxt", TRAIN, {"Convolution", "Pooling", "LRN", "Concat"}),
])
def test_real_files_fail_with_every_unknown_type(relpath, phase, missing):
    """All the unregistered types of a file are named at once, each with its layers."""
    require_models()
    missing = missing - set(jitnet.layer_type_list())      # the catalogue grows
    if not missing:
        pytest.skip("every layer type of this file is registered now")
    net = read_net(MODELS / relpath)
    with pytest.raises(NetDefinitionError) as err:
        planner.plan(net, phase)
    msg = str(err.value)
    named = set(re.findall(r"'(\w+)' \(layers? ", msg))
    assert named == missing, msg
    assert "Known types" in msg and "InnerProduct" in msg and "SoftmaxWithLoss" in msg


def test_real_autoencoder_plans_with_its_duplicate_layer_name():
    """Caffe's own autoencoder example has two layers named "loss" (SigmoidCrossEntropyLoss
    and EuclideanLoss, both kept in TRAIN); Caffe lets that pass, and so does jitnet."""
    require_models()
    net = read_net(MODELS / "mnist_autoencoder" / "mnist_autoencoder.prototxt")
    # Its LMDB Data layers become an Input layer: the LMDBs are not in the folder.
    layers = [l for l in net.layer if l.type != "Data"]
    net.ClearField("layer")
    inp = net.layer.add(name="data", type="Input")
    inp.top.append("data")
    inp.input_param.shape.add().dim.extend([2, 1, 28, 28])
    net.layer.extend(layers)
    p = planner.plan(net, TRAIN)
    losses = [s for s in p.forward if s.name == "loss"]
    assert [s.type for s in losses] == ["SigmoidCrossEntropyLoss", "EuclideanLoss"]
    built = jitnet.Net(net, TRAIN)
    assert built.layer_dict["loss"].type == "EuclideanLoss"       # the later one, as Caffe's map


def test_a_loss_layer_without_a_top_gets_an_automatic_one():
    """Caffe's AutoTopBlobs (NIN's train_val writes SoftmaxWithLoss without a top): the loss
    still counts, with loss weight 1, and the anonymous top is no net output."""
    text = ('layer { name: "in" type: "Input" top: "x" top: "label" '
            'input_param { shape { dim: 2 dim: 3 } shape { dim: 2 } } }\n'
            'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "x" bottom: "label" }')
    p = plan(text, TRAIN)
    step = [s for s in p.forward if s.name == "loss"][0]
    assert len(step.tops) == 1 and step.loss_weights == [1.0]
    assert p.outputs == []
    net = jitnet.Net(P(text), TRAIN)
    loss = net.forward(x=np.zeros((2, 3)), label=np.zeros(2))
    assert loss == {} and net.forward_from_to() == pytest.approx(np.log(3.0))
    original = P(text)
    assert len(original.layer[1].top) == 0          # the user's NetParameter is left alone
