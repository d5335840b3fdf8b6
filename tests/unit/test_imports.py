"""Imports go one way (docs/ARCHITECTURE.md): front ends (netctl/) -> runner/ and cni_plugins/ ->
libnetwork/ -> drivers/, with no import cycles among the product modules, and no product module longer
than MAX_LINES.

Every module is parsed with `ast`, never imported: the test sees every import, also those inside
functions (lazy ones, which count: a lazy import is a dependency all the same, only a cheaper one) and
literal `__import__("x")` / `importlib.import_module("x")` calls. Imports under `if TYPE_CHECKING:` are
annotations only: they are held to the layer rules but take no part in cycles (they never run).

A failure names the importing module, its line and the module it imports, e.g.
    runner.fastcli:70 (in a function) imports netctl.cli: runner/ must not import netctl/
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PRODUCT_PACKAGES = ("libnetwork", "drivers", "runner", "cni_plugins", "netctl")
MAX_LINES = 550

# What libnetwork may import of drivers/: the driver contract and the registry that finds a driver by
# name. Everything else of drivers/ is a concrete driver, which libnetwork must not know.
DRIVER_CONTRACT = ("drivers.base", "drivers.registry")

# libnetwork's foundation: the modules below the library's operations that drivers may use too
# (errors, plain model objects, netns handles, netlink, sysctl, file locks, the state root's names).
# A foundation module imports nothing of libnetwork outside the foundation, and nothing of drivers/.
LIBNETWORK_FOUNDATION = (
    "libnetwork.errors",
    "libnetwork.model",
    "libnetwork.netns",
    "libnetwork.netlink",
    "libnetwork.sysctl",
    "libnetwork.flock",
    "libnetwork.rootdir",
)

# Which top-level packages each package must not import (the layer map, read upwards).
FORBIDDEN = {
    "drivers": ("runner", "cni_plugins", "netctl"),
    "libnetwork": ("runner", "cni_plugins", "netctl"),
    "runner": ("netctl", "cni_plugins"),
    "cni_plugins": ("runner", "netctl"),
    "netctl": (),
}


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    imported: str  # dotted module name (a product module)
    line: int
    lazy: bool  # inside a function
    typing_only: bool  # under `if TYPE_CHECKING:`

    def __str__(self) -> str:
        where = " (in a function)" if self.lazy else ""
        where += " (under TYPE_CHECKING)" if self.typing_only else ""
        return f"{self.importer}:{self.line}{where} imports {self.imported}"


def product_modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the product packages (packages by their __init__)."""
    found = {}
    for package in PRODUCT_PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _nearest_known(name: str, known: dict[str, Path]) -> str | None:
    """`name` itself if it is a product module, else the closest package above it that is."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _ImportCollector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, known: dict[str, Path]):
        self.module = module
        self.package = module if is_package else module.rpartition(".")[0]
        self.known = known
        self.depth = 0  # functions (and lambdas) we are inside
        self.typing = 0  # `if TYPE_CHECKING:` blocks we are inside
        self.found: list[Import] = []

    def _add(self, target: str | None, line: int) -> None:
        if target is None or target.split(".")[0] not in PRODUCT_PACKAGES:
            return
        resolved = _nearest_known(target, self.known)
        if resolved is not None and resolved != self.module:
            found = Import(self.module, resolved, line, self.depth > 0, self.typing > 0)
            if found not in self.found:  # `from m import a, b` is one import of m
                self.found.append(found)

    def _function(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        self.typing += 1
        for child in node.body:
            self.visit(child)
        self.typing -= 1
        for child in node.orelse:
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:  # relative: from the package (one level up per extra dot)
            base = self.package.split(".")
            base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        for alias in node.names:
            # `from pkg import mod` imports the module pkg.mod; `from mod import name` imports mod.
            candidate = f"{source}.{alias.name}"
            self._add(candidate if candidate in self.known else source, node.lineno)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        if name in ("__import__", "import_module") and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                self._add(first.value, node.lineno)
        self.generic_visit(node)


def collect_imports(known: dict[str, Path] | None = None) -> list[Import]:
    known = known if known is not None else product_modules()
    found = []
    for module, path in known.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        collector = _ImportCollector(module, path.name == "__init__.py", known)
        collector.visit(tree)
        found.extend(collector.found)
    return found


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_violation(importer: str, imported: str) -> str | None:
    """Why `importer` must not import `imported` (docs/ARCHITECTURE.md), or None if it may."""
    source, target = importer.split(".")[0], imported.split(".")[0]
    if target in FORBIDDEN[source]:
        return f"{source}/ must not import {target}/ (it is above it)"
    if source == "libnetwork" and target == "drivers" and not any(_within(imported, c) for c in DRIVER_CONTRACT):
        return ("libnetwork/ may import only drivers.base and drivers.registry (the driver contract), "
                "never a concrete driver")  # fmt: skip
    in_foundation = any(_within(imported, f) for f in LIBNETWORK_FOUNDATION)
    if source == "drivers" and target == "libnetwork" and not in_foundation:
        return ("drivers/ may import only libnetwork's foundation (" + ", ".join(LIBNETWORK_FOUNDATION)
                + "), never the library's operations above it")  # fmt: skip
    if any(_within(importer, f) for f in LIBNETWORK_FOUNDATION):
        if target == "drivers":
            return "libnetwork's foundation must not import drivers/ (drivers import the foundation)"
        if target == "libnetwork" and not in_foundation and imported != "libnetwork":
            return ("libnetwork's foundation must not import the library's operations above it "
                    "(drivers import the foundation)")
    return None


def cycles(imports: list[Import]) -> list[list[Import]]:
    """Import cycles among product modules: for every strongly connected set of modules, the shortest
    cycle through each of its members (each cycle once, as a list of its imports)."""
    edges: dict[str, dict[str, Import]] = {}
    for imp in imports:
        if not imp.typing_only:
            edges.setdefault(imp.importer, {}).setdefault(imp.imported, imp)
    found: dict[frozenset, list[Import]] = {}
    for component in _strongly_connected(edges):
        for start in sorted(component):
            cycle = _shortest_cycle(start, edges, component)
            if cycle:
                found.setdefault(frozenset((i.importer, i.imported) for i in cycle), cycle)
    return list(found.values())


def _strongly_connected(edges: dict[str, dict[str, Import]]) -> list[set[str]]:
    """Tarjan's algorithm (iterative): the components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    nodes = set(edges) | {t for targets in edges.values() for t in targets}
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, {}))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, {})))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)
    return components


