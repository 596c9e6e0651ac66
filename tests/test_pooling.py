"""Caffe's rules for Pooling, SPP and LRN, one test each, on hand-computed values; the table
(tests/layer_cases.py) covers the drawn shapes, gradients, GPU parity and bad parameters."""
import numpy as np
import pytest
from google.protobuf import text_format

import jitnet
from jitnet.proto import pb
from jitnet.testing import forward_layer, run_layer_on

import reference as ref

FLT_MAX = float(np.finfo(np.float32).max)


def _lp(type_name, text="", tops=("y",), name="layer"):
    lp = pb.LayerParameter(name=name, type=type_name, bottom=["x"], top=list(tops))
    field = {"Pooling": lp.pooling_param, "SPP": lp.spp_param, "LRN": lp.lrn_param}[type_name]
    text_format.Merge(text, field)
    return lp


def _pool(text, x, tops=("y",), device="cpu", phase=jitnet.TRAIN, dy=None, seed=0):
    """Forward (and backward with ``dy``) of a Pooling layer; returns the LayerRun."""
    return run_layer_on(device, _lp("Pooling", text, tops), [x], phase=phase, seed=seed,
                        propagate_down=[dy is not None], top_diffs=None if dy is None else [dy] + [
                            np.zeros_like(dy)] * (len(tops) - 1), backward=dy is not None)


PLANE_3x3 = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)          # [[1 2 3] [4 5 6] [7 8 9]]


# =========================================================================== output extent
@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_last_window_starting_in_the_padding_is_dropped(device):
    """3 × 3, kernel 2, stride 2, pad 1: ceil((3 + 2 − 2)/2) + 1 = 3 windows would start at −1, 1
    and 3; the one at 3 starts in the padding (3 >= H + pad − ... : (3 − 1)·2 >= 3 + 1), so 2 × 2."""
    run = _pool("kernel_size: 2 stride: 2 pad: 1", PLANE_3x3, device=device)
    np.testing.assert_array_equal(run.tops[0], [[[[1, 3], [7, 9]]]])
    # AVE: every window spans 2 rows and 2 columns of the padded extent, so divides by 4
    run = _pool("pool: AVE kernel_size: 2 stride: 2 pad: 1", PLANE_3x3, device=device)
    np.testing.assert_allclose(run.tops[0], [[[[1 / 4, (2 + 3) / 4], [(4 + 7) / 4, (5 + 6 + 8 + 9) / 4]]]])


@pytest.mark.parametrize("round_mode,extent", [("CEIL", 3), ("FLOOR", 2)])
def test_ceil_and_floor_rounding(round_mode, extent):
    """5 wide, kernel 2, stride 2: (5 − 2)/2 = 1.5 → 2 + 1 = 3 windows with CEIL (the last one,
    column 4, is clipped to the image), 1 + 1 = 2 with FLOOR."""
    x = np.arange(5.0).reshape(1, 1, 1, 5)
    (y,) = forward_layer(_lp("Pooling", f"kernel_h: 1 kernel_w: 2 stride: 2 round_mode: {round_mode}"), [x])
    assert y.shape == (1, 1, 1, extent)
    np.testing.assert_array_equal(y.ravel(), [1, 3, 4][:extent])


def test_output_sizes_of_the_reference_nets():
    shapes = {"kernel_size: 2 stride: 2": ((64, 20, 24, 24), (64, 20, 12, 12)),         # LeNet pool1
              "kernel_size: 3 stride: 2": ((100, 32, 32, 32), (100, 32, 16, 16)),       # CIFAR pool1
              "kernel_size: 3 stride: 2 ": ((1, 96, 55, 55), (1, 96, 27, 27)),          # CaffeNet pool1
              "kernel_size: 3  stride: 2": ((1, 64, 112, 112), (1, 64, 56, 56)),        # GoogLeNet pool1
              "kernel_size: 3 stride: 1 pad: 1": ((1, 192, 28, 28), (1, 192, 28, 28))}  # inception pool
    for text, (bottom, expected) in shapes.items():
        layer = create_pooling(text, bottom)
        assert layer.top.shape == expected, text


