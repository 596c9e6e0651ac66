"""scikit-learn's handwritten digits (1,797 real 8x8 images, shipped with scikit-learn) for
the pycaffe examples: as 64 features in [0, 1] (logistic regression), or as MNIST frames
(each digit upscaled to 20x20 and centred in 28x28, values in [0, 1]) for LeNet. Every
fifth image is a test image, as in examples/digits/prepare.py."""
import os
import tempfile

import h5py
import numpy as np
from scipy import ndimage


def load(frames=False):
    """(train images, train labels, test images, test labels), float32."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    images = mnist_frames(images) if frames else images.reshape(len(images), 1, 8, 8)
    labels = digits.target.astype(np.float32)
    test = np.arange(len(labels)) % 5 == 0
    return images[~test], labels[~test], images[test], labels[test]


def mnist_frames(images):
    """N x 8 x 8 images in [0, 1] as N x 1 x 28 x 28: upscaled to 20x20 (bilinear, pixel
    areas aligned) and centred in a 28x28 frame, as MNIST frames its digits."""
    out = np.zeros((len(images), 1, 28, 28), np.float32)
    for i, image in enumerate(images):
        big = ndimage.zoom(image, 20 / 8, order=1, mode="grid-constant", grid_mode=True)
        out[i, 0, 4:24, 4:24] = np.clip(big[:20, :20], 0, 1)
    return out


def write_hdf5(folder, name, images, labels):
    """images and labels as /data and /label of FOLDER/NAME.h5, and the list FOLDER/NAME.txt
    naming it (the source of an HDF5Data layer). Returns the list's path."""
    os.makedirs(folder, exist_ok=True)
    h5 = os.path.abspath(os.path.join(folder, f"{name}.h5"))
    with h5py.File(h5, "w") as f:
        f.create_dataset("data", data=images)
        f.create_dataset("label", data=labels)
    listing = os.path.join(folder, f"{name}.txt")
    with open(listing, "w") as f:
        f.write(h5 + "\n")
    return listing


LENET = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared",
                     "models", "lenet_mnist")


def lenet_files(args, prefix):
    """(deploy prototxt, weights, output folder) from the command line [DEPLOY WEIGHTS [OUT]]:
    by default Caffe's trained LeNet in ../shared/models/lenet_mnist beside the repository
    and a new temporary folder."""
    model_def = args[0] if len(args) > 1 else os.path.join(LENET, "lenet.prototxt")
    weights = args[1] if len(args) > 1 else os.path.join(LENET, "lenet_iter_10000.caffemodel")
    out = args[2] if len(args) > 2 else tempfile.mkdtemp(prefix=prefix)
    os.makedirs(out, exist_ok=True)
    return model_def, weights, out


def work_folder_and_iterations(args, prefix, iterations):
    """(work folder, iterations) from the command line [WORK_FOLDER [ITERATIONS]]: by default
    a new temporary folder and ``iterations``."""
    work = args[0] if args else tempfile.mkdtemp(prefix=prefix)
    os.makedirs(work, exist_ok=True)
    return work, int(args[1]) if len(args) > 1 else iterations
