"""Caffe's own MNIST autoencoder and siamese examples, unchanged, trained on the digits.

Caffe ships `examples/mnist/mnist_autoencoder.prototxt` and
`examples/siamese/mnist_siamese_train_test.prototxt` with their solvers; they read MNIST
from an LMDB (the autoencoder) and from LevelDBs of image pairs (the siamese net, as
Caffe's `create_mnist_siamese.sh` writes them). This script writes those databases from
scikit-learn's handwritten digits, upscaled from 8x8 to 20x20 and centred in 28x28 as
MNIST frames its digits, at the paths the unchanged files name (relative to a working
folder, as Caffe's are relative to its root), copies the unchanged net and solver files
there, and trains them with jitnet for a few hundred iterations:

    python examples/digits/caffe_mnist_examples.py autoencoder --models CAFFE_MODELS
    python examples/digits/caffe_mnist_examples.py siamese --models CAFFE_MODELS [--plot siamese.png]

CAFFE_MODELS is a folder holding `mnist_autoencoder/` and `mnist_siamese/` with Caffe's
files (in this project's development checkout: ../shared/models). The siamese databases
are LevelDB, as Caffe's: `pip install 'jitnet[leveldb]'`. `--plot` draws the 2-D features
the siamese net learned for the test digits, one colour per class, as Caffe's example
notebook does. The losses are printed every 50 iterations; they fall.
"""
import argparse
import os
import shutil
import sys

import numpy as np

import jitnet
from jitnet.data.db import open_writer
from jitnet.io import array_to_datum

HERE = os.path.dirname(os.path.abspath(__file__))


