"""Every solver type and training knob against an independent float64 re-computation
of Caffe's update rules (written here from CAFFE-NOTES, not calling jitnet's code):
lr policy, lr_mult, decay_mult, L2 and L1 regularization, clip_gradients, iter_size."""
import math

import numpy as np
import pytest

import jitnet
from test_solver import REGRESSION_NET, write_h5


ROWS = 12


def make_problem(tmp_path, solver_text):
    rng = np.random.default_rng(21)
    x = rng.normal(size=(ROWS, 3)).astype(np.float32)
    t = rng.normal(size=(ROWS, 2)).astype(np.float32)
    write_h5(tmp_path / "d.h5", data=x, target=t)
    (tmp_path / "list.txt").write_text(str(tmp_path / "d.h5") + "\n")
    (tmp_path / "net.prototxt").write_text(REGRESSION_NET.format(source=tmp_path / "list.txt", bias_decay=0.5))
    (tmp_path / "solver.prototxt").write_text(f'net: "{tmp_path / "net.prototxt"}" {solver_text}')
    return x.astype(np.float64), t.astype(np.float64), tmp_path / "solver.prototxt"


def caffe_reference(kind, x, t, params, iters, s):
    """Caffe's iteration in float64: accumulate iter_size batches, clip, normalize,
    regularize, update. ``params`` = [W, b]; ``s`` holds the solver settings."""
    lr_mults, decay_mults = [1.0, 2.0], [1.0, 0.5]
    hist = [[np.zeros_like(p) for p in params] for _ in range(2)]
    batch = 0
    for it in range(iters):
        grads = [np.zeros_like(p) for p in params]
        for _ in range(s.get("iter_size", 1)):
            rows = [(batch * 4 + r) % ROWS for r in range(4)]
            batch += 1
            w, b = params
            dy = (x[rows] @ w.T + b - t[rows]) / 4.0
            grads[0] += dy.T @ x[rows]
            grads[1] += dy.sum(axis=0)
        clip = s.get("clip_gradients", -1)
        if clip > 0:
            norm = math.sqrt(sum((g ** 2).sum() for g in grads))
            if norm > clip:
                grads = [g * clip / norm for g in grads]
        rate = s["base_lr"] * s["gamma"] ** (it // s["stepsize"])
        for i, (p, g) in enumerate(zip(params, grads)):
            g = g / s.get("iter_size", 1)
            decay = s["weight_decay"] * decay_mults[i]
            g = g + decay * (np.sign(p) if s.get("regularization_type") == "L1" else p)
            lr = rate * lr_mults[i]
            h, h2 = hist[0][i], hist[1][i]
            mu, delta = s.get("momentum", 0.0), s.get("delta", 1e-8)
            if kind == "SGD":
                h[...] = mu * h + lr * g
                update = h.copy()
            elif kind == "Nesterov":
                previous = h.copy()
                h[...] = mu * h + lr * g
                update = (1 + mu) * h - mu * previous
            elif kind == "AdaGrad":
                h[...] = h + g * g
                update = lr * g / (np.sqrt(h) + delta)
            elif kind == "RMSProp":
                rho = s["rms_decay"]
                h[...] = rho * h + (1 - rho) * g * g
                update = lr * g / (np.sqrt(h) + delta)
            elif kind == "AdaDelta":
                h[...] = mu * h + (1 - mu) * g * g
                step = g * np.sqrt((h2 + delta) / (h + delta))
                h2[...] = mu * h2 + (1 - mu) * step * step
                update = lr * step
            elif kind == "Adam":
                b1, b2, n = mu, s["momentum2"], it + 1
                h[...] = b1 * h + (1 - b1) * g
                h2[...] = b2 * h2 + (1 - b2) * g * g
                update = lr * math.sqrt(1 - b2 ** n) / (1 - b1 ** n) * h / (np.sqrt(h2) + delta)
            p -= update
    return params, hist


BASE = dict(base_lr=0.05, gamma=0.5, stepsize=3, weight_decay=0.02)
CASES = [
    ("SGD", dict(momentum=0.9)),
    ("Nesterov", dict(momentum=0.8)),
    ("AdaGrad", dict(delta=1e-6)),
    ("RMSProp", dict(rms_decay=0.9, delta=1e-6)),
    ("AdaDelta", dict(momentum=0.95, delta=1e-6, base_lr=1.0)),
    ("Adam", dict(momentum=0.9, momentum2=0.999, delta=1e-8, base_lr=0.01)),
    ("SGD", dict(momentum=0.9, regularization_type="L1")),
    ("SGD", dict(momentum=0.5, clip_gradients=0.05)),
    ("SGD", dict(momentum=0.9, iter_size=2)),
    ("Adam", dict(momentum=0.9, momentum2=0.99, iter_size=3, clip_gradients=0.1, base_lr=0.01)),
]


def solver_text(kind, settings):
    lines = [f'type: "{kind}" lr_policy: "step" random_seed: 5']
    for key, value in settings.items():
        lines.append(f'{key}: "{value}"' if isinstance(value, str) else f"{key}: {value!r}")
    return " ".join(lines)


@pytest.mark.parametrize("kind,extra", CASES, ids=[f"{k}-{'-'.join(e)}" for k, e in CASES])
def test_updates_match_caffe_formulas(tmp_path, kind, extra):
    settings = {**BASE, **extra}
    x, t, path = make_problem(tmp_path, solver_text(kind, settings))
    solver = jitnet.get_solver(str(path))
    assert solver.type == kind
    params = [solver.net.params["ip"][j].data.astype(np.float64) for j in range(2)]
    # The float32 settings as the solver reads them (caffe.proto stores them as float).
    read = {k: getattr(solver.param, k) for k in settings if k != "regularization_type"}
    read["regularization_type"] = solver.param.regularization_type
    if kind == "RMSProp":
        read["rms_decay"] = solver.param.rms_decay
    expected, hist = caffe_reference(kind, x, t, params, 6, read)
    solver.step(6)
    for j in range(2):
        np.testing.assert_allclose(solver.net.params["ip"][j].data, expected[j], rtol=1e-4, atol=2e-6,
                                   err_msg=f"{kind} param {j}")
    n = len(solver.net.learnable_params)
    for k in range(solver.history_count):
        for j in range(2):
            np.testing.assert_allclose(solver.history[k * n + j].data, hist[k][j], rtol=1e-4, atol=2e-6,
                                       err_msg=f"{kind} history {k} of param {j}")


@pytest.mark.parametrize("cls,kind", [(jitnet.SGDSolver, "SGD"), (jitnet.NesterovSolver, "Nesterov"),
                                      (jitnet.AdaGradSolver, "AdaGrad"), (jitnet.RMSPropSolver, "RMSProp"),
                                      (jitnet.AdaDeltaSolver, "AdaDelta"), (jitnet.AdamSolver, "Adam")])
def test_pycaffe_solver_classes(tmp_path, cls, kind):
    _, _, path = make_problem(tmp_path, 'base_lr: 0.01 lr_policy: "fixed"')
    solver = cls(str(path))
    assert solver.type == kind
    assert len(solver.history) == len(solver.net.learnable_params) * (2 if kind in ("Adam", "AdaDelta") else 1)


@pytest.mark.parametrize("text,message", [
    ('type: "AdaGrad" momentum: 0.9', "momentum cannot be used with AdaGrad"),
    ('type: "RMSProp" momentum: 0.5', "momentum cannot be used with RMSProp"),
    ('type: "RMSProp" rms_decay: 1.5', "rms_decay must be in"),
    ('solver_type: ADAGRAD momentum: 0.9', "momentum cannot be used with AdaGrad"),
])
def test_solver_type_checks(tmp_path, text, message):
    _, _, path = make_problem(tmp_path, f'base_lr: 0.01 lr_policy: "fixed" {text}')
    with pytest.raises(jitnet.SolverError, match=message):
        jitnet.get_solver(str(path))


def test_legacy_solver_type_enum_picks_the_solver(tmp_path):
    _, _, path = make_problem(tmp_path, 'base_lr: 0.01 lr_policy: "fixed" solver_type: NESTEROV')
    assert isinstance(jitnet.get_solver(str(path)), jitnet.NesterovSolver)
