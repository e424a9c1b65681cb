"""The `random` workload's reader: os.pread of LENGTH bytes at seeded offsets
of one O_RDONLY fd, as a program that reads a file in place (a database, an
archive index) reads it.

It runs as its own process on the mounted file (python preader.py PATH SIZE
READS LENGTH ALIGN SEED, one JSON line out), so a read stuck in the mount
is ended by the bench's timeout, and its seconds count the reads alone, not
the interpreter's start. The bench imports the same offsets() and
read_at() for the digest the reads must give (from the source file).
No imports from the package: it must run as a plain script.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import time


def offsets(size: int, reads: int, length: int, align: int, seed: int) -> list[int]:
    """`reads` offsets from random.Random(seed), multiples of `align`, each with
    `length` bytes of the file after it (so every read is whole)."""
    top = (size - length) // align
    if top < 0:
        raise ValueError(f"a file of {size} bytes is shorter than one read of {length}")
    rnd = random.Random(seed)
    return [rnd.randint(0, top) * align for _ in range(reads)]


def read_at(path: str, offs: list[int], length: int) -> dict[str, float | int | str]:
    """pread `length` bytes at each offset, in order: the seconds (open to close),
    the bytes read and the SHA-256 of them, hashed after the clock stops."""
    pieces = []
    t0 = time.monotonic()
    fd = os.open(path, os.O_RDONLY)
    try:
        for off in offs:
            pieces.append(os.pread(fd, length, off))
    finally:
        os.close(fd)
    secs = time.monotonic() - t0
    h = hashlib.sha256()
    for p in pieces:
        h.update(p)
    return {"seconds": secs, "bytes": sum(len(p) for p in pieces), "sha256": h.hexdigest()}


def main(argv: list[str]) -> int:
    path, size, reads, length, align, seed = argv[0], *(int(a) for a in argv[1:6])
    print(json.dumps(read_at(path, offsets(size, reads, length, align, seed), length)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