def mnist_like_digits():
    """(train images, train labels, test images, test labels): uint8 (N, 1, 28, 28), the
    digits upscaled to 20x20 and centred in 28x28; prepare.py's split (every fifth: test)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        sys.exit("this example needs scikit-learn: pip install -e '.[examples]'")
    from PIL import Image
    digits = load_digits()
    frames = np.zeros((len(digits.images), 1, 28, 28), np.uint8)
    for k, image in enumerate(digits.images):
        grey = Image.fromarray(np.rint(image * (255.0 / 16.0)).astype(np.uint8), "L")
        frames[k, 0, 4:24, 4:24] = np.asarray(grey.resize((20, 20), Image.BILINEAR))
    test = np.arange(len(frames)) % 5 == 0
    return frames[~test], digits.target[~test], frames[test], digits.target[test]


def _fresh(path):
    if os.path.isdir(path):
        shutil.rmtree(path)                     # a database from an earlier run
    return path


def write_images(path, images, labels, backend):
    writer = open_writer(_fresh(path), backend)
    for k, (image, label) in enumerate(zip(images, labels)):
        writer.put(f"{k:08d}".encode(), array_to_datum(image, int(label)).SerializeToString())
    writer.commit()
    writer.close()


def write_pairs(path, images, labels, rng, backend="leveldb"):
    """Caffe's create_mnist_siamese: each record two random images stacked as 2 channels,
    label 1 when they show the same digit, else 0."""
    writer = open_writer(_fresh(path), backend)
    for k in range(len(images)):
        i, j = rng.integers(0, len(images), 2)
        pair = np.concatenate([images[i], images[j]])
        writer.put(f"{k:08d}".encode(), array_to_datum(pair, int(labels[i] == labels[j])).SerializeToString())
    writer.commit()
    writer.close()


def set_up(which, models, work):
    """Databases and the unchanged files at the paths they name, under ``work``."""
    train_x, train_y, test_x, test_y = mnist_like_digits()
    if which == "autoencoder":
        files = {"mnist_autoencoder/mnist_autoencoder.prototxt": "examples/mnist/mnist_autoencoder.prototxt",
                 "mnist_autoencoder/mnist_autoencoder_solver.prototxt":
                     "examples/mnist/mnist_autoencoder_solver.prototxt"}
        os.makedirs(os.path.join(work, "examples", "mnist"), exist_ok=True)
        write_images(os.path.join(work, "examples/mnist/mnist_train_lmdb"), train_x, train_y, "lmdb")
        write_images(os.path.join(work, "examples/mnist/mnist_test_lmdb"), test_x, test_y, "lmdb")
    else:
        files = {"mnist_siamese/mnist_siamese_train_test.prototxt":
                 "examples/siamese/mnist_siamese_train_test.prototxt",
                 "mnist_siamese/mnist_siamese_solver.prototxt": "examples/siamese/mnist_siamese_solver.prototxt"}
        os.makedirs(os.path.join(work, "examples", "siamese"), exist_ok=True)
        rng = np.random.default_rng(1701)
        write_pairs(os.path.join(work, "examples/siamese/mnist_siamese_train_leveldb"), train_x, train_y, rng)
        write_pairs(os.path.join(work, "examples/siamese/mnist_siamese_test_leveldb"), test_x, test_y, rng)
    for source, target in files.items():
        shutil.copyfile(os.path.join(models, source), os.path.join(work, target))
    return [target for target in files.values() if "solver" in target][0], (test_x, test_y)


def train(solver_file, iterations, every=50):
    """Train with the unchanged solver for ``iterations`` (its max_iter is for full MNIST);
    returns the smoothed loss at each report."""
    solver = jitnet.get_solver(solver_file)
    solver.param.test_initialization = False           # a short run: no test pass at 0
    losses = []
    while solver.iter < iterations:
        solver.step(1 if solver.iter == 0 else min(every - solver.iter % every, iterations - solver.iter))
        losses.append(solver.smoothed_loss)
        print(f"iteration {solver.iter}: loss {solver.smoothed_loss:.4f}", flush=True)
    return solver, losses


def siamese_features(solver, images):
    """The 2-D features (blob 'feat') of ``images`` through the trained siamese net."""
    net = solver.test_nets[0]
    data, batch = net.blobs["pair_data"], net.blobs["pair_data"].shape[0]
    feats = []
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch].astype(np.float32) * 0.00390625
        pairs = np.zeros(data.shape, np.float32)
        pairs[:len(chunk), 0] = chunk[:, 0]
        data.data[...] = pairs
        net.forward_from_to(start=list(net.layer_dict).index("slice_pair"))
        feats.append(net.blobs["feat"].data[:len(chunk)].copy())
    return np.concatenate(feats)


def plot_features(features, labels, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 6))
    for digit in range(10):
        at = labels == digit
        ax.scatter(features[at, 0], features[at, 1], s=8, label=str(digit))
    ax.legend(markerscale=2, fontsize=8)
    ax.set_title("siamese features of the test digits")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=["autoencoder", "siamese"])
    parser.add_argument("--models", default=os.path.join(HERE, "..", "..", "..", "shared", "models"),
                        help="the folder with Caffe's mnist_autoencoder/ and mnist_siamese/ files")
    parser.add_argument("--work", default=None, help="working folder (default examples/digits/work_<which>)")
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--plot", default=None, help="siamese: write the 2-D feature plot here")
    args = parser.parse_args(argv)
    work = os.path.abspath(args.work or os.path.join(HERE, f"work_{args.which}"))
    models = os.path.abspath(args.models)
    for sub in ("mnist_autoencoder", "mnist_siamese"):
        if not os.path.isdir(os.path.join(models, sub)):
            sys.exit(f"{models} has no {sub}/ folder: give --models, a folder with Caffe's example files")
    os.makedirs(work, exist_ok=True)
    jitnet.set_random_seed(1701)
    solver_file, (test_x, test_y) = set_up(args.which, models, work)
    os.chdir(work)                              # Caffe's files name paths relative to its root
    solver, losses = train(solver_file, args.iterations)
    print(f"loss fell from {losses[0]:.4f} to {losses[-1]:.4f}")
    if args.which == "siamese" and args.plot:
        plot_features(siamese_features(solver, test_x), test_y, os.path.join(work, args.plot))
        print(f"wrote {os.path.join(work, args.plot)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
