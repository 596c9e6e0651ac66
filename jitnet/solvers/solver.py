"""The Solver: Caffe's training loop, driven by a SolverParameter.

One iteration (``step``): clear the parameter diffs → test if due → ``iter_size``
forward/backward passes (loss averaged) → ``apply_update`` → iter += 1 →
snapshot if due. ``apply_update`` is a pipeline of small named steps, as in
Caffe's SGDSolver: learning rate from the policy → clip gradients → per
parameter: normalize (÷ iter_size), regularize (L2 or L1) → the NaN guard on
the diffs (from sums the regularization returns) → per parameter the update rule
of the solver type (``compute_update``, the only step a subclass overrides), a
kernel over (param, diff, history) that also applies the update. Each
parameter's steps are Caffe's, in Caffe's order.

Snapshots write ``<prefix>_iter_N.caffemodel`` and ``.solverstate`` (or the
``.h5`` pair), each atomically (temporary file, then rename). Besides Caffe's
fields, the solver state records what Caffe forgets: the random generator and
every data layer's position, in the field ``jitnet_state`` (number 1000) that
Caffe's readers skip, so a restored run continues exactly as the uninterrupted
one would have.
"""
import json
import logging
import math
import os
import time
from collections import deque

import numpy as np

from .. import common
from ..common import TEST, TRAIN
from ..blob import Blob
from ..errors import NumericalError, SolverError
from ..net import Net
from ..proto import io as proto_io
from ..proto import pb
from .lr_policies import advance_step, check_policy, learning_rate

log = logging.getLogger("jitnet")

SOLVERS = common.Registry("solver", SolverError)


def register_solver(type_name):
    """Class decorator: register a Solver subclass under its Caffe type name."""
    return SOLVERS.register(type_name)


def get_solver(solver_file):
    """The solver of the type the file's ``type`` (or legacy ``solver_type``) names; a
    SolverParameter works too."""
    param = _read_param(solver_file)
    source = None if isinstance(solver_file, pb.SolverParameter) else os.fspath(solver_file)
    cls = SOLVERS.get(param.type, f"{source or 'solver'}: ")
    return cls(param, source=source)


def _read_param(solver):
    if isinstance(solver, pb.SolverParameter):
        return solver
    return proto_io.read_solver(solver)


