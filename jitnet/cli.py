"""The ``jitnet`` command, after Caffe's ``caffe`` tool:

    jitnet train --solver S [--weights W[,W2] | --snapshot STATE] [--gpu 0] [--log FILE]
    mpiexec -n N jitnet train --solver S [--gpu all | --gpu 0,1] [--allreduce layer|all]
                 [--check_sync K]     # data-parallel over N processes (jitnet.parallel)
    jitnet test  --model M --weights W [--iterations 50] [--gpu 0]
    jitnet time  --model M [--iterations 50] [--gpu 0]
    jitnet plot  LOGFILE [-o curves.png]
    jitnet info                      # versions; how jitnet uses the cores
    jitnet device_query [--gpu 0]
    jitnet convert_imageset [--resize_height H --resize_width W --shuffle --gray --encoded
                            --encode_type png|jpg --backend lmdb|leveldb --check_size] ROOT/ LIST DB
    jitnet compute_image_mean [--backend lmdb|leveldb] DB [mean.binaryproto]
    jitnet draw NET.prototxt out.png|.svg|.pdf [--rankdir LR|TB|BT|RL] [--phase TRAIN|TEST|ALL]
    jitnet upgrade_net_proto_text IN OUT        # Caffe's tools for old (V0/V1) files
    jitnet upgrade_net_proto_binary IN OUT
    jitnet upgrade_solver_proto_text IN OUT
    jitnet extract_features --model M --weights W --blobs fc7[,prob] --output F.h5|DIR
                            (--inputs LIST.txt|ARRAY.npy | --iterations N) [preprocessing]
    jitnet export_onnx --model deploy.prototxt --weights W [--opset 17] [--batch dynamic|N]
                       [--check] out.onnx

Caffe's single-dash spellings (``-solver``, ``-weights``, ...) work too.
"""
import argparse
import contextlib
import logging
import os
import signal
import sys
import time

import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from . import common
from .common import TEST, TRAIN
from .errors import JitnetError
from .timing import LayerTimer

log = logging.getLogger("jitnet")


def _flag(parser, name, **kwargs):
    parser.add_argument(f"--{name}", f"-{name}", **kwargs)


def _common_flags(parser):
    _flag(parser, "gpu", default=None,
          help="GPU id to run on (one device); CPU when not given")
    _flag(parser, "cpu", action="store_true",
          help="run on the CPU even if the solver file says solver_mode: GPU")
    _flag(parser, "log", default=None, help="also write the log lines to this file")


def _net_state_flags(parser, default_phase):
    _flag(parser, "phase", default=default_phase, choices=["TRAIN", "TEST"],
          help=f"network phase (default {default_phase})")
    _flag(parser, "level", type=int, default=0, help="network level")
    _flag(parser, "stage", default="", help="comma-separated network stages")


