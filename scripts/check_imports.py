#!/usr/bin/env python3
"""Check that imports inside meal-edge flow one way: no import circles, no import against the layer order.

    python scripts/check_imports.py          # exit 0 when clean; else one line per problem, exit 1
    python scripts/check_imports.py --graph  # also print every module's imports inside the project

It reads the source with `ast` (nothing is imported, so it runs without the dependencies) and counts every
import: at the top, inside functions (deferred imports are still a dependency, and a circle through one
breaks as soon as someone moves it to the top) and under `if TYPE_CHECKING:`.

The layer order is LAYERS below (docs/architecture.md explains it). A module may import a module of a lower
layer, or one of the same layer inside its own package. ONLY narrows what a few parts may import at all:
the event model and the security code are shared with the district server and must not drag the kiosk in.
A module that matches no entry is an error too: a new package gets its place here, on purpose.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("edge", "enroll", "district")

#: module prefix -> layer; the longest matching prefix decides. Lower layers never import higher ones.
LAYERS: dict[str, int] = {
    "edge.paths": 0,
    "edge.tomlconfig": 0,  # TOML + pydantic with file:line errors, for both configs
    "edge.config": 1,
    "edge.delivery.events": 1,
    "edge.delivery.rosterwire": 2,  # the roster link's messages (issue 13): pure, beside the event contract
    "edge.security": 1,
    # pure meal rules and the kiosk's sentences: only the config below them
    "edge.meals.rules": 2,
    "edge.meals.feedback": 2,
    "edge.meals.speech": 2,  # how amounts and times are said: pure, imports nothing
    "edge.modelbuild": 3,
    "edge.recognition": 4,
    "edge.store": 5,
    "edge.delivery": 6,
    "edge.meals": 7,
    "edge.screens": 8,
    "edge.lab": 8,
    "edge.app": 9,
    "edge.cli": 10,
    # the roster CSV's row checks and the import progress bar: shared with the district's roster import
    "enroll.roster": 3,
    "enroll.progress": 0,
    "enroll": 9,  # meal-enroll: beside the wiring; `meal-edge demo` enrols through it
    "edge": 11,  # only the package itself (edge/__init__.py): a new edge/ package needs its own entry
    "edge.__main__": 11,
    "district": 9,  # the district server: beside the wiring; `meal-edge demo` settles its day through it
}

#: module prefix -> the only project modules (prefixes) it may import besides its own package
ONLY: dict[str, tuple[str, ...]] = {
    "edge.delivery.events": ("edge.security",),
    "edge.security": ("edge.delivery.events",),
    "district": ("edge.delivery.events", "edge.delivery.rosterwire", "edge.security", "edge.tomlconfig",
                 "enroll.roster", "enroll.progress"),
}


#: entries that name only the package's own __init__, not everything under it
PACKAGES_ONLY = frozenset({"edge"})


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    line: int


def _match(module: str, table: Iterable[str]) -> str | None:
    best = None
    for prefix in table:
        below = module.startswith(prefix + ".") and prefix not in PACKAGES_ONLY
        if (module == prefix or below) and (best is None or len(prefix) > len(best)):
            best = prefix
    return best


def _package(module: str) -> str:
    """edge.recognition.embed.base -> edge.recognition; enroll.cli -> enroll."""
    parts = module.split(".")
    return ".".join(parts[:2] if parts[0] == "edge" else parts[:1])


def module_files(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for pkg in PACKAGES:
        base = root / pkg
        if not (base / "__init__.py").is_file():
            continue
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module an imported dotted name lives in (`edge.store.Store` -> `edge.store`)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_pkg = path.name == "__init__.py"
    out: list[Import] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = module.split(".") if is_pkg else module.split(".")[:-1]
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # `from edge.lab import calibrate` depends on the module edge.lab.calibrate itself
            names = [f"{base}.{a.name}" for a in node.names] if base else []
        for name in names:
            target = _resolve(name, modules)
            if target is not None and target != module:
                out.append(Import(module, target, node.lineno))
    return sorted(set(out), key=lambda i: (i.line, i.target))


def direction_problems(imports: Iterable[Import]) -> list[str]:
    problems = []
    for imp in imports:
        src_layer, dst_layer = _match(imp.source, LAYERS), _match(imp.target, LAYERS)
        if src_layer is None or dst_layer is None:
            continue  # reported once per module by unplaced()
        only = _match(imp.source, ONLY)
        if only is not None:
            if _match(imp.target, (*ONLY[only], only)) is None:
                problems.append(
                    f"{imp.source} imports {imp.target} (line {imp.line}): {only} may import only "
                    f"{', '.join(ONLY[only])} from the project"
                )
            continue
        a, b = LAYERS[src_layer], LAYERS[dst_layer]
        if b < a or (b == a and _package(imp.source) == _package(imp.target)):
            continue
        problems.append(
            f"{imp.source} imports {imp.target} (line {imp.line}): against the layer order "
            f"({src_layer} is layer {a}, {dst_layer} is layer {b}; see scripts/check_imports.py LAYERS)"
        )
    return problems


def cycles(modules: Iterable[str], imports: Iterable[Import]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for imp in imports:
        graph[imp.source].add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    component.append(m)
                    if m == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def check(root: Path = ROOT, show_graph: bool = False) -> list[str]:
    modules = module_files(root)
    imports = [imp for m, p in modules.items() for imp in imports_of(m, p, modules)]
    if show_graph:
        for m in sorted(modules):
            print(m, "->", ", ".join(sorted({i.target for i in imports if i.source == m})) or "-")
    problems = [f"{m}: no layer (add it to LAYERS in scripts/check_imports.py)" for m in modules
                if _match(m, LAYERS) is None]
    for component in cycles(modules, imports):
        inside = [f"{i.source} -> {i.target} (line {i.line})" for i in imports
                  if i.source in component and i.target in component]
        problems.append("import circle: " + "; ".join(inside))
    problems += direction_problems(imports)
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=ROOT, help="checkout to check (default: this one)")
    p.add_argument("--graph", action="store_true", help="print the import graph first")
    args = p.parse_args(argv)
    problems = check(args.root, args.graph)
    for line in problems:
        print(line)
    if not problems:
        print(f"imports OK: {len(module_files(args.root))} modules, no circles, all in layer order")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