def create_pooling(text, shape):
    class Built:
        pass
    built = Built()
    built.layer = jitnet.layer.create_layer(_lp("Pooling", text), jitnet.TEST)
    built.top = jitnet.Blob()
    built.layer.setup_layer([jitnet.Blob(shape)], [built.top])
    return built


# =========================================================================== AVE's divisor
@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_ave_divides_by_the_window_clipped_to_the_padded_extent(device):
    """4 × 4 ones, kernel 3, stride 2, pad 1: 3 × 3 outputs. Windows start at −1, 1, 3; the first
    two span 3 rows of the padded extent (−1..5), the last 2 (rows 3 and 4, 4 being padding), so
    pool_size is 9, 9, 6 / 6, 6, 4 and only the image's ones are summed."""
    run = _pool("pool: AVE kernel_size: 3 stride: 2 pad: 1", np.ones((1, 1, 4, 4)), device=device,
                dy=np.ones((1, 1, 3, 3)))
    expected = [[4 / 9, 6 / 9, 2 / 6], [6 / 9, 9 / 9, 3 / 6], [2 / 6, 3 / 6, 1 / 4]]
    np.testing.assert_allclose(run.tops[0][0, 0], expected, rtol=1e-14)
    # backward: each pixel gets Σ 1/pool_size over the windows holding it
    corner = 1 / 9                                     # pixel (0, 0): window (0, 0) only
    last = 1 / 4 + 2 / 6 + 1 / 9                       # pixel (3, 3): windows (1..2) × (1..2)
    assert run.bottom_diffs[0][0, 0, 0, 0] == pytest.approx(corner, rel=1e-14)
    assert run.bottom_diffs[0][0, 0, 3, 3] == pytest.approx(last, rel=1e-14)


# =========================================================================== MAX's argmax
@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_max_takes_the_first_maximum_in_scan_order(device):
    """Ties go to the first position in row-major order of the window; backward to it only."""
    x = np.array([[1.0, 7.0, 7.0, 2.0],
                  [7.0, 7.0, 2.0, 2.0],
                  [3.0, 3.0, 5.0, 5.0],
                  [3.0, 3.0, 5.0, 5.0]]).reshape(1, 1, 4, 4)
    run = _pool("kernel_size: 2 stride: 2", x, tops=("y", "mask"), device=device,
                dy=np.full((1, 1, 2, 2), 2.0))
    np.testing.assert_array_equal(run.tops[0][0, 0], [[7, 7], [3, 5]])
    np.testing.assert_array_equal(run.tops[1][0, 0], [[1, 2], [8, 10]])
    expected = np.zeros((4, 4))
    expected.flat[[1, 2, 8, 10]] = 2.0
    np.testing.assert_array_equal(run.bottom_diffs[0][0, 0], expected)


@pytest.mark.parametrize("text,shape,mask", [
    ("kernel_size: 2 stride: 2", (4, 4), [[0, 2], [8, 10]]),
    ("kernel_size: 3 stride: 2", (5, 5), [[0, 2], [10, 12]]),
    ("kernel_size: 3 stride: 2", (6, 6), [[0, 2, 4], [12, 14, 16], [24, 26, 28]]),   # clipped border
    ("kernel_size: 3 stride: 1 pad: 1", (3, 3), [[0, 0, 1], [0, 0, 1], [3, 3, 4]]),
    ("kernel_h: 2 kernel_w: 3 stride: 2 pad_h: 1 pad_w: 0", (3, 5), [[0, 2], [5, 7]])])
