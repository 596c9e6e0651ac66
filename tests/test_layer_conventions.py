"""Conventions of the layer catalogue, stated as tests: what a layer module may import,
which layers may compute on the host, and that the base class's shared checks cannot be
skipped by a layer type."""
import ast
from pathlib import Path

import pytest

import jitnet
from jitnet import layer as layer_module
from jitnet.layer import layer_class

LAYERS_DIR = Path(jitnet.__file__).resolve().parent / "layers"

# Layers that compute with numpy on the host, also in GPU mode (their blobs are copied to the
# device when a GPU layer asks). Every other type has GPU kernels.
HOST_ONLY = {"Input", "DummyData", "MemoryData", "HDF5Data", "Data", "ImageData", "WindowData", "HDF5Output",
             "Python"}


@pytest.mark.parametrize("path", sorted(LAYERS_DIR.glob("*.py")), ids=lambda p: p.name)
def test_layer_modules_import_neither_planner_net_nor_numba(path):
    """Layers reach kernels through Layer.kernels and constants through jitnet.common; the
    graph modules and numba stay out of them."""
    tree = ast.parse(path.read_text(), filename=str(path))
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bad += [a.name for a in node.names if a.name.split(".")[0] == "numba"]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 0 and module.split(".")[0] in ("numba", "jitnet"):
                if module.split(".")[0] == "numba" or module.split(".")[1:2] in (["planner"], ["net"]):
                    bad.append(module)
            elif node.level >= 2 and module.split(".")[0] in ("planner", "net", "solvers"):
                bad.append("." * node.level + module)
    assert not bad, f"{path.name} imports {bad}"


def test_host_only_layers_are_the_listed_ones():
    declared = {t for t in jitnet.layer_type_list() if layer_class(t).host_only}
    assert declared == HOST_ONLY


def test_no_layer_type_overrides_the_shared_checks():
    """Family bases in jitnet/layer.py extend shared_checks; a registered type that overrode
    it could skip its family's checks (as SoftmaxWithLoss once skipped LossLayer's)."""
    offenders = []
    for type_name in jitnet.layer_type_list():
        cls = layer_class(type_name)
        for klass in cls.__mro__:
            if "shared_checks" in vars(klass) and klass.__module__ != layer_module.__name__:
                offenders.append(f"{type_name} ({klass.__module__}.{klass.__name__})")
    assert not offenders, offenders


def test_in_place_declarations_follow_caffe():
    """Caffe refuses Split, Flatten and Reshape in place; neuron layers and Softmax run in place."""
    refused = {"Split", "Flatten", "Reshape", "InnerProduct", "SoftmaxWithLoss", "EuclideanLoss", "Accuracy"}
    allowed = {"ReLU", "Sigmoid", "TanH", "Dropout", "Softmax"}
    for name in refused:
        assert not layer_class(name).in_place, name
    for name in allowed:
        assert layer_class(name).in_place, name
