"""Every learning-rate policy at iteration 0, at max_iter, past it, and at the edges (huge
iterations, extreme gamma / power / stepsize), against Caffe's formulas worked out by hand
in double precision (C's pow and exp: overflow is infinity, underflow 0). Where Caffe's rate
would be NaN or infinite the solver raises a SolverError naming the policy, the iteration
and the parameters; Caffe's CHECKs (gamma >= 0, stepsize > 0) refuse the solver file.

Parameters are chosen exactly representable in float32 (caffe.proto's base_lr, gamma and
power are floats), so the expected values are exact."""
import logging
import math
import re

import numpy as np
import pytest
from google.protobuf import text_format

import jitnet
from jitnet.proto import pb
from jitnet.solvers.lr_policies import advance_step, check_policy, learning_rate, multistep_index
from test_solver import regression_solver

INF, NAN = "inf", "nan"            # expected: a SolverError naming an infinite / NaN rate


def param(text):
    """A SolverParameter with base_lr 0.5 and max_iter 100 unless ``text`` says otherwise."""
    p = text_format.Parse(text, pb.SolverParameter())
    if not p.HasField("base_lr"):
        p.base_lr = 0.5
    if not p.HasField("max_iter"):
        p.max_iter = 100
    return p


CASES = [
    # policy, parameters, iteration, expected rate (by hand from Caffe's formula)
    ("fixed", "", 0, 0.5),
    ("fixed", "", 100, 0.5),
    ("fixed", "", 150, 0.5),
    ("fixed", "", 2**31 - 1, 0.5),
    # step: base_lr · gamma^floor(iter / stepsize)
    ("step", "gamma: 0.5 stepsize: 10", 0, 0.5),
    ("step", "gamma: 0.5 stepsize: 10", 9, 0.5),
    ("step", "gamma: 0.5 stepsize: 10", 100, 0.5 / 1024),
    ("step", "gamma: 0.5 stepsize: 10", 159, 0.5 / 2**15),
    ("step", "gamma: 0.5 stepsize: 1", 1100, 0.0),                 # 2^-1101 underflows to 0
    ("step", "gamma: 2 stepsize: 1", 1023, 2.0**1022),
    ("step", "gamma: 2 stepsize: 1", 1024, INF),                   # pow(2, 1024) overflows
    ("step", "gamma: 0 stepsize: 10", 9, 0.5),                     # 0^0 = 1
    ("step", "gamma: 0 stepsize: 10", 10, 0.0),
    ("step", "gamma: 0.5 stepsize: 2147483647", 2**31 - 2, 0.5),
    # exp: base_lr · gamma^iter
    ("exp", "gamma: 0.5", 0, 0.5),
    ("exp", "gamma: 0.5", 100, 2.0**-101),
    ("exp", "gamma: 0.5", 150, 2.0**-151),
    ("exp", "gamma: 0.5", 2**31 - 1, 0.0),
    ("exp", "gamma: 1", 2**31 - 1, 0.5),
    ("exp", "gamma: 2", 1023, 2.0**1022),
    ("exp", "gamma: 2", 1024, INF),
    ("exp", "gamma: 2", 2**31 - 1, INF),
    # inv: base_lr · (1 + gamma·iter)^(−power)
    ("inv", "gamma: 0.25 power: 0.75", 0, 0.5),
    ("inv", "gamma: 0.25 power: 0.75", 100, 0.5 * 26.0 ** -0.75),
    ("inv", "gamma: 0.25 power: 0.75", 150, 0.5 * 38.5 ** -0.75),
    ("inv", "gamma: 0.25 power: 2", 12, 0.5 / 16),
    ("inv", "gamma: 0 power: 0.75", 150, 0.5),
    ("inv", "gamma: 0.25 power: 10000", 100, 0.0),                 # 26^-10000 underflows
    ("inv", "gamma: 0.25 power: -10000", 100, INF),                # 26^10000 overflows
    ("inv", "gamma: 0.25 power: -2", 100, 0.5 * 676),
    # a negative iteration (a hand-made solver state) makes 1 + gamma·iter <= 0
    ("inv", "gamma: 0.25 power: 0.75", -8, NAN),                   # (−1)^−0.75
    ("inv", "gamma: 0.25 power: 2", -8, 0.5),                      # (−1)^−2 = 1
    ("inv", "gamma: 0.25 power: 0.75", -4, INF),                   # 0^−0.75
    # multistep: base_lr · gamma^(entries reached, one per iteration at most)
    ("multistep", "gamma: 0.5 stepvalue: 10 stepvalue: 20 stepvalue: 100", 0, 0.5),
    ("multistep", "gamma: 0.5 stepvalue: 10 stepvalue: 20 stepvalue: 100", 99, 0.125),
    ("multistep", "gamma: 0.5 stepvalue: 10 stepvalue: 20 stepvalue: 100", 100, 0.0625),
    ("multistep", "gamma: 0.5 stepvalue: 10 stepvalue: 20 stepvalue: 100", 150, 0.0625),
    ("multistep", "gamma: 0.5 stepvalue: 5 stepvalue: 3", 5, 0.25),   # not increasing: Caffe's
    ("multistep", "gamma: 0.5 stepvalue: 5 stepvalue: 3", 6, 0.125),  # counter, one per iteration
    ("multistep", "gamma: 0.5 stepvalue: 0 stepvalue: 0", 0, 0.25),
    ("multistep", "gamma: 0.5 stepvalue: 0 stepvalue: 0", 1, 0.125),
    ("multistep", "gamma: 0.5", 150, 0.5),                          # no entries: base_lr
    ("multistep", "gamma: 1e30 " + " ".join(f"stepvalue: {v}" for v in range(11)), 9,
     0.5 * float(np.float32(1e30)) ** 10),
    ("multistep", "gamma: 1e30 " + " ".join(f"stepvalue: {v}" for v in range(11)), 10, INF),
    # poly: base_lr · (1 − iter/max_iter)^power
    ("poly", "power: 2", 0, 0.5),
    ("poly", "power: 2", 50, 0.125),
    ("poly", "power: 2", 100, 0.0),
    ("poly", "power: 2", 150, 0.125),                              # (−0.5)^2: grows past max_iter
    ("poly", "power: 1", 150, -0.25),                              # Caffe's (negative) number
    ("poly", "power: 0.5", 100, 0.0),
    ("poly", "power: 0.5", 150, NAN),                              # (−0.5)^0.5
    ("poly", "power: -1", 100, INF),                               # 0^−1
    ("poly", "power: 2 max_iter: 0", 0, NAN),                      # 0/0
    ("poly", "power: 0 max_iter: 0", 0, 0.5),                      # pow(NaN, 0) = 1
    # sigmoid: base_lr / (1 + exp(−gamma·(iter − stepsize)))
    ("sigmoid", "gamma: 0.01 stepsize: 100000", 0, 0.0),           # exp(1000) = inf: a warm-up from 0
    ("sigmoid", "gamma: 0.01 stepsize: 100000", 100000, 0.25),
    ("sigmoid", "gamma: 0.01 stepsize: 100000", 200000, 0.5),      # exp(−1000) = 0
    ("sigmoid", "gamma: 0.5 stepsize: 4", 0, 0.5 / (1 + math.exp(2))),
    ("sigmoid", "gamma: 0.5 stepsize: 4", 100, 0.5 / (1 + math.exp(-48))),
    ("sigmoid", "gamma: 0.5 stepsize: 4", 150, 0.5 / (1 + math.exp(-73))),
    ("sigmoid", "gamma: 1 stepsize: 2147483647", 0, 0.0),
    ("sigmoid", "gamma: 1 stepsize: 2147483647", 2**31 - 1, 0.25),
    ("sigmoid", "gamma: 0 stepsize: 4", 150, 0.25),
    ("sigmoid", "gamma: inf stepsize: 4", 0, 0.0),
    ("sigmoid", "gamma: inf stepsize: 4", 4, NAN),                 # inf · 0
    ("sigmoid", "gamma: inf stepsize: 4", 5, 0.5),
    # base_lr itself
    ("fixed", "base_lr: inf", 0, INF),
    ("fixed", "base_lr: nan", 0, NAN),
    ("step", "base_lr: 0 gamma: 2 stepsize: 1", 1023, 0.0),
    ("step", "base_lr: 0 gamma: 2 stepsize: 1", 1024, NAN),        # 0 · inf
]


