"""Data-layer throughput and the cost of reading from disk during training.

    python benchmarks/bench_data.py [--images 512] [--batches 40] [--rounds 7] [--json FILE]

1. Throughput, images per second through a layer's forward (batch 64, read ahead 4 deep,
   after a warm-up), for 3×64×64 pictures with Caffe's typical transform (random 56×56
   crop, mirror, mean_value): an LMDB of raw Datum records, LMDBs of PNG and of JPEG
   records, and ImageData reading JPEG files; plus 1×28×28 raw records (MNIST-like) with
   scale only. Encoded sets are timed with one decoding thread and with the default pool
   (JITNET_DECODE_THREADS), which shows what releasing the GIL in Pillow's decoder buys.
2. Training: ms per SGD iteration of a net fed by a Data layer on an LMDB against the same
   net fed from memory (MemoryData), interleaved rounds, medians: the MLP 784-500-10 now,
   and LeNet when the Convolution and Pooling layers are registered.

Timings on a shared machine are noisy: compare the ratios, note the load (printed).
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

import jitnet
from jitnet import Blob
from jitnet.data import db as data_db
from jitnet.data import image as image_io
from jitnet.data.prefetch import decode_threads
from jitnet.layer import create_layer
from jitnet.proto import pb


def pictures(n, shape, seed=0):
    """Smooth pictures with some noise, so PNG and JPEG sizes are like photographs'."""
    rng = np.random.default_rng(seed)
    c, h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for _ in range(n):
        a, b, p = rng.uniform(0.05, 0.3, 3)
        base = 127 + 100 * np.sin(a * xx + b * yy + p)[None] * rng.uniform(0.5, 1.0, (c, 1, 1))
        out.append(np.clip(base + rng.normal(0, 12, (c, h, w)), 0, 255).astype(np.uint8))
    return out


def build_lmdb(path, images, kind):
    writer = data_db.open_writer(path, "lmdb")
    for i, image in enumerate(images):
        if kind == "raw":
            datum = data_db.image_to_datum(image, i % 10)
        else:
            datum = data_db.image_to_datum(image, i % 10, encoded=image_io.encode(image, kind))
        writer.put(f"{i:08d}".encode(), datum.SerializeToString())
    writer.close()
    return path


def data_layer(source, batch, phase=jitnet.TRAIN, crop=0, mirror=False, mean=(), scale=1.0):
    lp = pb.LayerParameter(name="data", type="Data", top=["data", "label"])
    lp.data_param.source, lp.data_param.batch_size = source, batch
    lp.data_param.backend = pb.DataParameter.LMDB
    t = lp.transform_param
    t.crop_size, t.mirror, t.scale = crop, mirror, scale
    t.mean_value.extend(mean)
    return lp


def image_data_layer(listing, root, batch, crop, mirror, mean):
    lp = pb.LayerParameter(name="data", type="ImageData", top=["data", "label"])
    p = lp.image_data_param
    p.source, p.root_folder, p.batch_size = listing, root, batch
    t = lp.transform_param
    t.crop_size, t.mirror = crop, mirror
    t.mean_value.extend(mean)
    return lp


def throughput(lp, batches):
    """Images per second through forward, after 3 warm-up batches (the queue is full then)."""
    top = [Blob(), Blob()]
    layer = create_layer(lp, jitnet.TRAIN)
    layer.setup_layer([], top)
    for _ in range(3):
        layer.run_forward([], top)
    time.sleep(0.2)
    start = time.perf_counter()
    for _ in range(batches):
        layer.run_forward([], top)
    seconds = time.perf_counter() - start
    layer.close()
    return batches * top[0].shape[0] / seconds


