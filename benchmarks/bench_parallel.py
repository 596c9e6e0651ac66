"""Data-parallel training over MPI (jitnet.parallel): what communication costs.

    python benchmarks/bench_parallel.py [--ranks 2] [--rounds 7] [--only allreduce,overhead,timeline]
                                        [--json FILE]
    python benchmarks/bench_parallel.py --only model [--json FILE]

Without an MPI launcher around it, the script starts itself under
``mpiexec --oversubscribe -n RANKS`` (Open MPI from ``pip install 'jitnet[mpi]'``).

Sections:
  allreduce  the time of one in-place allreduce (sum) of float32 gradients the size of
             LeNet's (431,080 values), CIFAR-10-quick's (145,578) and CaffeNet's
             (60,965,224), blocking (MPI_Allreduce) and non-blocking (MPI_Iallreduce +
             MPI_Wait), medians; with the bus bandwidth 2(N-1)/N x bytes / time;
  overhead   ms per training iteration of MLPs on every rank alone (no reduction: the same
             compute, the same contention for the cores) and data-parallel with the
             gradients reduced all at once or layer by layer, interleaved rounds, medians;
             and the time per iteration spent in communication not hidden behind backward
             (DataParallel.stats: the wait in on_gradients_ready, and in layer mode the
             time spent starting and polling allreduces inside backward);
  timeline   `jitnet time`-style per-layer forward/backward ms (jitnet.timing.LayerTimer)
             under mpiexec, and one traced iteration of layer-wise reduction: when each
             layer's backward ran and when each blob's allreduce started and was seen
             complete, relative to the start of backward;
  model      (one process, no MPI) jitnet's compute per training iteration of LeNet b64,
             CIFAR-10-quick b100 and CaffeNet b256 (timed at b8 and scaled), from the deploy
             prototxts in ../shared/models, and the ring-allreduce cost model's predicted
             speed-up on 2, 8, 32 and 128 hosts at 10, 25 and 100 Gb/s.

Timings on a shared 2-core machine are noisy: compare within a table; the load is printed.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # bench.py, imported lazily

GRADIENTS = [("LeNet", 431_080), ("CIFAR-10-quick", 145_578), ("CaffeNet", 60_965_224)]


def load():
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"


# -- allreduce ---------------------------------------------------------------------------------------
def bench_allreduce(comm, MPI, rounds):
    rows = []
    for name, count in GRADIENTS:
        buffer = np.random.default_rng(comm.Get_rank()).standard_normal(count).astype(np.float32)
        repeat = max(3, min(rounds * 10, int(2e8 // (count * 4)) + 3))
        times = {"blocking": [], "non-blocking": []}
        for i in range(repeat + 1):
            for kind in times:
                comm.Barrier()
                start = time.perf_counter()
                if kind == "blocking":
                    comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
                else:
                    comm.Iallreduce(MPI.IN_PLACE, buffer, op=MPI.SUM).Wait()
                elapsed = time.perf_counter() - start
                if i:                                # the first round warms up
                    times[kind].append(elapsed)
                buffer *= 0.5                        # keep the values finite
        n = comm.Get_size()
        row = {"section": "allreduce", "case": name, "values": count, "mbytes": count * 4 / 1e6,
               "repeat": repeat}
        for kind, values in times.items():
            # the slowest rank's time is the collective's
            t = max(comm.allgather(statistics.median(values)))
            row[f"{kind}_ms"] = t * 1e3
            row[f"{kind}_busbw_gbs"] = 2 * (n - 1) / n * count * 4 / t / 1e9
        rows.append(row)
    return rows


# -- training overhead ---------------------------------------------------------------------------------
def mlp(batch, sizes, classes):
    """bench.py's MLP (InnerProducts with ReLUs between, SoftmaxWithLoss), fed by MemoryData
    (whose records are dealt by rank) instead of Input."""
    from bench import mlp_prototxt
    param = mlp_prototxt(batch, sizes, classes)
    data = param.layer[0]
    data.ClearField("input_param")
    data.type = "MemoryData"
    p = data.memory_data_param
    p.batch_size, p.channels, p.height, p.width = batch, sizes[0], 1, 1
    return param


NETS = [
    ("MLP 64x(64-100-50-10)", 64, [64, 100, 50], 10),
    ("MLP 64x(784-500-10) (LeNet's classifier)", 64, [784, 500], 10),
    ("MLP 100x(3072-1000-1000-10)", 100, [3072, 1000, 1000], 10),
]


def make_solver(batch, sizes, classes):
    import jitnet
    from jitnet.proto import pb
    param = pb.SolverParameter(base_lr=0.01, momentum=0.9, weight_decay=5e-4, lr_policy="fixed",
                               max_iter=10 ** 9, random_seed=1)
    param.net_param.CopyFrom(mlp(batch, sizes, classes))
    solver = jitnet.SGDSolver(param)
    rng = np.random.default_rng(0)
    rows = batch * 8
    solver.net.set_input_arrays(rng.standard_normal((rows, sizes[0], 1, 1)).astype(np.float32),
                                rng.integers(0, classes, rows).astype(np.float32))
    return solver


def bench_overhead(comm, rounds, iters):
    """Per-iteration times (iteration callback to iteration callback, the slowest rank's),
    pooled over interleaved rounds: medians, which a busy machine's stalls of tens of ms
    (a rank descheduled while the other waits for it) do not move; the means are kept too."""
    from jitnet.parallel import DataParallel
    rows = []
    for name, batch, sizes, classes in NETS:
        runs = {"alone": make_solver(batch, sizes, classes)}
        wrapped = {}
        for mode in ("all", "layer"):
            runs[mode] = make_solver(batch, sizes, classes)
            wrapped[mode] = DataParallel(runs[mode], comm, reduce=mode)
        stamps = {mode: [] for mode in runs}
        for mode, solver in runs.items():
            solver.step(3)                       # compile, warm up
            solver.add_callback(lambda s, mode=mode: stamps[mode].append(time.perf_counter()))
        per_iteration = {mode: [] for mode in runs}
        exposed = {mode: [] for mode in wrapped}
        skew = {mode: [] for mode in wrapped}
        posting = {mode: [] for mode in wrapped}
        for _ in range(rounds):
            for mode, solver in runs.items():
                if mode in wrapped:
                    wrapped[mode].stats.reset()
                comm.Barrier()
                stamps[mode].clear()
                stamps[mode].append(time.perf_counter())
                solver.step(iters)
                mine = np.diff(stamps[mode]) * 1e3
                per_iteration[mode].extend(np.max(comm.allgather(mine), axis=0).tolist())
                if mode in wrapped:
                    st = wrapped[mode].stats
                    exposed[mode].extend(st.samples)
                    # how long this rank waited for the last rank to reach the reduction
                    entered = np.array(comm.allgather(list(st.entered)))
                    skew[mode].extend(((entered.max(axis=0) - np.array(st.entered)) * 1e3).tolist())
                    posting[mode].append(st.per_iteration()["posting_ms"])
        params = sum(b.count for b in runs["alone"].net.learnable_params)
        row = {"section": "overhead", "case": name, "params": params, "mbytes": params * 4 / 1e6,
               "iterations": rounds * iters}
        for mode in runs:
            row[f"{mode}_ms"] = statistics.median(per_iteration[mode])
            row[f"{mode}_mean_ms"] = statistics.mean(per_iteration[mode])
        for mode in wrapped:
            row[f"{mode}_exposed_ms"] = statistics.median(exposed[mode])
            row[f"{mode}_exposed_mean_ms"] = statistics.mean(exposed[mode])
            row[f"{mode}_skew_ms"] = statistics.median(skew[mode])
            row[f"{mode}_comm_ms"] = statistics.median(np.maximum(
                np.array(exposed[mode]) - np.array(skew[mode]), 0.0))
            row[f"{mode}_posting_ms"] = statistics.median(posting[mode])
            wrapped[mode].close()
        rows.append(row)
    return rows


def bench_timeline(comm, iters):
    from jitnet.parallel import DataParallel
    from jitnet.timing import LayerTimer
    rows = []
    for name, batch, sizes, classes in NETS[1:]:
        solver = make_solver(batch, sizes, classes)
        dp = DataParallel(solver, comm, reduce="layer")
        solver.step(3)
        with LayerTimer(solver.net) as timer:
            solver.step(iters)
        layers = [{"layer": layer.name, "forward_ms": timer.forward_ms[i] / iters,
                   "backward_ms": timer.backward_ms[i] / iters}
                  for i, layer in enumerate(solver.net.layers)]
        dp.trace()
        solver.step(iters)
        events = dp.timeline()
        # the last traced iteration: from its first backward event on
        starts = [i for i, e in enumerate(events) if e[0] == "backward" and e[1] == "loss"]
        last = events[starts[-1]:] if starts else events
        t0 = last[0][2] if last else 0.0
        timeline = [{"kind": k, "name": n, "start_ms": (a - t0) * 1e3, "end_ms": (b - t0) * 1e3}
                    for k, n, a, b in last]
        rows.append({"section": "timeline", "case": name, "layers": layers, "events": timeline})
        dp.close()
    return rows


# -- the cost model ----------------------------------------------------------------------------------
# LeNet, CIFAR-10-quick and CaffeNet: the deploy prototxt in ../shared/models, the batch it
# trains with, the batch it is timed at (CaffeNet's b256 iteration is scaled from b8), the
# name of the layer before the final Softmax, and the number of classes
COMPUTE_NETS = [("LeNet", ("lenet_mnist", "lenet.prototxt"), 64, 64, "ip2", 10),
                ("CIFAR-10-quick", ("cifar10_quick", "cifar10_quick.prototxt"), 100, 100, "ip2", 10),
                ("CaffeNet", ("bvlc_reference_caffenet", "deploy.prototxt"), 256, 8, "fc8", 1000)]


def net_layers(net):
    """Forward multiply-adds per image and parameter count of each layer with learnable
    blobs, bottom to top."""
    from bench import layer_flops
    batch = net.blobs[net.inputs[0]].shape[0]
    out = []
    for step in net.steps:
        if step.layer.blobs:
            macs = layer_flops(step.layer, step.bottoms, step.tops) // 2 // batch
            out.append({"type": step.layer.type, "layer": step.layer.name, "macs": int(macs),
                        "params": int(sum(b.count for b in step.layer.blobs))})
    return out


def measure_compute(rounds):
    """ms per training iteration (forward, backward, SGD with momentum and weight decay) of
    jitnet on this machine's cores, timed at ``timed_batch`` and scaled to the batch the net
    trains with (the fastest of the rounds: the others measure the machine's other tenants).
    Nets whose prototxt is absent (no ../shared/models) are skipped with a note."""
    import bench
    import jitnet
    from jitnet.threads import configure
    rows = []
    for name, (folder, file), batch, timed_batch, output, classes in COMPUTE_NETS:
        path = bench.MODELS / folder / file
        if not path.exists():
            print(f"compute {name}: skipped ({path} is absent)")
            continue
        solver = bench._solver(bench.train_net_from_deploy(path, timed_batch, output))
        bench._fill_inputs(solver.net, classes, np.random.default_rng(0))
        solver.step(1)                                  # compiles, allocates
        times = []
        for _ in range(rounds if timed_batch == batch else 3):
            start = time.perf_counter()
            solver.step(1)
            times.append(time.perf_counter() - start)
        per = min(times) * 1e3 * batch / timed_batch
        layers = net_layers(solver.net)
        rows.append({"section": "model", "case": name, "batch": batch, "timed_batch": timed_batch,
                     "compute_ms": per, "params": sum(l["params"] for l in layers), "layers": layers,
                     "threads": configure()["numba_threads"], "jitnet": jitnet.__version__})
    return rows


def ring_allreduce_ms(values, hosts, gbits, latency_us, messages=1):
    """One ring allreduce of ``values`` float32 over ``hosts`` hosts: each sends and receives
    2(N-1)/N of the bytes, in 2(N-1) steps that each pay the latency (per message)."""
    n = hosts
    return (2 * (n - 1) / n * values * 4 / (gbits * 1e9 / 8)
            + messages * 2 * (n - 1) * latency_us * 1e-6) * 1e3


def iteration_time(compute_ms, layers, hosts, gbits, latency_us, overlap):
    """Predicted ms per iteration on ``hosts`` hosts joined by ``gbits`` Gb/s links.

    Compute is split as in Caffe's nets: backward ~2/3 of the iteration, shared among the
    layers by their multiply-adds. Without overlap ("all") one allreduce of every gradient
    follows backward. With layer-wise overlap a layer's two blobs (weights, bias) are
    reduced as soon as its backward ends (after the previous allreduce: one network), each
    paying the latency, and only what runs past the end of backward is exposed."""
    if hosts == 1:
        return compute_ms
    total_macs = sum(l["macs"] for l in layers)
    backward = compute_ms * 2 / 3
    forward = compute_ms - backward
    if not overlap:
        return compute_ms + ring_allreduce_ms(sum(l["params"] for l in layers), hosts, gbits, latency_us)
    clock = network = 0.0
    for layer in reversed(layers):                 # backward runs top to bottom
        clock += backward * layer["macs"] / total_macs
        network = max(network, clock) + ring_allreduce_ms(layer["params"], hosts, gbits, latency_us, 2)
    return forward + max(backward, network)


# Gb/s of a link -> the latency of one step of a ring allreduce over it, in µs (assumed: TCP over
# 10 and 25 Gb/s Ethernet, RDMA over 100 Gb/s InfiniBand or RoCE)
LINKS = {10: 25.0, 25: 15.0, 100: 3.0}


def model_rows(compute_rows, hosts=(2, 8, 32, 128), links=LINKS, speedups=(1, 100)):
    """The allreduce time per iteration, and the predicted speed-up over one host, with the
    compute measured here and with a host ``k`` times faster (a GPU, say)."""
    rows = []
    for row in compute_rows:
        for gbits, latency_us in links.items():
            rows.append({"section": "comm", "case": row["case"], "gbits": gbits,
                         "latency_us": latency_us,
                         "ms": {str(n): ring_allreduce_ms(row["params"], n, gbits, latency_us)
                                for n in hosts}})
    for faster in speedups:
        for row in compute_rows:
            compute = row["compute_ms"] / faster
            for gbits, latency_us in links.items():
                for overlap in (False, True):
                    rows.append({"section": "speedup", "case": row["case"], "gbits": gbits,
                                 "overlap": overlap, "latency_us": latency_us,
                                 "compute_ms": compute, "faster": faster,
                                 "speedup": {str(n): n * compute / iteration_time(
                                     compute, row["layers"], n, gbits, latency_us, overlap)
                                     for n in hosts}})
    return rows


# -- output ------------------------------------------------------------------------------------------
def print_rows(rows, ranks):
    for row in rows:
        s = row["section"]
        if s == "allreduce":
            print(f"allreduce {row['case']:<16} {row['values']:>11,} values ({row['mbytes']:8.3f} MB): "
                  f"blocking {row['blocking_ms']:9.3f} ms ({row['blocking_busbw_gbs']:6.2f} GB/s), "
                  f"non-blocking {row['non-blocking_ms']:9.3f} ms ({row['non-blocking_busbw_gbs']:6.2f} GB/s)")
        elif s == "overhead":
            print(f"overhead {row['case']:<42} {row['params']:>9,} params, medians (means) ms per "
                  f"iteration: alone {row['alone_ms']:.3f} ({row['alone_mean_ms']:.2f}); "
                  f"all {row['all_ms']:.3f} ({row['all_mean_ms']:.2f}), exposed "
                  f"{row['all_exposed_ms']:.3f} ({row['all_exposed_mean_ms']:.2f}) = waiting for "
                  f"the other rank {row['all_skew_ms']:.3f} + communicating {row['all_comm_ms']:.3f}; "
                  f"layer {row['layer_ms']:.3f} ({row['layer_mean_ms']:.2f}), exposed "
                  f"{row['layer_exposed_ms']:.3f} ({row['layer_exposed_mean_ms']:.2f}) = "
                  f"{row['layer_skew_ms']:.3f} + {row['layer_comm_ms']:.3f}, "
                  f"in backward {row['layer_posting_ms']:.3f}")
        elif s == "timeline":
            print(f"\ntimeline {row['case']} ({ranks} ranks, layer-wise reduction), average per layer:")
            for layer in row["layers"]:
                print(f"  {layer['layer']:>8}\tforward: {layer['forward_ms']:.4f} ms.\t"
                      f"backward: {layer['backward_ms']:.4f} ms.")
            print("  one iteration, ms from the start of backward:")
            for e in row["events"]:
                print(f"    {e['kind']:<10} {e['name']:<20} {e['start_ms']:8.3f} -> {e['end_ms']:8.3f}")
        elif s == "model":
            print(f"compute {row['case']:<16} b{row['batch']}: {row['compute_ms']:9.1f} ms per iteration "
                  f"(jitnet, {row['threads']} threads, timed at b{row['timed_batch']}), "
                  f"{row['params']:,} params")
        elif s == "comm":
            cells = "  ".join(f"{n:>3} hosts {v:9.3f}" for n, v in row["ms"].items())
            print(f"allreduce ms {row['case']:<16} {row['gbits']:>3} Gb/s ({row['latency_us']:g} µs): {cells}")
        elif s == "speedup":
            cells = "  ".join(f"{n:>3} hosts {v:6.1f}x" for n, v in row["speedup"].items())
            print(f"speed-up {row['case']:<16} compute {row['compute_ms']:9.1f} ms {row['gbits']:>3} Gb/s "
                  f"{'layer-wise' if row['overlap'] else 'all       '}: {cells}")


def relaunch(args):
    import shutil
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if not os.path.exists(mpiexec):
        mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        sys.exit("bench_parallel: no mpiexec; pip install 'jitnet[mpi]'")
    env = dict(os.environ)
    if os.geteuid() == 0:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    command = [mpiexec, "--oversubscribe", "-n", str(args.ranks), sys.executable, *sys.argv]
    sys.exit(subprocess.call(command, env=env))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iters", type=int, default=20, help="iterations per timed round")
    parser.add_argument("--only", default="allreduce,overhead,timeline")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    sections = args.only.split(",")
    if sections == ["model"]:
        rows = measure_compute(args.rounds)
        rows += model_rows(rows)
        print(f"load average: {load()}")
        print_rows(rows, 1)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"load": load(), "rows": rows}, f, indent=1)
        return 0
    from jitnet import parallel
    if parallel.launched_size() == 1:
        relaunch(args)
    comm = parallel.world()
    MPI = parallel.mpi()
    import numba
    rows = []
    if "allreduce" in sections:
        rows += bench_allreduce(comm, MPI, args.rounds)
    if "overhead" in sections:
        rows += bench_overhead(comm, args.rounds, args.iters)
    if "timeline" in sections:
        rows += bench_timeline(comm, args.iters)
    if comm.Get_rank() == 0:
        print(f"{comm.Get_size()} ranks, {numba.get_num_threads()} numba thread(s) each, "
              f"{MPI.Get_library_version().splitlines()[0]}; load average: {load()}")
        print_rows(rows, comm.Get_size())
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"ranks": comm.Get_size(), "load": load(), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