@pytest.mark.parametrize("policy,extra,it,want", CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES])
def test_rate_is_caffes_number_or_a_solver_error(policy, extra, it, want):
    p = param(f'lr_policy: "{policy}" {extra}')
    if want in (INF, NAN):
        word = "an infinite" if want == INF else "a NaN"
        with pytest.raises(jitnet.SolverError, match=rf"lr_policy '{policy}' gives {word} learning "
                                                     rf"rate at iteration {it}\b.*base_lr: "):
            learning_rate(p, it, where="s.prototxt")
    else:
        assert learning_rate(p, it) == want


def test_the_error_names_the_parameters():
    p = param('lr_policy: "inv" gamma: 0.25 power: 0.75')
    with pytest.raises(jitnet.SolverError) as caught:
        learning_rate(p, -8, where="s.prototxt")
    assert str(caught.value) == ("s.prototxt: lr_policy 'inv' gives a NaN learning rate at iteration "
                                 "-8 (base_lr: 0.5, gamma: 0.25, power: 0.75)")


def test_a_float32_net_needs_a_float32_rate():
    """Caffe's rate is a Dtype: 0.5·2^128 is finite in double but not in float."""
    p = param('lr_policy: "exp" gamma: 2')
    assert learning_rate(p, 129) == 2.0**128
    with pytest.raises(jitnet.SolverError, match=r"gives a float32-overflowing \(3.40282e\+38\) "
                                                 r"learning rate at iteration 129"):
        learning_rate(p, 129, dtype=np.float32)
    assert learning_rate(p, 128, dtype=np.float32) == 2.0**127


