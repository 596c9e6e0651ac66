"""The jitnet command: the digits main job end to end, test, time, device_query, resume
and the errors a user meets."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from jitnet import cli

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "examples" / "digits"


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """A working directory holding the digits data where the example nets look for it."""
    pytest.importorskip("sklearn", reason="the digits data ships with scikit-learn (the examples extra)")
    sys.path.insert(0, str(DIGITS))
    try:
        import prepare
    finally:
        sys.path.pop(0)
    work = tmp_path_factory.mktemp("digits")
    prepare.prepare(str(work / "examples" / "digits" / "data"))
    for name in os.listdir(DIGITS):
        if name.endswith(".prototxt"):
            text = (DIGITS / name).read_text()
            (work / "examples" / "digits" / name).write_text(text)
    return work


def run_cli(args, cwd):
    return subprocess.run([sys.executable, "-m", "jitnet", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def test_train_logreg_reaches_accuracy(digits):
    result = run_cli(["train", "--solver", "examples/digits/logreg_solver.prototxt"], digits)
    assert result.returncode == 0, result.stderr[-3000:]
    final = re.search(r"Test net #0 at iteration 600: accuracy = ([0-9.]+)", result.stdout)
    assert final, result.stdout
    assert float(final.group(1)) >= 0.93
    assert "Iteration 200, Testing net (#0)" in result.stderr     # test_interval 200
    assert "train [" in result.stderr                             # progress bar
    snaps = digits / "examples" / "digits" / "snapshots"
    assert (snaps / "logreg_iter_600.caffemodel").exists()
    assert (snaps / "logreg_iter_600.solverstate").exists()

    scored = run_cli(["test", "--model", "examples/digits/logreg_train_test.prototxt",
                      "--weights", "examples/digits/snapshots/logreg_iter_600.caffemodel",
                      "--iterations", "3"], digits)
    assert scored.returncode == 0, scored.stderr[-3000:]
    accuracy = float(re.search(r"^accuracy = ([0-9.]+)", scored.stdout, re.M).group(1))
    assert accuracy == pytest.approx(float(final.group(1)), abs=1e-4)


def test_train_lenet_reaches_accuracy(digits):
    """The LeNet-style convolutional net on the digits (issue 8's example): at least 0.98."""
    result = run_cli(["train", "--solver", "examples/digits/lenet_solver.prototxt"], digits)
    assert result.returncode == 0, result.stderr[-3000:]
    final = re.search(r"Test net #0 at iteration 1500: accuracy = ([0-9.]+)", result.stdout)
    assert final, result.stdout
    assert float(final.group(1)) >= 0.98


def test_time_prints_every_layer(digits):
    result = run_cli(["time", "-model", "examples/digits/mlp_train_test.prototxt",
                      "-iterations", "3"], digits)
    assert result.returncode == 0, result.stderr[-3000:]
    for layer in ("data", "ip1", "relu1", "drop1", "ip2", "tanh2", "ip3", "loss"):
        assert re.search(rf"^\s*{layer}\tforward: [0-9.]+ ms\.$", result.stdout, re.M), layer
        assert re.search(rf"^\s*{layer}\tbackward: [0-9.]+ ms\.$", result.stdout, re.M), layer
    assert "Average Forward-Backward:" in result.stdout


def test_weights_and_snapshot_together_is_an_error(digits, capsys):
    code = cli.main(["train", "--solver", str(DIGITS / "logreg_solver.prototxt"),
                     "--weights", "a.caffemodel", "--snapshot", "b.solverstate"])
    assert code == 1
    assert "not both" in capsys.readouterr().err


def test_syntax_error_names_file_line_and_column(tmp_path, capsys):
    bad = tmp_path / "bad.prototxt"
    bad.write_text('name: "x"\nlayer {\n  name: "ip" type: "InnerProduct"\n  bottom "data"\n}\n')
    code = cli.main(["test", "--model", str(bad), "--weights", "w.caffemodel"])
    assert code == 1
    err = capsys.readouterr().err
    assert re.search(rf"{re.escape(str(bad))}:4:\d+:", err), err


def test_device_query_without_device_says_so():
    # Under the CUDA simulator (the test suite's setting) numba reports a device; without it
    # this machine has none. Either way the command must answer, not crash.
    result = subprocess.run([sys.executable, "-m", "jitnet", "device_query"], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "NUMBA_ENABLE_CUDASIM": "0"})
    assert result.returncode in (0, 1), result.stderr
    assert ("No CUDA device" in result.stdout) or ("Compute capability" in result.stdout)


def test_train_on_the_gpu(tmp_path):
    """--gpu 0 trains in GPU mode (the CUDA simulator in the test suite, which the
    subprocess inherits from conftest's environment)."""
    sys.path.insert(0, str(REPO / "tests"))
    from test_solver import classifier_solver
    path = classifier_solver(tmp_path, "test_initialization: false")
    path.write_text(path.read_text().replace("max_iter: 30", "max_iter: 1").replace("test_iter: 2", "test_iter: 1")
                    .replace("test_interval: 10", "test_interval: 1"))
    result = run_cli(["train", "--solver", str(path), "--gpu", "0"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Use GPU with device ID 0" in result.stderr
    assert re.search(r"Test net #0 at iteration 1: accuracy = [0-9.]+", result.stdout)
