#!/usr/bin/env python3
"""The six layer rows and two MLP nets of the first benchmark (2026-11-27), for comparing jitnet
versions with each other: single-thread CPU time (process_time; WALL=1 for wall clock), medians,
printed as JSON. It uses only APIs every version has, so it runs against an old tree too:

    NUMBA_NUM_THREADS=1 PYTHONPATH=/path/to/old/tree python benchmarks/bench_versions.py > old.json
    NUMBA_NUM_THREADS=1 python benchmarks/bench_versions.py > new.json

(an old tree laid out for PYTHONPATH: its jitnet/ with kernels/ copied in as jitnet/kernels/).
"""
import sys, time, statistics, json, os
CLOCK = time.perf_counter if os.environ.get("WALL") else time.process_time
import numpy as np
from google.protobuf import text_format
import jitnet
from jitnet import Blob
from jitnet.layer import create_layer
from jitnet.proto import pb
LAYERS = [("InnerProduct 256x1024->1024", 'type: "InnerProduct" inner_product_param { num_output: 1024 weight_filler { type: "xavier" } }', (256, 1024)),
          ("ReLU 256x4096", 'type: "ReLU"', (256, 4096)), ("Sigmoid 256x4096", 'type: "Sigmoid"', (256, 4096)),
          ("TanH 256x4096", 'type: "TanH"', (256, 4096)), ("Softmax 256x1000", 'type: "Softmax"', (256, 1000)),
          ("Dropout(train) 256x4096", 'type: "Dropout"', (256, 4096))]
def cpu(fn, n=30):
    fn(); fn(); ts = []
    for _ in range(n):
        t = CLOCK(); fn(); ts.append(CLOCK() - t)
    return statistics.median(ts) * 1e3
out = {}
for name, text, shape in LAYERS:
    lp = text_format.Parse(f'name: "b" {text} bottom: "x" top: "y"', pb.LayerParameter())
    layer = create_layer(lp, 0); b = [Blob(shape)]; b[0].data[...] = np.random.default_rng(0).standard_normal(shape); t = [Blob()]
    layer.setup_layer(b, t); layer.run_forward(b, t); t[0].diff[...] = 1.0
    out[name] = (cpu(lambda: layer.run_forward(b, t)), cpu(lambda: layer.run_backward(t, [True], b)))
def mlp(batch, sizes, classes):
    L = [f'layer {{ name: "data" type: "Input" top: "data" top: "label" input_param {{ shape {{ dim: {batch} dim: {sizes[0]} }} shape {{ dim: {batch} }} }} }}']
    bottom = "data"
    for i, n in enumerate(sizes[1:] + [classes]):
        L.append(f'layer {{ name: "ip{i}" type: "InnerProduct" bottom: "{bottom}" top: "ip{i}" inner_product_param {{ num_output: {n} weight_filler {{ type: "xavier" }} }} }}'); bottom = f"ip{i}"
        if i < len(sizes) - 1: L.append(f'layer {{ name: "relu{i}" type: "ReLU" bottom: "{bottom}" top: "{bottom}" }}')
    L.append(f'layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "{bottom}" bottom: "label" top: "loss" }}')
    sp = pb.SolverParameter(base_lr=0.01, momentum=0.9, weight_decay=5e-4, lr_policy="fixed", max_iter=10**9)
    sp.net_param.CopyFrom(text_format.Parse("\n".join(L), pb.NetParameter()))
    s = jitnet.SGDSolver(sp); s.net.blobs["data"].data[...] = np.random.default_rng(0).standard_normal((batch, sizes[0]))
    s.net.blobs["label"].data[...] = np.random.default_rng(0).integers(0, classes, batch)
    return cpu(lambda: s.step(1))
out["MLP 64x(64-100-50-10) iter"] = (mlp(64, [64, 100, 50], 10), 0)
out["MLP 64x(784-500-10) iter"] = (mlp(64, [784, 500], 10), 0)
print(json.dumps(out))