# -- Caffe's CHECKs --------------------------------------------------------------------------------
@pytest.mark.parametrize("policy", ["step", "exp", "inv", "multistep", "sigmoid"])
@pytest.mark.parametrize("gamma", ["-0.1", "-inf", "nan"])
def test_negative_gamma_is_refused(policy, gamma):
    p = param(f'lr_policy: "{policy}" gamma: {gamma} stepsize: 10 stepvalue: 5')
    with pytest.raises(jitnet.SolverError, match=rf"lr_policy '{policy}' needs gamma >= 0"):
        check_policy(p, "s.prototxt")


@pytest.mark.parametrize("policy", ["fixed", "poly"])
def test_gamma_does_not_matter_to_fixed_and_poly(policy):
    check_policy(param(f'lr_policy: "{policy}" gamma: -0.1 power: 1'))


@pytest.mark.parametrize("policy", ["step", "sigmoid"])
@pytest.mark.parametrize("stepsize", [0, -5])
def test_stepsize_must_be_positive(policy, stepsize):
    p = param(f'lr_policy: "{policy}" gamma: 0.1 stepsize: {stepsize}')
    with pytest.raises(jitnet.SolverError, match=rf"'{policy}' needs a positive stepsize"):
        check_policy(p, "s.prototxt")


def test_multistep_oddities_caffe_accepts_are_warnings(caplog):
    with caplog.at_level(logging.WARNING, logger="jitnet"):
        check_policy(param('lr_policy: "multistep" gamma: 0.5 stepvalue: 5 stepvalue: 3'), "s")
        check_policy(param('lr_policy: "multistep" gamma: 0.5'), "t")
    assert "s: stepvalue entries do not increase (5 then 3)" in caplog.text
    assert "t: lr_policy 'multistep' without stepvalue entries" in caplog.text


# -- Caffe's current_step ------------------------------------------------------------------------------
def test_multistep_counter_advances_one_per_iteration():
    p = param('lr_policy: "multistep" gamma: 0.5 stepvalue: 5 stepvalue: 3 stepvalue: 3')
    assert [multistep_index(p, it) for it in range(9)] == [0, 0, 0, 0, 0, 1, 2, 3, 3]
    # a solver restored at iteration 100 with the counter at 0 catches up one per iteration
    steps, step = [], 0
    for it in range(100, 105):
        step = advance_step(p, it, step)
        steps.append(step)
    assert steps == [1, 2, 3, 3, 3]


def test_step_policy_records_iter_over_stepsize():
    p = param('lr_policy: "step" gamma: 0.5 stepsize: 3')
    assert [advance_step(p, it, 0) for it in (0, 2, 3, 8, 9)] == [0, 0, 1, 2, 3]


