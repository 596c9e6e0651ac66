"""Conventions of the kernels package: CPU/GPU API parity, cache=True on CPU jits, no jitnet imports."""
import ast
import importlib
import inspect
from pathlib import Path

import pytest

KERNELS = Path(__file__).resolve().parents[1] / "kernels"
CPU_DIR, GPU_DIR = KERNELS / "cpu", KERNELS / "gpu"


def _public_modules(folder):
    return sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_"))


MODULES = sorted(set(_public_modules(CPU_DIR)) | set(_public_modules(GPU_DIR)))


def _public_api(modname):
    """{name: parameter names} of the public functions/dispatchers defined in a kernels module."""
    mod = importlib.import_module(f"jitnet.kernels.{modname}")
    api = {}
    for name, obj in vars(mod).items():
        if name.startswith("_"):
            continue
        func = getattr(obj, "py_func", obj)        # numba dispatcher -> its Python function
        if not inspect.isfunction(func) or func.__module__ != mod.__name__:
            continue
        api[name] = list(inspect.signature(func).parameters)
    return api


def test_modules_pair_up():
    assert _public_modules(CPU_DIR) == _public_modules(GPU_DIR)
    assert MODULES, "no kernel modules found"


@pytest.mark.parametrize("modname", MODULES)
def test_cpu_gpu_same_api(modname):
    cpu = _public_api(f"cpu.{modname}")
    gpu = _public_api(f"gpu.{modname}")
    assert sorted(cpu) == sorted(gpu), f"{modname}: function names differ"
    for name in cpu:
        assert cpu[name] == gpu[name], f"{modname}.{name}: {cpu[name]} != {gpu[name]}"


def _py_files(folder):
    return sorted(folder.rglob("*.py"))


def _jit_decorator_names(tree):
    """Local names bound to numba's njit / jit, and module aliases of numba."""
    funcs, mods = {"njit", "jit"}, {"numba"}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "numba":
            for a in node.names:
                if a.name in ("njit", "jit"):
                    funcs.add(a.asname or a.name)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "numba":
                    mods.add(a.asname or a.name)
    return funcs, mods


def _is_jit(expr, funcs, mods):
    if isinstance(expr, ast.Name):
        return expr.id in funcs
    if isinstance(expr, ast.Attribute):
        return expr.attr in ("njit", "jit") and isinstance(expr.value, ast.Name) and expr.value.id in mods
    return False


@pytest.mark.parametrize("path", _py_files(CPU_DIR), ids=lambda p: p.name)
def test_cpu_jits_are_cached(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    funcs, mods = _jit_decorator_names(tree)
    bad = []
    for node in ast.walk(tree):
        # decorators and direct calls like njit(cache=True)(f)
        candidates = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            candidates = [(d, node.name) for d in node.decorator_list]
        elif isinstance(node, ast.Call) and _is_jit(node.func, funcs, mods):
            candidates = [(node, f"line {node.lineno}")]
        for dec, where in candidates:
            if _is_jit(dec, funcs, mods):
                bad.append(where)                       # bare @njit
            elif isinstance(dec, ast.Call) and _is_jit(dec.func, funcs, mods):
                ok = any(k.arg == "cache" and isinstance(k.value, ast.Constant) and k.value.value is True
                         for k in dec.keywords)
                if not ok:
                    bad.append(where)
    assert not bad, f"{path.name}: jit without cache=True: {sorted(set(bad))}"


@pytest.mark.parametrize("path", _py_files(KERNELS), ids=lambda p: str(p.relative_to(KERNELS)))
def test_kernels_do_not_import_jitnet(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    # installed as jitnet.kernels[.cpu|.gpu]: a relative import climbing above kernels/ reaches jitnet
    # (kernels/x.py and kernels/__init__.py: 1 level allowed; kernels/cpu/x.py: 2 levels)
    depth = len(path.relative_to(KERNELS).parts)
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bad += [a.name for a in node.names if a.name.split(".")[0] == "jitnet"]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and (node.module or "").split(".")[0] == "jitnet":
                bad.append(node.module)
            elif node.level > depth:
                bad.append("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__"):
            if node.args and isinstance(node.args[0], ast.Constant) and str(node.args[0].value).startswith("jitnet"):
                bad.append(node.args[0].value)
    assert not bad, f"{path}: imports outside kernels/: {bad}"