def build_parser():
    parser = argparse.ArgumentParser(prog="jitnet", description="Train and run Caffe models with jitnet.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train or fine-tune a model")
    _flag(train, "solver", required=True, help="the solver prototxt")
    _flag(train, "weights", default=None, help="caffemodel(s) to fine-tune from, comma-separated")
    _flag(train, "snapshot", default=None, help="a .solverstate to resume from")
    _flag(train, "sigint_effect", default="stop", choices=["stop", "snapshot", "none"],
          help="what Ctrl-C does (default: snapshot, then stop)")
    _flag(train, "sighup_effect", default="snapshot", choices=["stop", "snapshot", "none"],
          help="what SIGHUP does (default: snapshot and go on)")
    _flag(train, "allreduce", default="layer", choices=["layer", "all"],
          help="under mpiexec: sum the gradients layer by layer, overlapping backward "
               "(default; Caffe's layer_wise_reduce), or all at once after backward (faster "
               "for tiny nets, and for small nets on many hosts: docs/SCALING.md)")
    _flag(train, "check_sync", type=int, default=0, metavar="K",
          help="under mpiexec, a debug check: compare the weights of every rank every K "
               "iterations (0: never)")
    _common_flags(train)

    test = sub.add_parser("test", help="score a model over some batches")
    _flag(test, "model", required=True, help="the net prototxt")
    _flag(test, "weights", required=True, help="the trained caffemodel")
    _flag(test, "iterations", type=int, default=50, help="number of batches (default 50)")
    _net_state_flags(test, "TEST")
    _common_flags(test)

    timing = sub.add_parser("time", help="time each layer's forward and backward")
    _flag(timing, "model", required=True, help="the net prototxt")
    _flag(timing, "iterations", type=int, default=50, help="number of timed passes (default 50)")
    _flag(timing, "weights", default=None, help="optional caffemodel")
    _net_state_flags(timing, "TRAIN")
    _common_flags(timing)

    plot = sub.add_parser("plot", help="draw loss and test scores from a training log")
    plot.add_argument("logfile", help="a log written by 'jitnet train --log FILE' (or Caffe's)")
    _flag(plot, "o", dest="output", default="curves.png", help="the image to write (default curves.png)")

    sub.add_parser("info", help="versions, and how jitnet uses the cores (numba's threads, BLAS)")

    query = sub.add_parser("device_query", help="show the CUDA devices numba sees")
    _flag(query, "gpu", default="0", help="device id (default 0)")

    convert = sub.add_parser("convert_imageset", help="images listed in a file -> an LMDB/LevelDB "
                             "of Datum records (Caffe's convert_imageset)")
    convert.add_argument("root", help="folder the list's paths are relative to (joined by plain "
                         "concatenation, as Caffe does: end it with /)")
    convert.add_argument("listfile", help='a text file of "path label" lines')
    convert.add_argument("db_name", help="the database to create")
    _flag(convert, "resize_height", type=int, default=0, help="resize images to this height (with --resize_width)")
    _flag(convert, "resize_width", type=int, default=0, help="resize images to this width (with --resize_height)")
    _flag(convert, "shuffle", action="store_true", help="shuffle the lines first")
    _flag(convert, "gray", action="store_true", help="store grey images (1 channel)")
    _flag(convert, "encoded", action="store_true", help="store encoded images (PNG/JPEG) instead of raw pixels")
    _flag(convert, "encode_type", default="", help="png or jpg with --encoded (default: each file's own)")
    _flag(convert, "backend", default="lmdb", choices=["lmdb", "leveldb"], help="database backend (default lmdb)")
    _flag(convert, "check_size", action="store_true", help="require every image to have the same size")

    mean = sub.add_parser("compute_image_mean", help="the mean image of a database, as a .binaryproto "
                          "for transform_param.mean_file (Caffe's compute_image_mean)")
    mean.add_argument("db", help="an LMDB or LevelDB of Datum records")
    mean.add_argument("output", nargs="?", default=None, help="the .binaryproto to write")
    _flag(mean, "backend", default="lmdb", choices=["lmdb", "leveldb"], help="database backend (default lmdb)")

    draw = sub.add_parser("draw", help="a picture of a net's layers and blobs (Caffe's draw_net.py)")
    draw.add_argument("net", help="the net prototxt")
    draw.add_argument("output", help="the picture to write: .png, .svg or .pdf")
    _flag(draw, "rankdir", default="LR", choices=["LR", "TB", "BT", "RL"],
          help="direction of the flow: left-right (default), top-bottom, ...")
    _flag(draw, "phase", default="ALL", choices=["TRAIN", "TEST", "ALL"],
          help="draw the layers of one phase (default ALL: every layer)")
    _flag(draw, "renderer", default="auto", choices=["auto", "graphviz", "matplotlib"],
          help="Graphviz (needs the dot program) or jitnet's own layout with matplotlib; "
               "auto picks Graphviz when dot is installed")

    for name, what in (("upgrade_net_proto_text", "a net prototxt (V0/V1 -> current format)"),
                       ("upgrade_net_proto_binary", "a caffemodel (V0/V1 -> current format)"),
                       ("upgrade_solver_proto_text", "a solver prototxt (solver_type -> type)")):
        upgrade = sub.add_parser(name, help=f"write {what} upgraded, as Caffe's tool of that name")
        upgrade.add_argument("input", help="the old file")
        upgrade.add_argument("output", help="the upgraded file to write")

    extract = sub.add_parser("extract_features",
                             help="dump named blobs for a list of inputs to HDF5 or .npy "
                                  "(as Caffe's extract_features tool)")
    _flag(extract, "model", required=True, help="the net prototxt (a deploy net, or one with a data layer)")
    _flag(extract, "weights", default=None, help="the trained caffemodel")
    _flag(extract, "blobs", required=True, help="comma-separated blob names to save")
    _flag(extract, "output", required=True,
          help="an .h5 file (one dataset per blob), an .npy file (one blob), or a folder "
               "(one BLOB.npy per blob)")
    _flag(extract, "inputs", default=None,
          help="a text file listing images (or .npy arrays in the input's layout), one per "
               "line, or an .npy array of N inputs; fed to the net's first input blob")
    _flag(extract, "iterations", dest="data_batches", type=int, default=None,
          help="instead of --inputs: run N batches of the net's own data layer (Caffe's way)")
    _flag(extract, "mean_file", default=None, help="a mean image (.binaryproto or .npy) to subtract")
    _flag(extract, "mean_value", default=None, help="comma-separated per-channel means to subtract")
    _flag(extract, "raw_scale", type=float, default=None, help="scale images ([0, 1]) by this first (e.g. 255)")
    _flag(extract, "input_scale", type=float, default=None, help="scale after subtracting the mean")
    _flag(extract, "channel_swap", default=None, help="channel order, e.g. 2,1,0 for RGB -> BGR")
    _flag(extract, "gray", action="store_true", help="read images as one grey channel")
    _net_state_flags(extract, "TEST")
    _common_flags(extract)

    export = sub.add_parser("export_onnx", help="write a deploy net and its weights as an ONNX model "
                                                "(Caffe's semantics, checked by onnx.checker)")
    export.add_argument("output", help="the .onnx file to write")
    _flag(export, "model", required=True, help="the deploy net prototxt (Input layers, no data or "
                                               "loss layers)")
    _flag(export, "weights", default=None, help="the trained caffemodel (without it the fillers' "
                                                "values are exported)")
    _flag(export, "opset", type=int, default=None, help="the ONNX opset to write (default 17)")
    _flag(export, "batch", default="dynamic",
          help="'dynamic' (default: axis 0 of the inputs is free) or a fixed batch size")
    _flag(export, "level", type=int, default=0, help="network level")
    _flag(export, "stage", default="", help="comma-separated network stages")
    _flag(export, "check", action="store_true",
          help="run the exported model in onnxruntime on random inputs and print its largest "
               "difference from jitnet's forward, per output")
    return parser


