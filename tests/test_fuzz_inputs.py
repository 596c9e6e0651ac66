"""Mutation fuzzing of the files users hand jitnet (issue 6's "done when").

Valid inputs — prototxt nets (the test nets and examples/digits/*.prototxt), solver files,
caffemodels and HDF5 weights saved by jitnet, HDF5 data files for HDF5Data, solver states —
are mutated with a fixed seed (text: lines deleted, duplicated, swapped, numbers set to 0,
-1, huge, inf, nan, strings and enum values changed, field names swapped, truncation;
binary: flipped, inserted and appended bytes, truncation; HDF5: missing or extra datasets,
wrong dtypes and shapes, groups for datasets, dangling links, files that are not HDF5) and
each one is used as a user would: build the net and run a forward (and backward), take two
solver steps, load the weights, restore the state. Each must work or end in a JitnetError:
never another exception, a hang or a dead process.

The cases run in a worker process (one Python, warmed once, restarted if a case kills it)
under a per-case time limit (faulthandler dumps the stack of a hang, and of a crash) and an
address-space limit, so a runaway allocation is a MemoryError, not a dead machine. Per-case
work is bounded: a net with more than BIG values, or a solver asking for more than a few
passes per step, is only built.

Any other exception, hang or crash fails the test; the summary printed at the end
(pytest -s shows it) names the case, the input and the site (the deepest jitnet frame).

    python tests/test_fuzz_inputs.py          # run the fuzzer alone and print the summary
"""
import faulthandler
import json
import os
import random
import re
import select
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SEED = int(os.environ.get("JITNET_FUZZ_SEED", 6))     # another seed explores further
CASE_TIMEOUT = 20.0          # seconds for one case (a hang is dumped and the worker exits)
WARMUP_TIMEOUT = 300.0       # the first cases of a worker compile kernels (numba caches them)
BIG = 2_000_000              # values in all blobs of a net above which it is only built
MEMORY_LIMIT = 4 << 30       # the worker's address space
COUNTS = {"net": 250, "solver": 100, "caffemodel": 50, "h5weights": 42, "h5data": 60, "state": 54}

# Sites (deepest jitnet frame: file:function) and exception types of failures found by this
# fuzzer in code outside the weights / solver / filler / proto / HDF5 files, which are being
# fixed elsewhere (layer parameter checks, blobs with too few axes, absurd blob sizes).
# "died" is a crash of the process, "hang" a case over the time limit.
# ------------------------------------------------------------------------------------------------
# the valid inputs
# ------------------------------------------------------------------------------------------------
MLP = """name: "mlp"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 4 dim: 5 } shape { dim: 4 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        inner_product_param { num_output: 6 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 3 weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""

NETS = {
    "mlp.prototxt": MLP,
    "deploy.prototxt": """name: "deploy"
force_backward: true
input: "data"
input_dim: 2 input_dim: 3 input_dim: 2 input_dim: 2
layer { name: "flat" type: "Flatten" bottom: "data" top: "flat" }
layer { name: "ip1" type: "InnerProduct" bottom: "flat" top: "ip1"
        inner_product_param { num_output: 5 weight_filler { type: "msra" variance_norm: AVERAGE } } }
layer { name: "sig" type: "Sigmoid" bottom: "ip1" top: "sig" }
layer { name: "ip2" type: "InnerProduct" bottom: "sig" top: "ip2" inner_product_param { num_output: 4 axis: 1 } }
layer { name: "resh" type: "Reshape" bottom: "ip2" top: "resh" reshape_param { shape { dim: 0 dim: 2 dim: -1 } } }
layer { name: "prob" type: "Softmax" bottom: "resh" top: "prob" softmax_param { axis: 1 } }
""",
    "fanout.prototxt": """name: "fanout"
