"""jitnet against PyTorch (CPU) in one process: per-layer forward and backward, and a
whole training iteration of two small nets. Prints a table of ratios (jitnet time /
PyTorch time: below 1 means jitnet is faster) and writes the numbers as JSON.

    python benchmarks/bench.py [--repeat 30] [--json benchmarks/results/latest.json] [--gpu]

PyTorch is optional (``pip install torch``); without it only jitnet's times are shown.
Times are medians over ``--repeat`` runs after a warm-up that also compiles the kernels.
Results with date and machine go into benchmarks/RESULTS.md.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
from google.protobuf import text_format

import jitnet
from jitnet import Blob
from jitnet.layer import create_layer
from jitnet.proto import pb

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    torch = None


def median_ms(fn, repeat, sync=lambda: None):
    fn()
    sync()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


# -- per-layer cases: the ``bench`` column of the layer table (tests/layer_cases.py) ----------------
def layer_benches():
    """(layer type, Bench) for every benchmark row of the layer table."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
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
    for b in bottoms:
        b.data[...] = rng.standard_normal(b.shape)
    tops = [Blob() for _ in param.top]
    layer.setup_layer(bottoms, tops)
    for t in tops:
        t.diff[...] = rng.standard_normal(t.shape)
    down = [k not in layer.no_gradient_bottoms for k in range(len(bottoms))]
    sync = _sync if device == "gpu" else (lambda: None)
    result = {"case": spec.label,
              "jitnet_forward_ms": median_ms(lambda: layer.run_forward(bottoms, tops), repeat, sync),
              "jitnet_backward_ms": median_ms(lambda: layer.run_backward(tops, down, bottoms), repeat, sync)}
    if torch is not None and device == "cpu":
        xs = [torch.tensor(b.data, requires_grad=True) for b in bottoms]
        x = xs[0] if len(xs) == 1 else xs
        params = [torch.tensor(b.data, requires_grad=True) for b in layer.blobs]
        dys = [torch.tensor(t.diff) for t in tops]
        result["torch_forward_ms"] = median_ms(lambda: spec.torch(F, x, params), repeat)
        y = spec.torch(F, x, params)
        ys = list(y) if isinstance(y, (list, tuple)) else [y]
        result["torch_backward_ms"] = median_ms(
            lambda: torch.autograd.backward(ys, dys, retain_graph=True), repeat)
    return result


# -- whole training iterations ----------------------------------------------------------------------------
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
    return "\n".join(layers)


NETS = [("MLP 64x(64-100-50-10) train iter", 64, [64, 100, 50], 10),
        ("MLP 64x(784-500-10) train iter (LeNet's classifier)", 64, [784, 500], 10)]


def bench_net(name, batch, sizes, classes, repeat, device):
    net_param = text_format.Parse(mlp_prototxt(batch, sizes, classes), pb.NetParameter())
    solver_param = pb.SolverParameter(base_lr=0.01, momentum=0.9, weight_decay=5e-4, lr_policy="fixed",
                                      max_iter=10 ** 9)
    solver_param.net_param.CopyFrom(net_param)
    solver = jitnet.SGDSolver(solver_param)
    rng = np.random.default_rng(0)
    solver.net.blobs["data"].data[...] = rng.standard_normal((batch, sizes[0]))
    solver.net.blobs["label"].data[...] = rng.integers(0, classes, batch)
    sync = _sync if device == "gpu" else (lambda: None)
    result = {"case": name, "jitnet_iter_ms": median_ms(lambda: solver.step(1), repeat, sync)}
    if torch is not None and device == "cpu":
        dims = sizes + [classes]
        model = torch.nn.Sequential(*[m for i in range(len(dims) - 1) for m in
                                      ([torch.nn.Linear(dims[i], dims[i + 1])] +
                                       ([torch.nn.ReLU()] if i < len(dims) - 2 else []))])
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        x = torch.tensor(solver.net.blobs["data"].data)
        y = torch.tensor(solver.net.blobs["label"].data).long()

        def torch_step():
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        result["torch_iter_ms"] = median_ms(torch_step, repeat)
    return result


def _sync():
    from numba import cuda
    cuda.synchronize()


def machine():
    import numba
    info = {"date": time.strftime("%Y-%m-%d"), "python": platform.python_version(),
            "machine": platform.machine(), "cpus": os.cpu_count(), "numba": numba.__version__,
            "numba_threads": numba.get_num_threads(), "numpy": np.__version__}
    if torch is not None:
        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    return info


def ratio(a, b):
    return f"{a / b:6.2f}" if b else "   n/a"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--gpu", action="store_true", help="time jitnet's GPU kernels (no PyTorch column)")
    args = parser.parse_args(argv)
    device = "gpu" if args.gpu else "cpu"
    if args.gpu:
        jitnet.set_mode_gpu()
    info = machine()
    print(f"jitnet benchmarks on {device}: {json.dumps(info)}")
    layers = [bench_layer(type_name, spec, args.repeat, device) for type_name, spec in layer_benches()]
    nets = [bench_net(*case, args.repeat, device) for case in NETS]
    print(f"\n{'layer':34} {'fwd ms':>8} {'torch':>8} {'ratio':>6}   {'bwd ms':>8} {'torch':>8} {'ratio':>6}")
    for r in layers:
        tf, tb = r.get("torch_forward_ms", 0), r.get("torch_backward_ms", 0)
        print(f"{r['case']:34} {r['jitnet_forward_ms']:8.3f} {tf:8.3f} {ratio(r['jitnet_forward_ms'], tf)}"
              f"   {r['jitnet_backward_ms']:8.3f} {tb:8.3f} {ratio(r['jitnet_backward_ms'], tb)}")
    print(f"\n{'net':52} {'iter ms':>8} {'torch':>8} {'ratio':>6}")
    for r in nets:
        t = r.get("torch_iter_ms", 0)
        print(f"{r['case']:52} {r['jitnet_iter_ms']:8.3f} {t:8.3f} {ratio(r['jitnet_iter_ms'], t)}")
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"machine": info, "device": device, "layers": layers, "nets": nets}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