def _setup_logging(path=None):
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s.%(msecs)03d %(message)s", "%H:%M:%S"))
    log.handlers[:] = [handler]
    if path:
        try:
            file_handler = logging.FileHandler(path, mode="w")
        except OSError as e:
            raise JitnetError(f"--log {path}: cannot write the log file ({e.strerror})") from None
        file_handler.setFormatter(logging.Formatter("%(asctime)s.%(msecs)03d %(message)s", "%H:%M:%S"))
        log.addHandler(file_handler)
    log.setLevel(logging.INFO)
    log.propagate = False


@contextlib.contextmanager
def progress_bar(total, label):
    """A tqdm bar on stderr with log lines printed above it; on a terminal it redraws in
    place, elsewhere (a CI log, a pipe, a file) it prints the bar as a line of its own at
    about every tenth of the run, so the log stays readable."""
    bar_format = "{desc} [{bar:30}] {n_fmt}/{total_fmt}{postfix}  {rate_fmt}  ETA {remaining}"
    if sys.stderr.isatty():
        bar = tqdm(total=total, desc=label, ascii=".#", file=sys.stderr, bar_format=bar_format)
    else:
        bar = _LineProgress(total, label, bar_format)
    try:
        with logging_redirect_tqdm(loggers=[log]):
            yield bar
    finally:
        bar.close()