layer { name: "in" type: "DummyData" top: "x" top: "t1" top: "t2"
        dummy_data_param { shape { dim: 3 dim: 4 } shape { dim: 3 dim: 2 } shape { dim: 3 dim: 2 }
                           data_filler { type: "uniform" min: -1 max: 1 } data_filler { type: "constant" value: 0.5 }
                           data_filler { type: "gaussian" std: 0.3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
        inner_product_param { num_output: 2 weight_filler { type: "positive_unitball" } } }
layer { name: "e1" type: "EuclideanLoss" bottom: "y" bottom: "t1" top: "l1" }
layer { name: "e2" type: "EuclideanLoss" bottom: "y" bottom: "t2" top: "l2" loss_weight: 2 }
""",
    "siamese.prototxt": """name: "siamese"
layer { name: "in" type: "DummyData" top: "a" top: "b" top: "ta" top: "tb"
        dummy_data_param { shape { dim: 3 dim: 4 } shape { dim: 3 dim: 4 } shape { dim: 3 dim: 2 } shape { dim: 3 dim: 2 }
                           data_filler { type: "gaussian" } } }
layer { name: "ipa" type: "InnerProduct" bottom: "a" top: "ya"
        param { name: "w" lr_mult: 1 } param { name: "bias" decay_mult: 0 }
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" sparse: 1 } bias_filler { type: "gaussian" } } }
layer { name: "ipb" type: "InnerProduct" bottom: "b" top: "yb"
        param { name: "w" share_mode: PERMISSIVE } param { name: "bias" }
        inner_product_param { num_output: 2 } }
layer { name: "drop" type: "Dropout" bottom: "yb" top: "yb" dropout_param { dropout_ratio: 0.5 } }
layer { name: "tanh" type: "TanH" bottom: "ya" top: "ya" }
layer { name: "ea" type: "EuclideanLoss" bottom: "ya" bottom: "ta" top: "la" }
layer { name: "eb" type: "EuclideanLoss" bottom: "yb" bottom: "tb" top: "lb" propagate_down: true propagate_down: false }
""",
    "staged.prototxt": """name: "staged"
state { phase: TRAIN level: 1 stage: "a" }
layer { name: "in" type: "DummyData" top: "x" top: "label"
        dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 } data_filler { type: "gaussian" }
                           data_filler { type: "constant" value: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 3 }
        include { min_level: 0 } }
layer { name: "sig" type: "Sigmoid" bottom: "y" top: "s" include { phase: TRAIN } }
layer { name: "acc" type: "Accuracy" bottom: "y" bottom: "label" top: "acc" accuracy_param { top_k: 2 }
        exclude { stage: "b" } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "y" bottom: "label" top: "loss"
        loss_param { normalization: FULL ignore_label: 2 } }
""",
    "v1.prototxt": """name: "v1"
input: "data"
input_shape { dim: 2 dim: 6 }
layers { name: "ip1" type: INNER_PRODUCT bottom: "data" top: "ip1" blobs_lr: 1 blobs_lr: 2
         weight_decay: 1 weight_decay: 0 inner_product_param { num_output: 4 } }
layers { name: "relu" type: RELU bottom: "ip1" top: "ip1" }
layers { name: "prob" type: SOFTMAX bottom: "ip1" top: "prob" }
""",
    "memory.prototxt": """name: "memory"
layer { name: "m" type: "MemoryData" top: "data" top: "label"
        memory_data_param { batch_size: 2 channels: 3 height: 1 width: 1 } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 2 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
""",
}
DIGITS_NETS = ("logreg_train_test.prototxt", "mlp_train_test.prototxt")
DIGITS_SOLVERS = ("logreg_solver.prototxt", "mlp_solver.prototxt")
SOLVERS = {
    "adam_solver.prototxt": """net: "mlp.prototxt"
type: "Adam" base_lr: 0.01 momentum: 0.9 momentum2: 0.999 delta: 1e-8 lr_policy: "poly" power: 1.5
max_iter: 20 iter_size: 2 average_loss: 3 clip_gradients: 1 weight_decay: 0.001 regularization_type: "L1"
display: 1 debug_info: true random_seed: 3 snapshot: 2 snapshot_prefix: "snaps/adam"
""",
    "legacy_solver.prototxt": """train_net: "fanout.prototxt"
test_net: "fanout.prototxt" test_iter: 2 test_interval: 1 test_compute_loss: true
solver_type: NESTEROV base_lr: 0.05 momentum: 0.9 lr_policy: "multistep" gamma: 0.5 stepvalue: 1 stepvalue: 3
max_iter: 10 snapshot_format: HDF5 snapshot: 1 snapshot_prefix: "snaps/legacy" random_seed: 4
""",
    "sigmoid_solver.prototxt": """net: "siamese.prototxt"
type: "AdaDelta" base_lr: 1 momentum: 0.95 delta: 1e-6 lr_policy: "sigmoid" gamma: 0.1 stepsize: 5
test_iter: 1 test_interval: 2 max_iter: 8 train_state { stage: "x" } random_seed: 5
""",
}


def write_digits_data(work):
    import h5py
    rng = np.random.default_rng(SEED)
    data = work / "examples" / "digits" / "data"
    data.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 30), ("test", 12)):
        with h5py.File(data / f"{split}.h5", "w") as f:
            f.create_dataset("data", data=rng.random((n, 1, 8, 8)).astype(np.float32))
            f.create_dataset("label", data=rng.integers(0, 10, n).astype(np.float32))
        (data / f"{split}.txt").write_text(f"examples/digits/data/{split}.h5\n")


def write_base_files(work):
    """The valid inputs, written into the worker's working directory ``work``."""
    import jitnet
    write_digits_data(work)
    digits = work / "examples" / "digits"
    for name in DIGITS_NETS + DIGITS_SOLVERS:
        (digits / name).write_text((REPO / "examples" / "digits" / name).read_text())
    for name, text in {**NETS, **SOLVERS}.items():
        (work / name).write_text(text)
    cwd = os.getcwd()
    os.chdir(work)
    try:
        jitnet.set_random_seed(SEED)
        for name in ("mlp", "siamese"):
            net = jitnet.Net(f"{name}.prototxt", jitnet.TRAIN)
            rng = np.random.default_rng(SEED)
            for blobs in net.params.values():
                for blob in blobs:
                    blob.data[...] = rng.normal(size=blob.shape)
            net.save(f"{name}.caffemodel")
            net.save(f"{name}.caffemodel.h5")
        for fmt, suffix in (("BINARYPROTO", ""), ("HDF5", ".h5")):
            path = digits / f"state_{fmt}.prototxt"
            path.write_text((digits / "logreg_solver.prototxt").read_text().replace(
                'snapshot_prefix: "examples/digits/snapshots/logreg"',
                f'snapshot_prefix: "states/{fmt}" snapshot_format: {fmt}'))
            solver = jitnet.get_solver(str(path))
            solver.step(2)
            solver.snapshot()
    finally:
        os.chdir(cwd)


# ------------------------------------------------------------------------------------------------
# mutations
# ------------------------------------------------------------------------------------------------
NUMBER = re.compile(r"(?<![\w.\-])-?\d+(?:\.\d+)?(?:e-?\d+)?(?![\w.])")
STRING = re.compile(r'"[^"\n]*"')
ENUM_VALUE = re.compile(r"(?<=:)\s*([A-Z][A-Z0-9_]+)\b")
FIELD = re.compile(r"\b([a-z][a-z0-9_]*)(?=\s*[:{])")
INTEGERS = ["0", "-1", "1", "2", "3", "7", "100", "65536", "1000000000", "2147483647", "-2147483648",
            "4294967297", "99999999999999999999"]
FLOATS = ["0", "-1", "1", "0.5", "-0.5", "3.7", "1e30", "-1e30", "1e38", "1e-45", "inf", "-inf", "nan"]
STRINGS = ['""', '"x"', '"InnerProduct"', '"Input"', '"HDF5Data"', '"Softmax"', '"Accuracy"',
           '"data"', '"label"', '"ip1"', '"nonexistent.txt"', '"examples/digits/data/train.txt"',
           '"mlp.caffemodel"', '"gaussian"', '"xavier"', '"msra"', '"uniform"', '"bilinear"',
           '"positive_unitball"', '"sigmoid"', '"poly"', '"multistep"', '"inv"', '"exp"', '"step"',
           '"Adam"', '"RMSProp"', '"AdaGrad"', '"L1"', '"L3"', '"' + "a" * 300 + '"', '"snaps/"']
ENUMS = ["TRAIN", "TEST", "FAN_OUT", "AVERAGE", "GPU", "CPU", "HDF5", "BINARYPROTO", "STRICT",
         "PERMISSIVE", "VALID", "FULL", "NONE", "BATCH_SIZE", "FLOOR", "SUM", "MAX", "FOO",
         "INNER_PRODUCT", "SOFTMAX_LOSS", "DATA", "ADAM", "SGD"]


def mutate_text(rng, text):
    """1-3 random edits of a prototxt; returns (text, [what was done])."""
    done = []
    for _ in range(rng.choice([1, 1, 2, 3])):
        lines = text.split("\n")
        op = rng.choices(["delete", "duplicate", "swap", "number", "string", "enum", "field",
                          "truncate", "char"], weights=[6, 6, 4, 40, 15, 10, 5, 4, 4])[0]
        if op in ("delete", "duplicate", "swap") and len(lines) > 1:
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            if op == "delete":
                done.append(f"deleted line {i + 1}: {lines[i].strip()[:80]!r}")
                del lines[i]
            elif op == "duplicate":
                done.append(f"duplicated line {i + 1}: {lines[i].strip()[:80]!r}")
                lines.insert(i, lines[i])
            else:
                done.append(f"swapped lines {i + 1} and {j + 1}")
                lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
        elif op in ("number", "string", "enum", "field"):
            pattern = {"number": NUMBER, "string": STRING, "enum": ENUM_VALUE, "field": FIELD}[op]
            matches = list(pattern.finditer(text))
            if not matches:
                continue
            m = rng.choice(matches)
            group = 1 if op in ("enum", "field") else 0
            if op == "field":
                new = rng.choice(sorted({f.group(1) for f in matches}))
            elif op == "number":          # mostly a value of the token's kind, so the file parses
                integer = re.fullmatch(r"-?\d+", m.group(0)) is not None
                new = rng.choice(INTEGERS if integer == (rng.random() < 0.85) else FLOATS)
            else:
                new = rng.choice({"string": STRINGS, "enum": ENUMS}[op])
            line = text.count("\n", 0, m.start()) + 1
            done.append(f"line {line}: {m.group(group)!r} -> {new!r}")
            text = text[:m.start(group)] + new + text[m.end(group):]
        elif op == "truncate":
            k = rng.randrange(len(text) + 1)
            done.append(f"truncated at character {k} of {len(text)}")
            text = text[:k]
        else:
            k = rng.randrange(len(text) + 1)
            c = rng.choice(["{", "}", ":", '"', "\n", "#", "-", "\\"])
            done.append(f"inserted {c!r} at character {k}")
            text = text[:k] + c + text[k:]
    return text, done


def mutate_bytes(rng, data):
    """1-2 random edits of a binary file; returns (bytes, [what was done])."""
    data, done = bytearray(data), []
    for _ in range(rng.choice([1, 1, 2])):
        op = rng.choice(["flip", "flip", "truncate", "append", "insert", "zero"])
        k = rng.randrange(len(data) + 1) if data else 0
        if op == "flip" and data:
            k = min(k, len(data) - 1)
            bit = 1 << rng.randrange(8)
            data[k] ^= bit
            done.append(f"flipped bit {bit:#x} of byte {k} of {len(data)}")
        elif op == "truncate":
            done.append(f"truncated at byte {k} of {len(data)}")
            del data[k:]
        elif op == "append":
            extra = bytes(rng.randrange(256) for _ in range(rng.choice([1, 7, 64])))
            done.append(f"appended {len(extra)} random bytes")
            data += extra
        elif op == "insert":
            extra = bytes(rng.randrange(256) for _ in range(rng.choice([1, 3, 10])))
            done.append(f"inserted {len(extra)} random bytes at {k}")
            data[k:k] = extra
        elif data:
            n = rng.choice([1, 4, 16])
            done.append(f"zeroed {n} bytes at {k}")
            data[k:k + n] = bytes(len(data[k:k + n]))
    return bytes(data), done


WEIGHT_EDITS = ["delete_blob", "delete_layer_group", "rename_layer", "reshape_blob", "scalar_blob",
                "empty_blob", "int_blob", "half_blob", "bool_blob", "complex_blob", "string_blob",
                "compound_blob", "group_blob", "extra_blob", "no_data_group", "data_is_dataset",
                "nan_blob", "dangling_link", "external_link", "text_file", "bytes"]
DATA_EDITS = ["delete_data", "delete_label", "int_data", "string_data", "bool_data", "complex_data",
              "float64_data", "label_huge", "label_negative", "label_nan", "label_ten", "label_fraction",
              "data_1d", "data_2d", "data_5d", "no_rows", "no_columns", "label_2d", "rows_differ",
              "data_group", "scalar_data", "nan_data", "not_hdf5", "missing_file", "list_empty",
              "list_nonexistent", "list_blank_lines", "list_directory", "list_self", "bytes"]
STATE_EDITS = ["bytes", "bytes", "bytes", "json_key", "json_type", "json_garbage", "iter_negative",
               "iter_huge", "step_negative", "learned_net_missing", "learned_net_other",
               "history_short", "history_reshape", "h5_iter_string", "h5_delete", "h5_history_group",
               "h5_history_extra", "h5_learned_net_int"]


def edit_weights_h5(rng, path, edit):
    import h5py
    if edit == "text_file":
        path.write_text("this is not HDF5\n")
        return
    if edit == "bytes":
        data, done = mutate_bytes(rng, path.read_bytes())
        path.write_bytes(data)
        return done
    with h5py.File(path, "a") as f:
        layer = rng.choice(["ip1", "ip2"]) if "data/ip1" in f else rng.choice(list(f["data"]))
        group = f[f"data/{layer}"]
        blob = rng.choice(sorted(group)) if len(group) else "0"
        shape = group[blob].shape if blob in group else (2,)
        replacement = {
            "reshape_blob": lambda: np.ones(tuple(reversed(shape)) + (1,), np.float32),
            "scalar_blob": lambda: np.float32(1),
            "empty_blob": lambda: np.ones((0,), np.float32),
            "int_blob": lambda: np.ones(shape, np.int32),
            "half_blob": lambda: np.ones(shape, np.float16),
            "bool_blob": lambda: np.ones(shape, bool),
            "complex_blob": lambda: np.ones(shape, np.complex64),
            "string_blob": lambda: np.full(shape, b"x"),
            "compound_blob": lambda: np.zeros(shape, dtype=[("a", "<f4"), ("b", "<i4")]),
            "nan_blob": lambda: np.full(shape, np.nan, np.float32),
        }
        if edit in replacement:
            if blob in group:
                del group[blob]
            group.create_dataset(blob, data=replacement[edit]())
        elif edit == "delete_blob" and blob in group:
            del group[blob]
        elif edit == "delete_layer_group":
            del f[f"data/{layer}"]
        elif edit == "rename_layer":
            f.move(f"data/{layer}", "data/renamed")
        elif edit == "group_blob":
            if blob in group:
                del group[blob]
            group.create_group(blob)
        elif edit == "extra_blob":
            group.create_dataset(str(len(group) + 1), data=np.ones(3, np.float32))
        elif edit == "no_data_group":
            del f["data"]
        elif edit == "data_is_dataset":
            del f["data"]
            f.create_dataset("data", data=np.ones(3))
        elif edit == "dangling_link":
            if blob in group:
                del group[blob]
            group[blob] = h5py.SoftLink("/nowhere")
        elif edit == "external_link":
            if blob in group:
                del group[blob]
            group[blob] = h5py.ExternalLink("missing.h5", "/x")


def edit_data(rng, work, edit):
    """Edit the digits training data (examples/digits/data/train.h5 and train.txt)."""
    import h5py
    h5 = work / "examples" / "digits" / "data" / "train.h5"
    listing = work / "examples" / "digits" / "data" / "train.txt"
    if edit == "not_hdf5":
        h5.write_text("not hdf5\n")
    elif edit == "missing_file":
        h5.unlink()
    elif edit == "list_empty":
        listing.write_text("")
    elif edit == "list_nonexistent":
        listing.write_text("examples/digits/data/nowhere.h5\n")
    elif edit == "list_blank_lines":
        listing.write_text("\n\n  \nexamples/digits/data/train.h5\n\n")
    elif edit == "list_directory":
        listing.write_text("examples/digits/data\n")
    elif edit == "list_self":
        listing.write_text("examples/digits/data/train.txt\n")
    elif edit == "bytes":
        data, done = mutate_bytes(rng, h5.read_bytes())
        h5.write_bytes(data)
        return done
    else:
        with h5py.File(h5, "r") as f:
            data, label = f["data"][()], f["label"][()]
        n = len(label)
        new = {
            "int_data": lambda: {"data": (data * 16).astype(np.int32)},
            "string_data": lambda: {"data": np.full(data.shape, b"x")},
            "bool_data": lambda: {"data": data > 0.5},
            "complex_data": lambda: {"data": data.astype(np.complex64)},
            "float64_data": lambda: {"data": data.astype(np.float64)},
            "label_huge": lambda: {"label": np.full(n, 1e9, np.float32)},
            "label_negative": lambda: {"label": np.full(n, -5, np.float32)},
            "label_nan": lambda: {"label": np.full(n, np.nan, np.float32)},
            "label_ten": lambda: {"label": np.full(n, 10, np.float32)},
            "label_fraction": lambda: {"label": np.full(n, 2.5, np.float32)},
            "data_1d": lambda: {"data": data.reshape(-1)},
            "data_2d": lambda: {"data": data.reshape(n, -1)},
            "data_5d": lambda: {"data": data.reshape(n, 1, 1, 8, 8)},
            "no_rows": lambda: {"data": data[:0], "label": label[:0]},
            "no_columns": lambda: {"data": np.zeros((n, 0), np.float32)},
            "label_2d": lambda: {"label": label.reshape(n, 1)},
            "rows_differ": lambda: {"label": label[:-3]},
            "scalar_data": lambda: {"data": np.float32(1)},
            "nan_data": lambda: {"data": np.full(data.shape, np.nan, np.float32)},
            "delete_data": lambda: {"data": None},
            "delete_label": lambda: {"label": None},
            "data_group": lambda: {"data": "group"},
        }[edit]()
        with h5py.File(h5, "w") as f:
            for name, value in (("data", data), ("label", label)):
                value = new.get(name, value)
                if value is None:
                    continue
                if isinstance(value, str):
                    f.create_group(name)
                else:
                    f.create_dataset(name, data=value)


def edit_state(rng, path, edit):
    """Edit a solver state (binary .solverstate or .solverstate.h5)."""
    import h5py
    from jitnet.proto import pb, read_binary, write_binary
    if edit == "bytes":
        data, done = mutate_bytes(rng, path.read_bytes())
        path.write_bytes(data)
        return done
    if path.suffix == ".h5":
        with h5py.File(path, "a") as f:
            if edit in ("h5_iter_string", "iter_negative", "iter_huge", "step_negative"):
                name = "current_step" if edit == "step_negative" else "iter"
                value = {"h5_iter_string": np.bytes_(b"12"), "iter_negative": np.array([-7], np.int32),
                         "iter_huge": np.array([2**31 - 1], np.int32),
                         "step_negative": np.array([-3], np.int32)}[edit]
                del f[name]
                f.create_dataset(name, data=value)
            elif edit == "h5_delete":
                del f[rng.choice(["iter", "current_step", "learned_net", "history", "jitnet_state"])]
            elif edit == "h5_history_group":
                del f["history/0"]
                f["history"].create_group("0")
            elif edit == "h5_history_extra":
                f["history"].create_dataset(str(len(f["history"])), data=np.ones(3, np.float32))
            elif edit in ("h5_learned_net_int", "learned_net_missing", "learned_net_other"):
                value = {"h5_learned_net_int": np.array([5]), "learned_net_missing": np.bytes_(b"nowhere.caffemodel"),
                         "learned_net_other": np.bytes_(b"mlp.caffemodel")}[edit]
                del f["learned_net"]
                f.create_dataset("learned_net", data=value)
            elif edit in ("history_short", "history_reshape"):
                data = f["history/0"][()]
                del f["history/0"]
                f["history"].create_dataset("0", data=data.reshape(-1)[:-1] if edit == "history_short"
                                            else data.reshape(-1))
            else:
                _edit_json_h5(rng, f, edit)
        return
    proto = read_binary(str(path), pb.SolverState())
    if edit == "iter_negative":
        proto.iter = -7
    elif edit == "iter_huge":
        proto.iter = 2**31 - 1
    elif edit == "step_negative":
        proto.current_step = -3
    elif edit == "learned_net_missing":
        proto.learned_net = "nowhere.caffemodel"
    elif edit == "learned_net_other":
        proto.learned_net = "mlp.caffemodel"
    elif edit == "history_short":
        del proto.history[-1]
    elif edit == "history_reshape":
        del proto.history[0].shape.dim[:]
        proto.history[0].shape.dim.extend([len(proto.history[0].data)])
    elif edit.startswith("json"):
        proto.jitnet_state = _edit_json(rng, proto.jitnet_state, edit)
    else:                      # an HDF5-only edit on a binary state: flip bytes instead
        write_binary(proto, str(path))
        data, done = mutate_bytes(rng, path.read_bytes())
        path.write_bytes(data)
        return done
    write_binary(proto, str(path))


def _edit_json(rng, text, edit):
    state = json.loads(text)
    if edit == "json_garbage":
        return text[:rng.randrange(len(text))]
    key = rng.choice(sorted(state))
    if edit == "json_key":
        del state[key]
    else:
        state[key] = rng.choice([None, 5, "x", [], {}, [1, "a"], {"data": {"position": "x"}}])
    return json.dumps(state)


def _edit_json_h5(rng, f, edit):
    text = f["jitnet_state"][()].decode()
    del f["jitnet_state"]
    f.create_dataset("jitnet_state", data=np.bytes_(_edit_json(rng, text, edit).encode()))


def build_cases(work):
    """[(case for the worker, description)], generated with the fixed seed; the mutated
    files are written under ``work/cases``."""
    rng = random.Random(SEED)
    cases_dir = work / "cases"
    cases_dir.mkdir()
    texts = {name: (work / name).read_text() for name in NETS}
    texts.update({f"examples/digits/{name}": (work / "examples" / "digits" / name).read_text()
                  for name in DIGITS_NETS})
    solvers = {name: (work / name).read_text() for name in SOLVERS}
    solvers.update({f"examples/digits/{name}": (work / "examples" / "digits" / name).read_text()
                    for name in DIGITS_SOLVERS})
    cases = []

    def add(case, what):
        case["id"] = len(cases)
        cases.append((case, what))

    # the unmutated inputs first: they must all work, and they warm the worker up
    for name in texts:
        for phase in (0, 1):
            add({"kind": "net", "path": name, "phase": phase}, f"{name} as given")
    for name in solvers:
        add({"kind": "solver", "path": name}, f"{name} as given")
    for name in ("mlp.caffemodel", "mlp.caffemodel.h5"):
        add({"kind": "weights", "model": "mlp.prototxt", "path": name}, f"{name} as given")
    for fmt, suffix in (("BINARYPROTO", ""), ("HDF5", ".h5")):
        add({"kind": "state", "solver": f"examples/digits/state_{fmt}.prototxt",
             "path": f"states/{fmt}_iter_2.solverstate{suffix}"}, f"{fmt} solver state as given")
    n_valid = len(cases)

    for k in range(COUNTS["net"]):
        name = rng.choice(sorted(texts))
        text, done = mutate_text(rng, texts[name])
        # the mutated net goes next to the original, so relative paths inside still resolve
        path = f"{name}.mut{k}.prototxt"
        (work / path).write_text(text)
        add({"kind": "net", "path": path, "phase": rng.choice([0, 1])}, f"{name}: " + "; ".join(done))
    for k in range(COUNTS["solver"]):
        name = rng.choice(sorted(solvers))
        text, done = mutate_text(rng, solvers[name])
        path = f"{name}.mut{k}.prototxt"
        (work / path).write_text(text)
        add({"kind": "solver", "path": path}, f"{name}: " + "; ".join(done))
    for k in range(COUNTS["caffemodel"]):
        source = rng.choice(["mlp", "siamese"])
        data, done = mutate_bytes(rng, (work / f"{source}.caffemodel").read_bytes())
        path = cases_dir / f"w{k}.caffemodel"
        path.write_bytes(data)
        add({"kind": "weights", "model": f"{source}.prototxt", "path": str(path)},
            f"{source}.caffemodel: " + "; ".join(done))
    for k in range(COUNTS["h5weights"]):
        source = rng.choice(["mlp", "siamese"])
        edit = WEIGHT_EDITS[k % len(WEIGHT_EDITS)]
        path = cases_dir / f"w{k}.caffemodel.h5"
        shutil.copy(work / f"{source}.caffemodel.h5", path)
        done = edit_weights_h5(rng, path, edit)
        add({"kind": "weights", "model": f"{source}.prototxt", "path": str(path)},
            f"{source}.caffemodel.h5: {edit}" + (": " + "; ".join(done) if done else ""))
    for k in range(COUNTS["h5data"]):
        edit = DATA_EDITS[k % len(DATA_EDITS)]
        folder = cases_dir / f"data{k}"
        (folder / "examples" / "digits").mkdir(parents=True)
        shutil.copytree(work / "examples" / "digits" / "data", folder / "examples" / "digits" / "data")
        name = rng.choice(DIGITS_NETS)
        shutil.copy(work / "examples" / "digits" / name, folder / "examples" / "digits" / name)
        done = edit_data(rng, folder, edit)
        add({"kind": "data", "cwd": str(folder), "path": f"examples/digits/{name}", "phase": 0},
            f"digits train.h5 for {name}: {edit}" + (": " + "; ".join(done) if done else ""))
    for k in range(COUNTS["state"]):
        fmt, suffix = rng.choice([("BINARYPROTO", ""), ("HDF5", ".h5")])
        edit = STATE_EDITS[k % len(STATE_EDITS)]
        path = cases_dir / f"s{k}.solverstate{suffix}"
        shutil.copy(work / "states" / f"{fmt}_iter_2.solverstate{suffix}", path)
        done = edit_state(rng, path, edit)
        add({"kind": "state", "solver": f"examples/digits/state_{fmt}.prototxt", "path": str(path)},
            f"{fmt} solver state: {edit}" + (": " + "; ".join(done) if done else ""))
    return cases, n_valid


# ------------------------------------------------------------------------------------------------
# the worker: runs cases read as JSON lines from stdin, answers a JSON line each
# ------------------------------------------------------------------------------------------------
def _site(tb_frames):
    """(relative path, function, line) of the deepest frame inside jitnet's sources."""
    best = None
    for filename, line, function in tb_frames:
        try:
            relative = Path(filename).resolve().relative_to(REPO).as_posix()
        except ValueError:
            continue
        if relative.startswith(("jitnet/", "kernels/")):
            best = (relative, function, line)
    return best


def _work_is_small(net):
    return sum(blob.count for blob in net.blobs.values()) <= BIG


def _feed_memory_data(net):
    """Give MemoryData layers a batch of zeros, as a user calls set_input_arrays; False when
    the (mutated) layer asks for more than BIG values."""
    for layer in net.layers:
        if layer.type == "MemoryData":
            p = layer.param.memory_data_param
            shape = (p.batch_size, p.channels, p.height, p.width)
            if not 0 <= np.prod(shape, dtype=np.float64) <= BIG:
                return False
            net.set_input_arrays(np.zeros(shape, np.float32), np.zeros(p.batch_size, np.float32))
    return True


def run_case(case):
    import jitnet
    kind = case["kind"]
    jitnet.set_mode_cpu()
    jitnet.set_random_seed(case["id"])
    if kind in ("net", "data"):
        net = jitnet.Net(case["path"], case["phase"])
        if _work_is_small(net) and _feed_memory_data(net):
            for _ in range(2 if kind == "data" else 1):
                if case["phase"] == jitnet.TRAIN:
                    net.forward_backward()
                else:
                    net.forward()
    elif kind == "weights":
        net = jitnet.Net(case["model"], jitnet.TEST, weights=case["path"])
        if _work_is_small(net):
            net.forward()
    elif kind == "selftest":              # the harness's own test: a hang, a crash, a bare error
        if case["do"] == "hang":
            time.sleep(3600)
        elif case["do"] == "segv":
            os.kill(os.getpid(), signal.SIGSEGV)
        raise ValueError("a bare error")
    elif kind in ("solver", "state"):
        solver = jitnet.get_solver(case.get("solver", case["path"]))
        if kind == "state":
            solver.restore(case["path"])
        p = solver.param
        nets = [solver.net] + solver.test_nets
        passes = p.iter_size + sum(p.test_iter)
        if passes <= 12 and all(_work_is_small(net) for net in nets):
            solver.step(2 if kind == "solver" else 1)


def worker_main():
    import resource
    import logging
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)                                 # stray prints go to the stderr file
    faulthandler.enable(file=sys.stderr)
    logging.getLogger("jitnet").setLevel(logging.ERROR)
    import warnings
    warnings.simplefilter("ignore")
    import jitnet
    # warm up (numba and LLVM load, the common kernels compile) before the address-space limit
    jitnet.Net("mlp.prototxt", jitnet.TRAIN).forward_backward()
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 20, 64 << 20))
    home = os.getcwd()
    for line in sys.stdin:
        case = json.loads(line)
        print(f"== case {case['id']}: {json.dumps(case)}", file=sys.stderr, flush=True)
        faulthandler.dump_traceback_later(case["timeout"], exit=True)
        os.chdir(case.get("cwd", home))
        result = {"id": case["id"]}
        started = time.perf_counter()
        try:
            run_case(case)
            result["status"] = "ok"
        except jitnet.JitnetError as e:
            result.update(status="jitnet", type=type(e).__name__, message=str(e)[:300])
        except BaseException as e:          # noqa: BLE001 -- the point: anything else is reported
            frames = [(f.filename, f.lineno, f.name) for f in traceback.extract_tb(e.__traceback__)]
            result.update(status="other", type=type(e).__name__, message=str(e)[:300],
                          site=_site(frames), trace=traceback.format_exc()[-3000:])
        finally:
            faulthandler.cancel_dump_traceback_later()
            os.chdir(home)
            result["seconds"] = round(time.perf_counter() - started, 3)
        protocol.write(json.dumps(result) + "\n")


