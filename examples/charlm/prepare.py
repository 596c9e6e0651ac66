"""Write a character-level language-model corpus from the Python standard library's own
source files (they ship with every Python installation: no download) to HDF5, in the layout
of Caffe's LRCN language model: time-major (T, N) sequences with continuation markers.

The text: the top-level ``*.py`` files of ``sysconfig.get_paths()["stdlib"]``; every tenth
of the sorted names (index % 10 == 9) is held out for testing, the rest are for training.
Each split reads its files in the order of the MD5 digests of their names (fixed, and
mixing the modules) until a character budget (``--train-chars``, ``--test-chars``); the
default test budget, 204,800 = 128 x 50 x 32, is the solver's test_iter batches of T x N.
Characters are indices into a fixed vocabulary (``vocab.json``): 0 stands for any character
outside it (non-ASCII letters in comments and strings), then tab, newline and the printable
ASCII characters, 98 in all.

The layout, as Caffe's "unaligned batches" of coco_caption: within each file, input[i] is
character i and target[i] character i + 1, cont[i] is 0 at the first character of a file
(a new sequence: the LSTM forgets its state) and 1 elsewhere. The (input, target, cont)
triples of a split, files one after another, are cut into N streams of L consecutive
triples (L a multiple of T; the rest is dropped), and stored as datasets ``cont``, ``input``,
``target`` of shape (L, N): row t holds timestep t of every stream. HDF5Data with
``batch_size: T`` then gives (T, N) blobs, and consecutive batches continue the same
streams; the LSTM carries its state from one batch to the next (truncated backpropagation
through time), and the first row of the file has cont = 0, so a new pass starts afresh.

Writes to DIR (default examples/charlm/data): train.h5, test.h5, the source lists train.txt
and test.txt (absolute paths), vocab.json, and stats.json with the unigram model's bits per
character (the baseline the LSTM must beat). The same Python installation gives the same
files, byte for byte.

    python examples/charlm/prepare.py [DIR] [--streams 32] [--steps 50]
"""
import argparse
import glob
import hashlib
import json
import math
import os
import sys
import sysconfig

import h5py
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
UNKNOWN = "\ufffd"
VOCABULARY = [UNKNOWN, "\t", "\n"] + [chr(c) for c in range(32, 127)]


def source_files(stdlib=None):
    """The standard library's top-level .py files split into (train, test): every tenth of
    the sorted names is a test file. Each split is in the order of the MD5 digests of the
    names, a fixed order that mixes the modules (alphabetically, a small budget would be
    mostly _pydecimal.py)."""
    stdlib = stdlib or sysconfig.get_paths()["stdlib"]
    files = sorted(glob.glob(os.path.join(stdlib, "*.py")))
    if not files:
        sys.exit(f"prepare.py: no .py files in {stdlib} (the standard library's directory)")

    def mixed(paths):
        return sorted(paths, key=lambda p: hashlib.md5(os.path.basename(p).encode()).hexdigest())
    return (mixed(f for i, f in enumerate(files) if i % 10 != 9),
            mixed(f for i, f in enumerate(files) if i % 10 == 9))


def encode(text):
    """Characters -> vocabulary indices (0 for a character outside the vocabulary)."""
    index = {c: i for i, c in enumerate(VOCABULARY)}
    return np.array([index.get(c, 0) for c in text], dtype=np.int64)


def read_split(files, budget):
    """(input, target, cont) of ``budget`` characters (fewer if the files run out), read
    from whole files in order; the names of the files read."""
    inputs, targets, conts, used, total = [], [], [], [], 0
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as f:
            codes = encode(f.read().replace("\r\n", "\n"))
        if len(codes) < 2:
            continue
        inputs.append(codes[:-1])
        targets.append(codes[1:])
        cont = np.ones(len(codes) - 1, dtype=np.int64)
        cont[0] = 0
        conts.append(cont)
        used.append(os.path.basename(path))
        total += len(codes) - 1
        if total >= budget:
            break
    return (np.concatenate(inputs)[:budget], np.concatenate(targets)[:budget],
            np.concatenate(conts)[:budget], used)


