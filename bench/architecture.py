"""The import graph of src/clip4rec, checked against the pipeline's direction and drawn into docs/architecture.md.

    python bench/architecture.py           # rewrite docs/architecture.md from the code
    python bench/architecture.py --check   # exit 1 if an import goes against the pipeline or the page is stale

Every `import` and `from ... import` counts, also those inside functions (a lazy import is still a dependency).
Each package (and each top-level module) sits on one layer of LAYERS; it may import the layers below it and
never one above: data flows one way, each stage reading the artifact of the one before. The shared modules at
the bottom import no stage. `from clip4rec import __version__` (the package root) is no edge: Python imports the
root before any submodule anyway. tests/test_import_direction.py runs the same check.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC, PAGE = ROOT / "src" / "clip4rec", ROOT / "docs" / "architecture.md"

# Bottom to top. A unit (a package under src/clip4rec, or a top-level module) may import units of lower layers.
LAYERS: list[tuple[str, tuple[str, ...], str]] = [
    ("shared", ("config", "files", "machine", "pretrained", "ranking"),
     "typed settings, atomic writes, machine description, packaged weights, the ranking kernel"),
    ("data", ("data",), "Dataset (items + interactions, Parquet), importers, splits"),
    ("encode", ("encode",), "stage 1: frozen encoders -> EmbeddingStore"),
    ("model", ("model",), "stage 2's model: item side + user tower; the Run artifact (save/load)"),
    ("train", ("train",), "training loop; writes a Run"),
    ("evaluate", ("evaluate",), "full-ranking metrics of a Run, TREC files"),
    ("serve", ("serve",), "HTTP service over a Run"),
    ("experiments", ("experiments",), "chains the stages: train+evaluate, compare grids, demo, reports"),
    ("entry points", ("cli", "api"), "the command line and the Python API"),
]
RANK = {unit: i for i, (_, units, _) in enumerate(LAYERS) for unit in units}

Edges = dict[tuple[str, str], set[str]]  # (importer unit, imported unit) -> importing modules


def unit_of(path: Path, src: Path) -> str:
    """`model` for src/clip4rec/model/build.py, `config` for src/clip4rec/config.py."""
    first = path.relative_to(src).parts[0]
    return first.removesuffix(".py")


def imported_modules(tree: ast.AST, module: str, is_package: bool) -> list[str]:
    """Dotted names of every clip4rec module a file imports (relative imports resolved; `from pkg import mod`
    gives pkg.mod, which is pkg itself when mod is a name defined in it)."""
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found += [f"{prefix}.{a.name}" for a in node.names]
    return [name for name in found if name.startswith("clip4rec.")]


def import_edges(src: Path = SRC) -> Edges:
    edges: Edges = defaultdict(set)
    units = {p.name.removesuffix(".py") for p in src.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src)
        if len(rel.parts) == 1 and rel.name == "__init__.py":
            continue  # the package root: re-exports for users, imported before anything else
        module = "clip4rec." + ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
        importer = unit_of(path, src)
        for name in imported_modules(ast.parse(path.read_text()), module, rel.name == "__init__.py"):
            target = name.split(".")[1]
            if target in units and target != importer:
                edges[(importer, target)].add(str(rel))
    return dict(edges)


def violations(edges: Edges) -> list[str]:
    """Imports against the direction (or of a unit no layer names), one line each."""
    out = []
    for (a, b), files in sorted(edges.items()):
        for unit in (a, b):
            if unit not in RANK:
                out.append(f"{unit} is on no layer: add it to LAYERS in bench/architecture.py")
        if a in RANK and b in RANK and RANK[b] > RANK[a]:
            out.append(f"{a} (layer {LAYERS[RANK[a]][0]}) imports {b} (layer {LAYERS[RANK[b]][0]}): {sorted(files)}")
    return sorted(set(out))


def cycles(edges: Edges) -> list[list[str]]:
    """Every cycle between units, as found by a depth-first search (each reported once, from its smallest unit)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    found: set[tuple[str, ...]] = set()

    def visit(start: str, node: str, path: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt == start:
                found.add(tuple(path))
            elif nxt not in path and nxt > start:
                visit(start, nxt, path + [nxt])

    for unit in sorted(graph):
        visit(unit, unit, [unit])
    return [list(c) + [c[0]] for c in sorted(found)]


def render(edges: Edges) -> str:
    lines = ["# Architecture: the import graph", "",
             "Generated by `python bench/architecture.py` from the imports in `src/clip4rec` (imports inside functions "
             "included); do not edit by hand. `tests/test_import_direction.py` fails when an import goes against the "
             "layers below or this page is out of date.", "",
             "Layers, bottom to top: a package may import the layers below it, never one above, so data flows one way "
             "(raw files -> Dataset -> EmbeddingStore -> Run -> metrics / HTTP).", "",
             "| layer | packages / modules | what it holds |", "|---|---|---|"]
    lines += [f"| {i} {name} | {', '.join(f'`{u}`' for u in units)} | {role} |" for i, (name, units, role) in
              enumerate(LAYERS)]
    lines += ["", "An arrow `a --> b` reads \"a imports b\"; imports of the shared layer, open to every package, are "
              "left out of the drawing (they are in the table below).", "", "```mermaid", "flowchart BT"]
    for i, (name, units, _) in enumerate(LAYERS):
        lines.append(f"  subgraph L{i}[\"{name}\"]")
        lines += [f"    {u}[\"{u}\"]" for u in units]
        lines.append("  end")
    lines += [f"  {a} --> {b}" for a, b in sorted(edges) if RANK.get(b) != 0]
    lines += ["```", "", "## Who imports what", "", "| package | imports | from the modules |", "|---|---|---|"]
    for (a, b), files in sorted(edges.items(), key=lambda e: (RANK.get(e[0][0], -1), e[0][0], RANK.get(e[0][1], -1))):
        lines.append(f"| `{a}` | `{b}` | {', '.join(f'`{f}`' for f in sorted(files))} |")
    bad, loops = violations(edges), cycles(edges)
    lines += ["", "## Check", ""]
    lines += [f"- against the direction: {v}" for v in bad] + [f"- cycle: {' -> '.join(c)}" for c in loops]
    if not bad and not loops:
        lines.append("Every import points to a lower layer; no package cycle.")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 on a problem or a stale page")
    args = parser.parse_args()
    edges = import_edges()
    page = render(edges)
    problems = violations(edges) + [" -> ".join(c) for c in cycles(edges)]
    for p in problems:
        print(p, file=sys.stderr)
    if args.check:
        stale = not PAGE.exists() or PAGE.read_text() != page
        if stale:
            print(f"{PAGE.relative_to(ROOT)} is out of date: run python bench/architecture.py", file=sys.stderr)
        return 1 if problems or stale else 0
    PAGE.write_text(page)
    print(f"wrote {PAGE.relative_to(ROOT)}: {len(edges)} package edges, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
