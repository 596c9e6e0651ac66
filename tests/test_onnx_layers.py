"""ONNX export of single layers: for every layer type jitnet exports, a one-layer net built
from the layer table's drawn samples (tests/layer_cases.py: shapes, axes, parameters, learned
blobs) is exported, checked by onnx.checker and run by onnxruntime, whose tops must equal
jitnet's forward (TEST phase) within float32 rounding."""
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jitnet
from jitnet.proto import pb

onnx = pytest.importorskip("onnx", reason="the ONNX export tests need onnx (pip install -e '.[test]')")
onnxruntime = pytest.importorskip("onnxruntime", reason="the ONNX export tests run the models in "
                                                        "onnxruntime (pip install -e '.[test]')")

from jitnet.export import OnnxExportError, compare_with_onnxruntime  # noqa: E402
from jitnet.export.onnx_layers import EMITTERS, REFUSED  # noqa: E402

from layer_cases import LAYER_CASES, _spread  # noqa: E402

EXAMPLES = settings().max_examples


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx_layer_cases")


def one_layer_net(sample):
    """A TEST-phase net: an Input layer per bottom of the sample's layer, then the layer, with
    the sample's learned blobs."""
    net_param = pb.NetParameter(name="one_layer")
    lp = sample.layer_param
    for i, (name, value) in enumerate(zip(lp.bottom, sample.bottoms)):
        layer = net_param.layer.add(name=f"input_{i}", type="Input", top=[name])
        layer.input_param.shape.add().dim.extend(np.shape(value))
    net_param.layer.add().CopyFrom(lp)
    net = jitnet.Net(net_param, jitnet.TEST)
    for blob, value in zip(net.layer_dict[lp.name].blobs, sample.params or []):
        blob.data[...] = value
    return net


def check_against_onnxruntime(net, inputs, opset=None, batch=None, rtol=2e-5):
    model = net.to_onnx(opset=opset, batch=batch)
    report = compare_with_onnxruntime(net, model, inputs)
    for output, (diff, scale) in report.items():
        assert diff <= rtol * max(1.0, scale), (output, diff, scale)
    return model, report


def run_onnxruntime(model, feeds):
    """{output name: value} of ``model`` run by onnxruntime (CPU) on ``feeds``."""
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds)))



EXPORTED = [case for case in LAYER_CASES if case.type in EMITTERS and case.type != "Silence"]


@pytest.mark.parametrize("case", EXPORTED, ids=lambda c: c.type)
@settings(max_examples=EXAMPLES)
@given(data=st.data())
def test_layer_matches_onnxruntime(case, workdir, data):
    sample = data.draw(case.samples("forward", workdir), label="sample")
    net = one_layer_net(sample)
    inputs = {name: np.asarray(value, np.float32) for name, value in zip(sample.layer_param.bottom, sample.bottoms)}
    check_against_onnxruntime(net, inputs)


@pytest.mark.parametrize("shape, axes", [((3, 1, 4), (0, 2)),      # BatchNorm: the CI draw
                                         ((2, 5), (0,)),             # BatchNorm: stride 5 apart
                                         ((5, 2, 5, 1), (0, 2, 3)),
                                         ((2, 3, 5), (2,)),          # MVN per plane
                                         ((2, 3, 5), (1, 2))])       # MVN across channels
def test_groups_that_share_a_statistic_are_never_drawn_flat(shape, axes):
    """A BatchNorm draw of twelve equal values in one channel (σ = 0) made onnxruntime differ
    from jitnet by 3.8e-5: its float32 mean is off by one rounding, which 1/sqrt(eps) turns into
    316 roundings. The BatchNorm and MVN rows add ``_spread`` to their bottoms; it must vary
    inside every group of two or more elements, wherever the group's elements lie in memory."""
    groups = np.moveaxis(_spread(shape, axes), axes, range(len(axes))).reshape(-1, *[
        size for axis, size in enumerate(shape) if axis not in axes])
    assert groups.shape[0] >= 2
    assert (groups.std(axis=0) >= 0.2).all()


OPSETS = (9, 11, 13, 18, 21)


@pytest.mark.parametrize("case", EXPORTED, ids=lambda c: c.type)
@settings(max_examples=max(3, EXAMPLES // 2))
@given(data=st.data())
def test_layer_at_other_opsets(case, workdir, data):
    """Older opsets write axes, pads, split sizes and clip bounds as attributes (newer ones as
    inputs), and some forms need a minimum opset: a layer exports at every opset from the one
    its error names, and matches there."""
    sample = data.draw(case.samples("forward", workdir), label="sample")
    opset = data.draw(st.sampled_from(OPSETS), label="opset")
    net = one_layer_net(sample)
    inputs = {name: np.asarray(value, np.float32) for name, value in zip(sample.layer_param.bottom, sample.bottoms)}
    try:
        check_against_onnxruntime(net, inputs, opset=opset)
    except OnnxExportError as error:
        found = re.search(r"opset (\d+) is too old for layer .* export with opset >= (\d+)", str(error))
        assert found and int(found.group(1)) == opset, str(error)
        check_against_onnxruntime(net, inputs, opset=int(found.group(2)))


def test_every_registered_type_is_exported_or_refused():
    known = set(EMITTERS) | set(REFUSED) | {"Input"}
    missing = set(jitnet.layer_type_list()) - known
    assert not missing, (f"layer types with no ONNX decision: {sorted(missing)}: add an emitter in "
                         "jitnet/export/onnx_layers.py, or a reason to REFUSED")