def streams(array, num, steps):
    """A 1-D array cut into ``num`` consecutive streams of L (a multiple of ``steps``)
    values, as an (L, num) array: column n is stream n."""
    length = len(array) // num // steps * steps
    if length == 0:
        sys.exit(f"prepare.py: {len(array)} characters are too few for {num} streams of "
                 f"{steps} steps")
    return array[:num * length].reshape(num, length).T


def unigram_bits(train_targets, targets):
    """Cross-entropy in bits per character of the unigram model estimated on the training
    targets (add-one smoothing over the vocabulary), evaluated on ``targets``."""
    counts = np.bincount(train_targets, minlength=len(VOCABULARY)) + 1.0
    p = counts / counts.sum()
    return float(-np.log2(p[targets]).mean())


def prepare(out_dir=DATA, num=32, steps=50, train_chars=3_000_000, test_chars=204_800,
            stdlib=None):
    train_files, test_files = source_files(stdlib)
    os.makedirs(out_dir, exist_ok=True)
    stats = {"python": sys.version.split()[0], "streams": num, "steps": steps,
             "vocabulary": len(VOCABULARY)}
    arrays = {}
    for split, files, budget in (("train", train_files, train_chars), ("test", test_files, test_chars)):
        x, y, cont, used = read_split(files, budget)
        x, y, cont = (streams(a, num, steps) for a in (x, y, cont))
        cont[0] = 0                      # every stream starts a sequence
        arrays[split] = y
        h5_path = os.path.join(out_dir, f"{split}.h5")
        with h5py.File(h5_path, "w") as f:
            for name, a in (("cont", cont), ("input", x), ("target", y)):
                f.create_dataset(name, data=a.astype(np.float32))
        with open(os.path.join(out_dir, f"{split}.txt"), "w") as f:
            f.write(h5_path + "\n")
        stats[split] = {"files": len(used), "first_file": used[0], "last_file": used[-1],
                        "rows": x.shape[0], "characters": int(x.size),
                        "batches_per_pass": x.shape[0] // steps}
    train_targets = arrays["train"].ravel()
    stats["unigram_bits_per_char"] = {
        "train": unigram_bits(train_targets, train_targets),
        "test": unigram_bits(train_targets, arrays["test"].ravel())}
    with open(os.path.join(out_dir, "vocab.json"), "w") as f:
        json.dump(VOCABULARY, f)
    with open(os.path.join(out_dir, "stats.json"), "w") as f:
        json.dump(stats, f, indent=1)
    for split in ("train", "test"):
        s = stats[split]
        print(f"{split}: {s['characters']} characters from {s['files']} files "
              f"({s['first_file']} .. {s['last_file']}), {s['rows']} x {num} "
              f"-> {os.path.join(out_dir, split + '.h5')} ({s['batches_per_pass']} batches of {steps})")
    u = stats["unigram_bits_per_char"]
    print(f"unigram model: {u['train']:.3f} bits/char on train, {u['test']:.3f} on test "
          f"(log2 of the vocabulary: {math.log2(len(VOCABULARY)):.3f})")
    return stats


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", nargs="?", default=DATA)
    parser.add_argument("--streams", type=int, default=32, help="N, the streams per batch")
    parser.add_argument("--steps", type=int, default=50,
                        help="T, the timesteps per batch (hdf5_data_param.batch_size)")
    parser.add_argument("--train-chars", type=int, default=3_000_000)
    parser.add_argument("--test-chars", type=int, default=204_800)
    parser.add_argument("--stdlib", help="read the .py files of this directory instead")
    args = parser.parse_args(argv)
    prepare(args.out_dir, args.streams, args.steps, args.train_chars, args.test_chars, args.stdlib)


if __name__ == "__main__":
    main()
