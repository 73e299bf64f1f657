"""The gateway core stays sans-I/O: no module it reaches, following imports within the ipsecrtp
package, imports threading, queue, select, socket, subprocess, time, vici or pyroute2. Read from
the source with ``ast`` (nothing is imported), so a test importing one of them itself cannot hide
a violation. The checker is tested on synthetic packages first: it has to be able to fail."""

from __future__ import annotations

import ast
from pathlib import Path

FORBIDDEN = frozenset({"threading", "queue", "select", "socket", "subprocess", "time", "vici", "pyroute2"})
ROOT = Path(__file__).resolve().parents[2]  # the repository: ipsecrtp/ lives here


def _source(root: Path, module: str) -> Path | None:
    """The file of a module of the package under ``root`` (None: not ours, or not a module)."""
    base = root.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported(tree: ast.Module, module: str, is_package: bool, root: Path) -> list[str]:
    """Absolute names of what a module imports when it runs (anywhere in it, functions included;
    not under ``if TYPE_CHECKING:``, which never runs)."""
    out: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            out.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".") if is_package else module.split(".")[:-1]
                parts = parts[:len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            out.append(base)
            # "from pkg import name": name may be a module of its own
            out.extend(f"{base}.{alias.name}" for alias in node.names
                       if _source(root, f"{base}.{alias.name}") is not None)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def impure_imports(root: Path, package: str, start: list[str]) -> list[str]:
    """Every forbidden import reached from the ``start`` modules, as the import chain leading to it."""
    chains: dict[str, list[str]] = {}
    todo: list[tuple[str, list[str]]] = [(m, []) for m in start]
    found: list[str] = []
    while todo:
        module, chain = todo.pop()
        if module in chains:
            continue
        chains[module] = chain + [module]
        # importing a.b.c runs a/__init__.py and a/b/__init__.py first, for the same importer
        parents = [".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)]
        todo.extend((p, chain) for p in parents if p not in chains)
        path = _source(root, module)
        if path is None:
            continue
        tree = ast.parse(path.read_text(), str(path))
        for name in _imported(tree, module, path.name == "__init__.py", root):
            top = name.split(".")[0]
            if top in FORBIDDEN:
                found.append(" -> ".join(chains[module] + [name]))
            elif top == package:
                todo.append((name, chains[module]))
    return sorted(set(found))


def test_the_gateway_core_reaches_no_io_module():
    start = [f"ipsecrtp.gateway.{p.stem}" for p in sorted((ROOT / "ipsecrtp" / "gateway").glob("*.py"))
             if p.stem != "__init__"]
    assert "ipsecrtp.gateway.core" in start
    assert impure_imports(ROOT, "ipsecrtp", start) == []


def test_the_checker_walks_as_deep_as_the_imports_go():
    """The shell is not pure, and the checker says so, with the way there."""
    found = impure_imports(ROOT, "ipsecrtp", ["ipsecrtp.shell.executor"])
    assert "ipsecrtp.shell.executor -> threading" in found
    assert any(f.startswith("ipsecrtp.shell.executor -> ") and "-> ipsecrtp.keying.strongswan -> " in f
               and f.endswith("vici") for f in found)


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_checker_on_a_synthetic_package(tmp_path):
    write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/core/__init__.py": "",
        "pkg/core/a.py": "import json\nfrom ..helper import f\nfrom . import b\n",
        "pkg/core/b.py": "from os import path\n",
        "pkg/helper.py": "from .deep.mod import g\n\ndef f():\n    import subprocess\n",
        "pkg/deep/__init__.py": "import queue\n",
        "pkg/deep/mod.py": "from time import monotonic\ng = monotonic\n",
        "pkg/clean.py": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import socket\n"
                         "else:\n    import os\n"),
    })
    assert impure_imports(tmp_path, "pkg", ["pkg.clean", "pkg.core.b"]) == []
    assert impure_imports(tmp_path, "pkg", ["pkg.core.a"]) == [
        "pkg.core.a -> pkg.helper -> pkg.deep -> queue",  # a package's __init__ runs too
        "pkg.core.a -> pkg.helper -> pkg.deep.mod -> time",  # from time import ...
        "pkg.core.a -> pkg.helper -> subprocess",  # inside a function: it runs when called
    ]


def test_checker_follows_from_package_import_module(tmp_path):
    write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/core.py": "from . import sub\nfrom .sub import x\n",
        "pkg/sub.py": "import threading.local\nimport vici\nimport pyroute2.netlink as nl\nx = 1\n",
    })
    assert impure_imports(tmp_path, "pkg", ["pkg.core"]) == [
        "pkg.core -> pkg.sub -> pyroute2.netlink", "pkg.core -> pkg.sub -> threading.local",
        "pkg.core -> pkg.sub -> vici"]
