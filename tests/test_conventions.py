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


def _public_functions(modname):
    """{name: Python function} of the public functions/dispatchers defined in a kernels module."""
    mod = importlib.import_module(f"jitnet.kernels.{modname}")
    funcs = {}
    for name, obj in vars(mod).items():
        if name.startswith("_"):
            continue
        func = getattr(obj, "py_func", obj)        # numba dispatcher -> its Python function
        if inspect.isfunction(func) and func.__module__ == mod.__name__:
            funcs[name] = func
    return funcs


def _public_api(modname):
    """{name: parameter names} of the public functions/dispatchers defined in a kernels module."""
    return {name: list(inspect.signature(f).parameters) for name, f in _public_functions(modname).items()}


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


@pytest.mark.parametrize("modname", MODULES)
def test_cpu_gpu_same_docstrings(modname):
    """A twin says what it computes once: the GPU function carries its CPU twin's docstring."""
    cpu = _public_functions(f"cpu.{modname}")
    gpu = _public_functions(f"gpu.{modname}")
    for name in sorted(set(cpu) & set(gpu)):
        assert cpu[name].__doc__, f"{modname}.{name} has no docstring"
        assert gpu[name].__doc__ == cpu[name].__doc__, f"{modname}.{name}: GPU and CPU docstrings differ"


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


def _launch_call(stmt):
    """The call node of `launch_1d(kernel, n)(args...)` when stmt is exactly that expression, else None."""
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
        inner = stmt.value.func
        if isinstance(inner, ast.Call) and getattr(inner.func, "id", None) == "launch_1d":
            return stmt.value
    return None


@pytest.mark.parametrize("path", _py_files(GPU_DIR), ids=lambda p: p.name)
def test_no_trivial_gpu_launchers(path):
    """A public GPU function that only forwards its own arguments to one launch_1d(...) call is a
    kernel that should launch itself: @grid_stride(size) over @cuda.jit (kernels/gpu/_launch.py)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    trivial = []
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef) or node.name.startswith("_") or node.decorator_list:
            continue
        body = node.body[1:] if ast.get_docstring(node) is not None else node.body
        call = _launch_call(body[0]) if len(body) == 1 else None
        params = [a.arg for a in node.args.args]
        if call is not None and [getattr(a, "id", None) for a in call.args] == params:
            trivial.append(node.name)
    assert not trivial, f"{path.name}: trivial launchers, make them @grid_stride kernels: {trivial}"


@pytest.mark.parametrize("path", _py_files(GPU_DIR), ids=lambda p: p.name)
def test_gpu_kernels_compile_lazily(path):
    """cuda.jit never gets a signature (only, called directly, the Python function it compiles), so
    nothing is compiled when the module is imported."""
    tree = ast.parse(path.read_text(), filename=str(path))
    functions = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    eager = [f"line {node.lineno}" for node in ast.walk(tree)
             if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "jit"
             and getattr(node.func.value, "id", None) == "cuda"
             and not (len(node.args) == 1 and getattr(node.args[0], "id", None) in functions)
             and (node.args or any(k.arg == "signature" for k in node.keywords))]
    assert not eager, f"{path.name}: cuda.jit with an eager signature: {eager}"