@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_constant_planes_give_each_window_its_first_position(text, shape, mask, device):
    """All values equal: every window's argmax is its first image position, on the unrolled
    paths (2×2/2, 3×3/2, 3×3/1), their borders, and the general loop."""
    x = np.full((1, 2) + shape, 3.5)
    run = _pool(text, x, tops=("y", "mask"), device=device)
    for c in range(2):
        np.testing.assert_array_equal(run.tops[1][0, c], mask)
        np.testing.assert_array_equal(run.tops[0][0, c], 3.5)


@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_mask_top_holds_float_indices_and_minus_one_for_empty_windows(device):
    """Kernel 1, stride 2 on a 4-wide row: CEIL gives ceil(3/2) + 1 = 3 windows, the last one at
    column 4, past the image (Caffe adds no padding rule here). Caffe's MAX leaves −FLT_MAX and
    index −1 there, and routes no gradient from it."""
    x = np.array([[[[1.0, 2.0, 3.0, 4.0]]]])
    run = _pool("kernel_h: 1 kernel_w: 1 stride: 2", x, tops=("y", "mask"), device=device,
                dy=np.array([[[[10.0, 20.0, 30.0]]]]))
    assert run.tops[1].dtype == np.float64
    np.testing.assert_array_equal(run.tops[1].ravel(), [0, 2, -1])
    np.testing.assert_array_equal(run.tops[0].ravel(), [1, 3, -FLT_MAX])
    np.testing.assert_array_equal(run.bottom_diffs[0].ravel(), [10, 0, 20, 0])
    # AVE gives 0 there (Caffe would divide 0 by a pool_size of 0: NaN)
    run = _pool("pool: AVE kernel_h: 1 kernel_w: 1 stride: 2", x, device=device, dy=np.ones((1, 1, 1, 3)))
    np.testing.assert_array_equal(run.tops[0].ravel(), [1, 3, 0])
    np.testing.assert_array_equal(run.bottom_diffs[0].ravel(), [1, 0, 1, 0])


def test_backward_reads_the_mask_top():
    """With a second top, backward routes by that top's values (Caffe reads top[1])."""
    lp = _lp("Pooling", "kernel_size: 2 stride: 2", tops=("y", "mask"))
    layer = jitnet.layer.create_layer(lp, jitnet.TRAIN)
    bottom = [jitnet.Blob((1, 1, 2, 2), dtype=np.float64)]
    top = [jitnet.Blob(dtype=np.float64) for _ in range(2)]
    bottom[0].data[...] = [[[[1.0, 4.0], [2.0, 3.0]]]]
    layer.setup_layer(bottom, top)
    layer.run_forward(bottom, top)
    assert top[1].data.ravel()[0] == 1.0
    top[1].data[...] = 3.0
    top[0].diff[...] = 5.0
    layer.run_backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff.ravel(), [0, 0, 0, 5])


def test_second_top_needs_max():
    lp = _lp("Pooling", "pool: AVE kernel_size: 2", tops=("y", "mask"), name="avg")
    with pytest.raises(jitnet.NetDefinitionError, match="'avg'.*second top.*MAX"):
        forward_layer(lp, [np.ones((1, 1, 2, 2))])


# =========================================================================== errors
@pytest.mark.parametrize("text,bottom,message", [
    ("kernel_size: 2 pad: 2", (1, 1, 4, 4), r"pad >= kernel.*\(2, 2\)"),
    ("kernel_size: 5", (1, 1, 2, 2), r"output would be -2 × -2"),
    ("kernel_size: 3 stride: 2", (1, 1, 1, 1), r"output would be 0 × 0"),
    ("pool: STOCHASTIC kernel_size: 2 pad: 1", (1, 1, 4, 4), "Padding implemented only for average and max"),
    ("global_pooling: true kernel_size: 2", (1, 1, 4, 4), "global_pooling.*kernel_size"),
    ("kernel_size: 2", (2, 4, 4), "Input must have 4 axes"),
])
def test_error_messages_name_the_layer_and_the_values(text, bottom, message):
    with pytest.raises(jitnet.LayerError, match=r"'p1' \(type Pooling\): .*" + message):
        forward_layer(_lp("Pooling", text, name="p1"), [np.ones(bottom)])