def _shortest_cycle(start: str, edges: dict[str, dict[str, Import]], within: set[str]) -> list[Import]:
    previous: dict[str, Import] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target, imp in sorted(edges.get(node, {}).items()):
                if target not in within:
                    continue
                if target == start:
                    path = [imp]
                    while path[0].importer != start:
                        path.insert(0, previous[path[0].importer])
                    return path
                if target not in previous:
                    previous[target] = imp
                    following.append(target)
        frontier = following
    return []


def _describe(cycle: list[Import]) -> str:
    names = " -> ".join([cycle[0].importer] + [i.imported for i in cycle])
    return names + "\n      " + "\n      ".join(str(i) for i in cycle)


# --- the tests ---------------------------------------------------------------------------------------


def test_imports_go_one_way():
    wrong = []
    for imp in sorted(collect_imports(), key=lambda i: (i.importer, i.line, i.imported)):
        reason = layer_violation(imp.importer, imp.imported)
        if reason:
            wrong.append(f"{imp}: {reason}")
    assert not wrong, "upward imports (see docs/ARCHITECTURE.md):\n  " + "\n  ".join(wrong)


def test_no_import_cycles():
    found = cycles(collect_imports())
    assert not found, f"{len(found)} import cycle(s) among product modules:\n  " + "\n  ".join(
        _describe(c) for c in sorted(found, key=lambda c: [i.importer for i in c])
    )


