"""Caffe's per-layer checks, as a user meets them in a net: each instance issue 6 found,
and the kind it stands for (the table-driven tests in test_layers.py cover every layer
type: degenerate bottoms, in-place use, bad parameters)."""
import numpy as np
import pytest
from google.protobuf import text_format

import jitnet
from jitnet.proto import pb


def net(text, phase=jitnet.TEST):
    return jitnet.Net(text_format.Parse(text, pb.NetParameter()), phase)


def inputs(*shapes, tops=None):
    tops = tops or [f"x{i}" for i in range(len(shapes))]
    body = " ".join("shape { " + " ".join(f"dim: {d}" for d in s) + " }" for s in shapes)
    return (f'layer {{ name: "input" type: "Input" {" ".join(f"top: {t!r}".replace(chr(39), chr(34)) for t in tops)} '
            f"input_param {{ {body} }} }}\n")


def test_softmax_loss_labels_need_the_scores_first_dimension():
    """Caffe's LossLayer::Reshape: scores (2,3,2,2) with labels (8,) have 8 labels for 8
    positions, but not the same first dimension."""
    text = inputs((2, 3, 2, 2), (8,), tops=["scores", "label"]) + \
        'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "scores" bottom: "label" top: "l" }'
    with pytest.raises(jitnet.LayerError, match=r"'loss'.*same first dimension.*\(2, 3, 2, 2\).*\(8,\)"):
        net(text)
    ok = net(inputs((2, 3, 2, 2), (2, 2, 2), tops=["scores", "label"]) +
             'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "scores" bottom: "label" top: "l" }')
    assert ok.forward()["l"] == pytest.approx(np.log(3.0))        # all-zero scores: p = 1/3


def test_the_first_dimension_check_reaches_every_loss_layer():
    """The check lives in LossLayer's shared checks, which a layer's own reshape cannot skip."""
    text = inputs((2, 3), (3, 2), tops=["a", "b"]) + \
        'layer { name: "e" type: "EuclideanLoss" bottom: "a" bottom: "b" top: "l" }'
    with pytest.raises(jitnet.LayerError, match="'e'.*same first dimension"):
        net(text)


def test_flatten_in_place_is_refused_and_the_input_keeps_its_shape():
    text = inputs((2, 3, 4), tops=["h"]) + 'layer { name: "flat" type: "Flatten" bottom: "h" top: "h" }'
    with pytest.raises(jitnet.NetDefinitionError, match=r"'flat' \(type Flatten\) cannot run in place"):
        net(text)
    apart = net(inputs((2, 3, 4), tops=["h"]) + 'layer { name: "flat" type: "Flatten" bottom: "h" top: "f" }')
    assert apart.blobs["h"].shape == (2, 3, 4) and apart.blobs["f"].shape == (2, 12)


def test_flatten_end_axis_just_before_axis_inserts_an_axis():
    """Caffe accepts end_axis = axis − 1 (count over no axes is 1)."""
    n = net(inputs((2, 3, 4), tops=["h"]) +
            'layer { name: "flat" type: "Flatten" bottom: "h" top: "f" flatten_param { axis: 2 end_axis: 1 } }')
    assert n.blobs["f"].shape == (2, 3, 1, 4)


@pytest.mark.parametrize("layer,dims", [
    ('layer { name: "e" type: "EuclideanLoss" bottom: "x0" bottom: "x1" top: "l" }', [(), ()]),
    ('layer { name: "e" type: "Softmax" bottom: "x0" top: "y" softmax_param { axis: 0 } }', [()]),
    ('layer { name: "e" type: "InnerProduct" bottom: "x0" top: "y" inner_product_param { num_output: 2 } }', [(3,)]),
    ('layer { name: "e" type: "Flatten" bottom: "x0" top: "y" }', [()]),
    ('layer { name: "e" type: "Accuracy" bottom: "x0" bottom: "x1" top: "y" }', [(), ()]),
])
def test_too_few_axes_name_the_layer(layer, dims):
    """EuclideanLoss on two 0-D blobs was an IndexError; Caffe stops with a check."""
    text = "".join(inputs(d, tops=[f"x{i}"]).replace('"input"', f'"input{i}"') for i, d in enumerate(dims))
    with pytest.raises(jitnet.LayerError, match=r"layer 'e' .*(axis|axes)"):
        net(text + layer)


def test_an_absurd_blob_is_refused_before_allocating():
    """64x1x8x2147483648 values: more than INT_MAX (Caffe's limit), and 4 TiB as float32."""
    text = inputs((64, 1, 8, 2147483648), tops=["data"]) + \
        'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "y" inner_product_param { num_output: 2 } }'
    with pytest.raises(jitnet.LayerError) as info:
        net(text)
    message = str(info.value)
    for part in ("'input'", "blob 'data'", "(64, 1, 8, 2147483648)", "1099511627776 values", "4 TiB",
                 "2147483647"):
        assert part in message, (part, message)


def test_a_blob_larger_than_the_memory_left_is_refused(monkeypatch):
    monkeypatch.setattr(jitnet.blob, "available_memory", lambda: 2**20)
    with pytest.raises(jitnet.LayerError) as info:
        net(inputs((1000, 1000), tops=["data"]))
    message = str(info.value)
    for part in ("'input'", "blob 'data'", "(1000, 1000)", "3.815 MiB", "1 MiB of memory available"):
        assert part in message, (part, message)


def test_a_learnable_blob_too_large_names_its_layer():
    text = inputs((1, 2**20), tops=["data"]) + \
        'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "y" inner_product_param { num_output: 4096 } }'
    with pytest.raises(jitnet.LayerError, match=r"layer 'ip' \(type InnerProduct\).*\(4096, 1048576\).*INT_MAX|"
                                                r"layer 'ip' \(type InnerProduct\).*\(4096, 1048576\).*2147483647"):
        net(text)


def test_a_bottom_typo_lists_the_blobs_other_layers_produce():
    text = inputs((2, 3), tops=["data"]) + 'layer { name: "r" type: "ReLU" bottom: "dta" top: "out" }'
    with pytest.raises(jitnet.NetDefinitionError) as info:
        net(text)
    message = str(info.value)
    assert "bottom 'dta'" in message and "data" in message
    assert "out" not in message.split("produce:")[1], message


def test_input_without_shapes_leaves_the_tops_to_the_user():
    """Caffe's Input accepts no shape at all; the user reshapes the blob."""
    n = net('layer { name: "input" type: "Input" top: "x" }\n'
            'layer { name: "r" type: "ReLU" bottom: "x" top: "y" }')
    n.blobs["x"].reshape(2, 2)
    out = n.forward(x=np.array([[-1.0, 2.0], [3.0, -4.0]]))
    np.testing.assert_array_equal(out["y"], [[0, 2], [3, 0]])


def test_hdf5_data_refuses_transform_param(tmp_path):
    text = (f'layer {{ name: "h5" type: "HDF5Data" top: "x" hdf5_data_param {{ source: "{tmp_path}/l.txt" '
            'batch_size: 2 } transform_param { scale: 0.5 } }')
    with pytest.raises(jitnet.LayerError, match="'h5'.*does not transform"):
        net(text, jitnet.TRAIN)
