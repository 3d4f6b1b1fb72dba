"""The module structure the architecture note describes, checked from the source.

Imports are read with ``ast`` (function-level imports included), so these
tests fail on the arrow, not on a symptom at import time.
"""

import ast
import pathlib

import fastmf

PACKAGE = pathlib.Path(fastmf.__file__).parent


def _modules():
    return {path.stem: ast.parse(path.read_text()) for path in sorted(PACKAGE.glob("*.py"))}


def _imported_modules(tree, modules):
    """The fastmf modules a module imports (``__init__`` stands for the package)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module is None:  # from . import x, y
                found |= {alias.name for alias in node.names if alias.name in modules}
                if any(alias.name not in modules for alias in node.names):
                    found.add("__init__")
            else:
                found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "fastmf":
                    found.add(parts[1] if len(parts) > 1 else "__init__")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] == "fastmf":
                found.add(parts[1] if len(parts) > 1 else "__init__")
    return found


def _graph():
    modules = _modules()
    return {name: _imported_modules(tree, modules) - {name} for name, tree in modules.items()}


def test_no_import_cycle():
    graph = _graph()
    state = {}

    def visit(name, path):
        state[name] = "open"
        for target in sorted(graph.get(name, ())):
            if state.get(target) == "open":
                raise AssertionError(f"import cycle: {' -> '.join([*path, name, target])}")
            if target not in state:
                visit(target, [*path, name])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_the_cycle_check_finds_a_cycle():
    """The check above must be able to fail: feed it a known cycle."""
    modules = {"a": None, "b": None}
    tree_a = ast.parse("from .b import x")
    tree_b = ast.parse("def f():\n    from . import a")
    assert _imported_modules(tree_a, modules) == {"b"}
    assert _imported_modules(tree_b, modules) == {"a"}


def test_arrows_run_one_way():
    graph = _graph()
    lower = {"_kernels", "_blocks", "_jit", "_validation", "_state", "_stopping", "_checkpoint"}
    # The driver and the backends know nothing of the models or of Dask.
    for name in ("_driver", "_backend", "_losses", *lower):
        assert not graph[name] & {"_base", "_models", "dask", "__init__"}, (name, graph[name])
    # Persistence finds model classes in its registry, not by importing them.
    assert not graph["_persistence"] & {"_base", "_models"}
    assert "_base" not in graph["model_selection"]


def test_only_the_estimator_knows_the_distributed_backend_and_only_once():
    importers = {name for name, targets in _graph().items() if "dask" in targets}
    assert importers == {"_base"}
    tree = _modules()["_base"]
    dask_imports = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "dask"
    ]
    assert len(dask_imports) == 1


def test_the_distributed_module_uses_public_helpers_only():
    tree = _modules()["dask"]
    modules = set(_modules())
    imported_modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            for alias in node.names:
                if node.module is None:
                    imported_modules.add(alias.asname or alias.name)
                else:
                    assert not alias.name.startswith("_"), f"dask imports {alias.name}"
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in imported_modules & modules
        ):
            assert not node.attr.startswith("_"), f"dask uses {node.value.id}.{node.attr}"
        if isinstance(node, ast.Attribute) and node.attr == "_check_input":
            raise AssertionError("dask calls the model's private input check")


def test_a_loss_is_named_in_one_module():
    """Outside the loss definitions, no code compares against a loss's name."""
    names = {"squared", "logistic"}
    for module, tree in _modules().items():
        if module == "_losses":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                constants = [
                    c.value
                    for c in [node.left, *node.comparators]
                    if isinstance(c, ast.Constant) and isinstance(c.value, str)
                ]
                assert not names & set(constants), f"{module} switches on a loss name"