def test_global_pooling_takes_the_whole_plane():
    x = np.random.default_rng(0).normal(size=(2, 3, 5, 7))
    (y,) = forward_layer(_lp("Pooling", "global_pooling: true"), [x])
    np.testing.assert_array_equal(y, x.max(axis=(2, 3), keepdims=True))
    (y,) = forward_layer(_lp("Pooling", "pool: AVE global_pooling: true"), [x])
    np.testing.assert_allclose(y, x.mean(axis=(2, 3), keepdims=True), rtol=1e-13)


# =========================================================================== STOCHASTIC
def test_stochastic_train_samples_in_proportion_to_the_activations():
    """One 2 × 2 window [1 2; 3 4] repeated in 20000 planes: position i is picked with
    probability x_i / 10; the output is the picked value and backward goes to it."""
    planes = 20000
    x = np.tile(np.array([[1.0, 2.0], [3.0, 4.0]]), (planes, 1, 1, 1))
    dy = np.arange(planes, dtype=np.float64).reshape(planes, 1, 1, 1) + 1
    run = _pool("pool: STOCHASTIC kernel_size: 2", x, dy=dy, seed=7)
    y = run.tops[0].ravel()
    assert set(np.unique(y)) <= {1.0, 2.0, 3.0, 4.0}
    for value in (1.0, 2.0, 3.0, 4.0):
        p = value / 10
        count = np.count_nonzero(y == value)
        assert abs(count - planes * p) <= 5 * np.sqrt(planes * p * (1 - p)), (value, count)
    # backward: dy to the picked position, nothing elsewhere
    dx = run.bottom_diffs[0].reshape(planes, 4)
    picked = np.argmax(dx != 0, axis=1)
    np.testing.assert_array_equal(np.count_nonzero(dx, axis=1), 1)
    np.testing.assert_array_equal(x.reshape(planes, 4)[np.arange(planes), picked], y)
    np.testing.assert_array_equal(dx[np.arange(planes), picked], dy.ravel())
    # the seed decides the draws
    again = _pool("pool: STOCHASTIC kernel_size: 2", x, seed=7).tops[0]
    other = _pool("pool: STOCHASTIC kernel_size: 2", x, seed=8).tops[0]
    np.testing.assert_array_equal(again.ravel(), y)
    assert not np.array_equal(other.ravel(), y)


