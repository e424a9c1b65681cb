"""The inode table's rename: a directory carries its subtree, a file only itself."""

from __future__ import annotations

from s3fsmpu.fs.inodes import InodeTable, Kind, Node


def table(*entries: tuple[str, Kind]) -> InodeTable:
    t = InodeTable()
    t.add_root(Node(0, "", Kind.DIR))
    for path, kind in entries:
        t.add(Node(0, path, kind))
    return t


def test_directory_rename_moves_everything_below_it() -> None:
    t = table(("d", Kind.DIR), ("d/a", Kind.FILE), ("d/e", Kind.DIR), ("d/e/b", Kind.FILE), ("dd", Kind.FILE))
    inodes = {p: t.by_path(p).inode for p in ("d", "d/a", "d/e/b", "dd")}  # type: ignore[union-attr]
    assert sorted(n.path for n in t.subtree("d")) == ["d", "d/a", "d/e", "d/e/b"]
    t.move("d", "x")
    assert t.by_path("d") is None and t.by_path("d/a") is None
    assert t.by_path("x").inode == inodes["d"]  # type: ignore[union-attr]
    assert t.by_path("x/a").inode == inodes["d/a"]  # type: ignore[union-attr]
    assert t.by_path("x/e/b").inode == inodes["d/e/b"]  # type: ignore[union-attr]
    assert t.by_path("dd").inode == inodes["dd"]  # type: ignore[union-attr]  # a sibling sharing the prefix stays


def test_file_rename_touches_only_the_file() -> None:
    # "f/x" cannot exist under a file; if it did, a scan would drag it along,
    # so this shows that a file rename does not walk the table
    t = table(("f", Kind.FILE), ("f/x", Kind.FILE), ("g", Kind.FILE))
    assert [n.path for n in t.subtree("f")] == ["f"]
    t.move("f", "h")
    assert t.by_path("h") is not None and t.by_path("f/x") is not None and t.by_path("h/x") is None


def test_rename_over_an_existing_name_unlinks_it() -> None:
    t = table(("a", Kind.FILE), ("b", Kind.FILE))
    a, b = t.by_path("a"), t.by_path("b")
    t.move("a", "b")
    assert t.by_path("b") is a and t.by_path("a") is None
    assert b is not None and b.path.endswith("b") and b.path != "b"  # the replaced inode lives on, unnamed


def test_unknown_path_scans_for_what_is_known_below_it() -> None:
    t = table(("d/a", Kind.FILE))  # the directory itself was never looked up
    assert [n.path for n in t.subtree("d")] == ["d/a"]
