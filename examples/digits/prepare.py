"""Write scikit-learn's bundled handwritten digits (1,797 real 8×8 images, shipped
with scikit-learn, no download) to HDF5 for jitnet's HDF5Data layer.

The split is fixed: every fifth image (index % 5 == 0) is a test image, the
rest are training images (1,437 train, 360 test). Pixel values 0..16 are scaled
to [0, 1]. Writes examples/digits/data/{train,test}.h5 and the source lists
{train,test}.txt naming them (absolute paths, so the nets run from any directory).

    python examples/digits/prepare.py
"""
import os
import sys

import h5py
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")


def prepare(out_dir=DATA):
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        sys.exit("prepare.py needs scikit-learn: pip install -e '.[examples]'")
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    labels = digits.target.astype(np.float32)
    is_test = np.arange(len(labels)) % 5 == 0
    os.makedirs(out_dir, exist_ok=True)
    for split, rows in (("train", ~is_test), ("test", is_test)):
        h5_path = os.path.join(out_dir, f"{split}.h5")
        with h5py.File(h5_path, "w") as f:
            f.create_dataset("data", data=images[rows])
            f.create_dataset("label", data=labels[rows])
        with open(os.path.join(out_dir, f"{split}.txt"), "w") as f:
            f.write(h5_path + "\n")
        print(f"{split}: {rows.sum()} images -> {h5_path}")


if __name__ == "__main__":
    prepare(sys.argv[1] if len(sys.argv) > 1 else DATA)
