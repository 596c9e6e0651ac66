"""Data-parallel training over MPI, with Caffe's multi-GPU semantics.

One model trains on N processes (*ranks*), on one host or on the hosts of a hostfile,
through MPI (Open MPI or MPICH, reached through mpi4py; ``pip install 'jitnet[mpi]'``)::

    mpiexec -n 4 jitnet train --solver solver.prototxt
    mpiexec -n 8 --hostfile hosts jitnet train --solver solver.prototxt --gpu all

or from Python, in a script started by mpiexec::

    import jitnet, jitnet.parallel
    solver = jitnet.get_solver("solver.prototxt")
    dp = jitnet.parallel.DataParallel(solver)      # joins the other ranks
    dp.solve()                                     # or solver.step(n) in your own loop

What each rank does (Caffe's semantics; CAFFE-NOTES "Multi-device training"):

- it runs the net's full batch_size, so the effective batch is N x batch_size;
- it starts from rank 0's weights (filled, or from --weights / --snapshot), which rank 0
  broadcasts with its solver history, iteration and data positions;
- it reads its own share of the records, record i to rank i mod N (Data, ImageData,
  HDF5Data, MemoryData: ``DataLayer.set_worker``);
- after the iteration's forward/backward passes, the parameter gradients are summed over
  the ranks and scaled by 1/N: layer by layer (``reduce="layer"``, the default: a
  non-blocking allreduce of each parameter blob started in the Net's ``after_backward``
  callback as soon as its gradient is final, overlapping the backward of the layers
  below, as Caffe's ``layer_wise_reduce``; polled between layers, since Open MPI moves a
  non-blocking collective on only inside MPI calls) or all at once (``reduce="all"``: one
  allreduce of every gradient, packed into one buffer, in the solver's
  ``on_gradients_ready`` callback; faster for the tiniest nets, and for small nets on
  many hosts, where layer-wise pays the latency per blob: docs/SCALING.md). With iter_size > 1
  the gradients accumulate over the passes and are reduced once, after the last one; a
  shared parameter is reduced once, after the last layer that uses it;
- it applies the same update, so the weights stay identical without further
  communication (``check_every=K`` compares checksums of the weights every K iterations);
- it draws its own random numbers (Dropout): rank r's generator is rank 0's jumped r
  times ahead (Caffe seeds worker r with random_seed + r).

Only rank 0 (the root solver) tests, logs, shows progress and writes snapshots (the
other ranks' "jitnet" logger is set to WARNING). A
snapshot gathers every rank's random state and data positions, so resuming with N ranks
continues exactly; resuming with another number of ranks continues from the first
record no rank has read (and logs the new effective batch).

A rank that fails stops every rank: :func:`abort_on_error` (and, for a script's
uncaught exceptions, the excepthook :func:`world` installs) prints the error and calls
MPI_Abort, so no rank waits for ever in a collective for a rank that is gone.
"""
import collections
import contextlib
import hashlib
import logging
import os
import socket
import sys
import time
import traceback
import zlib

import numpy as np

from . import common
from .errors import JitnetError

log = logging.getLogger("jitnet")

INSTALL_HINT = "pip install 'jitnet[mpi]'"
MODES = ("all", "layer")
DEFAULT_REDUCE = "layer"        # measured faster here (docs/SCALING.md), but on the tiniest nets
# data layers that deal records by index (set_worker); other stateful data layers sample at
# random and get a different seed per rank
DEALT = ("Data", "ImageData", "HDF5Data", "MemoryData")
# environment variables by which MPI launchers tell a process how many ranks there are
_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE")
_RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "MV2_COMM_WORLD_RANK", "PMIX_RANK")
_REQUESTS = (None, "snapshot", "stop")


class ParallelError(JitnetError):
    """A data-parallel run cannot go on. ``everywhere`` is True when every rank raises the
    same error (the ranks agreed on it), so they can all exit normally."""

    def __init__(self, message, everywhere=False):
        super().__init__(message)
        self.everywhere = everywhere


