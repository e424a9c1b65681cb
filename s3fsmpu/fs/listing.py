"""What the mount keeps of a directory it listed completely: names and attributes, packed.

A `Listing` answers "is NAME in this directory, and with which attributes"
for --attr-timeout after a complete listing, so a lookup miss costs no
request in a directory of any size. It keeps no Python object per entry:
each entry is one record (a 32-byte header, the ETag, the name) in a
bytearray, found through a sorted array of 64-bit name hashes and a
parallel array of record offsets (12 bytes). About 90 bytes an entry for
short names, where a `Node` in a dict cost ~500. The filesystem builds a
`Node` only when the kernel looks a name up.
"""

from __future__ import annotations

import struct
from array import array
from bisect import bisect_left
from dataclasses import dataclass

from s3fsmpu.fs.inodes import Kind, Node

# flags (kind, metadata known, has ETag), size, mtime_ns, mode, uid, gid, len(etag), len(name)
_HEAD = struct.Struct("<BqqIIIBH")
_KINDS = (Kind.FILE, Kind.DIR, Kind.SYMLINK)
_META_KNOWN = 4
_HAS_ETAG = 8
_MASK = (1 << 64) - 1


@dataclass(frozen=True)
class Entry:
    """One listed name's attributes, as the listing saw them."""

    kind: Kind
    size: int
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    etag: str | None
    meta_known: bool  # its user metadata was known (cache hit, marker HEADed): no HEAD needed


def entry_of(node: Node) -> Entry:
    return Entry(node.kind, node.size, node.mode, node.uid, node.gid, node.mtime_ns, node.etag,
                 node.metadata is not None)


def _key(name: str) -> int:
    return hash(name) & _MASK  # str hashes are stable within the process, which is all we need


def _enc(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


class Listing:
    """The names of one directory, complete as of `at` (monotonic), with their attributes."""

    def __init__(self, at: float) -> None:
        self.at = at
        self._keys = array("Q")
        self._offsets = array("I")
        self._data = bytearray()
        self._garbage = 0  # bytes of records no longer referenced (removed or replaced names)
        self._sorted = True
        # user metadata of directory markers (few, and needed whole for a chmod's self-copy)
        self.dir_meta: dict[str, dict[str, str]] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, name: str) -> bool:
        return self._find(name) >= 0

    def append(self, name: str, entry: Entry) -> None:
        """Add a name not yet present while building; `seal` sorts once at the end."""
        self._keys.append(_key(name))
        self._offsets.append(self._pack(name, entry))
        self._sorted = False

    def seal(self) -> Listing:
        if not self._sorted:
            order = sorted(range(len(self._keys)), key=self._keys.__getitem__)
            self._keys = array("Q", (self._keys[i] for i in order))
            self._offsets = array("I", (self._offsets[i] for i in order))
            self._sorted = True
        return self

    def add(self, name: str, entry: Entry) -> None:
        """Add or replace `name` in a sealed listing (a replacement keeps its slot: no shifting)."""
        i = self._find(name)
        if i >= 0:
            if self.get(name) == entry:
                return
            self._garbage += self._record_len(self._offsets[i])
            self._offsets[i] = self._pack(name, entry)
            self._maybe_compact()
            return
        key = _key(name)
        i = bisect_left(self._keys, key)
        self._keys.insert(i, key)
        self._offsets.insert(i, self._pack(name, entry))

    def add_node(self, name: str, node: Node) -> None:
        """What `node` knows now becomes the listed entry of `name`."""
        self.add(name, entry_of(node))
        if node.kind is Kind.DIR and node.metadata:
            self.dir_meta[name] = dict(node.metadata)

    def remove(self, name: str) -> None:
        i = self._find(name)
        if i < 0:
            return
        self._garbage += self._record_len(self._offsets[i])
        del self._keys[i]
        del self._offsets[i]
        self.dir_meta.pop(name, None)
        self._maybe_compact()

    def get(self, name: str) -> Entry | None:
        i = self._find(name)
        if i < 0:
            return None
        flags, size, mtime_ns, mode, uid, gid, etag_len, _ = _HEAD.unpack_from(self._data, self._offsets[i])
        start = self._offsets[i] + _HEAD.size
        etag = self._data[start : start + etag_len].decode() if flags & _HAS_ETAG else None
        return Entry(_KINDS[flags & 3], size, mode, uid, gid, mtime_ns, etag, bool(flags & _META_KNOWN))

    def _find(self, name: str) -> int:
        """Index of `name` in the sorted arrays, or -1: a hash match is checked against the name."""
        assert self._sorted
        key, raw = _key(name), _enc(name)
        i = bisect_left(self._keys, key)
        while i < len(self._keys) and self._keys[i] == key:
            off = self._offsets[i]
            _, _, _, _, _, _, etag_len, name_len = _HEAD.unpack_from(self._data, off)
            start = off + _HEAD.size + etag_len
            if self._data[start : start + name_len] == raw:
                return i
            i += 1
        return -1

    def _pack(self, name: str, entry: Entry) -> int:
        etag = _enc(entry.etag) if entry.etag is not None else b""
        flags = _KINDS.index(entry.kind) | (_META_KNOWN if entry.meta_known else 0)
        flags |= _HAS_ETAG if entry.etag is not None else 0
        raw = _enc(name)
        off = len(self._data)
        self._data += _HEAD.pack(flags, entry.size, entry.mtime_ns, entry.mode, entry.uid, entry.gid,
                                 len(etag), len(raw))
        self._data += etag + raw
        return off

    def _record_len(self, off: int) -> int:
        *_, etag_len, name_len = _HEAD.unpack_from(self._data, off)
        return int(_HEAD.size + etag_len + name_len)

    def _maybe_compact(self) -> None:
        if self._garbage > 4096 and self._garbage * 2 > len(self._data):
            self._compact()

    def _compact(self) -> None:
        """Copy the live records into a new buffer: removals must not grow it for ever."""
        data = bytearray()
        for i, off in enumerate(self._offsets):
            self._offsets[i] = len(data)
            data += self._data[off : off + self._record_len(off)]
        self._data, self._garbage = data, 0