class Solver:
    """Base of every solver type; subclasses implement ``compute_update`` and ``history_count``."""

    type = None
    history_count = 1          # history blobs per learnable parameter

    def __init__(self, solver, source=None):
        self.param = _read_param(solver)
        self.source = source if source is not None else (
            None if isinstance(solver, pb.SolverParameter) else os.fspath(solver))
        self.where = self.source or "solver"
        if self.type is not None and self.param.type != self.type:
            if self.param.HasField("type"):
                log.warning("%s says type '%s', but this is a %s; it trains with %s",
                            self.where, self.param.type, type(self).__name__, self.type)
            self.param.type = self.type
        self.check_param()
        self._prepare_snapshot_prefix()
        if self.param.random_seed >= 0:
            common.set_random_seed(self.param.random_seed)
        self.net = self._train_net()
        self.test_nets = self._test_nets()
        for test_net in self.test_nets:
            test_net.share_with(self.net)
        self.iter = 0
        self.current_step = 0
        # Caffe's layout: the first history of every parameter, then the second (Adam, AdaDelta).
        self.history = [Blob(p.shape, dtype=p.dtype)
                        for _ in range(self.history_count) for p in self.net.learnable_params]
        self.losses = deque(maxlen=max(1, self.param.average_loss))
        self.smoothed_loss = 0.0
        self._keep_losses = False      # restore() brought back the loss window of a step() call
        # Caffe's Solver::Callback seams, each called with the solver: on_start at the start of
        # every iteration (after the test, before the forward passes), on_gradients_ready after
        # the iter_size forward/backward passes and before apply_update (an allreduce goes there).
        self.on_start = []
        self.on_gradients_ready = []
        self.iteration_callbacks = []
        # Caffe's root_solver(): in a data-parallel run (jitnet.parallel) only the root tests
        # and writes snapshots. on_snapshot callbacks get (solver, resume state) on every rank
        # before anything is written and may add to it; on_restore callbacks get (solver,
        # resume state or None) after restore().
        self.root_solver = True
        self.on_snapshot = []
        self.on_restore = []
        self.action_request = None     # callable returning None, "stop" or "snapshot"
        self.test_scores = []
        self.tested_at = None          # the iteration test_scores belong to
        if self.param.weights:                  # each entry may itself list files, comma-separated
            self.net.copy_from(",".join(self.param.weights))

    # -- checks and nets --------------------------------------------------------------------------
    def check_param(self):
        p, where = self.param, self.where
        check_policy(p, where)
        if p.test_iter and p.test_interval <= 0:
            raise SolverError(f"{where}: test_iter is given but test_interval is not")
        if p.snapshot and not p.snapshot_prefix:
            raise SolverError(f"{where}: snapshot is {p.snapshot} but snapshot_prefix is not set")
        if p.iter_size < 1:
            raise SolverError(f"{where}: iter_size must be at least 1")
        if p.average_loss < 1:
            raise SolverError(f"{where}: average_loss must be at least 1")
        if p.regularization_type not in ("L1", "L2"):
            raise SolverError(f"{where}: unknown regularization_type '{p.regularization_type}'; "
                              "known: L1, L2")

    def _prepare_snapshot_prefix(self):
        """Caffe's rules for the prefix, then a probe that it can be written, before training
        starts rather than when the first snapshot is due.

        Without snapshot_prefix (allowed when no periodic snapshot is asked for), the prefix
        is the solver file's path without its extension, as Caffe sets it; a prefix naming a
        folder gets the solver file's stem appended."""
        p = self.param
        stem = os.path.splitext(os.path.basename(self.source))[0] if self.source else None
        if not p.snapshot_prefix and self.source:
            p.snapshot_prefix = os.path.splitext(self.source)[0]
            log.info("snapshot_prefix was not set; snapshots go to %s_iter_N", p.snapshot_prefix)
        elif p.snapshot_prefix and stem and (p.snapshot_prefix.endswith(os.sep)
                                             or os.path.isdir(p.snapshot_prefix)):
            p.snapshot_prefix = os.path.join(p.snapshot_prefix, stem)
        if not p.snapshot_prefix or not (p.snapshot or p.snapshot_after_train):
            return
        probe = f"{p.snapshot_prefix}_iter_0.{os.getpid()}.tempfile"   # processes may probe at once
        try:
            folder = os.path.dirname(probe)
            if folder:
                os.makedirs(folder, exist_ok=True)
            with open(probe, "w"):
                pass
            os.remove(probe)
        except OSError as e:
            raise SolverError(f"{self.where}: cannot write snapshots with snapshot_prefix "
                              f"'{p.snapshot_prefix}': {e.strerror or e}. Make sure the folder "
                              "exists (or can be created) and is writable.") from None

    def _net(self, model, field, phase, state):
        """A Net for a solver's net field, with an error that says where the path came from."""
        if isinstance(model, str) and not os.path.exists(model):
            raise SolverError(f"{self.where}: the net file '{model}' named by '{field}' does not "
                              f"exist (paths in a solver file are relative to the working "
                              f"directory, {os.getcwd()})")
        return Net(model, phase, level=state.level, stages=tuple(state.stage))

    def _train_net(self):
        p = self.param
        given = [f for f in ("net", "net_param", "train_net", "train_net_param") if p.HasField(f)]
        if len(given) != 1:
            raise SolverError(f"{self.where}: give exactly one of net, net_param, train_net, "
                              f"train_net_param (found {', '.join(given) or 'none'})")
        kind = given[0]
        return self._net(getattr(p, kind), kind, TRAIN, p.train_state)

    def _test_nets(self):
        p = self.param
        sources = [("test_net_param", m) for m in p.test_net_param]
        sources += [("test_net", f) for f in p.test_net]
        # As Caffe's InitTestNets: with a generic net (net / net_param), every test_iter
        # beyond the explicit test nets gets a TEST-phase instance of it.
        generic = (("net", p.net) if p.HasField("net") else
                   ("net_param", p.net_param) if p.HasField("net_param") else None)
        if generic is not None and len(p.test_iter) > len(sources):
            sources += [generic] * (len(p.test_iter) - len(sources))
        if len(p.test_iter) != len(sources):
            raise SolverError(f"{self.where}: {len(sources)} test net(s) but {len(p.test_iter)} "
                              "test_iter value(s); give one test_iter per test net")
        if p.test_state and len(p.test_state) != len(sources):
            raise SolverError(f"{self.where}: {len(p.test_state)} test_state(s) for "
                              f"{len(sources)} test net(s)")
        return [self._net(model, field, TEST, p.test_state[i] if p.test_state else pb.NetState())
                for i, (field, model) in enumerate(sources)]

    # -- the loop ---------------------------------------------------------------------------------
    def add_callback(self, on_iteration):
        """Call ``on_iteration(solver)`` after every iteration, once ``iter`` has moved on
        (progress bars, logging). ``on_start`` and ``on_gradients_ready`` are Caffe's
        seams inside the iteration."""
        self.iteration_callbacks.append(on_iteration)

    def step(self, iters):
        """Run ``iters`` training iterations.

        As Caffe's Solver::Step, each call starts the ``average_loss`` window afresh (a loop
        of ``step(1)`` shows the raw loss), except the first call after ``restore``, which
        continues the window the snapshot saved, so a resumed ``solve()`` displays what the
        uninterrupted one would."""
        p = self.param
        if not isinstance(iters, (int, np.integer)) or iters < 0:
            raise SolverError(f"step(iters): iters is a whole number >= 0, got {iters!r}")
        if not self._keep_losses:
            self.losses.clear()
            self.smoothed_loss = 0.0
        self._keep_losses = False
        stop = self.iter + int(iters)
        tic, tic_iter = time.perf_counter(), self.iter
        while self.iter < stop:
            self.net.clear_param_diffs()
            if (p.test_interval and self.iter % p.test_interval == 0
                    and (self.iter > 0 or p.test_initialization) and self.root_solver):
                self.test_all()
            for callback in self.on_start:
                callback(self)
            display = p.display and self.iter % p.display == 0
            self.net.debug_info = bool(display and p.debug_info)
            loss = 0.0
            for _ in range(p.iter_size):
                loss += self.net.forward_backward()
                self.check_finite(loss)
            loss /= p.iter_size
            self._update_smoothed_loss(loss)
            if display:
                elapsed = time.perf_counter() - tic
                speed = (self.iter - tic_iter) / elapsed if elapsed > 0 and self.iter > tic_iter else 0.0
                log.info("Iteration %d (%.4g iter/s), loss = %.6g", self.iter, speed, self.smoothed_loss)
                self._log_outputs(self.net, "Train")
                tic, tic_iter = time.perf_counter(), self.iter
            for callback in self.on_gradients_ready:
                callback(self)
            self.apply_update(display)
            self.iter += 1
            for callback in self.iteration_callbacks:
                callback(self)
            request = self.action_request() if self.action_request else None
            if (p.snapshot and self.iter % p.snapshot == 0) or request in ("snapshot", "stop"):
                self.snapshot()
            if request == "stop":
                break

    def solve(self, resume_file=None):
        """Train to ``max_iter`` (after restoring ``resume_file`` if given); test and snapshot at the end."""
        p = self.param
        log.info("Solving %s", self.net.name)
        log.info("Learning Rate Policy: %s", p.lr_policy)
        if resume_file:
            self.restore(resume_file)
        self.step(max(0, p.max_iter - self.iter))
        if self.iter < p.max_iter:        # stopped by a request (step snapshotted already)
            log.info("Optimization stopped early.")
            return
        if p.snapshot_after_train and (not p.snapshot or self.iter % p.snapshot != 0):
            if p.snapshot_prefix:
                self.snapshot()
            else:
                log.warning("no snapshot_prefix (and no solver file to derive one from): the "
                            "final weights are not saved; call solver.net.save(path)")
        if p.display and self.iter % p.display == 0:
            loss = self.net.forward_from_to()
            self._update_smoothed_loss(loss)
            log.info("Iteration %d, loss = %.6g", self.iter, self.smoothed_loss)
        if p.test_interval and self.iter % p.test_interval == 0 and self.root_solver:
            self.test_all()
        log.info("Optimization Done.")

    def check_finite(self, loss=None, gradient_sums=()):
        """NumericalError naming the first layer that produced NaN or infinity, if any did.

        Checks ``loss`` (after each forward/backward pass) and, in ``apply_update`` before any
        parameter changes, the learnable parameters' diffs: ``gradient_sums`` holds per
        parameter the float64 sum of its diff that the regularization pass returns (finite
        exactly when every value is), or None where no weight decay applies and the diff is
        summed here. So the guard costs no pass over the diffs of its own when weight decay
        is on, as in Caffe's example solvers."""
        device, blas = common.mode(), self.kernels("blas")
        total = 0.0 if loss is None else loss
        for blob, part in zip(self.net.learnable_params, gradient_sums):
            total += blas.asum(blob.diff_on(device)) if part is None else part
        if math.isfinite(total):
            return
        where = self.net.first_nonfinite() or "the loss itself is not finite"
        seen = "" if loss is None else f" (loss = {loss})"
        raise NumericalError(f"iteration {self.iter}: training produced NaN or infinity{seen}; "
                             f"first at {where}. Stopped before this iteration's update; snapshots "
                             "already written are untouched. A lower base_lr or clip_gradients "
                             "often helps.")

    def _update_smoothed_loss(self, loss):
        self.losses.append(loss)
        self.smoothed_loss = float(np.mean(self.losses))

    def _log_outputs(self, net, label, values=None):
        for k, line in enumerate(net.output_lines(values)):
            log.info("    %s net output #%d: %s", label, k, line)

    # -- testing ----------------------------------------------------------------------------------
    def test_all(self):
        """Run every test net for its test_iter batches; returns a list of {output: mean} dicts."""
        self.test_scores = [self.test(i) for i in range(len(self.test_nets))]
        self.tested_at = self.iter
        return self.test_scores

    def test(self, index=0):
        p, net = self.param, self.test_nets[index]
        log.info("Iteration %d, Testing net (#%d)", self.iter, index)
        net.share_with(self.net)
        loss, scores = net.score(p.test_iter[index])
        if p.test_compute_loss:
            log.info("Test loss: %.6g", loss)
        self._log_outputs(net, "Test", scores)
        return {name: (float(v) if np.ndim(v) == 0 else v) for name, v in scores.items()}

    # -- the update pipeline ----------------------------------------------------------------------
    def learning_rate(self):
        """The rate the next update uses (the policy at the current iteration)."""
        step = advance_step(self.param, self.iter, self.current_step)
        return learning_rate(self.param, self.iter, step, self.where, self.net.dtype)

    def apply_update(self, display=False):
        p = self.param
        step = advance_step(p, self.iter, self.current_step)     # Caffe's GetLearningRate
        if p.lr_policy == "multistep" and step != self.current_step:
            log.info("MultiStep Status: Iteration %d, step = %d", self.iter, step)
        self.current_step = step
        rate = learning_rate(p, self.iter, step, self.where, self.net.dtype)
        if display:
            log.info("Iteration %d, lr = %.6g", self.iter, rate)
        self.clip_gradients()
        count = len(self.net.learnable_params)
        sums = []
        for i in range(count):
            self.normalize(i)
            sums.append(self.regularize(i))
        self.check_finite(gradient_sums=sums)       # before any parameter changes
        for i in range(count):
            self.compute_update(i, rate)
        if self.net.debug_info:
            self._update_debug_info()

    def _update_debug_info(self):
        names = self.net.param_display_names
        l1_data = l1_diff = l2_data = l2_diff = 0.0
        device, blas = common.mode(), self.kernels("blas")
        for name, blob in zip(names, self.net.learnable_params):
            log.info("    [Update] Param %s data: %.6g; diff: %.6g", name, self.net.mean_abs(blob),
                     self.net.mean_abs(blob, diff=True))
            l1_data += blas.asum(blob.data_on(device))
            l1_diff += blas.asum(blob.diff_on(device))
            l2_data += blas.dot(blob.data_on(device), blob.data_on(device))
            l2_diff += blas.dot(blob.diff_on(device), blob.diff_on(device))
        log.info("    [Update] All net params (data, diff): L1 norm = (%.6g, %.6g); L2 norm = (%.6g, %.6g)",
                 l1_data, l1_diff, math.sqrt(l2_data), math.sqrt(l2_diff))

    def kernels(self, family):
        return common.kernels(family)

    def clip_gradients(self):
        threshold = self.param.clip_gradients
        if threshold <= 0:
            return
        device, blas = common.mode(), self.kernels("blas")
        norm = float(np.sqrt(sum(blas.dot(p.diff_on(device), p.diff_on(device)) for p in self.net.learnable_params)))
        if norm > threshold:
            log.info("Gradient clipping: scaling down gradients (L2 norm %g > %g) by scale factor %g",
                     norm, threshold, threshold / norm)
            for p in self.net.learnable_params:
                blas.scale(threshold / norm, p.mutable_diff_on(device))

    def normalize(self, i):
        if self.param.iter_size > 1:
            self.kernels("blas").scale(1.0 / self.param.iter_size,
                                       self.net.learnable_params[i].mutable_diff_on(common.mode()))

    def regularize(self, i):
        """Weight decay on parameter i's diff; returns the sum of the diff afterwards (float64,
        for check_finite), or None when no decay applies (the diff is untouched)."""
        decay = self.param.weight_decay * self.net.params_weight_decay[i]
        if not decay:
            return None
        blob, device, K = self.net.learnable_params[i], common.mode(), self.kernels("solver")
        rule = K.l2_regularize if self.param.regularization_type == "L2" else K.l1_regularize
        return rule(blob.data_on(device), blob.mutable_diff_on(device), decay)

    def compute_update(self, i, rate):
        raise NotImplementedError

    def histories(self, i):
        """The history blobs of learnable parameter i (``history_count`` of them)."""
        n = len(self.net.learnable_params)
        return self.history[i::n]

    def buffers(self, i):
        """The arrays an update kernel works on for learnable parameter i, on the current
        device: its data, its diff, then its history blobs."""
        blob, device = self.net.learnable_params[i], common.mode()
        return ([blob.mutable_data_on(device), blob.mutable_diff_on(device)]
                + [h.mutable_data_on(device) for h in self.histories(i)])

    def local_rate(self, i, rate):
        """The rate of learnable parameter i: the policy's rate × its lr_mult."""
        return rate * self.net.params_lr[i]

    # -- snapshots --------------------------------------------------------------------------------
    def _hdf5(self):
        return self.param.snapshot_format == pb.SolverParameter.HDF5

    def snapshot_filename(self, extension):
        return f"{self.param.snapshot_prefix}_iter_{self.iter}{extension}"

    def snapshot(self):
        """Write the weights and the solver state for the current iteration; returns both paths
        (None on a rank other than the root of a data-parallel run, which writes nothing)."""
        if not self.param.snapshot_prefix:
            raise SolverError(f"{self.where}: cannot snapshot without snapshot_prefix")
        resume = self._resume_state()
        for callback in self.on_snapshot:
            callback(self, resume)
        if not self.root_solver:
            return None
        try:
            return self._snapshot(resume)
        except OSError as e:
            raise SolverError(f"{self.where}: snapshot at iteration {self.iter} failed: {e}") from None

    def _snapshot(self, resume):
        hdf5 = self._hdf5()
        folder = os.path.dirname(self.param.snapshot_prefix)
        if folder:
            os.makedirs(folder, exist_ok=True)
        model = self.snapshot_filename(".caffemodel.h5" if hdf5 else ".caffemodel")
        log.info("Snapshotting to %s file %s", "HDF5" if hdf5 else "binary proto", model)
        self.net.save(model, write_diff=self.param.snapshot_diff)
        state = self.snapshot_filename(".solverstate.h5" if hdf5 else ".solverstate")
        log.info("Snapshotting solver state to %s file %s", "HDF5" if hdf5 else "binary proto", state)
        extra = json.dumps(resume)
        if hdf5:
            from .state_hdf5 import write_state_hdf5
            write_state_hdf5(self, state, model, extra)
        else:
            proto = pb.SolverState(iter=self.iter, learned_net=model, current_step=self.current_step)
            for h in self.history:
                proto_io.array_to_blob(h.data, proto.history.add())
            proto.jitnet_state = extra
            proto_io.write_binary(proto, state)
        return model, state

    def _resume_state(self):
        """What Caffe's solverstate lacks: random state, data positions, the loss window."""
        train, tests = self._data_positions()
        return {"rng": common.rng_state(), "losses": list(self.losses),
                "train_data": train, "test_data": tests}

    def restore(self, state_file):
        """Continue from a ``.solverstate`` (or ``.solverstate.h5``) written by ``snapshot``.

        Everything is read and checked first (history shapes, the weights file, the data
        layers named in the resume state); a failure leaves the solver as it was."""
        state_file = os.fspath(state_file)
        if state_file.endswith(".h5"):
            from .state_hdf5 import read_state_hdf5
            it, learned_net, current_step, history, extra = read_state_hdf5(state_file)
        else:
            proto = proto_io.read_binary(state_file, pb.SolverState())
            if not proto.HasField("iter") and not proto.history:
                raise SolverError(f"{state_file}: not a solver state (no iteration, no history); "
                                  "give a .solverstate written by a snapshot")
            it, learned_net, current_step = proto.iter, proto.learned_net, proto.current_step
            history = [proto_io.blob_to_array(b) for b in proto.history]
            extra = proto.jitnet_state
        if len(history) != len(self.history):
            raise SolverError(f"{state_file}: {len(history)} history blobs, but this {self.type} "
                              f"solver over net '{self.net.name}' has {len(self.history)}")
        for j, (array, blob) in enumerate(zip(history, self.history)):
            if array.size != blob.count:
                raise SolverError(f"{state_file}: history blob {j} has {array.size} values, "
                                  f"expected {blob.count} (shape {blob.shape})")
            if array.dtype.kind not in "fiu":
                raise SolverError(f"{state_file}: history blob {j} holds {array.dtype} values, "
                                  "not numbers")
        try:
            resume = json.loads(extra) if extra else None
        except ValueError as e:                 # JSONDecodeError, or bytes that are not UTF-8
            raise SolverError(f"{state_file}: its jitnet_state is not valid JSON ({e})") from None
        if resume is not None:
            self._check_resume_state(resume, state_file)
        if learned_net and not os.path.exists(learned_net):
            raise SolverError(f"{state_file}: the weights file it names, '{learned_net}', does "
                              f"not exist (relative to the working directory, {os.getcwd()})")
        # The data positions and the weights can still fail (a position a data layer refuses,
        # weights that do not fit): set the positions first and put them back on any failure.
        saved = self._data_positions()
        try:
            if resume:
                self._set_data_positions(resume.get("train_data", {}),
                                         resume.get("test_data", []), state_file)
            if learned_net:
                self.net.copy_from(learned_net)
        except BaseException:
            self._set_data_positions(*saved, state_file)
            raise
        for array, blob in zip(history, self.history):
            blob.data[...] = array.reshape(blob.shape)
        self.iter, self.current_step = it, current_step
        if resume:
            self.losses.clear()
            self.losses.extend(resume.get("losses", []))
            self.smoothed_loss = float(np.mean(self.losses)) if self.losses else 0.0
            self._keep_losses = True
            common.set_rng_state(resume["rng"])
        log.info("Restored solver state from %s (iteration %d)", state_file, it)
        for callback in self.on_restore:
            callback(self, resume)

    def _check_resume_state(self, extra, state_file):
        """SolverError unless jitnet_state has the shape _resume_state writes."""
        def bad(what):
            return SolverError(f"{state_file}: its jitnet_state {what}; give a solver state written "
                               "by a jitnet snapshot")
        if not isinstance(extra, dict):
            raise bad("is not a JSON object")
        if "rng" not in extra:
            raise SolverError(f"{state_file}: its jitnet_state has no random generator state")
        try:
            probe = np.random.default_rng()
            probe.bit_generator.state = extra["rng"]
        except (TypeError, ValueError, KeyError, OverflowError) as e:
            raise bad(f"has a random generator state numpy cannot use ({e})") from None
        losses = extra.get("losses", [])
        if not isinstance(losses, list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in losses):
            raise bad("has a loss window that is not a list of numbers")
        train, tests = extra.get("train_data", {}), extra.get("test_data", [])
        if not isinstance(train, dict) or not isinstance(tests, list) or not all(
                isinstance(t, dict) for t in tests):
            raise bad("has data positions of the wrong form")
        for net, positions in [(self.net, train)] + list(zip(self.test_nets, tests)):
            for name in positions:
                if not hasattr(net.layer_dict.get(name), "set_state"):
                    raise SolverError(f"{state_file}: data layer '{name}' is not in net '{net.name}'")

    def _data_positions(self):
        """(train positions, [test positions]) of every data layer, as the resume state holds them."""
        def positions(net):
            return {layer.name: layer.get_state() for layer in net.layers if hasattr(layer, "get_state")}
        return positions(self.net), [positions(net) for net in self.test_nets]

    def _set_data_positions(self, train, tests, state_file):
        for net, positions in [(self.net, train)] + list(zip(self.test_nets, tests)):
            for name, value in positions.items():
                try:
                    net.layer_dict[name].set_state(value)
                except (KeyError, IndexError, TypeError, ValueError, OverflowError, OSError) as e:
                    raise SolverError(f"{state_file}: data layer '{name}' of net '{net.name}' cannot "
                                      f"take the position saved for it ({type(e).__name__}: {e})") from None