# -- MPI ---------------------------------------------------------------------------------------------
def launched_size(environ=None):
    """The number of ranks an MPI launcher (mpiexec, mpirun, srun) declared for this process:
    1 when it was not started by one, 0 when it was but the launcher does not say how many."""
    env = os.environ if environ is None else environ
    for name in _SIZE_VARIABLES:
        value = env.get(name, "")
        if value.isdigit():
            return int(value)
    if "PMIX_RANK" in env or "PMI_RANK" in env:
        return 0
    return 1


def launched_rank(environ=None):
    """This process's rank as an MPI launcher declared it (0 when it does not say)."""
    env = os.environ if environ is None else environ
    for name in _RANK_VARIABLES:
        value = env.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def mpi():
    """mpi4py's ``MPI`` module; a ParallelError naming the extra to install when mpi4py or an
    MPI library is missing."""
    try:
        from mpi4py import MPI
    except ImportError as e:
        missing = "mpi4py" if getattr(e, "name", None) == "mpi4py" else "an MPI library for mpi4py"
        raise ParallelError(f"data-parallel training needs mpi4py and an MPI library, and "
                            f"{missing} is missing ({e}). Install both with: {INSTALL_HINT} "
                            "(mpi4py and Open MPI), or use your cluster's MPI with "
                            "'pip install mpi4py'") from None
    except (RuntimeError, OSError) as e:
        raise ParallelError(f"mpi4py could not start MPI ({e}). Install an MPI library with: "
                            f"{INSTALL_HINT}") from None
    return MPI


class Ranks:
    """Where this process stands: ``rank`` of ``size``, ``local_rank`` of ``local_size`` on
    its host ``host``."""

    def __init__(self, rank=0, size=1, local_rank=0, local_size=1, host=None):
        self.rank, self.size = rank, size
        self.local_rank, self.local_size = local_rank, local_size
        self.host = host or socket.gethostname()

    def __repr__(self):
        return (f"rank {self.rank} of {self.size} (host {self.host}, local rank {self.local_rank} "
                f"of {self.local_size})")


_world = None


def world():
    """MPI's COMM_WORLD, with jitnet's per-process set-up done once: the cores of a host are
    shared out among its ranks (numba threads = cores // ranks on the host, unless
    NUMBA_NUM_THREADS is set), and an uncaught exception stops every rank (MPI_Abort)."""
    global _world
    MPI = mpi()
    comm = MPI.COMM_WORLD
    if _world is None:
        _world = comm
        ranks = ranks_of(comm)
        if ranks.size > 1:
            _share_cores(ranks)
            _install_abort_hook(comm, ranks)
    return comm


_ranks = {}


def ranks_of(comm):
    """The :class:`Ranks` of this process in ``comm`` (None: a single process). The first call
    for a communicator is collective (every rank of it makes the call)."""
    if comm is None:
        return Ranks()
    key = comm.py2f()
    if key not in _ranks:
        MPI = mpi()
        local = comm.Split_type(MPI.COMM_TYPE_SHARED)
        try:
            _ranks[key] = Ranks(comm.Get_rank(), comm.Get_size(), local.Get_rank(), local.Get_size())
        finally:
            local.Free()
    return _ranks[key]


