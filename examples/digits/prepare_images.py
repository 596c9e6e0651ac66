"""Write scikit-learn's handwritten digits as PNG files with Caffe's image lists, the
starting point of Caffe's own data path: images on disk -> convert_imageset -> an LMDB
-> compute_image_mean -> a train_val prototxt with Data layers and transform_param.

The split is prepare.py's (every fifth image is a test image). Pixels 0..16 become grey
levels 0..255. Writes, under examples/digits/data/images/:

    train/00000.png ...   test/00000.png ...   (8x8 grey PNGs)
    train.txt, test.txt                         ("train/00000.png 3" lines)

Then, from the repository root (the commands the README gives):

    jitnet convert_imageset --gray --shuffle examples/digits/data/images/ examples/digits/data/images/train.txt examples/digits/data/train_lmdb
    jitnet convert_imageset --gray examples/digits/data/images/ examples/digits/data/images/test.txt examples/digits/data/test_lmdb
    jitnet compute_image_mean examples/digits/data/train_lmdb examples/digits/data/mean.binaryproto
    jitnet train --solver examples/digits/mlp_lmdb_solver.prototxt
    jitnet train --solver examples/digits/lenet_lmdb_solver.prototxt    # the LeNet-style net

    python examples/digits/prepare_images.py [OUT_DIR]
"""
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "data", "images")


def prepare_images(out_dir=OUT):
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        sys.exit("prepare_images.py needs scikit-learn: pip install -e '.[examples]'")
    from PIL import Image
    digits = load_digits()
    pixels = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    is_test = np.arange(len(pixels)) % 5 == 0
    for split, rows in (("train", ~is_test), ("test", is_test)):
        folder = os.path.join(out_dir, split)
        os.makedirs(folder, exist_ok=True)
        lines = []
        for k, i in enumerate(np.flatnonzero(rows)):
            name = f"{split}/{k:05d}.png"
            Image.fromarray(pixels[i], "L").save(os.path.join(out_dir, name))
            lines.append(f"{name} {digits.target[i]}")
        with open(os.path.join(out_dir, f"{split}.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
        print(f"{split}: {len(lines)} images -> {folder}, list {os.path.join(out_dir, split + '.txt')}")


if __name__ == "__main__":
    prepare_images(sys.argv[1] if len(sys.argv) > 1 else OUT)