CLASSIFIER = """
layer { name: "ip1" type: "InnerProduct" bottom: "@BOTTOM@" top: "ip1"
  inner_product_param { num_output: 500 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""

# "@DATA@" is replaced by a data layer.
NET = 'name: "bench_mlp"\n@DATA@' + CLASSIFIER.replace("@BOTTOM@", "data")

LENET = 'name: "bench_lenet"\n@DATA@' + """
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 20 kernel_size: 5 weight_filler { type: "xavier" } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  convolution_param { num_output: 50 kernel_size: 5 weight_filler { type: "xavier" } } }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }""" + CLASSIFIER.replace("@BOTTOM@", "pool2")

DATA = ('layer {{ name: "data" type: "Data" top: "data" top: "label" transform_param {{ scale: 0.00390625 }} '
        'data_param {{ source: "{source}" batch_size: 64 backend: LMDB }} }}')
MEMORY = ('layer { name: "data" type: "MemoryData" top: "data" top: "label" '
          'memory_data_param { batch_size: 64 channels: 1 height: 28 width: 28 } }')


def solver_for(net_text):
    from google.protobuf import text_format
    param = pb.SolverParameter(base_lr=0.01, momentum=0.9, weight_decay=0.0005, lr_policy="inv",
                               gamma=0.0001, power=0.75, max_iter=10**9, random_seed=1)
    text_format.Parse(net_text, param.net_param)
    return jitnet.SGDSolver(param)


def training(net, source, images, rounds, steps=25):
    """Median ms per iteration: Data on the LMDB vs MemoryData on the same (scaled) arrays."""
    on_disk = solver_for(net.replace("@DATA@", DATA.format(source=source)))
    in_memory = solver_for(net.replace("@DATA@", MEMORY))
    arrays = np.stack(images).astype(np.float32) * np.float32(0.00390625)
    labels = (np.arange(len(images)) % 10).astype(np.float32)
    rows = (len(images) // 64) * 64
    in_memory.net.set_input_arrays(arrays[:rows], labels[:rows])
    times = {"lmdb": [], "memory": []}
    for solver in (on_disk, in_memory):
        solver.step(5)                                      # compile, fill the queue
    for _ in range(rounds):
        for name, solver in (("lmdb", on_disk), ("memory", in_memory)):
            start = time.perf_counter()
            solver.step(steps)
            times[name].append((time.perf_counter() - start) / steps * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
          f"decode threads by default: {decode_threads()}")
    results = {"throughput": {}, "training": {}}
    mean = [104.0, 117.0, 123.0]
    with tempfile.TemporaryDirectory() as work:
        colour = pictures(args.images, (3, 64, 64))
        digits = pictures(args.images, (1, 28, 28), seed=1)
        sets = {"raw": build_lmdb(os.path.join(work, "raw"), colour, "raw"),
                "png": build_lmdb(os.path.join(work, "png"), colour, "png"),
                "jpg": build_lmdb(os.path.join(work, "jpg"), colour, "jpg"),
                "mnist": build_lmdb(os.path.join(work, "mnist"), digits, "raw")}
        folder = os.path.join(work, "files")
        os.makedirs(folder)
        lines = []
        for i, image in enumerate(colour):
            with open(os.path.join(folder, f"{i}.jpg"), "wb") as f:
                f.write(image_io.encode(image, "jpg"))
            lines.append(f"{i}.jpg {i % 10}")
        listing = os.path.join(work, "list.txt")
        with open(listing, "w") as f:
            f.write("\n".join(lines) + "\n")

        cases = [("LMDB raw 1x28x28, scale", data_layer(sets["mnist"], 64, scale=0.00390625), (None,)),
                 ("LMDB raw 3x64x64, crop 56 + mirror + mean", data_layer(sets["raw"], 64, crop=56, mirror=True, mean=mean), (None,)),
                 ("LMDB PNG 3x64x64, crop 56 + mirror + mean", data_layer(sets["png"], 64, crop=56, mirror=True, mean=mean), ("1", None)),
                 ("LMDB JPEG 3x64x64, crop 56 + mirror + mean", data_layer(sets["jpg"], 64, crop=56, mirror=True, mean=mean), ("1", None)),
                 ("ImageData JPEG files, crop 56 + mirror + mean", image_data_layer(listing, folder + "/", 64, 56, True, mean), ("1", None))]
        print(f"\n{'data layer (batch 64, prefetch 4)':50s} {'threads':>8s} {'images/s':>10s}")
        for label, lp, thread_settings in cases:
            for threads in thread_settings:
                if threads is None:
                    os.environ.pop("JITNET_DECODE_THREADS", None)
                else:
                    os.environ["JITNET_DECODE_THREADS"] = threads
                shown = threads or str(decode_threads())
                rate = statistics.median(throughput(lp, args.batches) for _ in range(3))
                results["throughput"][f"{label} [{shown} thread(s)]"] = rate
                print(f"{label:50s} {shown:>8s} {rate:10.0f}")
        os.environ.pop("JITNET_DECODE_THREADS", None)

        nets = [("MLP 784-500-10", NET)]
        if {"Convolution", "Pooling"} <= set(jitnet.layer_type_list()):
            nets.append(("LeNet", LENET))
        else:
            print("\n(LeNet skipped: the Convolution and Pooling layers are not registered yet)")
        print(f"\n{'training, batch 64 of 1x28x28':32s} {'LMDB ms/it':>11s} {'memory ms/it':>13s} {'ratio':>6s}")
        for label, net in nets:
            t = training(net, sets["mnist"], digits, args.rounds)
            results["training"][label] = t
            print(f"{label:32s} {t['lmdb']:11.3f} {t['memory']:13.3f} {t['lmdb'] / t['memory']:6.2f}")
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
