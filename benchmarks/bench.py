"""jitnet's benchmark suite: jitnet against PyTorch (CPU) and OpenCV's dnn module, in one
process, interleaved (A B A B ... after a warm-up that also compiles the kernels), medians.

    python benchmarks/bench.py [--repeat 20] [--only layers,train,deploy,gemm,scaling]
                               [--match "LeNet,CIFAR"] [--cpu-time]
                               [--json benchmarks/results/DATE-cpu.json] [--compare OLD.json] [--gpu]

Sections (all by default):
  layers   forward and backward of each layer at the shapes in the layer table's ``bench``
           column (tests/layer_cases.py), with GFLOP/s for the layers that multiply;
  train    a training iteration (forward, backward, SGD update with momentum and weight
           decay) of the digits MLPs, LeNet at batch 64 and CIFAR-10-quick at batch 100;
  deploy   forward passes of the deploy nets of LeNet (b64), CaffeNet (b16) and GoogLeNet
           (b8) from ../shared/models (skipped with a note where absent), against PyTorch and
           OpenCV's dnn (which reads the same prototxt and caffemodel);
  gemm     each convolution of CIFAR-10-quick: GFLOP/s forward and backward next to the
           SGEMM rate BLAS reaches at that GEMM shape on this machine (the rates count a
           direct convolution's FLOPs, so Winograd's can pass the SGEMM rate);
  scaling  training throughput (images/s) of LeNet and CIFAR-10-quick against the batch
           size, with 1 thread and with all cores.

``--cpu-time`` runs everything on one thread (numba, PyTorch, OpenCV) and times the
process's CPU time instead of the wall clock: on a machine shared with other work the
wall clock of two threads swings by whole scheduler quanta, CPU time much less.
``--match`` keeps the rows whose case contains one of the comma-separated words.

A ratio is jitnet's time over the peer's (below 1: jitnet is faster). Every comparison
also checks the outputs: a row whose outputs disagree beyond float tolerance is marked
INVALID and its ratio is not to be trusted. The peers are optional
(``pip install -e ".[bench]"``); without them only jitnet's times are shown. Results
with date, machine and versions go into benchmarks/RESULTS.md.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from google.protobuf import text_format

import jitnet
from jitnet import Blob
from jitnet.layer import create_layer
from jitnet.layers import vision
from jitnet.proto import io as proto_io
from jitnet.proto import pb

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402

torch, F = peers.torch, peers.F
MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"
CLOCK = time.perf_counter      # time.process_time with --cpu-time
# The steady state is timed: each convolution measures its algorithms at its first call (in the
# warm-up), as a long training does after vision.MEASURE_AFTER seconds.
vision.MEASURE_AFTER = 0.0
MATCH = ()                     # case-name words (--match); empty: every case


def wanted(case):
    return not MATCH or any(word in case for word in MATCH)


def peer_threads():
    """The threads a peer and the SGEMM rate get: one under --cpu-time, else every core."""
    return 1 if CLOCK is time.process_time else os.cpu_count()


# -- timing ---------------------------------------------------------------------------------------
def interleaved(fns, repeat, warmup=2, sync=lambda: None):
    """{name: median ms} of the callables in ``fns``, run in turn A B A B ... after ``warmup``
    rounds, so a change in the machine's speed hits every contender alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
            sync()
    times = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start = CLOCK()
            fn()
            sync()
            times[name].append((CLOCK() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def _close(a, b, rtol=1e-3, atol=1e-4):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a.shape == b.shape and np.allclose(a, b, rtol=rtol, atol=atol)


def _sync():
    from numba import cuda
    cuda.synchronize()


# -- FLOPs --------------------------------------------------------------------------------------
def layer_flops(layer, bottoms, tops):
    """Multiply-adds × 2 of one forward of a layer that multiplies (else 0)."""
    if layer.type in ("Convolution", "Deconvolution"):
        weights = layer.blobs[0]
        per_output = 2 * np.prod(weights.shape[1:])
        outputs = sum(t.count for t in (tops if layer.type == "Convolution" else bottoms))
        return int(per_output * outputs)
    if layer.type == "InnerProduct":
        return int(2 * layer.M * layer.N * layer.K)
    return 0


def net_flops(net):
    return sum(layer_flops(s.layer, s.bottoms, s.tops) for s in net.steps)


# -- layers -------------------------------------------------------------------------------------
def layer_benches():
    """(layer type, Bench) for every benchmark row of the layer table."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from layer_cases import LAYER_CASES
    return [(case.type, b) for case in LAYER_CASES for b in case.bench]


def bench_layer(type_name, spec, repeat, device):
    """One row: a bottom per shape (named x, or x0, x1, ... when there are several), the tops
    named in the row's params text plus "y"; PyTorch gets the bottom tensor, or the list of
    them, and may return one tensor or a list (one per top)."""
    rng = np.random.default_rng(0)
    names = ["x"] if len(spec.shapes) == 1 else [f"x{k}" for k in range(len(spec.shapes))]
    param = text_format.Parse(f'name: "bench" type: "{type_name}" {spec.params} '
                              + " ".join(f'bottom: "{n}"' for n in names) + ' top: "y"', pb.LayerParameter())
    layer = create_layer(param, spec.phase)
    bottoms = [Blob(s) for s in spec.shapes]
    values = spec.fill(rng, spec.shapes) if spec.fill else [rng.standard_normal(s) for s in spec.shapes]
    for b, value in zip(bottoms, values):
        b.data[...] = value
    tops = [Blob() for _ in param.top]
    layer.setup_layer(bottoms, tops)
    for blob, spec_ in zip(layer.blobs, type(layer).param_specs(layer.param)):
        if spec_.lr_mult != 0 and not np.any(blob.data):     # learned weights: random, not the 0 filler
            blob.data[...] = rng.standard_normal(blob.shape) * 0.1
    layer.run_forward(bottoms, tops)
    for t in tops:
        t.diff[...] = rng.standard_normal(t.shape)
    down = [k not in layer.no_gradient_bottoms for k in range(len(bottoms))]
    sync = _sync if device == "gpu" else (lambda: None)
    fns_f = {"jitnet": lambda: layer.run_forward(bottoms, tops)}
    fns_b = {"jitnet": lambda: layer.run_backward(tops, down, bottoms)}
    row = {"section": "layers", "case": spec.label}
    if torch is not None and device == "cpu":
        xs = [torch.tensor(b.data, requires_grad=down[k]) for k, b in enumerate(bottoms)]
        x = xs[0] if len(xs) == 1 else xs
        params = [torch.tensor(b.data, requires_grad=True) for b in layer.blobs]
        y = spec.torch(F, x, params)
        ys = list(y) if isinstance(y, (list, tuple)) else [y]
        dys = [torch.tensor(t.diff) for t in tops]
        if spec.same_outputs:
            row["valid"] = all(_close(a.detach().numpy(), t.data) for a, t in zip(ys, tops))
        fns_f["torch"] = lambda: spec.torch(F, x, params)
        fns_b["torch"] = lambda: torch.autograd.backward(ys, dys, retain_graph=True)
    forward = interleaved(fns_f, repeat, sync=sync)
    backward = interleaved(fns_b, repeat, sync=sync)
    row.update(jitnet_forward_ms=forward["jitnet"], jitnet_backward_ms=backward["jitnet"],
               torch_forward_ms=forward.get("torch"), torch_backward_ms=backward.get("torch"))
    flops = layer_flops(layer, bottoms, tops)
    if flops:
        row["gflops_forward"] = flops / forward["jitnet"] / 1e6
        row["gflops_backward"] = 2 * flops / backward["jitnet"] / 1e6
    return row


# -- nets ---------------------------------------------------------------------------------------
def mlp_prototxt(batch, sizes, classes):
    layers = [f'layer {{ name: "data" type: "Input" top: "data" top: "label" '
              f'input_param {{ shape {{ dim: {batch} dim: {sizes[0]} }} shape {{ dim: {batch} }} }} }}']
    bottom = "data"
    for i, n in enumerate(sizes[1:] + [classes]):
        layers.append(f'layer {{ name: "ip{i}" type: "InnerProduct" bottom: "{bottom}" top: "ip{i}" '
                      f'inner_product_param {{ num_output: {n} weight_filler {{ type: "xavier" }} }} }}')
        bottom = f"ip{i}"
        if i < len(sizes) - 1:
            layers.append(f'layer {{ name: "relu{i}" type: "ReLU" bottom: "{bottom}" top: "{bottom}" }}')
    layers.append(f'layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "{bottom}" bottom: "label" top: "loss" }}')
    return text_format.Parse("\n".join(layers), pb.NetParameter())


def train_net_from_deploy(path, batch, output):
    """A deploy prototxt turned into a training net: the input at ``batch``, a label input,
    and SoftmaxWithLoss on ``output`` (the layer before the final Softmax)."""
    param = proto_io.read_net(str(path))
    kept = [layer for layer in param.layer if layer.type != "Softmax"]
    del param.layer[:]
    param.layer.extend(kept)
    data = param.layer[0]
    data.input_param.shape[0].dim[0] = batch
    label = param.layer.add(name="label_input", type="Input", top=["label"])
    label.input_param.shape.add().dim.append(batch)
    param.layer.add(name="loss", type="SoftmaxWithLoss", bottom=[output, "label"], top=["loss"])
    return param


TRAIN_NETS = [
    ("MLP 64x(64-100-50-10)", lambda: mlp_prototxt(64, [64, 100, 50], 10), 10),
    ("MLP 64x(784-500-10) (LeNet's classifier)", lambda: mlp_prototxt(64, [784, 500], 10), 10),
    ("LeNet b64", lambda: train_net_from_deploy(MODELS / "lenet_mnist" / "lenet.prototxt", 64, "ip2"), 10),
    ("CIFAR-10-quick b100", lambda: train_net_from_deploy(
        MODELS / "cifar10_quick" / "cifar10_quick.prototxt", 100, "ip2"), 10),
]


def _solver(net_param):
    solver_param = pb.SolverParameter(base_lr=0.01, momentum=0.9, weight_decay=5e-4, lr_policy="fixed",
                                      max_iter=10 ** 9)
    solver_param.net_param.CopyFrom(net_param)
    jitnet.set_random_seed(0)
    return jitnet.SGDSolver(solver_param)


def _fill_inputs(net, classes, rng):
    data = net.inputs[0]
    net.blobs[data].data[...] = rng.standard_normal(net.blobs[data].shape)
    net.blobs["label"].data[...] = rng.integers(0, classes, net.blobs["label"].shape)


def _torch_trainer(net):
    model = peers.TorchNet(net, train=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    inputs = {name: net.blobs[name].data.copy() for name in net.inputs}

    def step():
        opt.zero_grad()
        model.forward(inputs)["loss"].backward()
        opt.step()
    return model, inputs, step


def bench_train(name, make, classes, repeat, device):
    try:
        solver = _solver(make())
    except (OSError, jitnet.JitnetError) as e:
        return {"section": "train", "case": name, "skipped": str(e)[:200]}
    _fill_inputs(solver.net, classes, np.random.default_rng(0))
    row = {"section": "train", "case": name, "gflop": 3 * net_flops(solver.net) / 1e9}
    fns = {"jitnet": lambda: solver.step(1)}
    if torch is not None and device == "cpu":
        model, inputs, step = _torch_trainer(solver.net)
        want = model.forward(inputs)["loss"].item()
        row["valid"] = _close(solver.net.forward_from_to(), want)
        fns["torch"] = step
    times = interleaved(fns, repeat, sync=_sync if device == "gpu" else (lambda: None))
    row.update(jitnet_ms=times["jitnet"], torch_ms=times.get("torch"))
    return row


DEPLOY_NETS = [
    ("LeNet deploy b64", MODELS / "lenet_mnist" / "lenet.prototxt", 64),
    ("CaffeNet deploy b16", MODELS / "bvlc_reference_caffenet" / "deploy.prototxt", 16),
    ("GoogLeNet deploy b8", MODELS / "bvlc_googlenet" / "deploy.prototxt", 8),
]


def bench_deploy(name, path, batch, repeat, device, workdir):
    row = {"section": "deploy", "case": name}
    try:
        param = proto_io.read_net(str(path))
        data = param.layer[0]
        data.input_param.shape[0].dim[0] = batch
        jitnet.set_random_seed(0)
        net = jitnet.Net(param, jitnet.TEST)
    except (OSError, jitnet.JitnetError) as e:
        row["skipped"] = str(e)[:200]
        return row
    rng = np.random.default_rng(0)
    for layer in net.layers:                 # filler defaults can be all zero: random weights
        for blob in layer.blobs:
            if layer.type not in ("BatchNorm",):
                blob.data[...] = rng.standard_normal(blob.shape) * (2.0 / max(1, blob.count // blob.shape[0])) ** 0.5
    inputs = {name: rng.uniform(0, 1, net.blobs[name].shape).astype(np.float32) for name in net.inputs}
    outputs = net.outputs
    want = {k: v.copy() for k, v in net.forward(**inputs).items()}
    row["gflop"] = net_flops(net) / 1e9
    fns = {"jitnet": lambda: net.forward(**inputs)}
    if torch is not None and device == "cpu":
        model = peers.TorchNet(net)
        with torch.no_grad():
            got = model.forward(inputs)
        row["valid"] = all(_close(got[k].numpy(), want[k]) for k in outputs)

        def torch_forward():
            with torch.no_grad():
                model.forward(inputs)
        fns["torch"] = torch_forward
    caffemodel = os.path.join(workdir, "weights.caffemodel")
    net.save(caffemodel)
    prototxt = os.path.join(workdir, "deploy.prototxt")
    proto_io.write_text(param, prototxt)
    cv_net = peers.opencv_net(prototxt, caffemodel, threads=peer_threads()) if device == "cpu" else None
    if cv_net is not None:
        got = peers.opencv_forward(cv_net, inputs, outputs)
        row["valid_opencv"] = all(_close(got[k].reshape(want[k].shape), want[k]) for k in outputs)
        fns["opencv"] = lambda: peers.opencv_forward(cv_net, inputs, outputs)
    times = interleaved(fns, repeat, sync=_sync if device == "gpu" else (lambda: None))
    row.update(jitnet_ms=times["jitnet"], torch_ms=times.get("torch"), opencv_ms=times.get("opencv"))
    return row


# -- GEMM rates -----------------------------------------------------------------------------------
def sgemm_gflops(m, k, n, repeat):
    """GFLOP/s of one single-threaded float32 GEMM (m×k)·(k×n) through np.dot inside numba (the
    BLAS jitnet's kernels call), and the machine's rate with every core doing one."""
    from numba import njit

    @njit
    def dot(a, b, c):
        np.dot(a, b, c)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32)
    c = np.empty((m, n), np.float32)
    ms = interleaved({"gemm": lambda: dot(a, b, c)}, repeat)["gemm"]
    one = 2 * m * k * n / ms / 1e6
    return one, one * peer_threads()


def bench_gemm(repeat):
    rows = []
    path = MODELS / "cifar10_quick" / "cifar10_quick.prototxt"
    try:
        net = jitnet.Net(train_net_from_deploy(path, 100, "ip2"), jitnet.TRAIN)
    except (OSError, jitnet.JitnetError) as e:
        return [{"section": "gemm", "case": "CIFAR-10-quick convolutions", "skipped": str(e)[:200]}]
    rng = np.random.default_rng(0)
    for step in net.steps:
        layer = step.layer
        if layer.type != "Convolution":
            continue
        for b in step.bottoms:
            b.data[...] = rng.standard_normal(b.shape)
        for blob in layer.blobs:
            blob.data[...] = rng.standard_normal(blob.shape) * 0.05
        layer.run_forward(step.bottoms, step.tops)
        step.tops[0].diff[...] = rng.standard_normal(step.tops[0].shape)
        times = interleaved({"forward": lambda: layer.run_forward(step.bottoms, step.tops),
                             "backward": lambda: layer.run_backward(step.tops, [True], step.bottoms)}, repeat)
        flops = layer_flops(layer, step.bottoms, step.tops)
        out, k = step.tops[0].count_range(2), int(np.prod(layer.blobs[0].shape[1:]))
        one, machine = sgemm_gflops(layer.blobs[0].shape[0], k, out, repeat)
        rows.append({"section": "gemm", "case": f"CIFAR-10-quick {layer.name} {step.bottoms[0].shape}",
                     "gflops_forward": flops / times["forward"] / 1e6,
                     "gflops_backward": 2 * flops / times["backward"] / 1e6,
                     "sgemm_gflops_1core": one, "sgemm_gflops_machine": machine})
    return rows


# -- scaling ----------------------------------------------------------------------------------------
def bench_scaling(repeat):
    import numba
    rows = []
    cores = numba.config.NUMBA_NUM_THREADS
    for name, path, output in (("LeNet", MODELS / "lenet_mnist" / "lenet.prototxt", "ip2"),
                               ("CIFAR-10-quick", MODELS / "cifar10_quick" / "cifar10_quick.prototxt", "ip2")):
        for batch in (1, 4, 16, 64, 256):
            try:
                solver = _solver(train_net_from_deploy(path, batch, output))
            except (OSError, jitnet.JitnetError) as e:
                rows.append({"section": "scaling", "case": name, "skipped": str(e)[:200]})
                break
            _fill_inputs(solver.net, 10, np.random.default_rng(0))
            row = {"section": "scaling", "case": f"{name} b{batch}"}
            for threads in sorted({1, cores}):
                numba.set_num_threads(threads)
                fns = {"jitnet": lambda: solver.step(1)}
                if torch is not None:
                    torch.set_num_threads(threads)
                    fns["torch"] = _torch_trainer(solver.net)[2]
                times = interleaved(fns, max(3, repeat // 4))
                row[f"jitnet_img_s_{threads}t"] = batch / times["jitnet"] * 1e3
                if "torch" in times:
                    row[f"torch_img_s_{threads}t"] = batch / times["torch"] * 1e3
            numba.set_num_threads(cores)
            if torch is not None:
                torch.set_num_threads(cores)
            rows.append(row)
    return rows


# -- report -------------------------------------------------------------------------------------------
def machine():
    import numba
    import scipy
    info = {"date": time.strftime("%Y-%m-%d"), "python": platform.python_version(),
            "machine": platform.machine(), "cpu": _cpu_model(), "cpus": os.cpu_count(),
            "numba": numba.__version__, "numba_threads": numba.get_num_threads(),
            "numpy": np.__version__, "scipy": scipy.__version__, "jitnet": jitnet.__version__}
    if torch is not None:
        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    if peers.cv2 is not None:
        info.update(opencv=peers.cv2.__version__)
    return info


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _ratio(a, b):
    return f"{a / b:6.2f}" if a and b else "   n/a"


def _valid(row, key="valid"):
    return "" if row.get(key, True) else "  INVALID"


def print_rows(rows):
    for section in ("layers", "train", "deploy", "gemm", "scaling"):
        part = [r for r in rows if r["section"] == section]
        if not part:
            continue
        print()
        if section in ("train", "gemm"):
            print(f"{section:8} (GFLOP/s count a direct convolution's FLOPs: Winograd does fewer"
                  + (", so its rate can pass the SGEMM rate)" if section == "gemm" else ")"))
        for r in part:
            if "skipped" in r:
                print(f"{section:8} {r['case']:44} skipped: {r['skipped']}")
                continue
            if section == "layers":
                extra = (f"  {r['gflops_forward']:6.1f}/{r['gflops_backward']:6.1f} GFLOP/s"
                         if "gflops_forward" in r else "")
                print(f"layers   {r['case']:44} fwd {r['jitnet_forward_ms']:8.3f} ms  torch "
                      f"{r['torch_forward_ms'] or 0:8.3f}  ratio {_ratio(r['jitnet_forward_ms'], r['torch_forward_ms'])}"
                      f" | bwd {r['jitnet_backward_ms']:8.3f} ms  torch {r['torch_backward_ms'] or 0:8.3f}  ratio "
                      f"{_ratio(r['jitnet_backward_ms'], r['torch_backward_ms'])}{extra}{_valid(r)}")
            elif section == "train":
                print(f"train    {r['case']:44} iter {r['jitnet_ms']:8.3f} ms  torch {r['torch_ms'] or 0:8.3f}  "
                      f"ratio {_ratio(r['jitnet_ms'], r['torch_ms'])}  ({r['gflop'] / r['jitnet_ms'] * 1e3:6.1f} "
                      f"GFLOP/s){_valid(r)}")
            elif section == "deploy":
                best = min(t for t in (r.get("torch_ms"), r.get("opencv_ms")) if t) if (
                    r.get("torch_ms") or r.get("opencv_ms")) else None
                print(f"deploy   {r['case']:44} fwd {r['jitnet_ms']:8.3f} ms  torch {r.get('torch_ms') or 0:8.3f}  "
                      f"opencv {r.get('opencv_ms') or 0:8.3f}  ratio to the faster {_ratio(r['jitnet_ms'], best)}"
                      f"{_valid(r)}{_valid(r, 'valid_opencv').replace('INVALID', 'INVALID (opencv)')}")
            elif section == "gemm":
                machine = r['sgemm_gflops_machine']
                print(f"gemm     {r['case']:44} fwd {r['gflops_forward']:6.1f}  bwd {r['gflops_backward']:6.1f} "
                      f"GFLOP/s; SGEMM at this shape {r['sgemm_gflops_1core']:6.1f} per core, "
                      f"{machine:6.1f} machine (fwd {100 * r['gflops_forward'] / machine:3.0f}%, "
                      f"bwd {100 * r['gflops_backward'] / machine:3.0f}% of the machine's)")
            else:
                cells = "  ".join(f"{k.replace('_img_s_', ' ')} {v:8.1f}" for k, v in r.items()
                                  if k.endswith("t") and "_img_s_" in k)
                print(f"scaling  {r['case']:44} images/s: {cells}")


def compare(rows, old_path):
    """Print, per row present in both runs, jitnet's time now over its time then."""
    with open(old_path) as f:
        data = json.load(f)
    if "rows" not in data:
        print(f"\n{old_path} predates the suite's JSON layout (no 'rows'): nothing to compare")
        return
    old = {(r["section"], r["case"]): r for r in data["rows"]}
    print(f"\nchange against {old_path} (jitnet time now / then; below 1: faster now)")
    for r in rows:
        before = old.get((r["section"], r["case"]))
        if not before:
            continue
        for key in ("jitnet_forward_ms", "jitnet_backward_ms", "jitnet_ms"):
            if r.get(key) and before.get(key):
                print(f"  {r['section']:8} {r['case']:44} {key:20} {r[key] / before[key]:6.2f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--only", default="layers,train,deploy,gemm,scaling",
                        help="comma-separated sections (default: all)")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--compare", default=None, help="an earlier --json file to compare with")
    parser.add_argument("--gpu", action="store_true", help="time jitnet's GPU kernels (no peers)")
    parser.add_argument("--match", default="", help="comma-separated words; keep the cases naming one")
    parser.add_argument("--cpu-time", action="store_true",
                        help="one thread everywhere, CPU time instead of the wall clock")
    args = parser.parse_args(argv)
    global CLOCK, MATCH
    MATCH = tuple(w for w in args.match.split(",") if w)
    if args.cpu_time:
        import numba
        CLOCK = time.process_time
        numba.set_num_threads(1)
        if torch is not None:
            torch.set_num_threads(1)
    device = "gpu" if args.gpu else "cpu"
    if args.gpu:
        jitnet.set_mode_gpu()
    sections = set(args.only.split(","))
    info = machine()
    info["clock"] = "process CPU time, 1 thread" if args.cpu_time else "wall clock"
    print(f"jitnet benchmarks on {device}: {json.dumps(info)}")
    rows = []
    if "layers" in sections:
        rows += [bench_layer(t, spec, args.repeat, device) for t, spec in layer_benches()
                 if wanted(spec.label)]
    if "train" in sections:
        rows += [bench_train(name, make, classes, args.repeat, device)
                 for name, make, classes in TRAIN_NETS if wanted(name)]
    if "deploy" in sections:
        with tempfile.TemporaryDirectory() as workdir:
            rows += [bench_deploy(name, path, batch, args.repeat, device, workdir)
                     for name, path, batch in DEPLOY_NETS if wanted(name)]
    if "gemm" in sections and device == "cpu":
        rows += bench_gemm(args.repeat)
    if "scaling" in sections and device == "cpu":
        rows += bench_scaling(args.repeat)
    print_rows(rows)
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"machine": info, "device": device, "rows": rows}, f, indent=1, default=float)
    if args.compare:
        compare(rows, args.compare)
    return 0


if __name__ == "__main__":
    sys.exit(main())