def test_stochastic_picks_the_first_position_reaching_the_threshold():
    """Caffe: the first position where the running sum reaches u·Σ. Zeros are never picked unless
    the whole window is zero (then u·Σ = 0 and the first position is reached at once)."""
    x = np.array([[[[0.0, 5.0], [0.0, 0.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    run = _pool("pool: STOCHASTIC kernel_size: 2", x, dy=np.ones((2, 1, 1, 1)), seed=3)
    np.testing.assert_array_equal(run.tops[0].ravel(), [5.0, 0.0])
    np.testing.assert_array_equal(run.bottom_diffs[0].reshape(2, 4), [[0, 1, 0, 0], [1, 0, 0, 0]])


@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_stochastic_test_phase_is_the_activation_weighted_average(device):
    """TEST: Σ x² / Σ x = (1 + 4 + 9 + 16) / 10 = 3 for [1 2; 3 4]; 0 for a window of zeros (Caffe
    starts the sum at FLT_MIN)."""
    x = np.array([[[[1.0, 2.0, 0.0], [3.0, 4.0, 0.0]]]])
    run = _pool("pool: STOCHASTIC kernel_size: 2 stride: 2", x, phase=jitnet.TEST, device=device,
                dy=np.ones((1, 1, 1, 2)))
    np.testing.assert_allclose(run.tops[0].ravel(), [3.0, 0.0], rtol=1e-14)
    # d(Q/S)/dx_i = (2·x_i·S − Q)/S²: (2·x·10 − 30)/100
    np.testing.assert_allclose(run.bottom_diffs[0][0, 0, :, :2], (20 * x[0, 0, :, :2] - 30) / 100, rtol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stochastic_cpu_and_gpu_draw_the_same_samples(dtype):
    x = np.random.default_rng(4).uniform(0.1, 2.0, size=(2, 3, 5, 4))
    kwargs = dict(dtype=dtype, propagate_down=[True], seed=123)
    lp = _lp("Pooling", "pool: STOCHASTIC kernel_size: 3 stride: 2")
    cpu = run_layer_on("cpu", lp, [x], **kwargs)
    gpu = run_layer_on("gpu", lp, [x], **kwargs)
    np.testing.assert_array_equal(gpu.layer.index.data, cpu.layer.index.data)
    np.testing.assert_array_equal(gpu.tops[0], cpu.tops[0])
    np.testing.assert_allclose(gpu.bottom_diffs[0], cpu.bottom_diffs[0], rtol=1e-6)


# =========================================================================== SPP
def test_spp_levels_are_concatenated_per_image():
    """4 × 4 = arange(16): level 0 is the global max 15, level 1 the 2 × 2 bins' maxima 5 7 13 15."""
    x = np.stack([np.arange(16.0), -np.arange(16.0)]).reshape(2, 1, 4, 4)
    (y,) = forward_layer(_lp("SPP", "pyramid_height: 2"), [x])
    np.testing.assert_array_equal(y, [[15, 5, 7, 13, 15], [0, 0, -2, -8, -10]])


def test_spp_pads_odd_sizes_as_caffe():
    """5 × 5 at level 1 (2 bins): kernel ceil(5/2) = 3, pad (3·2 − 5 + 1)//2 = 1, stride 3: windows
    rows −1..1 and 2..4 (a third would start in the padding and is dropped)."""
    x = np.arange(25.0).reshape(1, 1, 5, 5)
    (y,) = forward_layer(_lp("SPP", "pyramid_height: 2"), [x])
    np.testing.assert_array_equal(y, [[24, 6, 9, 21, 24]])
    (y,) = forward_layer(_lp("SPP", "pyramid_height: 2 pool: AVE"), [x])
    # AVE level 1: pool_size 3 × 3 (the padding counts); window (0, 0) holds rows 0-1 × cols 0-1
    assert y[0, 1] == pytest.approx((0 + 1 + 5 + 6) / 9)


def test_spp_pyramid_height_one_keeps_a_four_axis_top():
    x = np.random.default_rng(1).normal(size=(2, 3, 4, 5))
    (y,) = forward_layer(_lp("SPP", "pyramid_height: 1"), [x])
    assert y.shape == (2, 3, 1, 1)
    np.testing.assert_array_equal(y, x.max(axis=(2, 3), keepdims=True))


def test_spp_pad_at_kernel_names_the_level():
    with pytest.raises(jitnet.LayerError, match=r"'spp'.*level 2 \(4 × 4 bins\).*3 × 3"):
        forward_layer(_lp("SPP", "pyramid_height: 3", name="spp"), [np.ones((1, 1, 3, 3))])


# =========================================================================== LRN
def test_lrn_across_channels_by_hand():
    """One pixel, channels [1 2 3], local_size 3, alpha 3, beta 1, k 1: scale = 1 + (3/3)·Σ x²
    over the neighbours that exist: 1 + 5, 1 + 14, 1 + 13."""
    x = np.array([1.0, 2.0, 3.0]).reshape(1, 3, 1, 1)
    (y,) = forward_layer(_lp("LRN", "local_size: 3 alpha: 3 beta: 1 k: 1"), [x])
    np.testing.assert_allclose(y.ravel(), [1 / 6, 2 / 15, 3 / 14], rtol=1e-14)


def test_lrn_within_channel_by_hand_ignores_k():
    """A 1 × 2 plane [1 2], local_size 3: every window holds both values, Σ x² = 5, scale =
    1 + alpha·5/9; with alpha 9 and beta 1: y = x / 6, whatever k is."""
    x = np.array([1.0, 2.0]).reshape(1, 1, 1, 2)
    (y,) = forward_layer(_lp("LRN", "local_size: 3 alpha: 9 beta: 1 k: 100 norm_region: WITHIN_CHANNEL"), [x])
    np.testing.assert_allclose(y.ravel(), [1 / 6, 2 / 6], rtol=1e-14)


def test_lrn_keeps_its_scale_for_backward():
    x = np.random.default_rng(2).normal(size=(2, 4, 3, 3))
    run = run_layer_on("cpu", _lp("LRN", "local_size: 3 alpha: 0.5 beta: 0.75"), [x], propagate_down=[True])
    scale = run.layer.scale.data
    np.testing.assert_allclose(run.tops[0], x * scale ** -0.75, rtol=1e-14)


def test_lrn_even_local_size_is_refused():
    with pytest.raises(jitnet.LayerError, match="'norm'.*odd values for local_size, got 4"):
        forward_layer(_lp("LRN", "local_size: 4", name="norm"), [np.ones((1, 3, 2, 2))])


# =========================================================================== the unrolled CPU paths
@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("kernel,stride,pad", [(2, 2, 0), (2, 2, 1), (3, 2, 0), (3, 2, 1),
                                               (3, 1, 0), (3, 1, 1), (3, 1, 2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unrolled_window_paths_match_the_reference(method, kernel, stride, pad, dtype):
    """The paths compiled for 2×2 and 3×3 windows at stride 2 and 3×3 at stride 1 (the windows
    wholly inside the image; the general loop does the border), on planes of odd and even size,
    against reference.pool (forward, mask) and by hand (backward: MAX routes dy to the mask's
    position, AVE spreads dy / pool size over the window's image pixels)."""
    rng = np.random.default_rng(kernel * 10 + stride + pad)
    x = rng.permutation(2 * 3 * 9 * 8).reshape(2, 3, 9, 8).astype(dtype) / 100.0 - 1.0
    text = f"pool: {method} kernel_size: {kernel} stride: {stride} pad: {pad}"
    y_ref, mask_ref = ref.pool(x, method, (kernel, kernel), (stride, stride), (pad, pad))
    dy = rng.normal(size=y_ref.shape)
    run = run_layer_on("cpu", _lp("Pooling", text), [x], dtype=dtype, top_diffs=[dy],
                       propagate_down=[True])
    # float32 AVE sums in float32, as Caffe does: a window whose values cancel differs from the
    # float64 reference in its last bits (|x| <= 1 here, so 1e-7 absolute is a few roundings)
    tol = dict(rtol=1e-6, atol=1e-7) if dtype == np.float32 else dict(rtol=1e-13, atol=0)
    np.testing.assert_allclose(run.tops[0], y_ref, **tol)
    dx = np.zeros(x.shape)
    height, width = x.shape[2:]
    for n, c, oh, ow in np.ndindex(*y_ref.shape):
        if method == "MAX":
            h, w = divmod(int(mask_ref[n, c, oh, ow]), width)
            dx[n, c, h, w] += dy[n, c, oh, ow]
        else:
            hs, ws = oh * stride - pad, ow * stride - pad
            size = (min(hs + kernel, height + pad) - hs) * (min(ws + kernel, width + pad) - ws)
            rows = slice(max(hs, 0), min(hs + kernel, height))
            cols = slice(max(ws, 0), min(ws + kernel, width))
            dx[n, c, rows, cols] += dy[n, c, oh, ow] / size
    np.testing.assert_allclose(run.bottom_diffs[0], dx, rtol=1e-5 if dtype == np.float32 else 1e-12,
                               atol=1e-6 if dtype == np.float32 else 1e-12)


# =========================================================================== the parallel CPU path
@pytest.mark.parametrize("type_name,text,phase", [
    ("Pooling", "kernel_size: 3 stride: 2 pad: 1", jitnet.TRAIN),
    ("Pooling", "kernel_size: 2 stride: 2", jitnet.TRAIN),
    ("Pooling", "pool: AVE kernel_size: 3 stride: 1 pad: 1", jitnet.TRAIN),
    ("Pooling", "pool: AVE kernel_h: 3 kernel_w: 2 stride: 3", jitnet.TRAIN),
    ("Pooling", "pool: STOCHASTIC kernel_size: 3 stride: 2", jitnet.TEST),
    ("SPP", "pyramid_height: 3", jitnet.TRAIN),
    ("SPP", "pyramid_height: 3 pool: AVE", jitnet.TRAIN),
    ("LRN", "local_size: 5 alpha: 0.5 beta: 0.75", jitnet.TRAIN),
    ("LRN", "local_size: 3 alpha: 0.5 beta: 0.6 k: 2", jitnet.TRAIN),
    ("LRN", "local_size: 3 alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL", jitnet.TRAIN)])
def test_parallel_path_matches_the_serial_path(type_name, text, phase):
    """A batch large enough for the CPU kernels' parallel loops (prange over chunks of planes or
    pixel blocks) against its images one at a time, which run serially."""
    rng = np.random.default_rng(9)
    x = rng.permutation(8 * 16 * 17 * 16).reshape(8, 16, 17, 16) / 4000.0 + 0.05
    lp = _lp(type_name, text)
    shape = run_layer_on("cpu", lp, [x[:1]], phase=phase, backward=False).tops[0].shape
    dy = rng.normal(size=(8,) + shape[1:])
    whole = run_layer_on("cpu", lp, [x], phase=phase, top_diffs=[dy], propagate_down=[True])
    for i in range(8):
        part = run_layer_on("cpu", lp, [x[i:i + 1]], phase=phase, top_diffs=[dy[i:i + 1]],
                            propagate_down=[True])
        np.testing.assert_allclose(whole.tops[0][i:i + 1], part.tops[0], rtol=1e-13, atol=0)
        np.testing.assert_allclose(whole.bottom_diffs[0][i:i + 1], part.bottom_diffs[0], rtol=1e-12,
                                   atol=1e-15)


@pytest.mark.parametrize("kernel,stride,pad", [(3, 2, 1), (3, 1, 1), (2, 2, 1), (4, 3, 2)])
def test_float32_average_is_summed_as_caffe_sums(kernel, stride, pad):
    """Caffe's CPU AVE pooling adds a window's image values into a float top in row-major
    order, then divides by pool_size: the inner block's unrolled path and the general loop of
    the border both give exactly those bits (a float64 sum rounded once differs in some)."""
    rng = np.random.default_rng(kernel + stride + pad)
    x = (rng.standard_normal((1, 2, 7, 6)) * 10).astype(np.float32)
    text = f"pool: AVE kernel_size: {kernel} stride: {stride} pad: {pad}"
    got = run_layer_on("cpu", _lp("Pooling", text), [x], dtype=np.float32).tops[0]
    height, width = x.shape[2:]
    want = np.zeros(got.shape, np.float32)
    for n, c, oh, ow in np.ndindex(*got.shape):
        hs, ws = oh * stride - pad, ow * stride - pad
        he, we = min(hs + kernel, height + pad), min(ws + kernel, width + pad)
        pool_size = np.float32((he - hs) * (we - ws))
        total = np.float32(0)
        for h in range(max(hs, 0), min(he, height)):
            for w in range(max(ws, 0), min(we, width)):
                total = np.float32(total + x[n, c, h, w])
        want[n, c, oh, ow] = total / pool_size
    np.testing.assert_array_equal(got, want)