def _share_cores(ranks):
    if "NUMBA_NUM_THREADS" in os.environ:
        return
    import numba
    try:
        mine = len(os.sched_getaffinity(0))
    except AttributeError:                      # not on Linux
        mine = os.cpu_count() or 1
    share = max(1, (os.cpu_count() or 1) // ranks.local_size)
    numba.set_num_threads(max(1, min(mine, share, numba.config.NUMBA_NUM_THREADS)))


def _install_abort_hook(comm, ranks):
    previous = sys.excepthook

    def hook(kind, value, tb):
        previous(kind, value, tb)
        print(f"jitnet: {ranks} raised {kind.__name__}; stopping every rank (MPI_Abort)",
              file=sys.stderr, flush=True)
        comm.Abort(1)
    sys.excepthook = hook


@contextlib.contextmanager
def abort_on_error(comm, label="jitnet"):
    """Run the block; if it raises on this rank, print the error and stop every rank with
    MPI_Abort (the others would wait for ever in their next collective). A ParallelError
    raised on every rank alike (``everywhere``) passes through: the ranks exit normally."""
    try:
        yield
    except ParallelError as e:
        if e.everywhere or comm is None or comm.Get_size() == 1:
            raise
        _abort(comm, label, e)
    except BaseException as e:              # noqa: B036 (KeyboardInterrupt too: stop them all)
        if comm is None or comm.Get_size() == 1 or isinstance(e, SystemExit) and not e.code:
            raise
        _abort(comm, label, e)


def _abort(comm, label, error):
    ranks = _ranks.get(comm.py2f()) or f"rank {comm.Get_rank()} of {comm.Get_size()}"
    if not isinstance(error, (JitnetError, KeyboardInterrupt)):
        traceback.print_exc()
    what = "interrupted" if isinstance(error, KeyboardInterrupt) else f"error: {error}"
    print(f"{label}: {what}\n{label}: (on {ranks}; stopping every rank)", file=sys.stderr, flush=True)
    comm.Abort(130 if isinstance(error, KeyboardInterrupt) else 1)


# -- checks at start ----------------------------------------------------------------------------------
def file_digest(path):
    """sha256 of a file's bytes ("missing" when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return "missing"


def solver_files(solver_path, param):
    """The solver file and the net files it names (net, train_net, test_net)."""
    files = [os.fspath(solver_path)]
    for field in ("net", "train_net"):
        if param.HasField(field):
            files.append(getattr(param, field))
    files.extend(param.test_net)
    return files


def check_same_files(comm, paths):
    """ParallelError on every rank when the ranks disagree on the contents of ``paths``
    (compared by sha256): different files at the same path on different hosts, or an edit
    between the starts of two ranks."""
    if comm is None or comm.Get_size() == 1:
        return
    mine = [(path, file_digest(path)) for path in paths]
    every = comm.allgather(mine)
    problems = []
    for rank, theirs in enumerate(every):
        for (path, digest), (_, root_digest) in zip(theirs, every[0]):
            if digest != root_digest:
                seen = "cannot read it" if digest == "missing" else f"has sha256 {digest[:12]}..."
                problems.append(f"'{path}': rank {rank} {seen}, rank 0 "
                                + ("cannot read it" if root_digest == "missing"
                                   else f"has {root_digest[:12]}..."))
    if problems:
        raise ParallelError("the ranks disagree on the solver or net files (every rank must read "
                            "the same files; copy them to every host): " + "; ".join(problems),
                            everywhere=True)


def host_device_count():
    """How many CUDA devices numba sees on this host (0 without a driver)."""
    from numba import cuda
    try:
        return len(cuda.gpus) if cuda.is_available() else 0
    except Exception:                       # a driver that fails to list its devices
        return 0


def device_for_rank(gpu, ranks, devices):
    """The device id this rank trains on for ``--gpu`` (one id, a list, or "all"): the
    local_rank-th device named, on a host with ``devices`` CUDA devices. ParallelError when
    the flag asks for more devices than the host has."""
    if gpu == "all":
        ids = list(range(devices))
        if ranks.local_size > devices:
            raise ParallelError(f"--gpu all: {ranks.local_size} ranks run on host {ranks.host}, "
                                f"which has {devices} CUDA device(s); start at most {devices} "
                                "rank(s) per host (mpiexec --map-by ppr:N:node), or name the "
                                "devices to share, e.g. --gpu 0,0")
        return ids[ranks.local_rank]
    try:
        ids = [int(x) for x in gpu.split(",")]
    except ValueError:
        raise ParallelError(f"--gpu {gpu}: give device ids (0,1,...) or 'all'") from None
    beyond = [i for i in ids if not 0 <= i < devices]
    if beyond:
        raise ParallelError(f"--gpu {gpu} asks for device {beyond[0]}, but host {ranks.host} has "
                            f"{devices} CUDA device(s)"
                            + (f" (ids 0 to {devices - 1})" if devices else ""))
    if ranks.local_size > len(ids):
        raise ParallelError(f"--gpu {gpu} names {len(ids)} device(s) for the {ranks.local_size} "
                            f"ranks on host {ranks.host}: name one device per rank on a host "
                            "(a device named twice is shared by two ranks), or start fewer "
                            "ranks per host")
    return ids[ranks.local_rank]


# -- the state every rank shares ----------------------------------------------------------------------
def batch_size(net):
    """The batch size of a net's first data layer (None when it has none)."""
    from .layers.data import DataLayer
    for step in net.steps:
        if isinstance(step.layer, DataLayer) and step.tops and step.tops[0].num_axes:
            return step.tops[0].shape[0]
    return None


def jumped_rng_state(state, times):
    """A generator state ``times`` jumps ahead of ``state`` (a stream of its own per rank)."""
    bit_generator = getattr(np.random, state["bit_generator"])()
    bit_generator.state = state
    return bit_generator.jumped(times).state if times else state


def merged_positions(ranks):
    """The train data positions a run on any number of ranks continues from, given every
    rank's: a prefetching layer's position ``next`` is the first record no rank has read
    (the largest); the layers that deal in rounds hold the same state on every rank."""
    merged = {}
    for name, state in ranks[0]["train_data"].items():
        state = dict(state)
        if "next" in state:
            state["next"] = max(int(r["train_data"][name]["next"]) for r in ranks)
        merged[name] = state
    return merged


class CommStats:
    """Communication time of a data-parallel run, per iteration.

    ``exposed_ms``: time the iteration waited for gradients in ``on_gradients_ready`` (the
    communication not hidden behind backward, with packing and the 1/N scaling), in total
    and per iteration (``samples``, the last 10,000, with ``entered``, the perf_counter
    times the waits began: on one host, comparing them across ranks tells the wait for a
    slower rank from the communication itself); ``posting_ms``: time spent starting and
    polling non-blocking allreduces inside backward (layer mode); ``bytes``: gradient bytes
    each rank contributes per iteration."""

    def __init__(self, bytes_per_iteration=0):
        self.iterations = 0
        self.exposed_ms = 0.0
        self.posting_ms = 0.0
        self.samples = collections.deque(maxlen=10_000)
        self.entered = collections.deque(maxlen=10_000)
        self.bytes = bytes_per_iteration

    def reset(self):
        self.__init__(self.bytes)

    def per_iteration(self):
        """Means per iteration, and the median of the exposed time (robust to the stalls of a
        busy machine)."""
        n = max(self.iterations, 1)
        return {"iterations": self.iterations, "exposed_ms": self.exposed_ms / n,
                "exposed_median_ms": float(np.median(self.samples)) if self.samples else 0.0,
                "posting_ms": self.posting_ms / n, "bytes": self.bytes}


class _Reducer:
    """Sums the parameter gradients over the ranks and scales them by 1/N."""

    def __init__(self, net, comm, mode, stats):
        self.MPI = mpi()
        self.net, self.comm, self.mode, self.stats = net, comm, mode, stats
        self.scale = 1.0 / comm.Get_size()
        params = net.learnable_params
        owner = {id(blob._diff): k for k, blob in enumerate(params)}
        # A parameter's gradient is final after the last layer (in backward order) that adds
        # to it: a shared parameter waits for its last user. Parameters no layer adds to keep
        # the zero diff every iteration starts with, on every rank: nothing to reduce.
        last = {}
        for step in net.backward_steps:
            for j, blob in enumerate(step.layer.blobs):
                if step.layer.param_propagate_down[j]:
                    last[owner[id(blob._diff)]] = step.index
        self.reduced = sorted(last)
        self.trigger = {}
        for k in self.reduced:
            self.trigger.setdefault(last[k], []).append(k)
        self.first_backward = net.backward_steps[0].index if net.backward_steps else None
        self.count = sum(params[k].count for k in self.reduced)
        stats.bytes = self.count * net.dtype.itemsize
        self.flat = None
        self.pending = []            # [k, request, time posted, time seen complete]
        self.posted = set()
        self.passes_left = None      # backward passes before the one that reduces (iter_size)
        self.armed = True
        self.trace = None            # a list of timeline events while tracing
        self._layer_start = 0.0
        self._callbacks = []
        if mode == "layer":
            self._callbacks = [(net.before_backward, self._before_backward),
                               (net.after_backward, self._after_backward)]
        for callbacks, callback in self._callbacks:
            callbacks.append(callback)

    def close(self):
        for callbacks, callback in self._callbacks:
            if callback in callbacks:
                callbacks.remove(callback)
        self._callbacks = []

    # -- tracing: a per-layer timeline of backward and the allreduces ----------------------------
    def start_trace(self):
        self.trace = []
        if self.mode != "layer":
            self._callbacks = [(self.net.before_backward, self._before_backward),
                               (self.net.after_backward, self._after_backward)]
            for callbacks, callback in self._callbacks:
                callbacks.append(callback)

    def _event(self, kind, name, start, end):
        if self.trace is not None:
            self.trace.append((kind, name, start, end))

    # -- layer by layer -----------------------------------------------------------------------
    def begin(self, iter_size):
        """An iteration starts: reduce during its last of ``iter_size`` backward passes."""
        self.passes_left = iter_size

    def _before_backward(self, step):
        now = time.perf_counter()
        if step.index == self.first_backward:         # a new backward pass
            if self.passes_left is not None:
                self.passes_left -= 1
            self.armed = self.passes_left is None or self.passes_left <= 0
        if self.pending:
            self._poll()
        self._layer_start = now
        self.stats.posting_ms += (time.perf_counter() - now) * 1e3

    def _after_backward(self, step):
        now = time.perf_counter()
        self._event("backward", step.name, self._layer_start, now)
        if self.mode == "layer" and self.armed:
            for k in self.trigger.get(step.index, ()):
                self._post(k)
        if self.pending:
            self._poll()
        self.stats.posting_ms += (time.perf_counter() - now) * 1e3

    def _post(self, k):
        buffer = self.net.learnable_params[k].mutable_diff_on(common.CPU)
        request = self.comm.Iallreduce(self.MPI.IN_PLACE, buffer, op=self.MPI.SUM)
        self.pending.append([k, request, time.perf_counter(), None])
        self.posted.add(k)

    def _poll(self):
        """Let MPI progress the pending allreduces (Open MPI moves a non-blocking collective
        on only inside MPI calls) and note the ones that completed."""
        for entry in self.pending:
            if entry[3] is None and entry[1].Test():
                entry[3] = time.perf_counter()

    # -- the end of the passes -------------------------------------------------------------------
    def finish(self):
        """Complete the reduction before the update: wait for the layer-wise allreduces and
        reduce, all at once, whatever is left (everything in "all" mode)."""
        start = time.perf_counter()
        blas = common.kernels("blas", common.CPU)
        if self.pending:
            self.MPI.Request.Waitall([entry[1] for entry in self.pending])
            done = time.perf_counter()
            for k, _, posted, seen in self.pending:
                blas.scale(self.scale, self.net.learnable_params[k].mutable_diff_on(common.CPU))
                self._event("allreduce", self.net.param_display_names[k], posted, seen or done)
            self.pending = []
        rest = [k for k in self.reduced if k not in self.posted]
        if rest:
            self._reduce_at_once(rest, blas)
        self.posted.clear()
        self.passes_left, self.armed = None, True
        end = time.perf_counter()
        self._event("wait", "on_gradients_ready", start, end)
        self.stats.exposed_ms += (end - start) * 1e3
        self.stats.samples.append((end - start) * 1e3)
        self.stats.entered.append(start)
        self.stats.iterations += 1

    def _reduce_at_once(self, ks, blas):
        params = self.net.learnable_params
        count = sum(params[k].count for k in ks)
        if self.flat is None or self.flat.size < count:
            self.flat = np.empty(count, self.net.dtype)
        flat, offset = self.flat[:count], 0
        for k in ks:
            n = params[k].count
            flat[offset:offset + n] = params[k].diff_on(common.CPU)
            offset += n
        started = time.perf_counter()
        self.comm.Allreduce(self.MPI.IN_PLACE, flat, op=self.MPI.SUM)
        self._event("allreduce", f"{len(ks)} blobs at once", started, time.perf_counter())
        blas.scale(self.scale, flat)
        offset = 0
        for k in ks:
            n = params[k].count
            params[k].mutable_diff_on(common.CPU)[...] = flat[offset:offset + n]
            offset += n


class DataParallel:
    """Makes ``solver`` one of the ranks of a data-parallel run (see the module's docstring).

    ``comm``: an mpi4py communicator (MPI's COMM_WORLD through :func:`world` when the
    process was started by an MPI launcher; a single process otherwise, where nothing
    changes). ``reduce``: "layer" (default) or "all". ``check_every``: compare checksums of
    the weights over the ranks every K iterations (0: never) and raise ParallelError on a
    difference.

    Everything works through the solver's and the net's callbacks, so ``solver.step(n)``,
    ``solver.solve()`` and loops of your own over ``solver.step(1)`` run data-parallel.
    A loop that calls ``net.forward_backward()`` and ``solver.apply_update()`` itself calls
    :meth:`reduce_gradients` in between. A net fed through Input layers gets the same
    inputs on every rank unless you feed each rank its share (rows ``rank::size``, say;
    ``dp.rank``, ``dp.size``). Set ``solver.action_request`` (signals) before
    wrapping: the ranks then agree on every request. Only rank 0 tests and snapshots;
    :meth:`restore` (not ``solver.restore``) resumes every rank from rank 0's file."""

    def __init__(self, solver, comm=None, reduce=DEFAULT_REDUCE, check_every=0):
        if reduce not in MODES:
            raise ParallelError(f"reduce must be one of {', '.join(MODES)}, got {reduce!r}")
        if not isinstance(check_every, (int, np.integer)) or check_every < 0:
            raise ParallelError(f"check_every is a whole number >= 0, got {check_every!r}")
        if comm is None and launched_size() != 1:
            comm = world()
        self.solver, self.net, self.comm = solver, solver.net, comm
        self.ranks = ranks_of(comm)
        self.rank, self.size = self.ranks.rank, self.ranks.size
        self.mode, self.check_every = reduce, int(check_every)
        self.batch_size = batch_size(self.net)
        self.stats = CommStats()
        self.restored = None
        solver.root_solver = self.rank == 0
        if self.rank > 0:
            log.setLevel(logging.WARNING)
        solver.on_snapshot.append(self._on_snapshot)
        solver.on_restore.append(self._on_restore)
        self._reducer = None
        if self.size > 1:
            self._reducer = _Reducer(self.net, comm, reduce, self.stats)
            solver.on_start.append(self._on_start)
            solver.on_gradients_ready.append(self._on_gradients_ready)
            solver.iteration_callbacks.append(self._after_iteration)
            self._request = solver.action_request
            if solver.action_request is not None:
                solver.action_request = self._agreed(solver.action_request)
            with abort_on_error(comm, "jitnet.parallel"):
                self._start()

    # -- start: one model, records dealt ---------------------------------------------------------
    def _start(self):
        self._check_same_nets()
        self._broadcast_training_state()
        states = self.comm.bcast(self.solver._data_positions()[0] if self.rank == 0 else None, root=0)
        self._deal_records(states)
        if self.rank > 0:
            common.set_rng_state(jumped_rng_state(common.rng_state(), self.rank))
        hosts = len(set(self.comm.allgather(self.ranks.host)))
        if self.rank == 0:
            self._log_start(hosts)

    def _log_start(self, hosts):
        p, n, b = self.solver.param, self.size, self.batch_size
        if b is None:
            log.info("Data-parallel training on %d ranks (%d host(s)); the net has no data layer: "
                     "each rank feeds its own inputs", n, hosts)
        else:
            per_update = f"; with iter_size {p.iter_size}, {n * b * p.iter_size} samples per " \
                         "update" if p.iter_size > 1 else ""
            log.info("Data-parallel training on %d ranks (%d host(s)): every rank runs batch_size "
                     "%d, so the effective batch size is %d (%d x %d)%s", n, hosts, b, n * b, n, b,
                     per_update)
        log.info("Gradients: summed over the ranks and scaled by 1/%d, %s (%.4g MB per rank per "
                 "iteration)", n, "layer by layer, overlapping backward" if self.mode == "layer"
                 else "all at once after backward", self.stats.bytes / 1e6)

    def _check_same_nets(self):
        mine = (self.solver.type, [tuple(b.shape) for b in self.net.learnable_params],
                str(self.net.dtype), self.batch_size, self.solver.param.iter_size)
        every = self.comm.allgather(mine)
        for rank, theirs in enumerate(every):
            if theirs != every[0]:
                raise ParallelError(
                    f"rank {rank}'s solver and net differ from rank 0's (solver type, parameter "
                    f"shapes, dtype, batch_size, iter_size): {theirs} against {every[0]}; every "
                    "rank must build the same solver", everywhere=True)

    def _broadcast_training_state(self):
        """Rank 0's weights, solver history, iteration and loss window, to every rank."""
        for blob in list(self.net.learnable_params) + list(self.solver.history):
            self.comm.Bcast(blob.data, root=0)
        s = self.solver
        counters = self.comm.bcast((s.iter, s.current_step, list(s.losses), s._keep_losses)
                                   if self.rank == 0 else None, root=0)
        if self.rank > 0:
            s.iter, s.current_step, losses, s._keep_losses = counters
            s.losses.clear()
            s.losses.extend(losses)
            s.smoothed_loss = float(np.mean(s.losses)) if s.losses else 0.0

    def _deal_records(self, states):
        from .layers.data import DataLayer
        for layer in self.net.layers:
            if not isinstance(layer, DataLayer):
                continue
            state = states.get(layer.name)
            if layer.type in DEALT:
                layer.set_worker(self.rank, self.size)
                if self.rank > 0 and state is not None:
                    layer.set_state(state)
            elif state is not None and "seed" in state:
                state = dict(state, seed=(int(state["seed"]) + self.rank) % 2**63)
                layer.set_state(state)
                if self.rank == 0:
                    log.info("%s (%s) samples its records at random: each rank draws its own "
                             "(seed + rank)", layer.name, layer.type)
            elif self.rank == 0 and layer.type not in ("Input", "DummyData"):
                log.warning("%s (%s) does not deal its records by rank: every rank reads the "
                            "same ones", layer.name, layer.type)

    # -- every iteration ----------------------------------------------------------------------
    def _on_start(self, solver):
        self._reducer.begin(solver.param.iter_size)

    def _on_gradients_ready(self, solver):
        self._reducer.finish()

    def reduce_gradients(self):
        """Sum the parameter gradients over the ranks and scale them by 1/N (for loops that
        call net.forward_backward() and solver.apply_update() themselves)."""
        if self._reducer is not None:
            self._reducer.finish()

    def _after_iteration(self, solver):
        if self.check_every and solver.iter % self.check_every == 0:
            self.check_weights()

    def check_weights(self):
        """ParallelError on every rank unless every rank holds the very same weights (crc32 of
        each learned blob; BatchNorm's statistics, lr_mult 0, are each rank's own)."""
        if self.size == 1:
            return
        net = self.net
        learned = [k for k, lr in enumerate(net.params_lr) if lr != 0]
        mine = [zlib.crc32(net.learnable_params[k].data_on(common.CPU)) for k in learned]
        every = self.comm.allgather(mine)
        for rank, theirs in enumerate(every):
            if theirs != every[0]:
                first = next(i for i, (a, b) in enumerate(zip(theirs, every[0])) if a != b)
                raise ParallelError(
                    f"iteration {self.solver.iter}: the weights of rank {rank} differ from rank 0's "
                    f"(first in {net.param_display_names[learned[first]]}); the ranks went out of "
                    "step", everywhere=True)

    def _agreed(self, request):
        """The solver's action_request, agreed on by every rank (the most drastic wins)."""
        MPI = mpi()

        def agreed():
            code = _REQUESTS.index(request())
            return _REQUESTS[self.comm.allreduce(code, op=MPI.MAX)]
        return agreed

    # -- snapshots ------------------------------------------------------------------------------
    def _on_snapshot(self, solver, resume):
        resume["world_size"] = self.size
        resume["batch_size"] = self.batch_size
        if self.size == 1:
            return
        mine = {"rng": resume["rng"], "train_data": resume["train_data"]}
        every = self.comm.gather(mine, root=0)
        if self.rank == 0:
            resume["ranks"] = every
            # what a run on one process (or on any number of ranks) continues from
            resume["train_data"] = merged_positions(every)

    def _on_restore(self, solver, resume):
        self.restored = resume
        if self.size == 1:
            self._note_world_change(resume)

    def _note_world_change(self, resume):
        if not resume or "world_size" not in resume:
            return
        before, b_before = resume["world_size"], resume.get("batch_size")
        if before == self.size and b_before == self.batch_size:
            return
        effective = (lambda n, b: f"{n} x {b} = {n * b}" if b else f"{n} rank(s)")
        log.info("Note: the snapshot was taken by a run on %d rank(s), effective batch %s; this run "
                 "has %d, effective batch %s. Records continue from the first one no rank had "
                 "read; the learning rate is the solver file's (scale base_lr with the effective "
                 "batch if you want the old ratio).", before, effective(before, b_before),
                 self.size, effective(self.size, self.batch_size))

    def restore(self, state_file):
        """Resume every rank from a snapshot that rank 0 reads (the other ranks need not see
        the file): weights, history, iteration and loss window from rank 0; each rank's own
        random state and data positions when the snapshot has as many ranks, else positions
        continuing from the first record no rank had read."""
        if self.size == 1:
            self.solver.restore(state_file)
            return
        with abort_on_error(self.comm, "jitnet.parallel"):
            self._restore(state_file)

    def _restore(self, state_file):
        error = None
        if self.rank == 0:
            try:
                self.solver.restore(state_file)
            except JitnetError as e:
                error = str(e)
        error = self.comm.bcast(error, root=0)
        if error:
            raise ParallelError(error, everywhere=True)
        payload = None
        if self.rank == 0:
            resume = self.restored or {}
            ranks = resume.get("ranks") or ([{"rng": resume["rng"], "train_data": resume.get("train_data", {})}]
                                            if "rng" in resume else None)
            payload = {"ranks": ranks}
            self._note_world_change(resume)
        payload = self.comm.bcast(payload, root=0)
        self._broadcast_training_state()
        ranks = payload["ranks"]
        if not ranks:
            return
        if len(ranks) == self.size:
            mine = ranks[self.rank]
        else:
            rng = ranks[self.rank]["rng"] if self.rank < len(ranks) else \
                jumped_rng_state(ranks[0]["rng"], self.rank)
            mine = {"rng": rng, "train_data": merged_positions(ranks)}
        common.set_rng_state(mine["rng"])
        for name, state in mine["train_data"].items():
            layer = self.net.layer_dict.get(name)
            if layer is None or not hasattr(layer, "set_state"):
                raise ParallelError(f"{state_file}: data layer '{name}' is not in net '{self.net.name}'")
            layer.set_state(state)

    # -- running ------------------------------------------------------------------------------------
    def step(self, iters):
        """``solver.step(iters)``; an error on this rank stops every rank."""
        with abort_on_error(self.comm, "jitnet.parallel"):
            self.solver.step(iters)

    def solve(self, resume_file=None):
        """Restore ``resume_file`` (if given) on every rank, then ``solver.solve()``."""
        if resume_file:
            self.restore(resume_file)
        with abort_on_error(self.comm, "jitnet.parallel"):
            self.solver.solve()

    def trace(self):
        """Start recording a timeline: (kind, name, start, end) events in ``timeline()``; kind is
        "backward" (a layer), "allreduce" (a blob, from its start to the first time it was seen
        complete) or "wait" (on_gradients_ready)."""
        if self._reducer is not None:
            self._reducer.start_trace()

    def timeline(self):
        """The events recorded since :meth:`trace` (and clears them)."""
        if self._reducer is None or self._reducer.trace is None:
            return []
        events, self._reducer.trace = self._reducer.trace, []
        return events

    def close(self):
        """Take the callbacks off the solver and the net (the solver trains alone again)."""
        s = self.solver
        for callbacks, callback in ((s.on_start, self._on_start),
                                    (s.on_gradients_ready, self._on_gradients_ready),
                                    (s.iteration_callbacks, self._after_iteration),
                                    (s.on_snapshot, self._on_snapshot), (s.on_restore, self._on_restore)):
            if callback in callbacks:
                callbacks.remove(callback)
        if self._reducer is not None:
            self._reducer.close()
            s.action_request = self._request
        s.root_solver = True

    def summary(self):
        """One line on the communication per iteration (rank 0 logs it after training)."""
        st = self.stats.per_iteration()
        return (f"Communication ({self.mode}, {self.size} ranks, {st['bytes'] / 1e6:.4g} MB of "
                f"gradients per rank per iteration): {st['exposed_ms']:.3f} ms per iteration not "
                f"hidden behind backward (median {st['exposed_median_ms']:.3f})"
                + (f", {st['posting_ms']:.3f} ms starting and polling allreduces inside backward"
                   if self.mode == "layer" else "") + f", over {st['iterations']} iterations")