# ------------------------------------------------------------------------------------------------
# the parent: feeds the worker, survives its deaths and hangs
# ------------------------------------------------------------------------------------------------
FRAME = re.compile(r'File "([^"]+)", line (\d+) in (\S+)')


class Worker:
    def __init__(self, work):
        self.work, self.count, self.proc = work, 0, None

    def start(self):
        self.count += 1
        self.err_path = self.work / f"worker{self.count}.err"
        self.err = open(self.err_path, "w")
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker"],
                                     cwd=self.work, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.err, text=True, bufsize=1, start_new_session=True)
        self.fresh = True

    def run(self, case, timeout):
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        limit = max(timeout, WARMUP_TIMEOUT) if self.fresh else timeout
        self.fresh = False
        try:
            self.proc.stdin.write(json.dumps({**case, "timeout": limit}) + "\n")
            self.proc.stdin.flush()
            ready, _, _ = select.select([self.proc.stdout], [], [], limit + 15)
            line = self.proc.stdout.readline() if ready else ""
        except BrokenPipeError:                            # it died before taking the case
            ready, line = True, ""
        if line:
            return json.loads(line)
        # no answer: the worker died (a crash, or faulthandler's exit after a hang) or is stuck
        hung = not ready
        try:
            self.proc.wait(timeout=0 if hung else 15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            hung = True
        self.err.close()
        dump = self.err_path.read_text(errors="replace")
        dump = dump[dump.rfind(f"== case {case['id']}:"):]
        hung = hung or "Timeout (" in dump
        frames = [(m.group(1), int(m.group(2)), m.group(3)) for m in FRAME.finditer(dump)]
        frames.reverse()                                   # faulthandler: most recent call first
        self.proc = None
        return {"id": case["id"], "status": "hang" if hung else "died",
                "type": "hang" if hung else "died", "message": dump[-1500:], "site": _site(frames)}

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc is not None:
            self.err.close()


def run_fuzz(work):
    write_base_files(work)
    cases, n_valid = build_cases(work)
    worker = Worker(work)
    results = []
    start = time.perf_counter()
    try:
        for case, what in cases:
            result = worker.run(case, CASE_TIMEOUT)
            result["what"] = what
            result["case"] = case
            results.append(result)
    finally:
        worker.close()
    return results, n_valid, time.perf_counter() - start, worker.count


def summary(results, seconds, workers):
    counts = {}
    for r in results:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    lines = [f"fuzz: {len(results)} cases in {seconds:.1f} s ({workers} worker start(s)): "
             + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))]
    for r in results:
        if r["status"] in ("other", "died", "hang"):
            site = r["site"] and f"{r['site'][0]}:{r['site'][2]} ({r['site'][1]})"
            lines.append(f"  case {r['id']} {r['status']} {r['type']} at {site}: {r['message'][:160]!r}\n"
                         f"      input: {r['what'][:300]}")
    return "\n".join(lines)


