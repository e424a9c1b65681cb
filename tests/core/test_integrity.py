"""`--integrity crc64nvme|crc32c` on the memory store: no MD5 anywhere, the flexible
checksum on every body, and the whole object's checksum at Complete (issue 16).

The memory store checks that whole-object checksum against the parts it joins, as
S3 does for ChecksumType FULL_OBJECT, so a part damaged on its way to a server that
does not check part checksums (radosgw 16 ignores them, and moto) is caught at Complete
and sent again from the spool.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from s3fsmpu.checksums import of_bytes
from s3fsmpu.errors import UploadFailed
from s3fsmpu.store.base import Body, Checksum, CompleteResult, Expect, PartRef, PartResult, WriteMeta
from s3fsmpu.store.memory import MemoryStore
from tests.core.harness import PART, Env, blob, run


class Recording(MemoryStore):
    """Keeps what every body carried; optionally damages one part, or echoes a wrong checksum."""

    def __init__(self, damage_part: int | None = None, wrong_echo: bool = False) -> None:
        super().__init__(min_part_size=PART)
        self.bodies: list[tuple[str, bytes, str | None, str | None]] = []  # op, bytes, md5, checksum
        self.completes: list[Checksum | None] = []
        self.damage_part, self.wrong_echo = damage_part, wrong_echo

    async def put(self, key: str, body: Body, meta: WriteMeta, expect: Expect | None = None) -> str:
        self.bodies.append(("PutObject", body.read_all(), body.md5_b64, body.checksum))
        return await super().put(key, body, meta, expect)

    async def upload_part(self, key: str, upload_id: str, number: int, body: Body) -> PartResult:
        data = body.read_all()
        self.bodies.append(("UploadPart", data, body.md5_b64, body.checksum))
        if number == self.damage_part:  # stored with a flipped bit, nothing echoed: no one notices
            self.damage_part = None
            res = await super().upload_part(key, upload_id, number, Body(len(data), data=bytes([data[0] ^ 1]) + data[1:]))
            return PartResult(res.etag, None)
        res = await super().upload_part(key, upload_id, number, body)
        return PartResult(res.etag, "AAAAAAAAAAA=" if self.wrong_echo else res.checksum)

    async def complete_multipart(self, key: str, upload_id: str, parts: Any, expect: Expect | None = None,
                                 checksum: Checksum | None = None) -> CompleteResult:
        self.completes.append(checksum)
        return await super().complete_multipart(key, upload_id, parts, expect, checksum)


@pytest.mark.parametrize("mode", ["crc64nvme", "crc32c"])
def test_no_md5_and_the_whole_object_checksum(tmp_path: Path, mode: str) -> None:
    algorithm = mode.upper()
    store = Recording()
    big, small = blob(3 * PART + 123, seed=1), b"a small one"

    async def body(env: Env) -> None:
        await env.write_file("big", big)
        await env.write_file("small", small)
        assert env.data("big") == big and env.data("small") == small

    run(tmp_path, body, store=store, mem=store, integrity=mode, checksum_algorithm=algorithm)
    assert [op for op, *_ in store.bodies].count("UploadPart") == 4
    for op, data, md5, checksum in store.bodies:
        assert md5 is None, op  # no Content-MD5: no MD5 computed at all
        assert checksum == of_bytes(algorithm, data), op
    assert store.completes == [Checksum(algorithm, of_bytes(algorithm, big))]


def test_the_md5_mode_sends_content_md5_and_no_whole_object_checksum(tmp_path: Path) -> None:
    store = Recording()

    async def body(env: Env) -> None:
        await env.write_file("big", blob(2 * PART + 5, seed=2))

    run(tmp_path, body, store=store, mem=store)
    assert all(md5 is not None for _op, _data, md5, _c in store.bodies)
    assert store.completes == [None]


def test_a_part_damaged_on_its_way_is_caught_at_complete_and_sent_again(tmp_path: Path) -> None:
    store = Recording(damage_part=2)
    data = blob(3 * PART + 7, seed=3)

    async def body(env: Env) -> None:
        await env.write_file("big", data)
        assert env.data("big") == data
        assert env.uploader.stats.repaired == 1

    run(tmp_path, body, store=store, mem=store, integrity="crc64nvme", checksum_algorithm="CRC64NVME")
    assert len(store.completes) == 2  # refused with BadDigest, then the repaired upload


def test_an_echoed_checksum_that_differs_fails_the_upload_and_keeps_the_bytes(tmp_path: Path) -> None:
    store = Recording(wrong_echo=True)
    data = blob(2 * PART + 9, seed=4)

    async def body(env: Env) -> None:
        fh = await env.create("big")
        await env.fs.write(fh, 0, data)
        with pytest.raises(UploadFailed) as info:
            await env.fs.flush(fh)
        assert "PartChecksumMismatch" in str(info.value)
        assert info.value.recovery_path is not None and Path(info.value.recovery_path).read_bytes() == data
        await env.fs.release(fh)
        assert "big" not in env.mem.objects

    run(tmp_path, body, store=store, mem=store, integrity="crc64nvme", checksum_algorithm="CRC64NVME")


def test_writing_on_after_a_flush_copies_parts_without_a_known_checksum(tmp_path: Path) -> None:
    """The memory store (like moto) says no checksum for a copied part: Complete then goes
    without the whole-object checksum, and HeadObject settles whose object it is."""
    store = Recording()
    first, more = blob(2 * PART, seed=5), blob(PART + 11, seed=6)

    async def body(env: Env) -> None:
        fh = await env.create("f")
        await env.fs.write(fh, 0, first)
        await env.fs.flush(fh)
        await env.fs.write(fh, len(first), more)
        await env.fs.flush(fh)
        await env.fs.release(fh)
        assert env.data("f") == first + more

    run(tmp_path, body, store=store, mem=store, integrity="crc64nvme", checksum_algorithm="CRC64NVME",
        copy_part_max=PART)
    assert store.completes[0] == Checksum("CRC64NVME", of_bytes("CRC64NVME", first))
    assert store.completes[-1] is None
