"""The API reference, generated from the docstrings, and the check that it is whole.

``{kj-api} kalmanjax.steps`` documents that package and every public module under it:
for each, the names of its ``__all__`` whose object is not documented at a shallower
module (``kj.predict`` is documented once, as ``kalmanjax.predict``, not again under
``kalmanjax.steps`` and ``kalmanjax.steps.linear``).

After reading every page, :func:`check_api` walks the package independently (every
public module with an ``__all__``) and warns, which ``-W`` turns into a failed build,
for each public name whose object no page documents.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import typing
from collections.abc import Iterable
from functools import cache
from types import ModuleType, UnionType

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.errors import PycodeError
from sphinx.pycode import ModuleAnalyzer
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

PACKAGE = "kalmanjax"
logger = logging.getLogger(__name__)


def _is_public(name: str) -> bool:
    return not any(part.startswith("_") for part in name.split("."))


@cache
def public_modules() -> tuple[str, ...]:
    """Every public module of the package, shallow before deep, then by name."""
    pkg = importlib.import_module(PACKAGE)
    names = [PACKAGE] + [
        m.name
        for m in pkgutil.walk_packages(pkg.__path__, PACKAGE + ".")
        if _is_public(m.name) and not m.name.endswith("__main__")
    ]
    return tuple(sorted(names, key=lambda n: (n.count("."), n)))


def _exported(module: str) -> list[tuple[str, object]]:
    mod = importlib.import_module(module)
    return [(n, getattr(mod, n)) for n in getattr(mod, "__all__", ())]


@cache
def canonical_module() -> dict[int, str]:
    """``id(obj) -> `` the shallowest public module whose ``__all__`` holds it."""
    home: dict[int, str] = {}
    for module in public_modules():
        for _, obj in _exported(module):
            home.setdefault(id(obj), module)
    return home


def _entry(module: str, name: str, obj: object) -> list[str]:
    target = f"{module}.{name}"
    if isinstance(obj, ModuleType):
        return [f"- ``{target}``: the module :mod:`{obj.__name__}`", ""]
    if inspect.isclass(obj):
        lines = [f".. autoclass:: {target}"]
        if not issubclass(obj, tuple):  # NamedTuple fields are in the docstring
            lines.append("   :members:")
        return [*lines, ""]
    alias = isinstance(obj, UnionType) or typing.get_origin(obj) is not None
    if callable(obj) and not alias:  # a typing alias is data, not a function
        return [f".. autofunction:: {target}", ""]
    doc = _attribute_doc(name, obj) or [f"A ``{type(obj).__name__}``."]
    value = " ".join(repr(obj).split())
    value = value if len(value) <= 80 else value[:77] + "..."
    head = [f".. py:data:: {name}", f"   :module: {module}", f"   :value: {value}", ""]
    return head + ["   " + line for line in doc] + [""]


def _attribute_doc(name: str, obj: object) -> list[str]:
    """The ``#:`` comment over ``name = ...`` in a module that exports ``obj``.

    Re-exported data carries no docstring of its own (``kj.FORMS`` is a tuple), so
    the comment is looked up where the name is assigned, deepest module first.
    """
    for module in reversed(public_modules()):
        if not any(o is obj for _, o in _exported(module)):
            continue
        try:
            docs = ModuleAnalyzer.for_module(module).find_attr_docs()
        except PycodeError:
            continue
        if ("", name) in docs:
            return [line for line in docs[("", name)] if line.strip()]
    return []


class KjApi(SphinxDirective):
    """Document a package and its public submodules (see the module docstring)."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        """Parse the generated autodoc directives into this page."""
        root = self.arguments[0]
        home = canonical_module()
        lines: list[str] = []
        for module in public_modules():
            if module != root and not module.startswith(root + "."):
                continue
            # re-read this page when the module (its docstrings, its __all__) changes
            self.env.note_dependency(importlib.import_module(module).__file__)
            if root == PACKAGE and module != PACKAGE:
                continue  # the top level documents its own names only
            mine = [(n, o) for n, o in _exported(module) if home[id(o)] == module]
            is_package = module.count(".") <= root.count(".")
            if not mine and not is_package:
                continue
            lines += [module, "-" * len(module), ""]
            lines += [f".. automodule:: {module}", "   :no-members:", ""]
            for name, obj in mine:
                lines += _entry(module, name, obj)
        container = nodes.section()
        source = self.get_source_info()[0]
        nested_parse_with_titles(self.state, StringList(lines, source), container)
        return container.children


def _resolve(fullname: str) -> object | None:
    parts = fullname.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def missing_names(documented: Iterable[str]) -> list[str]:
    """The public names (``module.name``) whose object none of ``documented`` is.

    Args:
        documented: the full names the reference documents (objects and modules).
    """
    found = {id(obj) for obj in map(_resolve, documented) if obj is not None}
    return [
        f"{module}.{name}"
        for module in public_modules()
        for name, obj in _exported(module)
        if id(obj) not in found
    ]


def check_api(app, env) -> None:
    """Warn for every public name in any ``__all__`` that no page documents."""
    py = env.get_domain("py")
    missing = missing_names([*py.objects, *py.modules])
    if missing:
        logger.warning(
            "the API reference misses %d public name(s): %s",
            len(missing),
            ", ".join(missing),
            type="kj-api",
        )


def setup(app):
    """Register the directive and the check."""
    app.add_directive("kj-api", KjApi)
    app.connect("env-check-consistency", check_api)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
