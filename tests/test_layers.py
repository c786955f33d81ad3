"""The package's import graph: no circles, no import up a layer, no private names.

Every ``import`` statement in ``kalmanjax/`` is read with ``ast`` (imports inside
functions included, so a lazy import cannot hide a circle) and resolved to a
module of the package. The layers, bottom to top::

    0 core   1 steps   2 filters   3 drivers
    4 diagnostics, limits, nn, tasks, and the facade kalmanjax/__init__.py
    5 experiments, cli, __main__

A module may import its own layer or any below it; the import graph has no
cycle; and no module imports a name starting with ``_`` from another module
(private submodules of the importer's own package, such as
``experiments/_plot.py``, are allowed), nor reads ``module._name`` off an
imported kalmanjax module. The checker itself is tested on a synthetic package
that breaks each rule.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "kalmanjax"

LAYERS = {
    "core": 0,
    "steps": 1,
    "filters": 2,
    "drivers": 3,
    "diagnostics": 4,
    "limits": 4,
    "nn": 4,
    "tasks": 4,
    "experiments": 5,
    "cli": 5,
    "__main__": 5,
}
FACADE_LAYER = 4


def _modules(root: Path) -> dict[str, Path]:
    """Module name -> file, for every ``.py`` file under the package ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(importer: str, is_package: bool, level: int, name: str | None) -> str:
    base = importer.split(".")
    if level:
        base = base if is_package else base[:-1]
        base = base[: len(base) - (level - 1)]
        return ".".join(base + ([name] if name else []))
    return name or ""


def _imports(modules: dict[str, Path]):
    """Yield ``(importer, imported module, imported name or None, line)``."""
    for mod, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield mod, alias.name, None, node.lineno
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(mod, is_package, node.level, node.module)
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    if sub in modules:  # ``from pkg import submodule``
                        yield mod, sub, None, node.lineno
                    else:
                        yield mod, target, alias.name, node.lineno


def _layer(module: str, root_name: str, layers: dict[str, int], facade: int) -> int:
    parts = module.split(".")
    if parts == [root_name]:
        return facade
    return layers[parts[1]]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def check_package(
    root: Path, layers: dict[str, int], facade: int
) -> dict[str, list[str]]:
    """Return the violations of the three rules, by rule."""
    modules = _modules(root)
    root_name = root.name
    graph: dict[str, set[str]] = {m: set() for m in modules}
    upward, private = [], []
    for importer, target, name, line in _imports(modules):
        if target not in modules:  # a third-party or standard-library module
            continue
        where = f"{importer}:{line}"
        graph[importer].add(target)
        own, their = (_layer(m, root_name, layers, facade) for m in (importer, target))
        if their > own:
            upward.append(f"{where} (layer {own}) imports {target} (layer {their})")
        if name is not None and name.startswith("_") and not name.startswith("__"):
            private.append(f"{where} imports {name} from {target}")
        if target.rsplit(".", 1)[-1].startswith("_") and target != importer:
            package = target.rsplit(".", 1)[0]
            if not (importer == package or importer.startswith(package + ".")):
                private.append(f"{where} imports the private module {target}")
    private += _private_attributes(modules)
    cycles = [" -> ".join(c) for c in _cycles(graph)]
    return {"cycles": cycles, "upward": upward, "private": private}


def _chain(node: ast.Attribute) -> list[str] | None:
    """``["a", "b", "c"]`` for the expression ``a.b.c``, else None."""
    parts = [node.attr]
    value = node.value
    while isinstance(value, ast.Attribute):
        parts.append(value.attr)
        value = value.value
    if not isinstance(value, ast.Name):
        return None
    return [value.id, *reversed(parts)]


def _private_attributes(modules: dict[str, Path]) -> list[str]:
    """``alias[.submodule..]._name`` where ``alias`` is an imported package module."""
    found = []
    for mod, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), filename=str(path))
        aliases: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name in modules:
                        bound = a.asname or a.name.split(".")[0]
                        aliases[bound] = a.name if a.asname else bound
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(mod, is_package, node.level, node.module)
                for a in node.names:
                    if f"{target}.{a.name}" in modules:
                        aliases[a.asname or a.name] = f"{target}.{a.name}"
        for node in ast.walk(tree):
            chain = _chain(node) if isinstance(node, ast.Attribute) else None
            if not chain or chain[0] not in aliases:
                continue
            target = aliases[chain[0]]
            for i, attr in enumerate(chain[1:], start=1):
                if f"{target}.{attr}" in modules:
                    target = f"{target}.{attr}"
                    continue
                if i == len(chain) - 1 and attr.startswith("_"):
                    if not attr.startswith("__"):
                        found.append(f"{mod}:{node.lineno} reads {attr} off {target}")
                break
    return found


def test_kalmanjax_layers():
    violations = check_package(PACKAGE, LAYERS, FACADE_LAYER)
    assert violations == {"cycles": [], "upward": [], "private": []}


def test_every_module_has_a_layer():
    for module in _modules(PACKAGE):
        parts = module.split(".")
        assert len(parts) == 1 or parts[1] in LAYERS, module


def test_the_checker_finds_each_violation(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "low").mkdir(parents=True)
    (pkg / "high").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "low" / "__init__.py").write_text("")
    (pkg / "high" / "__init__.py").write_text("")
    # an upward import, hidden in a function, closing a cycle with high.b
    (pkg / "low" / "a.py").write_text(
        "def f():\n    from ..high import b\n    return b\n"
    )
    (pkg / "high" / "b.py").write_text(
        "from ..low import a\nfrom ..low.a import _secret\nfrom ..low import c\n"
        "x = c._hidden\nimport pkg.low.c\ny = pkg.low.c._hidden\n"
    )
    (pkg / "low" / "c.py").write_text("_hidden = 1\n")
    found = check_package(pkg, {"low": 0, "high": 1}, 1)
    assert found["cycles"] == ["pkg.high.b -> pkg.low.a"]
    assert found["upward"] == ["pkg.low.a:2 (layer 0) imports pkg.high.b (layer 1)"]
    assert found["private"] == [
        "pkg.high.b:2 imports _secret from pkg.low.a",
        "pkg.high.b:4 reads _hidden off pkg.low.c",
        "pkg.high.b:6 reads _hidden off pkg.low.c",
    ]


def test_dynamic_imports_stay_in_their_layers():
    """The two lazy registries name modules the static walk cannot see."""
    from kalmanjax import experiments, limits

    modules = _modules(PACKAGE)
    for name in experiments.EXPERIMENTS:
        target = experiments.EXPERIMENTS.module_name(name)
        assert target in modules, target
        assert target.startswith("kalmanjax.experiments."), target
        assert not target.rsplit(".", 1)[1].startswith("_"), target
    for name, where in limits._NEEDS_OPTAX.items():
        assert f"kalmanjax.limits.{where}" in modules, (name, where)
        assert name in limits.__all__, name
