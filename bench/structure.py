"""The package's structure, read from its source: import cycles, the longest functions,
imports of another module's private names, and public functions with many positional
parameters. Run by hand (``python bench/structure.py``); tests/test_structure.py checks the
same facts.

Every import counts, at module level or inside a function (a lazy import still ties the two
modules together); imports under ``if TYPE_CHECKING:`` do not (they never run).
"""

from __future__ import annotations

import argparse
import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "facediff"


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the imported facediff module
    names: tuple[str, ...]  # names taken from it (from-imports)
    line: int


@dataclass(frozen=True)
class Function:
    qualname: str
    module: str
    line: int
    length: int  # source lines, decorators excluded
    positional: int  # parameters that can be passed by position (self/cls excluded)
    nested: bool = False  # defined inside another function (a closure, not an API)


def modules(root: Path = ROOT) -> dict[str, Path]:
    """facediff module name -> file."""
    out = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _walk_runtime(node: ast.AST):
    """ast.walk, skipping ``if TYPE_CHECKING:`` bodies."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            for other in child.orelse:
                yield other
                yield from _walk_runtime(other)
            continue
        yield child
        yield from _walk_runtime(child)


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The facediff module an import name refers to (a module, or a name in a package)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def imports(root: Path = ROOT) -> list[Import]:
    known = modules(root)
    out = []
    for mod, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in _walk_runtime(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = _resolve(alias.name, known)
                    if target and target != mod:
                        out.append(Import(mod, target, (), node.lineno))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                if not base.startswith(PACKAGE):
                    continue
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    if sub in known:  # `from facediff.x import submodule`
                        target, names = sub, ()
                    else:
                        target, names = _resolve(base, known), (alias.name,)
                    if target and target != mod:
                        out.append(Import(mod, target, names, node.lineno))
    return out


def cycles(edges: list[Import]) -> list[list[str]]:
    """Each elementary cycle once (as its modules, smallest name first), shortest first."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.module, set()).add(e.target)
    found: set[tuple[str, ...]] = set()

    def visit(start: str, node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                found.add(tuple(path))
            elif nxt > start and nxt not in path:  # each cycle from its smallest module
                visit(start, nxt, [*path, nxt])

    for start in sorted(graph):
        visit(start, start, [start])
    return sorted((list(c) for c in found), key=lambda c: (len(c), c))


def functions(root: Path = ROOT) -> list[Function]:
    out = []
    for mod, path in modules(root).items():
        tree = ast.parse(path.read_text(), str(path))

        def walk(node: ast.AST, prefix: str, mod: str = mod, nested: bool = False) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.ClassDef):
                    walk(child, f"{prefix}{child.name}.", nested=nested)
                elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    args = child.args
                    positional = [a.arg for a in args.posonlyargs + args.args]
                    if positional and positional[0] in ("self", "cls"):
                        positional = positional[1:]
                    out.append(Function(f"{prefix}{child.name}", mod, child.lineno,
                                        child.end_lineno - child.lineno + 1, len(positional),
                                        nested))
                    walk(child, f"{prefix}{child.name}.", nested=True)

        walk(tree, "")
    return out


def private_imports(edges: list[Import]) -> list[Import]:
    """Imports of a name another module keeps private (``from facediff.cli import _device``)."""
    return [e for e in edges if any(n.startswith("_") and not n.startswith("__")
                                    for n in e.names)]


def is_public(f: Function) -> bool:
    if f.nested:
        return False
    parts = f.qualname.split(".")
    if any(p.startswith("_") for p in parts) and not parts[-1].startswith("__"):
        return False
    if parts[-1].startswith("__") and parts[-1] != "__init__":
        return False
    return not any(p.startswith("_") for p in f.module.split("."))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--top", type=int, default=10, help="longest functions to list")
    p.add_argument("--root", default=str(ROOT), help="checkout to read")
    args = p.parse_args()
    root = Path(args.root)
    edges = imports(root)
    found = cycles(edges)
    print(f"import cycles ({len(found)}):")
    for c in found:
        print("  " + " -> ".join([*c, c[0]]))
    print(f"\nthe {args.top} longest functions:")
    print("| function | module | lines |")
    print("|---|---|---|")
    for f in sorted(functions(root), key=lambda f: -f.length)[:args.top]:
        print(f"| {f.qualname} | {f.module} | {f.length} |")
    bad = private_imports(edges)
    print(f"\nprivate names imported from another module ({len(bad)}):")
    for e in bad:
        print(f"  {e.module}:{e.line} imports {', '.join(e.names)} from {e.target}")
    many = [f for f in functions(root) if is_public(f) and f.positional > 4]
    print(f"\npublic functions with more than 4 positional parameters ({len(many)}):")
    for f in many:
        print(f"  {f.module}.{f.qualname} ({f.positional})")
    print(f"\n{len(modules(root))} modules, {sum(1 for _ in functions(root))} functions")


if __name__ == "__main__":
    main()
