"""User metadata of objects, keyed by key + ETag, persisted in --cache-dir.

LIST results carry size, ETag and Last-Modified but no user metadata, so
mode and mtime would need a HEAD per file. This cache remembers the
metadata of every object this mount wrote, copied or HEADed; a LIST entry
whose ETag matches the cached one is fully known without a request. An
ETag that changed (another client rewrote the object) misses, so the cache
can never show stale attributes. It survives remounts (sqlite in the cache
dir, one file per endpoint + bucket); lookups are sub-millisecond local
calls and run on the trio thread.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
from collections.abc import Mapping

log = logging.getLogger(__name__)


class MetadataCache:
    def __init__(self, cache_dir: str | None, scope: str) -> None:
        self._mem: dict[str, tuple[str, dict[str, str]]] = {}
        self._db: sqlite3.Connection | None = None
        if cache_dir is None:
            return
        name = hashlib.sha256(scope.encode()).hexdigest()[:16]
        path = os.path.join(cache_dir, f"metadata-{name}.sqlite")
        try:
            os.makedirs(cache_dir, mode=0o700, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, etag TEXT NOT NULL, data TEXT NOT NULL)"
            )
        except sqlite3.Error as exc:
            log.warning("metadata cache %s unusable (%s): continuing without persistence", path, exc)
            self._db = None

    def get(self, key: str, etag: str) -> dict[str, str] | None:
        hit = self._mem.get(key)
        if hit is None and self._db is not None:
            row = self._db.execute("SELECT etag, data FROM meta WHERE key = ?", (key,)).fetchone()
            if row is not None:
                hit = (row[0], json.loads(row[1]))
                self._mem[key] = hit
        if hit is None or hit[0] != etag:
            return None
        return dict(hit[1])

    def put(self, key: str, etag: str | None, metadata: Mapping[str, str] | None) -> None:
        if not etag or metadata is None:
            return
        data = dict(metadata)
        self._mem[key] = (etag, data)
        if self._db is not None:
            self._db.execute("INSERT OR REPLACE INTO meta (key, etag, data) VALUES (?, ?, ?)",
                             (key, etag, json.dumps(data, sort_keys=True)))

    def delete(self, key: str) -> None:
        self._mem.pop(key, None)
        if self._db is not None:
            self._db.execute("DELETE FROM meta WHERE key = ?", (key,))

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
