"""The character-level LSTM language model of examples/charlm (issue 13): its nets, trained by
`jitnet train` on a small corpus of the standard library's source, beat the unigram model's bits
per character (computed here from the data with numpy), and the sample script, which carries
the LSTM state through expose_hidden one character at a time, gives the same probabilities as
the net run over the whole sequence at once, and writes vocabulary characters."""
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from google.protobuf import text_format

import jitnet
from jitnet.proto import pb

REPO = Path(__file__).resolve().parents[1]
CHARLM = REPO / "examples" / "charlm"


def _import(name):
    """examples/charlm/NAME.py as the module charlm_NAME (a plain ``import prepare`` would
    take the place of the digits example's prepare module for the tests that run later)."""
    spec = importlib.util.spec_from_file_location(f"charlm_{name}", CHARLM / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


prepare, sample = _import("prepare"), _import("sample")

TINY = dict(num=16, steps=25, train_chars=300_000, test_chars=50_000)
TINY_H, TINY_E, TINY_ITER = 96, 16, 600


def _edit(path, message, change):
    """The prototxt ``path`` parsed into ``message``, changed by ``change``, as text."""
    text_format.Parse(path.read_text(), message)
    change(message)
    return text_format.MessageToString(message)


def _shrink_layers(net, steps):
    for layer in net.layer:
        if layer.type == "HDF5Data":
            layer.hdf5_data_param.batch_size = steps
        elif layer.type == "Embed":
            layer.embed_param.num_output = TINY_E
        elif layer.type == "LSTM":
            layer.recurrent_param.num_output = TINY_H
        elif layer.type == "Input":
            for shape in layer.input_param.shape[2:]:        # h_0, c_0: (1, 1, H)
                shape.dim[2] = TINY_H


def _unigram_bits(targets):
    """The entropy of the characters' own frequencies, in bits: no unigram model does better."""
    counts = np.bincount(targets.astype(np.int64).ravel())
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A working directory with the example's files as the README lays them out, a small
    corpus and a small net, trained by `jitnet train` on the example's solver file (fewer
    iterations)."""
    work = tmp_path_factory.mktemp("charlm")
    here = work / "examples" / "charlm"
    stats = prepare.prepare(str(here / "data"), **TINY)

    def solver(s):
        s.max_iter, s.test_interval, s.snapshot = TINY_ITER, TINY_ITER, TINY_ITER
        s.test_iter[:] = [stats["test"]["batches_per_pass"]]
        s.base_lr, s.stepsize, s.display = 0.03, TINY_ITER, 100

    (here / "charlm_solver.prototxt").write_text(
        _edit(CHARLM / "charlm_solver.prototxt", pb.SolverParameter(), solver))
    for name in ("charlm_train_test.prototxt", "charlm_deploy.prototxt"):
        (here / name).write_text(_edit(CHARLM / name, pb.NetParameter(),
                                       lambda net: _shrink_layers(net, TINY["steps"])))
    result = subprocess.run([sys.executable, "-m", "jitnet", "train", "--solver",
                             "examples/charlm/charlm_solver.prototxt"], cwd=work,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return work, stats, result.stderr


def test_the_lstm_beats_the_unigram_model(trained):
    work, stats, log = trained
    with h5py.File(work / "examples" / "charlm" / "data" / "test.h5", "r") as f:
        unigram = _unigram_bits(f["target"][...])
    # The loss weight 1/ln 2 makes the weighted test loss read in bits per character.
    found = re.findall(r"Test net output #\d+: loss = ([0-9.]+) \(\* 1\.4427 = ([0-9.]+) loss\)", log)
    assert found, log[-3000:]
    nats, bits = map(float, found[-1])
    assert bits == pytest.approx(nats / np.log(2), rel=1e-4)
    assert 3.5 < unigram < 5.5, unigram                       # source code's characters
    # (measured: 3.33 bits per character against 4.75)
    assert bits < unigram - 1.0, f"test loss {bits} bits/char, unigram entropy {unigram}"
    train_losses = [float(v) for v in re.findall(r"Iteration \d+ \([^)]*\), loss = ([0-9.]+)", log)]
    assert train_losses[-1] < train_losses[0] - 2.0, train_losses


def test_prepare_is_deterministic_and_laid_out_as_caffe_reads_it(trained, tmp_path):
    work, stats, _ = trained
    data = work / "examples" / "charlm" / "data"
    again = prepare.prepare(str(tmp_path), **TINY)
    assert again == stats
    for split in ("train", "test"):
        with h5py.File(data / f"{split}.h5", "r") as a, h5py.File(tmp_path / f"{split}.h5", "r") as b:
            for name in ("cont", "input", "target"):
                assert np.array_equal(a[name][...], b[name][...]), (split, name)
            x, y, cont = (a[name][...].astype(np.int64) for name in ("input", "target", "cont"))
        rows = stats[split]["rows"]
        assert x.shape == y.shape == cont.shape == (rows, TINY["num"])
        assert rows % TINY["steps"] == 0
        assert np.all(cont[0] == 0) and set(np.unique(cont)) == {0, 1}
        # within a sequence the target is the next input
        same = cont[1:] == 1
        assert np.array_equal(y[:-1][same], x[1:][same])
    vocabulary = json.loads((data / "vocab.json").read_text())
    assert len(vocabulary) == 98 and len(set(vocabulary)) == 98 and "\n" in vocabulary


def test_sampling_carries_the_state_through_expose_hidden(trained):
    work, _, _ = trained
    here = work / "examples" / "charlm"
    weights = str(here / "snapshots" / f"charlm_iter_{TINY_ITER}.caffemodel")
    vocabulary, index = sample.load_vocabulary(here / "data" / "vocab.json")
    net = jitnet.Net(str(here / "charlm_deploy.prototxt"), jitnet.TEST, weights=weights)

    # One step at a time with the state carried, against one forward over the whole sequence.
    text = "def f(x):\n    return x + 1\n"
    codes = np.array([index[c] for c in text], dtype=np.float32)
    steps = []
    for k, code in enumerate(codes):
        out = net.forward(input=np.full((1, 1), code), cont=np.full((1, 1), float(k > 0)),
                          h_0=net.blobs["h_T"].data.copy() if k else np.zeros((1, 1, TINY_H)),
                          c_0=net.blobs["c_T"].data.copy() if k else np.zeros((1, 1, TINY_H)))
        steps.append(out["probs"][0, 0].copy())
    cont = np.ones((len(codes), 1), np.float32)
    cont[0] = 0

    def over_the_text(net_param):            # T = len(text): the LSTM's T is fixed at setup
        for shape in net_param.layer[0].input_param.shape[:2]:
            shape.dim[0] = len(codes)
    sequence = here / "deploy_whole_text.prototxt"
    sequence.write_text(_edit(here / "charlm_deploy.prototxt", pb.NetParameter(), over_the_text))
    net = jitnet.Net(str(sequence), jitnet.TEST, weights=weights)
    whole = net.forward(input=codes[:, None], cont=cont, h_0=np.zeros((1, 1, TINY_H)),
                        c_0=np.zeros((1, 1, TINY_H)))["probs"][:, 0]
    np.testing.assert_allclose(np.array(steps), whole, rtol=1e-4, atol=1e-6)

    # The script itself.
    result = subprocess.run([sys.executable, str(CHARLM / "sample.py"), "--weights", weights,
                             "--model", str(here / "charlm_deploy.prototxt"),
                             "--vocab", str(here / "data" / "vocab.json"),
                             "--prime", "import ", "--length", "200", "--seed", "3"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    written = result.stdout[:-1]                                 # (print's newline)
    assert written.startswith("import ") and len(written) == len("import ") + 200
    assert set(written) <= set(vocabulary)
    again = sample.sample(jitnet.Net(str(here / "charlm_deploy.prototxt"), jitnet.TEST,
                                     weights=weights), vocabulary, "import ", 200, seed=3)
    assert again == written                                      # the seed fixes the draws


@pytest.mark.slow
def test_the_documented_run(tmp_path):
    """The README's commands as written (the full corpus, 3000 iterations: minutes)."""
    work = tmp_path
    here = work / "examples" / "charlm"
    here.mkdir(parents=True)
    for name in ("charlm_solver.prototxt", "charlm_train_test.prototxt", "charlm_deploy.prototxt"):
        (here / name).write_text((CHARLM / name).read_text())
    stats = prepare.prepare(str(here / "data"))
    result = subprocess.run([sys.executable, "-m", "jitnet", "train", "--solver",
                             "examples/charlm/charlm_solver.prototxt"], cwd=work,
                            capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stderr[-3000:]
    bits = float(re.findall(r"Test net output #\d+: loss = [0-9.]+ \(\* 1\.4427 = ([0-9.]+) loss\)",
                            result.stderr)[-1])
    assert bits < stats["unigram_bits_per_char"]["test"] - 2.0
    result = subprocess.run([sys.executable, str(CHARLM / "sample.py"), "--weights",
                             str(here / "snapshots" / "charlm_iter_3000.caffemodel"),
                             "--vocab", str(here / "data" / "vocab.json"), "--length", "100"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
