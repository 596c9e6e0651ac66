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
