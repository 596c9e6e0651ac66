"""Filler parameters are checked before numpy sees them (issue 6, task 3): every mistake is
a JitnetError naming the layer, the filler and the field, never numpy's OverflowError or
ValueError or a ZeroDivisionError; what Caffe's fillers accept still fills."""
import numpy as np
import pytest
from google.protobuf import text_format

import jitnet
from jitnet import Blob
from jitnet.fillers import fill
from jitnet.proto import pb

WHERE = "layer 'ip1' weight_filler"


def filled(text, shape, seed=0):
    jitnet.set_random_seed(seed)
    blob = Blob(shape, dtype=np.float64)
    fill(text_format.Parse(text, pb.FillerParameter()), blob, WHERE)
    return blob.data.copy()


BAD = [
    # constant
    ('type: "constant" value: inf', (2, 3), "value is inf; the constant filler needs a finite value"),
    ('type: "constant" value: nan', (2, 3), "value is nan"),
    ('type: "constant" value: 1 sparse: 2', (2, 3), "sparse is 2; only the gaussian filler"),
    # uniform
    ('type: "uniform" min: 0 max: inf', (2, 3), "max is inf; the uniform filler needs a finite max"),
    ('type: "uniform" min: -inf max: 1', (2, 3), "min is -inf"),
    ('type: "uniform" min: nan max: 1', (2, 3), "min is nan"),
    ('type: "uniform" min: 2 max: 1', (2, 3), r"max \(1\) is less than min \(2\)"),
    ('type: "uniform" min: -1.7e308 max: 1', (2, 3), "min is -inf"),    # a float field: -inf
    ('type: "uniform" sparse: 3', (2, 3), "sparse is 3; only the gaussian filler"),
    # gaussian
    ('type: "gaussian" std: inf', (2, 3), "std is inf; the gaussian filler needs a finite std"),
    ('type: "gaussian" std: nan', (2, 3), "std is nan"),
    ('type: "gaussian" mean: -inf', (2, 3), "mean is -inf"),
    ('type: "gaussian" std: -1', (2, 3), "std is -1; the gaussian filler needs std >= 0"),
    ('type: "gaussian" sparse: -2', (2, 3), "sparse is -2"),
    ('type: "gaussian" sparse: 3', (2, 3), r"sparse \(3\) is more than the number of outputs \(2"),
    ('type: "gaussian" sparse: 1', (0, 3), "the gaussian filler with sparse needs a non-empty first axis"),
    ('type: "gaussian" sparse: 1', (), "the gaussian filler with sparse needs a non-empty first axis"),
    # positive_unitball
    ('type: "positive_unitball" sparse: 1', (2, 3), "sparse is 1; only the gaussian filler"),
    # xavier / msra
    ('type: "xavier"', (3, 4, 0), "the xavier filler needs a non-empty blob"),
    ('type: "msra"', (0, 4), "the msra filler needs a non-empty blob"),
    ('type: "msra"', (4, 0), "the msra filler needs a non-empty blob"),
    ('type: "xavier" sparse: 1', (2, 3), "sparse is 1; only the gaussian filler"),
    # bilinear
    ('type: "bilinear"', (2, 3), "the bilinear filler needs a 4-D blob with square kernels"),
    ('type: "bilinear"', (1, 1, 2, 3), "the bilinear filler needs a 4-D blob with square kernels"),
    ('type: "bilinear" sparse: 0', (1, 1, 2, 2), "sparse is 0; only the gaussian filler"),
    # type
    ('type: "Gaussian"', (2, 3), "unknown filler type 'Gaussian'"),
]


@pytest.mark.parametrize("text,shape,message", BAD, ids=[f"{t}-{s}" for t, s, _ in BAD])
def test_bad_filler_parameters_name_the_field(text, shape, message):
    with pytest.raises(jitnet.JitnetError, match=f"^{WHERE}: {message}") as caught:
        filled(text, shape)
    assert type(caught.value) is jitnet.JitnetError


def test_variance_norm_out_of_range():
    param = pb.FillerParameter(type="xavier")
    param.variance_norm = 2                               # AVERAGE is the largest: 2
    fill(param, Blob((2, 3), dtype=np.float64))
    raw = pb.FillerParameter(type="msra").SerializeToString() + bytes([0x40, 0x07])   # field 8 = 7
    parsed = pb.FillerParameter.FromString(raw)
    fill(parsed, Blob((2, 3), dtype=np.float64))          # an unknown enum value reads as FAN_IN