# -- through the solver --------------------------------------------------------------------------------
def test_sigmoid_warm_up_trains_at_rate_zero(tmp_path):
    """The issue's solver: sigmoid with gamma 0.01 and stepsize 100000 starts at rate 0
    (it crashed with OverflowError at iteration 0)."""
    _, _, path = regression_solver(tmp_path)
    path.write_text(path.read_text().replace('lr_policy: "step" gamma: 0.5 stepsize: 2',
                                             'lr_policy: "sigmoid" gamma: 0.01 stepsize: 100000'))
    solver = jitnet.get_solver(str(path))
    before = [b.data.copy() for b in solver.net.learnable_params]
    assert solver.learning_rate() == 0.0
    solver.step(2)
    for a, b in zip(before, solver.net.learnable_params):
        np.testing.assert_array_equal(a, b.data)


def test_a_nonfinite_rate_stops_step_with_a_solver_error(tmp_path):
    _, _, path = regression_solver(tmp_path)
    path.write_text(path.read_text().replace('lr_policy: "step" gamma: 0.5 stepsize: 2',
                                             'lr_policy: "poly" power: 0.5'))
    solver = jitnet.get_solver(str(path))          # max_iter 5
    solver.step(6)                                 # iteration 5: (1 − 5/5)^0.5 = 0, fine
    before = [b.data.copy() for b in solver.net.learnable_params]
    with pytest.raises(jitnet.SolverError, match=r"solver.prototxt: lr_policy 'poly' gives a NaN "
                                                 r"learning rate at iteration 6 .*power: 0.5, max_iter: 5"):
        solver.step(1)                             # iteration 6: (−0.2)^0.5
    assert solver.iter == 6
    for a, b in zip(before, solver.net.learnable_params):
        np.testing.assert_array_equal(a, b.data)   # the update was not applied


def test_multistep_solver_state_and_catch_up(tmp_path):
    _, _, path = regression_solver(tmp_path)
    path.write_text(path.read_text().replace('lr_policy: "step" gamma: 0.5 stepsize: 2',
                                             'lr_policy: "multistep" gamma: 0.5 stepvalue: 2 stepvalue: 3'))
    solver = jitnet.get_solver(str(path))
    solver.iter, solver.current_step = 10, 0       # as restored from a state with the counter at 0
    base_lr = float(np.float32(0.1))               # caffe.proto's base_lr is a float
    assert solver.learning_rate() == base_lr * 0.5  # one step this iteration
    solver.step(1)
    assert solver.current_step == 1
    assert solver.learning_rate() == base_lr * 0.25
    solver.step(1)
    assert solver.current_step == 2


def test_step_policy_current_step_is_in_the_snapshot(tmp_path):
    _, _, path = regression_solver(tmp_path, f'snapshot_prefix: "{tmp_path / "snap"}"')
    solver = jitnet.get_solver(str(path))          # step, stepsize 2
    solver.step(5)                                 # the last rate was at iteration 4: 4 / 2
    _, state = solver.snapshot()
    from jitnet.proto import read_binary
    assert read_binary(state, pb.SolverState()).current_step == 2


# -- the same kind in Adam's bias correction ----------------------------------------------------------------
def adam(tmp_path, momentum, momentum2):
    _, _, path = regression_solver(tmp_path)
    path.write_text(path.read_text().replace("momentum: 0.9", "") +
                    f' type: "Adam" momentum: {momentum} momentum2: {momentum2}')
    return jitnet.get_solver(str(path))


@pytest.mark.parametrize("b1,b2,t", [("0.9", "0.999", 1), ("0.5", "0.75", 3), ("0", "0", 1),
                                     ("0.9", "1", 5)])
def test_adam_correction_matches_the_formula(tmp_path, b1, b2, t):
    solver = adam(tmp_path, b1, b2)
    beta1, beta2 = float(np.float32(b1)), float(np.float32(b2))       # float fields
    assert solver.correction(t) == math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)


@pytest.mark.parametrize("b1,b2,value", [("1", "0.999", "inf"), ("0.9", "2", "nan"),
                                         ("0.9", "1e+20", "nan"), ("nan", "0.999", "nan")])
def test_adam_correction_that_is_not_finite_is_a_solver_error(tmp_path, b1, b2, value):
    """momentum 1 was a ZeroDivisionError, momentum2 above 1 a math domain error."""
    solver = adam(tmp_path, b1, b2)
    with pytest.raises(jitnet.SolverError, match=rf"Adam's bias correction .* is {value} at iteration 0 "
                                                 rf"\(t = 1, momentum: {re.escape(b1)}, momentum2: {re.escape(b2)}\)"):
        solver.step(1)
    assert solver.iter == 0