def test_modules_stay_small():
    long = []
    for path in product_modules().values():
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES:
            long.append(f"{path.relative_to(REPO)}: {lines} lines")
    assert not long, f"product modules over {MAX_LINES} lines (split them by responsibility):\n  " + "\n  ".join(
        sorted(long)
    )


def _assigned_constants(path: Path, name: str) -> list[tuple[int, object]]:
    """(line, value) of every module-level `NAME = <constant>` in a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        (node.lineno, node.value.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Constant)
        and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
    ]


def test_the_default_root_is_defined_once():
    """libnetwork/rootdir.py defines DEFAULT_ROOT; cni_plugins/launch.py keeps a copy (it imports no
    `os`, which rootdir needs), which must be equal. Nothing else defines it or spells it out."""
    modules = product_modules()
    (_, default), = _assigned_constants(modules["libnetwork.rootdir"], "DEFAULT_ROOT")
    (_, launcher_copy), = _assigned_constants(modules["cni_plugins.launch"], "DEFAULT_ROOT")
    assert launcher_copy == default, "cni_plugins/launch.py's DEFAULT_ROOT differs from libnetwork/rootdir.py's"
    others = []
    for module, path in modules.items():
        if module in ("libnetwork.rootdir", "cni_plugins.launch"):
            continue
        for line, _ in _assigned_constants(path, "DEFAULT_ROOT"):
            others.append(f"{path.relative_to(REPO)}:{line}: DEFAULT_ROOT defined again")
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Constant) and node.value == default:
                others.append(f"{path.relative_to(REPO)}:{node.lineno}: {default!r} spelled out")
    assert not others, "use libnetwork.rootdir.DEFAULT_ROOT (or rootdir.resolve()):\n  " + "\n  ".join(others)


# --- the checker checks itself -----------------------------------------------------------------------


def _parse(module: str, source: str, known: set[str], is_package: bool = False) -> list[Import]:
    collector = _ImportCollector(module, is_package, {name: Path() for name in known})
    collector.visit(ast.parse(source))
    return collector.found


def test_the_collector_sees_lazy_relative_dynamic_and_typing_imports():
    known = {"netctl", "netctl.cli", "netctl.output", "runner", "runner.paths", "libnetwork", "libnetwork.model"}
    source = (
        "import os\n"
        "from typing import TYPE_CHECKING\n"
        "from netctl import output\n"
        "from .cli import main\n"
        "if TYPE_CHECKING:\n"
        "    from libnetwork.model import Network\n"
        "def f():\n"
        "    from runner.paths import Layout\n"
        "    return __import__('netctl.cli', fromlist=['x'])\n"
    )
    found = {(i.imported, i.line, i.lazy, i.typing_only) for i in _parse("netctl.lab_cli", source, known)}
    assert found == {
        ("netctl.output", 3, False, False),
        ("netctl.cli", 4, False, False),
        ("libnetwork.model", 6, False, True),
        ("runner.paths", 8, True, False),
        ("netctl.cli", 9, True, False),
    }


def test_the_rules_and_the_cycle_finder():
    assert layer_violation("runner.fastcli", "netctl.cli")
    assert layer_violation("libnetwork.controller", "drivers.overlay")
    assert layer_violation("drivers.bridge", "libnetwork.controller")
    assert layer_violation("libnetwork.netns", "libnetwork.controller")
    assert layer_violation("cni_plugins.bridge", "runner.paths")
    assert not layer_violation("libnetwork.controller", "drivers.registry")
    assert not layer_violation("drivers.bridge", "libnetwork.netlink")
    assert not layer_violation("netctl.cli", "runner.paths")
    assert not layer_violation("runner.lifecycle", "libnetwork.controller")

    def imp(a: str, b: str, typing_only: bool = False) -> Import:
        return Import(a, b, 1, False, typing_only)

    found = cycles([imp("a", "b"), imp("b", "c"), imp("c", "a"), imp("c", "d"), imp("d", "e", True), imp("e", "d")])
    assert [[(i.importer, i.imported) for i in c] for c in found] == [[("a", "b"), ("b", "c"), ("c", "a")]]