class _LineProgress:
    """tqdm's update / set_postfix_str / n / close, printed as whole lines (no carriage returns)."""

    def __init__(self, total, label, bar_format):
        self.total, self.label, self.bar_format = max(int(total), 1), label, bar_format
        self.n, self.postfix, self.start = 0, "", time.perf_counter()
        self.step = max(self.total // 10, 1)
        self.next_line = 0

    def update(self, k=1):
        self.n += k
        if self.n >= self.next_line or self.n >= self.total:
            self.next_line = self.n + self.step
            line = tqdm.format_meter(self.n, self.total, time.perf_counter() - self.start,
                                     prefix=self.label, ascii=".#", postfix=self.postfix,
                                     bar_format=self.bar_format)
            print(line, file=sys.stderr, flush=True)

    def set_postfix_str(self, text, refresh=False):
        self.postfix = text

    def close(self):
        pass


def _select_mode(gpu, solver_mode_gpu=False, device_id=0, force_cpu=False):
    if force_cpu:
        common.set_mode_cpu()
        return
    if gpu is None and solver_mode_gpu:
        gpu = str(device_id)
        log.info("Using GPU %s (solver_mode: GPU in the solver file; --cpu overrides)", gpu)
    if gpu is None:
        common.set_mode_cpu()
        log.info("Use CPU.")
        return
    _check_gpu_flag(gpu)
    common.set_device(int(gpu))
    common.set_mode_gpu()
    log.info("Use GPU with device ID %s", gpu)


def _check_gpu_flag(gpu, several=False):
    """One device id; under mpiexec (``several``) also a list or "all", one device per rank."""
    if gpu is None:
        return
    if several and (gpu == "all" or all(part.isdigit() for part in gpu.split(","))):
        return
    if gpu == "all" or "," in gpu:
        raise JitnetError(f"--gpu {gpu}: one process trains on one device; to train on several, "
                          f"start one process per device: mpiexec -n N jitnet train ... --gpu {gpu}")
    if not gpu.isdigit():
        raise JitnetError(f"--gpu {gpu}: give a device id (0, 1, ...)")


def _phase(text):
    return TRAIN if text == "TRAIN" else TEST


def _stages(text):
    return tuple(s for s in text.split(",") if s)


def train(args):
    """Train; under an MPI launcher (mpiexec -n N), as one of N data-parallel ranks."""
    from . import parallel

    if args.snapshot and args.weights:
        raise JitnetError("give --snapshot to resume training or --weights to fine-tune, not both")
    if parallel.launched_size() == 1:
        return _train(args, None)
    comm = parallel.world()
    try:
        with parallel.abort_on_error(comm, "jitnet train"):
            return _train(args, comm)
    except parallel.ParallelError:             # raised alike on every rank: rank 0 reports it
        if comm.Get_rank() != 0:
            return 1
        raise


def _train(args, comm):
    from . import parallel
    from .proto import io as proto_io
    from .proto import pb
    from .solvers import get_solver

    ranks = parallel.ranks_of(comm)
    root = ranks.rank == 0
    if not root:
        log.setLevel(logging.WARNING)          # rank 0 alone logs, tests, plots and snapshots
    parallel.check_same_files(comm, [args.solver])      # before a rank fails to parse its own
    param = proto_io.read_solver(args.solver)
    parallel.check_same_files(comm, parallel.solver_files(args.solver, param)[1:])
    explicit_gpu = param.HasField("solver_mode") and param.solver_mode == pb.SolverParameter.GPU
    gpu = args.gpu
    if comm is not None and not args.cpu and (gpu is not None or explicit_gpu):
        gpu = str(parallel.device_for_rank(gpu if gpu is not None else "all", ranks,
                                           parallel.host_device_count()))
    _select_mode(gpu, explicit_gpu, param.device_id, args.cpu)
    solver = get_solver(args.solver)
    if args.weights and root:                  # rank 0's weights are broadcast to the others
        for path in args.weights.split(","):
            log.info("Fine-tuning from %s", path)
        solver.net.copy_from(args.weights)     # all files at once: one note on what none covered

    pending = []
    effects = {signal.SIGINT: args.sigint_effect}
    if hasattr(signal, "SIGHUP"):
        effects[signal.SIGHUP] = args.sighup_effect
    for signum, effect in effects.items():
        if effect != "none":
            signal.signal(signum, lambda s, f, effect=effect: pending.append(effect))

    def action_request():
        if not pending:
            return None
        effect = pending.pop(0)
        log.info("Signal received at iteration %d: %s", solver.iter, effect)
        return effect
    solver.action_request = action_request
    dp = parallel.DataParallel(solver, comm, reduce=args.allreduce, check_every=args.check_sync)
    if args.snapshot:
        dp.restore(args.snapshot)             # rank 0 reads it; every rank resumes

    with progress_bar(param.max_iter, "train") if root else contextlib.nullcontext() as bar:
        if root:
            def show(s):
                bar.set_postfix_str(f"loss {s.smoothed_loss:.4g}", refresh=False)
                bar.update(s.iter - bar.n)
            solver.add_callback(show)
        solver.solve()
    if dp.size > 1 and root:
        log.info("%s", dp.summary())
    for i, scores in enumerate(solver.test_scores):
        shown = ", ".join(f"{k} = {np.ravel(v)[0]:.4f}" if np.size(v) == 1 else f"{k} = {np.ravel(v)}"
                          for k, v in scores.items())
        print(f"Test net #{i} at iteration {solver.tested_at}: {shown}")
    return 0


def _load_net(args):
    from .net import Net
    _select_mode(args.gpu, force_cpu=args.cpu)
    return Net(args.model, _phase(args.phase), weights=args.weights, level=args.level,
               stages=_stages(args.stage))


def test(args):
    net = _load_net(args)
    log.info("Running for %d iterations.", args.iterations)

    def log_batch(i, net):
        for line in net.output_lines():
            log.info("Batch %d, %s", i, line)
    loss, scores = net.score(args.iterations, log_batch)
    log.info("Loss: %.6g", loss)
    for line in net.output_lines(scores):
        print(line)
    return 0


def time_net(args):
    from .layers import vision
    vision.MEASURE_AFTER = 0.0      # the steady state is timed: convolutions measure at once
    net = _load_net(args)
    log.info("Performing Forward (and Backward, which also compiles every kernel once and "
             "measures the convolutions' algorithms: up to a minute the first time on this machine, "
             "with an empty numba cache)")
    t_first = time.perf_counter()
    net.forward_from_to()
    net.backward_from_to(every_layer=True)
    first_ms = (time.perf_counter() - t_first) * 1e3
    with progress_bar(args.iterations, "time") as bar, LayerTimer(net) as timer:
        t_total = time.perf_counter()
        for _ in range(args.iterations):
            net.forward_from_to()
            net.backward_from_to(every_layer=True)     # as `caffe time`: param gradients too
            bar.update(1)
        total = (time.perf_counter() - t_total) * 1e3
    n = args.iterations
    sources = [f"{name} {tuple(blob.shape)}" for step in net.steps if not step.plan.bottoms
               for name, blob in zip(step.plan.tops, step.tops)]
    print(f"Input blobs (the batch is their first axis): {', '.join(sources)}")
    print("Average time per layer:")
    width = max(len(layer.name) for layer in net.layers)
    for i, layer in enumerate(net.layers):
        print(f"{layer.name:>{width}}\tforward: {timer.forward_ms[i] / n:.4f} ms.")
        print(f"{layer.name:>{width}}\tbackward: {timer.backward_ms[i] / n:.4f} ms.")
    print(f"Average Forward pass: {timer.forward_ms.sum() / n:.4f} ms.")
    print(f"Average Backward pass: {timer.backward_ms.sum() / n:.4f} ms.")
    print(f"Average Forward-Backward: {total / n:.4f} ms.")
    print(f"Total Time: {total:.4f} ms.")
    print(f"First Forward-Backward (loads or compiles the kernels): {first_ms:.4f} ms.")
    plain, shared = net.blob_bytes()
    print(f"Blob memory: {plain} bytes; {shared} bytes for inference with shared buffers "
          f"(Net(..., reuse_buffers=True)).")
    return 0


def device_query(args):
    from numba import cuda
    if not cuda.is_available():
        print("No CUDA device is available to numba (no driver, or no GPU). "
              "Set NUMBA_ENABLE_CUDASIM=1 to run the GPU kernels on numba's simulator.")
        return 1
    device_id = int(args.gpu)
    devices = list(cuda.gpus)
    if not 0 <= device_id < len(devices):
        print(f"No device {device_id}; numba sees {len(devices)} device(s).")
        return 1
    with devices[device_id]:
        device = cuda.get_current_device()
        print(f"Device id:                     {device_id}")
        print(f"Name:                          {device.name.decode() if isinstance(device.name, bytes) else device.name}")
        print(f"Compute capability:            {device.compute_capability[0]}.{device.compute_capability[1]}")
        free, total = cuda.current_context().get_memory_info()
        print(f"Total global memory:           {total} bytes ({total / 2**30:.1f} GiB), {free} free")
        print(f"Multiprocessors:               {device.MULTIPROCESSOR_COUNT}")
        print(f"Max threads per block:         {device.MAX_THREADS_PER_BLOCK}")
        print(f"Warp size:                     {device.WARP_SIZE}")
    return 0


def info(args):
    import platform

    import numba
    import scipy

    from . import __version__
    from .threads import describe
    choice = describe()
    print(f"jitnet {__version__}, Python {platform.python_version()}, numpy {np.__version__}, "
          f"scipy {scipy.__version__}, numba {numba.__version__}")
    print(f"CPU cores: {os.cpu_count()}")
    print(f"numba threads: {choice['numba_threads']} (threading layer: {choice['numba_threading_layer']})")
    for lib in choice["blas_single_threaded"]:
        print(f"BLAS inside jitnet's kernels at 1 thread: {lib}")
    print("NumPy's own BLAS: " + ("untouched (a separate library)" if choice["numpy_blas_untouched"]
                                 else "shared with SciPy, so also at 1 thread while jitnet runs"))
    return 0


def plot(args):
    from .plot import plot_log
    curves = plot_log(args.logfile, args.output)
    tests = sum(len(v) for v in curves["test"].values())
    print(f"wrote {args.output}: {len(curves['train'])} training points, {tests} test points")
    return 0


def convert_imageset(args):
    from .data.image import read_image_list
    from .data.tools import convert_imageset as convert
    total = len(read_image_list(args.listfile))
    with progress_bar(total, "convert") as bar:
        result = convert(args.root, args.listfile, args.db_name, resize_height=args.resize_height,
                         resize_width=args.resize_width, shuffle=args.shuffle, gray=args.gray,
                         encoded=args.encoded, encode_type=args.encode_type, backend=args.backend,
                         check_size=args.check_size, progress=bar.update)
    skipped = len(result["skipped"])
    print(f"wrote {result['written']} images to {args.db_name} ({args.backend})"
          + (f"; {skipped} could not be read and were skipped" if skipped else ""))
    return 0


def compute_image_mean(args):
    from .data.db import open_reader
    from .data.tools import compute_image_mean as compute
    reader = open_reader(args.db, args.backend)
    total = reader.count
    reader.close()
    with progress_bar(total, "mean") as bar:
        mean, channel_means = compute(args.db, args.output, backend=args.backend, progress=bar.update)
    print(f"Number of channels: {mean.shape[0]}")
    for c, value in enumerate(channel_means):
        print(f"mean_value channel [{c}]: {value:.6g}")
    if args.output:
        print(f"wrote {args.output} (1 x {' x '.join(map(str, mean.shape))})")
    return 0


def draw(args):
    from .draw import draw_net_file
    phase = None if args.phase == "ALL" else _phase(args.phase)
    used = draw_net_file(args.net, args.output, rankdir=args.rankdir, phase=phase,
                         renderer=args.renderer)
    print(f"Drawing net to {args.output} ({used})")
    return 0


def upgrade_net_proto_text(args):
    from .proto import io as proto_io
    from .proto import pb
    original = proto_io.read_text(args.input, pb.NetParameter())
    upgraded = proto_io.upgrade_net(proto_io.read_text(args.input, pb.NetParameter()), args.input)
    if upgraded == original:
        log.info("File already in the latest proto format: %s", args.input)
    proto_io.write_text(upgraded, args.output)
    print(f"Wrote upgraded NetParameter text proto to {args.output}")
    return 0


def upgrade_net_proto_binary(args):
    from .proto import io as proto_io
    net_param, layers = proto_io.read_caffemodel(args.input)
    by_name = {name: blobs for name, blobs in layers}
    proto_io.write_caffemodel(net_param, [by_name.get(layer.name, []) for layer in net_param.layer],
                              args.output)
    print(f"Wrote upgraded NetParameter binary proto to {args.output}")
    return 0


def upgrade_solver_proto_text(args):
    from .proto import io as proto_io
    from .proto import pb
    original = proto_io.read_text(args.input, pb.SolverParameter())
    upgraded = proto_io.read_solver(args.input)
    if upgraded == original:
        log.info("File already in the latest proto format: %s", args.input)
    proto_io.write_text(upgraded, args.output)
    print(f"Wrote upgraded SolverParameter text proto to {args.output}")
    return 0


def _extract_inputs(args, net):
    """(number of samples, a function giving the preprocessed samples i:j) for --inputs."""
    from . import io as jio
    in_ = net.inputs[0] if net.inputs else None
    if in_ is None:
        raise JitnetError(f"--inputs: net '{net.name}' has no input blob; use --iterations with "
                          "its data layer")
    shape = net.blobs[in_].shape
    if args.inputs.endswith(".npy"):
        try:
            array = np.load(args.inputs, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise JitnetError(f"--inputs {args.inputs}: cannot read the array ({e})") from None
        if array.shape[1:] != shape[1:]:
            raise JitnetError(f"--inputs {args.inputs}: the array has shape {array.shape}; the "
                              f"net's input '{in_}' takes N x {' x '.join(map(str, shape[1:]))}")
        return len(array), lambda i, j: np.asarray(array[i:j])
    try:
        with open(args.inputs, encoding="utf-8") as f:
            paths = [line.strip() for line in f if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise JitnetError(f"--inputs {args.inputs}: cannot read the list ({e})") from None
    if not paths:
        raise JitnetError(f"--inputs {args.inputs}: the list names no inputs")
    base = os.path.dirname(os.path.abspath(args.inputs))
    paths = [p if os.path.isabs(p) or os.path.exists(p) else os.path.join(base, p) for p in paths]
    transformer = jio.Transformer({in_: shape})
    if len(shape) == 4:
        transformer.set_transpose(in_, (2, 0, 1))
    for value, setter in ((args.raw_scale, transformer.set_raw_scale),
                          (args.input_scale, transformer.set_input_scale)):
        if value is not None:
            setter(in_, value)
    if args.channel_swap:
        transformer.set_channel_swap(in_, [int(c) for c in args.channel_swap.split(",")])
    if args.mean_file and args.mean_value:
        raise JitnetError("give --mean_file or --mean_value, not both")
    if args.mean_file:
        transformer.set_mean(in_, args.mean_file)
    elif args.mean_value:
        transformer.set_mean(in_, np.array([float(v) for v in args.mean_value.split(",")]))

    def load(i, j):
        batch = []
        for path in paths[i:j]:
            if path.endswith(".npy"):
                item = np.load(path, allow_pickle=False)
                if item.shape != shape[1:]:
                    raise JitnetError(f"{path}: shape {item.shape}; the input '{in_}' takes "
                                      f"{shape[1:]}")
                batch.append(item)
            else:
                batch.append(transformer.preprocess(in_, jio.load_image(path, color=not args.gray)))
        return np.stack(batch)
    return len(paths), load


class _FeatureWriter:
    """Rows of each blob into an HDF5 file (one dataset per blob), one .npy file, or a folder
    of BLOB.npy files; datasets are created at the first batch and filled in place."""

    def __init__(self, output, names):
        self.output, self.names, self.targets = output, names, {}
        self.hdf5 = output.endswith((".h5", ".hdf5"))
        if output.endswith(".npy") and len(names) != 1:
            raise JitnetError(f"--output {output}: one .npy file holds one blob; give a folder "
                              f"or an .h5 file for {len(names)} blobs")
        if self.hdf5:
            import h5py
            try:
                self.file = h5py.File(output, "w")
            except OSError as e:
                raise JitnetError(f"--output {output}: cannot write ({e})") from None
        elif not output.endswith(".npy"):
            os.makedirs(output, exist_ok=True)

    def path(self, name):
        if self.output.endswith(".npy"):
            return self.output
        return os.path.join(self.output, name.replace("/", "_") + ".npy")

    def write(self, name, start, rows, total):
        if name not in self.targets:
            shape, dtype = (total,) + rows.shape[1:], np.float32
            if self.hdf5:
                self.targets[name] = self.file.create_dataset(name, shape=shape, dtype=dtype)
            else:
                self.targets[name] = np.lib.format.open_memmap(self.path(name), mode="w+",
                                                               dtype=dtype, shape=shape)
        self.targets[name][start:start + len(rows)] = rows

    def close(self):
        if self.hdf5:
            self.file.close()
        else:
            for target in self.targets.values():
                target.flush()


def extract_features(args):
    names = [b for b in args.blobs.split(",") if b]
    if (args.inputs is None) == (args.data_batches is None):
        raise JitnetError("give --inputs (a list of inputs) or --iterations (batches of the net's "
                          "own data layer)")
    if args.data_batches is not None and args.data_batches < 1:
        raise JitnetError(f"--iterations must be at least 1, got {args.data_batches}")
    net = _load_net(args)
    unknown = [n for n in names if n not in net.blobs]
    if unknown:
        raise JitnetError(f"--blobs: no blob {', '.join(map(repr, unknown))} in net '{net.name}' "
                          f"(blobs: {', '.join(net.blobs)})")
    if args.inputs is not None:
        total, load = _extract_inputs(args, net)
        batch = net.blobs[net.inputs[0]].shape[0]
        batches = [(i, min(i + batch, total)) for i in range(0, total, batch)]
    else:
        batch = None
        batches = [None] * args.data_batches
    writer = _FeatureWriter(args.output, names)
    written = 0
    try:
        with progress_bar(len(batches), "extract") as bar:
            for k, span in enumerate(batches):
                if span is None:                     # the net's own data layer
                    out, count = net.forward(blobs=names), None
                else:
                    data = load(*span)
                    count = len(data)
                    if count < batch:                # the last batch, padded with zeros
                        data = np.concatenate([data, np.zeros((batch - count,) + data.shape[1:],
                                                              data.dtype)])
                    out = net.forward(blobs=names, **{net.inputs[0]: data})
                for name in names:
                    rows = np.atleast_1d(np.asarray(out[name], dtype=np.float32))[:count]
                    size = total if span is not None else len(rows) * len(batches)
                    writer.write(name, written if span is not None else k * len(rows), rows, size)
                written += count if span is not None else len(np.atleast_1d(out[names[0]]))
                bar.update(1)
    finally:
        writer.close()
    print(f"Wrote {', '.join(names)} for {written} inputs to {args.output}")
    return 0


def export_onnx(args):
    from . import planner
    from .export import check_layers, check_options, compare_with_onnxruntime, to_onnx
    from .net import Net
    from .proto import io as proto_io
    # the packages, options and layers are checked before the net is built (which reads the
    # weights, opens databases and imports the user's modules)
    batch = args.batch if args.batch == "dynamic" or not args.batch.isdigit() else int(args.batch)
    if batch != "dynamic" and not (isinstance(batch, int) and batch >= 1):
        raise JitnetError(f"--batch must be 'dynamic' or a positive integer, not {args.batch!r}")
    check_options(args.opset, batch, runtime=args.check)
    net_param = proto_io.read_net(args.model)
    kept = planner.filter_layers(net_param, TEST, args.level, _stages(args.stage))
    check_layers(net_param.name or args.model, [(layer.name, layer.type) for layer in kept])
    if not args.weights:
        log.warning("no --weights given: the model holds the fillers' values, not trained weights")
    net = Net(net_param, TEST, weights=args.weights, level=args.level, stages=_stages(args.stage))
    if batch != "dynamic":                  # run the net at that batch too (--check compares there)
        for name in net.inputs:
            blob = net.blobs[name]
            blob.reshape((batch,) + blob.shape[1:])
        net.reshape()
    model = to_onnx(net, args.output, opset=args.opset, batch=batch)

    def described(values):
        shapes = []
        for v in values:
            dims = v.type.tensor_type.shape.dim
            shape = "x".join(d.dim_param or str(d.dim_value) if (d.dim_param or d.HasField("dim_value"))
                             else "?" for d in dims)
            shapes.append(f"{v.name} ({shape})")
        return ", ".join(shapes)
    print(f"Wrote {args.output}: net '{net.name or args.model}', opset {model.opset_import[0].version}, "
          f"{len(model.graph.node)} nodes; inputs {described(model.graph.input)}; "
          f"outputs {described(model.graph.output)}")
    if args.check:
        for name, (diff, scale) in compare_with_onnxruntime(net, model).items():
            print(f"onnxruntime vs jitnet, output {name}: largest difference {diff:.3g} "
                  f"(largest value {scale:.3g})")
    return 0


COMMANDS = {"train": train, "test": test, "time": time_net, "plot": plot, "info": info,
            "device_query": device_query, "convert_imageset": convert_imageset,
            "compute_image_mean": compute_image_mean, "draw": draw,
            "upgrade_net_proto_text": upgrade_net_proto_text,
            "upgrade_net_proto_binary": upgrade_net_proto_binary,
            "upgrade_solver_proto_text": upgrade_solver_proto_text, "extract_features": extract_features,
            "export_onnx": export_onnx}


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "iterations", 1) < 1:
            raise JitnetError(f"--iterations must be at least 1, got {args.iterations}")
        from .parallel import launched_rank, launched_size
        several = args.command == "train" and launched_size() != 1
        _check_gpu_flag(getattr(args, "gpu", None), several)
        # under mpiexec, rank 0 alone writes the --log file
        _setup_logging(getattr(args, "log", None) if not several or launched_rank() == 0 else None)
        return COMMANDS[args.command](args)
    except JitnetError as e:
        print(f"jitnet {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"jitnet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
