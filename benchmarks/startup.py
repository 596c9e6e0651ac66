"""Start-up (issue 10, target 4): one whole process from its start to the end of the first
LeNet training iteration (batch 64, SGD with momentum and weight decay, random inputs),
imports included. Time it from outside, with a warm and with an empty numba cache:

    for i in 1 2 3 4 5; do /usr/bin/time -f "%e s wall, %U s user" python benchmarks/startup.py; done
    NUMBA_CACHE_DIR=$(mktemp -d) /usr/bin/time -f "%e s wall, %U s user" python benchmarks/startup.py

(the first run of the warm series fills the cache if it is empty; quote the median of the rest)

It prints the seconds its own clock saw from its first line (its imports included), for
reference: the interpreter's own start is not in it."""
import time

_start = time.perf_counter()

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import jitnet  # noqa: E402
from jitnet.proto import io as proto_io  # noqa: E402
from jitnet.proto import pb  # noqa: E402

MODEL = Path(__file__).resolve().parents[2] / "shared" / "models" / "lenet_mnist" / "lenet.prototxt"


def main():
    if not MODEL.exists():
        print(f"skipped: {MODEL} is absent")
        return 0
    param = proto_io.read_net(str(MODEL))
    kept = [layer for layer in param.layer if layer.type != "Softmax"]
    del param.layer[:]
    param.layer.extend(kept)
    param.layer[0].input_param.shape[0].dim[0] = 64
    label = param.layer.add(name="label_input", type="Input", top=["label"])
    label.input_param.shape.add().dim.append(64)
    param.layer.add(name="loss", type="SoftmaxWithLoss", bottom=["ip2", "label"], top=["loss"])
    solver_param = pb.SolverParameter(base_lr=0.01, momentum=0.9, weight_decay=5e-4,
                                      lr_policy="fixed", max_iter=10)
    solver_param.net_param.CopyFrom(param)
    solver = jitnet.SGDSolver(solver_param)
    rng = np.random.default_rng(0)
    net = solver.net
    net.blobs["data"].data[...] = rng.standard_normal(net.blobs["data"].shape)
    net.blobs["label"].data[...] = rng.integers(0, 10, 64)
    solver.step(1)
    print(f"first LeNet b64 iteration done {time.perf_counter() - _start:.3f} s after this script's "
          "first line (imports included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
