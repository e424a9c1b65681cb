"""docs/architecture.md stays true: every file it names exists, every module of the
package is in one of its layers, and imports point down the layers only.

An import under `if TYPE_CHECKING:` is for annotations and makes no runtime
dependency, so it is not counted.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
PACKAGE = ROOT / "s3fsmpu"

# top to bottom, as the doc's table lists them
LAYERS = ["commands", "mount", "FUSE adapter", "filesystem core", "data cache", "write path", "store", "bottom"]
# the filesystem core's rooms, in the order they build on each other
ROOMS = ["state", "namespace", "handles", "attributes", "changes", "core"]


def modules() -> dict[str, Path]:
    return {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
            for p in PACKAGE.rglob("*.py")}


def runtime_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("s3fsmpu"):
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("s3fsmpu"))
    return out


def layer_table() -> dict[str, int]:
    """module or package (dotted) -> layer index, from the doc's table."""
    where: dict[str, int] = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if len(cells) == 3 and cells[0] in LAYERS:
            for path in re.findall(r"`(s3fsmpu/[^`]*)`", cells[1]):
                where[path.rstrip("/").removesuffix(".py").replace("/", ".")] = LAYERS.index(cells[0])
    return where


def layer_of(module: str, table: dict[str, int]) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in table:
            return table[".".join(parts[:n])]
    raise AssertionError(f"{module} is in no layer of docs/architecture.md")


def test_every_file_the_doc_names_exists() -> None:
    named = set(re.findall(r"`((?:s3fsmpu|tests|scripts|docs)/[^`\s]*)`", DOC.read_text()))
    assert len(named) > 30
    assert [p for p in sorted(named) if not (ROOT / p).exists()] == []


def test_every_module_is_in_a_layer() -> None:
    table = layer_table()
    assert len(set(table.values())) == len(LAYERS)
    for module in modules():
        if module != "s3fsmpu" and module != "s3fsmpu.__main__":
            layer_of(module, table)


def test_imports_point_down_the_layers() -> None:
    table = layer_table()
    upward = []
    for module, path in modules().items():
        if module in ("s3fsmpu", "s3fsmpu.__main__"):
            continue
        mine = layer_of(module, table)
        for imported in runtime_imports(path):
            if imported == "s3fsmpu":
                continue  # the version string
            theirs = layer_of(imported, table)
            if theirs < mine:
                upward.append(f"{module} ({LAYERS[mine]}) imports {imported} ({LAYERS[theirs]})")
    assert upward == []


def test_the_core_rooms_build_in_one_line() -> None:
    for i, room in enumerate(ROOMS):
        imported = runtime_imports(PACKAGE / "fs" / f"{room}.py")
        later = {f"s3fsmpu.fs.{r}" for r in ROOMS[i + 1:]}
        assert imported & later == set(), f"fs/{room}.py imports a room built on it: {imported & later}"
