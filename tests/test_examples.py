"""The examples run as documented. (In a subprocess: the custom layer example registers a
type, which must not leak into this process's registry.)"""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_custom_layer_example():
    result = subprocess.run([sys.executable, str(REPO / "examples" / "custom_layer.py")],
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "gradient check of SignedSquare passed" in result.stdout
    assert "y = [[-4.0, -0.25, 0.0], [0.25, 1.0, 9.0]]" in result.stdout   # x·|x| of the input


MODELS = REPO.parent / "shared" / "models"


def _run_caffe_example(which, tmp_path, iterations, *extra):
    if not MODELS.is_dir():
        import pytest
        pytest.skip(f"{MODELS} is absent (Caffe's example files sit beside the project in development)")
    result = subprocess.run([sys.executable, str(REPO / "examples" / "digits" / "caffe_mnist_examples.py"),
                             which, "--models", str(MODELS), "--work", str(tmp_path),
                             "--iterations", str(iterations), *extra],
                            capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    losses = [float(line.rsplit(" ", 1)[1]) for line in result.stdout.splitlines()
              if line.startswith("iteration ")]
    return losses, result.stdout


def test_caffes_autoencoder_trains_on_the_digits(tmp_path):
    """Caffe's mnist_autoencoder, unchanged, on the digits upscaled to 28x28: the loss falls."""
    losses, _ = _run_caffe_example("autoencoder", tmp_path, 100)
    assert len(losses) == 3 and losses[-1] < 0.5 * losses[0], losses


def test_caffes_siamese_net_trains_on_the_digits(tmp_path):
    """Caffe's mnist_siamese, unchanged (LevelDB pairs, shared weights, ContrastiveLoss): the loss
    falls, and the 2-D feature plot is written."""
    import pytest
    pytest.importorskip("plyvel", reason="Caffe's siamese example reads LevelDB (the leveldb extra)")
    losses, out = _run_caffe_example("siamese", tmp_path, 200, "--plot", "siamese.png")
    assert losses[-1] < 0.5 * losses[0], losses
    assert (tmp_path / "siamese.png").stat().st_size > 10_000
