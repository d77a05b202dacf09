"""The import graph of :mod:`pquant`: no package cycles, no module cycles, no upward arrows.

Every module under ``pquant/`` is parsed with :mod:`ast` (nothing is imported) and every import of
a ``pquant`` module is an arrow -- module-level imports *and* imports inside functions (a lazy
import is still a dependency; deferring it only hides a cycle). Only imports under
``if TYPE_CHECKING:`` are left out: they never run and exist for annotations.

The unit of the layering is the package right under ``pquant`` (``pquant.nn``, ``pquant.config``,
...; a top-level module such as ``pquant/runner.py`` is a unit of its own). :data:`LAYERS` lists
them from the bottom up; an arrow may only go from a unit to one in a strictly lower layer (or
stay inside its unit). The root ``pquant/__init__.py`` is the public facade and sits on top.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "pquant"

#: The layering, bottom first. A unit may import only units of lower layers (and itself); units
#: of one layer must not import each other.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "distributed"),  # ConfigError and value checks; torchrun process-group helpers
    ("kernels",),  # optional compiled accelerators for the quantizer and layer ops
    ("quant",),  # fixed-point ops, quantizer modules, formats
    ("config",),  # schemas, composition, typed sections; discovers domain schemas by name
    ("pruning",),  # pruning methods (config dataclass + per-layer module each)
    ("nn",),  # PQ layers, layer replacement, finalisation
    ("metrics",),  # sparsity / bits / EBOPs reports over a model
    ("data", "models"),  # data sets and model builders (config dataclass + builder each)
    ("fitcompress",),  # the FITCompress search over a model
    ("training",),  # the stage-driven loop and losses
    ("tracking",),  # MLflow / null trackers, run bookkeeping
    ("hpo",),  # Optuna search spaces and studies
    ("load",),  # load_run: a tracked run back as a model
    ("distill",),  # knowledge distillation (the teacher is a tracked run)
    ("export",),  # QONNX / hls4ml writers and `python -m pquant.export`
    ("runner", "compare"),  # one run, end to end; run comparison
    ("__main__",),  # `python -m pquant`
]



@dataclass(frozen=True)
class Arrow:
    """``src`` imports ``dst`` (both dotted module names) at ``line``; ``lazy``: inside a function."""

    src: str
    dst: str
    line: int
    lazy: bool

    def __str__(self) -> str:
        where = "inside a function" if self.lazy else "at module level"
        return f"{self.src} -> {self.dst} (line {self.line}, {where})"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    if not is_package:
        base.pop()
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _is_type_checking(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _targets(importer: str, is_package: bool, node: ast.AST) -> list[str]:
    """The pquant modules an import statement loads (``from a import b``: ``a.b`` if a module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "pquant"]
    base = _resolve(importer, is_package, node)
    if base.split(".")[0] != "pquant":
        return []
    found = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
    if len(found) < len(node.names):  # names defined in ``base`` itself
        found.append(base)
    return found


def _arrows(name: str, path: Path) -> list[Arrow]:
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    out: list[Arrow] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if _is_type_checking(child):
                for sub in child.orelse:  # the else branch does run
                    visit(ast.Module(body=[sub], type_ignores=[]), lazy)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                out.extend(Arrow(name, dst, child.lineno, lazy)
                           for dst in _targets(name, is_package, child) if dst != name)
            visit(child, lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                    ast.Lambda)))

    visit(tree, False)
    return out


ARROWS: list[Arrow] = [a for name, path in MODULES.items() for a in _arrows(name, path)]


def unit(module: str) -> str:
    """The layering unit of a module: the package (or top-level module) right under pquant."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "pquant"


RANK = {name: level for level, names in enumerate(LAYERS) for name in names}
RANK["pquant"] = len(LAYERS)  # the public facade (pquant/__init__.py) is on top




def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return found


# ----------------------------------------------------------------------------------- the graph
def test_the_walk_sees_the_known_arrows():
    """The parser is not blind: module-level, function-level and ``from pquant import x`` arrows."""
    pairs = {(a.src, a.dst, a.lazy) for a in ARROWS}
    assert ("pquant.runner", "pquant.config.sections", False) in pairs
    assert ("pquant.nn.dense", "pquant.kernels", False) in pairs  # from pquant import kernels
    assert ("pquant.__main__", "pquant.runner", True) in pairs  # inside main()
    assert len(MODULES) > 80 and len(ARROWS) > 200


def test_every_unit_has_a_layer():
    units = {unit(m) for m in MODULES} - {"pquant"}
    missing = sorted(units - set(RANK))
    assert not missing, f"packages/modules missing from LAYERS in {__file__}: {missing}"
    stale = sorted(set(RANK) - units - {"pquant"})
    assert not stale, f"LAYERS names units that do not exist: {stale}"


def test_no_arrow_from_a_lower_package_to_a_higher_one():
    bad = [a for a in ARROWS
           if unit(a.src) != unit(a.dst) and RANK[unit(a.src)] <= RANK[unit(a.dst)]]
    lines = [f"  {a}  [{unit(a.src)} (layer {RANK[unit(a.src)]}) -> {unit(a.dst)} "
             f"(layer {RANK[unit(a.dst)]})]" for a in bad]
    assert not bad, ("imports against the layering (LAYERS in tests/test_import_graph.py):\n"
                     + "\n".join(lines))


def test_no_package_cycles():
    edges: dict[str, set[str]] = defaultdict(set)
    for a in ARROWS:
        if unit(a.src) != unit(a.dst):
            edges[unit(a.src)].add(unit(a.dst))
    cycles = _cycles(edges)
    report = []
    for comp in cycles:
        members = set(comp)
        report.append(" <-> ".join(comp) + ":\n" + "\n".join(
            f"    {a}" for a in ARROWS if unit(a.src) in members and unit(a.dst) in members
            and unit(a.src) != unit(a.dst)))
    assert not cycles, "package cycles:\n" + "\n".join(report)


def test_no_module_cycles():
    edges: dict[str, set[str]] = defaultdict(set)
    for a in ARROWS:
        if a.dst in MODULES:
            edges[a.src].add(a.dst)
    # a package's __init__ importing its own submodules is how packages re-export; the reverse
    # (a submodule importing names from its package's __init__) closes a cycle and counts
    cycles = _cycles(edges)
    report = []
    for comp in cycles:
        members = set(comp)
        report.append(" <-> ".join(comp) + ":\n" + "\n".join(
            f"    {a}" for a in ARROWS if a.src in members and a.dst in members))
    assert not cycles, "module cycles:\n" + "\n".join(report)


# ----------------------------------------------------------------------------------- leaves
def test_errors_is_a_leaf():
    """``pquant.errors`` (ConfigError and the value checks) imports nothing from pquant."""
    assert "pquant.errors" in MODULES
    assert [str(a) for a in ARROWS if a.src == "pquant.errors"] == []


def test_config_imports_no_domain_package():
    """config finds domain schemas by name (discovery), it never imports a domain package."""
    domain = {"pruning", "data", "models", "nn", "metrics", "training", "fitcompress", "distill",
              "tracking", "hpo", "export", "load", "runner"}
    bad = [str(a) for a in ARROWS if unit(a.src) == "config" and unit(a.dst) in domain]
    assert bad == []
