"""Read a training log (``jitnet train --log FILE``, or Caffe's own log) and draw
the training loss and the test scores against the iteration.

    jitnet plot train.log -o curves.png
"""
import os
import re

from .errors import JitnetError

_NUMBER = r"([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|nan|inf))"
_TRAIN = re.compile(rf"Iteration (\d+)(?: \([^)]*\))?, loss = {_NUMBER}")
_LR = re.compile(rf"Iteration (\d+), lr = {_NUMBER}")
_TESTING = re.compile(r"Iteration (\d+), Testing net \(#(\d+)\)")
_TEST_OUTPUT = re.compile(rf"Test net output #\d+: (\S+) = {_NUMBER}( \(\* .* loss\))?")


def parse_log(path):
    """{'train': [(iter, loss)], 'lr': [(iter, lr)], 'test': {(net, name): [(iter, value)]}, 'test_losses': set}."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise JitnetError(f"{path}: cannot read the log ({e.strerror})") from None
    except UnicodeDecodeError:
        raise JitnetError(f"{path}: not a text file; give the log written by 'jitnet train --log'") from None
    curves = {"train": [], "lr": [], "test": {}, "test_losses": set()}
    test_iter = test_net = None
    for line in lines:
        m = _TESTING.search(line)
        if m:
            test_iter, test_net = int(m.group(1)), int(m.group(2))
            continue
        m = _TEST_OUTPUT.search(line)
        if m and test_iter is not None:
            key = (test_net, m.group(1))
            curves["test"].setdefault(key, []).append((test_iter, float(m.group(2))))
            if m.group(3):
                curves["test_losses"].add(key)
            continue
        m = _LR.search(line)
        if m:
            curves["lr"].append((int(m.group(1)), float(m.group(2))))
            continue
        m = _TRAIN.search(line)
        if m:
            curves["train"].append((int(m.group(1)), float(m.group(2))))
    if not curves["train"] and not curves["test"]:
        raise JitnetError(f"{path}: no training or test lines found (is it a jitnet or Caffe training log?)")
    return curves


def plot_log(path, output):
    """Draw the curves of ``path`` into the image file ``output``; returns the parsed curves."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise JitnetError("jitnet plot needs matplotlib: pip install 'jitnet[plot]'") from None
    curves = parse_log(path)
    kind = output.rsplit(".", 1)[-1].lower() if "." in os.path.basename(output) else ""
    if kind not in plt.gcf().canvas.get_supported_filetypes():
        plt.close("all")
        raise JitnetError(f"-o {output}: unknown image format '{kind}'; use one of "
                          + ", ".join(sorted(plt.gcf().canvas.get_supported_filetypes())))
    plt.close("all")
    folder = os.path.dirname(output)
    if folder and not os.path.isdir(folder):
        raise JitnetError(f"-o {output}: the folder '{folder}' does not exist")
    scores = {k: v for k, v in curves["test"].items() if k not in curves["test_losses"]}
    rows = 2 if scores else 1
    fig, axes = plt.subplots(rows, 1, figsize=(8, 3.2 * rows), sharex=True, squeeze=False)
    ax = axes[0][0]
    if curves["train"]:
        it, loss = zip(*curves["train"])
        ax.plot(it, loss, label="train loss (smoothed)", color="black", linewidth=1)
    for (net, name), points in sorted(curves["test"].items()):
        if (net, name) in curves["test_losses"]:
            it, value = zip(*points)
            ax.plot(it, value, "o-", label=f"test #{net} {name}", markersize=4)
    ax.set_ylabel("loss")
    ax.set_title(f"Training curves: {path}")
    ax.grid(alpha=0.3)
    ax.legend()
    if scores:
        ax2 = axes[1][0]
        for (net, name), points in sorted(scores.items()):
            it, value = zip(*points)
            ax2.plot(it, value, "o-", label=f"test #{net} {name}", markersize=4)
        ax2.set_ylabel("test score")
        ax2.grid(alpha=0.3)
        ax2.legend()
    axes[-1][0].set_xlabel("iteration")
    fig.tight_layout()
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return curves