def test_the_harness_reports_bare_errors_hangs_and_crashes(tmp_path):
    (tmp_path / "mlp.prototxt").write_text(MLP)
    worker = Worker(tmp_path)
    ok = {"kind": "net", "path": "mlp.prototxt", "phase": 0}
    try:
        got = [worker.run({**case, "id": i}, timeout)["status"] for i, (case, timeout) in enumerate([
            (ok, CASE_TIMEOUT), ({"kind": "selftest", "do": "error"}, CASE_TIMEOUT),
            ({"kind": "selftest", "do": "hang"}, 2), (ok, CASE_TIMEOUT),
            ({"kind": "selftest", "do": "segv"}, CASE_TIMEOUT), (ok, CASE_TIMEOUT)])]
    finally:
        worker.close()
    assert got == ["ok", "other", "hang", "ok", "died", "ok"]
    assert worker.count == 3


def test_mutated_inputs_work_or_raise_jitnet_errors(tmp_path, capsys):
    results, n_valid, seconds, workers = run_fuzz(tmp_path)
    report = summary(results, seconds, workers)
    with capsys.disabled():
        print("\n" + report)
    broken_valid = [r for r in results[:n_valid] if r["status"] != "ok"]
    assert not broken_valid, "the unmutated inputs must work:\n" + report
    failed = [r for r in results if r["status"] in ("other", "died", "hang")]
    assert not failed, report
    statuses = {r["status"] for r in results}
    assert len(results) >= 300 and {"ok", "jitnet"} <= statuses, report


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        worker_main()
    else:
        import tempfile
        os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
        with tempfile.TemporaryDirectory() as folder:
            results, n_valid, seconds, workers = run_fuzz(Path(folder))
            print(summary(results, seconds, workers))