GOOD = [
    # what Caffe accepts (or jitnet allows on purpose) fills
    ('type: "uniform" min: 1 max: 1', (2, 3), lambda v: np.all(v == 1)),
    ('type: "uniform" min: -3.4e38 max: 3.4e38', (50, 20), lambda v: np.isfinite(v).all()),
    ('type: "gaussian" mean: 2 std: 0', (2, 3), lambda v: np.all(v == 2)),
    ('type: "gaussian" std: 1 sparse: 2', (2, 300), lambda v: np.count_nonzero(v) == 600),  # p = 1
    ('type: "gaussian" std: 1 sparse: 0', (2, 3), lambda v: np.all(v == 0)),
    ('type: "gaussian" sparse: -1', (2, 3), lambda v: np.count_nonzero(v) == 6),
    ('type: "constant" value: -3.5 sparse: -1', (2, 3), lambda v: np.all(v == -3.5)),
    ('type: "constant" value: 2', (0, 3), lambda v: v.shape == (0, 3)),
    ('type: "uniform"', (3, 0), lambda v: v.shape == (3, 0)),
    ('type: "positive_unitball"', (0, 3), lambda v: v.shape == (0, 3)),
    ('type: "positive_unitball"', (3, 0), lambda v: v.shape == (3, 0)),
    ('type: "positive_unitball"', (), lambda v: v == 1.0),
    ('type: "bilinear"', (2, 1, 0, 0), lambda v: v.shape == (2, 1, 0, 0)),
    ('type: "bilinear"', (1, 1, 1, 1), lambda v: v[0, 0, 0, 0] == 1.0),   # f = 1, c = 0
]


@pytest.mark.parametrize("text,shape,check", GOOD, ids=[f"{t}-{s}" for t, s, _ in GOOD])
def test_what_caffe_accepts_fills(text, shape, check):
    assert check(filled(text, shape))


@pytest.mark.parametrize("filler,field", [
    ('weight_filler { type: "uniform" min: 0 max: inf }', "max"),
    ('bias_filler { type: "gaussian" std: -0.5 }', "std"),
    ('weight_filler { type: "xavier" sparse: 4 }', "sparse"),
])
def test_a_net_names_the_layer_filler_and_field(filler, field):
    text = f"""
    layer {{ name: "in" type: "Input" top: "x" input_param {{ shape {{ dim: 2 dim: 3 }} }} }}
    layer {{ name: "ip1" type: "InnerProduct" bottom: "x" top: "y"
            inner_product_param {{ num_output: 4 {filler} }} }}
    """
    which = filler.split()[0]
    with pytest.raises(jitnet.LayerError, match=rf"^layer 'ip1' \(type InnerProduct\): {which}: {field} is "):
        jitnet.Net(text_format.Parse(text, pb.NetParameter()), jitnet.TEST)


def test_dummy_data_filler_is_checked_too():
    text = """
    layer { name: "d" type: "DummyData" top: "x"
            dummy_data_param { shape { dim: 2 dim: 3 } data_filler { type: "uniform" min: 5 max: 1 } } }
    """
    with pytest.raises(jitnet.LayerError,
                       match=r"^layer 'd' \(type DummyData\): data_filler: max \(1\) is less than min \(5\)"):
        jitnet.Net(text_format.Parse(text, pb.NetParameter()), jitnet.TEST)


@pytest.mark.parametrize("shape", [(2**20, 2**21), (2**31 - 1, 10**9, 10**9)])
def test_a_blob_too_big_to_fill_is_refused_before_the_filler(shape):
    """Found by the fuzzer (a dim set to 2147483647): numpy's MemoryError, or its ValueError
    'array is too big', escaped from the filler. Such a blob is now refused when it is
    shaped (more values than Caffe's INT_MAX limit), before any filler runs."""
    with pytest.raises(jitnet.JitnetError, match="more than Caffe's limit of 2147483647 values"):
        Blob(shape, dtype=np.float32)


@pytest.mark.parametrize("kind", ["constant", "uniform", "gaussian", "positive_unitball", "xavier", "msra"])
def test_running_out_of_memory_while_filling_is_a_jitnet_error(kind, monkeypatch):
    """A blob within Caffe's limit can still need more memory than is left for the float64
    draws: numpy's MemoryError becomes an error naming the filler and the size."""
    def no_memory(*args, **kwargs):
        raise MemoryError
    for name in ("full", "zeros"):
        monkeypatch.setattr(jitnet.fillers.np, name, no_memory)
    monkeypatch.setattr(jitnet.fillers.common, "rng", lambda: type("R", (), {
        "uniform": no_memory, "normal": no_memory, "random": no_memory})())
    blob = Blob((64, 32), dtype=np.float32)
    with pytest.raises(jitnet.JitnetError, match=rf"^{WHERE}: out of memory drawing 2048 values "
                                                 rf"\(shape \(64, 32\)\) for the {kind} filler"):
        fill(pb.FillerParameter(type=kind), blob, WHERE)
