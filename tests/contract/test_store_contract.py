"""One suite, two stores: the in-memory fake and the boto3 store on a real moto server.

The fake is only worth something if it behaves like S3; this suite is what
says so. Where moto 5.2.5 knowingly differs from S3 (S3-FACTS.md, "moto
5.2.5 versus S3"), the memory store is checked for S3's behaviour and the
moto case is skipped with that reason rather than faked.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import trio

from s3fsmpu.config import ConnectionConfig
from s3fsmpu.errors import NoSuchKey, S3Error
from s3fsmpu.store.base import ABSENT, Body, Expect, PartRef, WriteMeta
from s3fsmpu.store.boto3_store import Boto3Store
from s3fsmpu.store.memory import MemoryStore, md5_hex, multipart_etag
from s3fsmpu.upload.digest import digest_bytes

MIB = 1 << 20
MIN = 5 * MIB


@dataclass
class StoreCase:
    kind: str
    make: Callable[[], Any]

    def run(self, fn: Callable[[Any], Awaitable[None]]) -> None:
        async def main() -> None:
            with trio.fail_after(30):
                await fn(self.make())

        trio.run(main)

    def skip_on_moto(self, reason: str) -> None:
        if self.kind == "moto":
            pytest.skip(f"moto 5.2.5 differs from S3 (S3-FACTS.md): {reason}")


@pytest.fixture(params=["memory", "moto"])
def case(request: pytest.FixtureRequest) -> StoreCase:
    if request.param == "memory":
        return StoreCase("memory", lambda: MemoryStore(min_part_size=MIN))
    url = request.getfixturevalue("moto_url")
    bucket = request.getfixturevalue("bucket")
    conn = ConnectionConfig(endpoint_url=url, region="us-east-1", addressing_style="path")
    return StoreCase("moto", lambda: Boto3Store(bucket, conn))


def blob(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def body(data: bytes) -> Body:
    return digest_bytes(data, None)[0]


async def put(store: Any, key: str, data: bytes, meta: WriteMeta | None = None) -> str:
    return await store.put(key, body(data), meta or WriteMeta())


# ---- objects ---------------------------------------------------------------

def test_put_head_get_range(case: StoreCase) -> None:
    async def t(store: Any) -> None:
        data = blob(1000)
        etag = await put(store, "dir/obj", data)
        assert etag == md5_hex(data)
        info = await store.head("dir/obj")
        assert (info.key, info.size, info.etag) == ("dir/obj", 1000, md5_hex(data))
        assert info.last_modified > 1_600_000_000
        assert await store.get_range("dir/obj", 0, 1000) == data
        assert await store.get_range("dir/obj", 10, 20) == data[10:20]
        assert await store.get_range("dir/obj", 990, 5000) == data[990:]  # runs past the end
        assert await store.get_range("dir/obj", 1000, 1010) == b""  # starts at the end
        assert await store.get_range("dir/obj", 5000, 6000) == b""  # entirely past the end

    case.run(t)


def test_empty_object(case: StoreCase) -> None:
    async def t(store: Any) -> None:
        etag = await put(store, "empty", b"")
        assert etag == hashlib.md5(b"").hexdigest()
        info = await store.head("empty")
        assert info.size == 0
        assert await store.get_range("empty", 0, 10) == b""

    case.run(t)


def test_get_range_with_etag_precondition(case: StoreCase) -> None:
    async def t(store: Any) -> None:
        data = blob(100)
        etag = await put(store, "k", data)
        assert await store.get_range("k", 0, 10, etag) == data[:10]
        await put(store, "k", blob(100, seed=1))  # the object changed
        with pytest.raises(S3Error) as info:
            await store.get_range("k", 0, 10, etag)
        assert info.value.code == "PreconditionFailed"

    case.run(t)


def test_get_range_into_fills_the_buffer(case: StoreCase) -> None:
    """What a reader's reused chunk buffer gets: the bytes, in place; fewer at the end."""
    async def t(store: Any) -> None:
        data = blob(700_000)  # more than one body piece
        etag = await put(store, "k", data)
        buf = bytearray(b"\xee" * 600_000)
        assert await store.get_range_into("k", 50_000, memoryview(buf), etag) == 600_000
        assert buf == data[50_000:650_000]
        buf = bytearray(b"\xee" * 1000)
        assert await store.get_range_into("k", 699_500, memoryview(buf)) == 500  # runs past the end
        assert buf[:500] == data[699_500:] and buf[500:] == b"\xee" * 500
        assert await store.get_range_into("k", 700_000, memoryview(bytearray(10))) == 0
        await put(store, "k", blob(700_000, seed=1))  # the object changed
        with pytest.raises(S3Error) as info:
            await store.get_range_into("k", 0, memoryview(bytearray(10)), etag)
        assert info.value.code == "PreconditionFailed"

    case.run(t)


def test_put_overwrites(case: StoreCase) -> None:
    async def t(store: Any) -> None:
        await put(store, "k", b"first version")
        await put(store, "k", b"second")
        assert await store.get_range("k", 0, 100) == b"second"
        assert (await store.head("k")).size == 6

    case.run(t)


def test_metadata_round_trip(case: StoreCase) -> None:
    async def t(store: Any) -> None:
        meta = {"mode": "33188", "uid": "1000", "gid": "1000", "mtime": "1700000000.123456789"}
        await put(store, "m", b"x", WriteMeta(meta, "text/plain"))
        info = await store.head("m")
        assert dict(info.metadata) == meta
        assert info.content_type == "text/plain"

    case.run(t)


def test_head_missing_is_nosuchkey(case: StoreCase) -> None:
    async def t(store: Any) -> None:
        with pytest.raises(NoSuchKey) as info:
            await store.head("nope")
        assert info.value.code == "NoSuchKey"
        with pytest.raises(NoSuchKey):
            await store.get_range("nope", 0, 10)

    case.run(t)


def test_delete(case: StoreCase) -> None:
    async def t(store: Any) -> None:
        await put(store, "a", b"1")
        await put(store, "b", b"2")
        await store.delete("a")
        with pytest.raises(NoSuchKey):
            await store.head("a")
        assert (await store.head("b")).size == 1
        await store.delete("a")  # deleting what is gone is not an error in S3

    case.run(t)


def test_copy_keeps_metadata_without_new_meta(case: StoreCase) -> None:
    async def t(store: Any) -> None:
        data = blob(300)
        await put(store, "src", data, WriteMeta({"mode": "33261", "mtime": "5"}, "image/png"))
        etag = await store.copy("src", "dst")
        assert etag == md5_hex(data)
        info = await store.head("dst")
        assert dict(info.metadata) == {"mode": "33261", "mtime": "5"}
        assert info.content_type == "image/png"
        assert await store.get_range("dst", 0, 1000) == data
        assert (await store.head("src")).size == 300  # the source stays

    case.run(t)


def test_copy_with_new_metadata_and_self_copy(case: StoreCase) -> None:
    async def t(store: Any) -> None:
        data = blob(300)
        await put(store, "f", data, WriteMeta({"mode": "33188", "keep": "no"}))
        await store.copy("f", "g", WriteMeta({"mode": "33184"}, "text/x-new"))
        info = await store.head("g")
        assert dict(info.metadata) == {"mode": "33184"}
        assert info.content_type == "text/x-new"
        # chmod on a closed file is a self-copy with new metadata
        await store.copy("f", "f", WriteMeta({"mode": "33152"}))
        info = await store.head("f")
        assert dict(info.metadata) == {"mode": "33152"}
        assert await store.get_range("f", 0, 1000) == data

    case.run(t)


def test_copy_with_conditions_on_source_and_destination(case: StoreCase) -> None:
    """The attribute self-copy names the version it means on both sides; when either
    changed, the copy is refused, not applied to another client's object."""
    async def t(store: Any) -> None:
        data = blob(300)
        etag = await put(store, "f", data, WriteMeta({"mode": "33188"}))
        await store.copy("f", "f", WriteMeta({"mode": "33152"}), src_etag=etag, expect=Expect(etag))
        assert dict((await store.head("f")).metadata) == {"mode": "33152"}
        case.skip_on_moto("CopySourceIfMatch and If-Match on CopyObject are ignored")
        for kw in ({"src_etag": etag[::-1]}, {"expect": Expect(etag[::-1])}, {"expect": ABSENT}):
            with pytest.raises(S3Error) as info:
                await store.copy("f", "f", WriteMeta({"mode": "33261"}), **kw)
            assert info.value.code == "PreconditionFailed"
        assert dict((await store.head("f")).metadata) == {"mode": "33152"}

    case.run(t)


def test_conditional_put_and_delete(case: StoreCase) -> None:
    """If-None-Match: * creates only; If-Match replaces or deletes only that version."""
    async def t(store: Any) -> None:
        first = await put(store, "k", b"first")
        with pytest.raises(S3Error) as info:
            await store.put("k", body(b"other"), WriteMeta(), ABSENT)
        assert info.value.code == "PreconditionFailed"
        with pytest.raises(S3Error) as info:
            await store.put("k", body(b"other"), WriteMeta(), Expect(md5_hex(b"nope")))
        assert info.value.code == "PreconditionFailed"
        second = await store.put("k", body(b"second"), WriteMeta(), Expect(first))
        assert await store.get_range("k", 0, 100) == b"second"
        with pytest.raises(S3Error) as info:
            await store.put("new", body(b"x"), WriteMeta(), Expect(first))
        assert info.value.code == "NoSuchKey"  # If-Match on a key with no object
        await store.put("new", body(b"x"), WriteMeta(), ABSENT)
        with pytest.raises(S3Error) as info:
            await store.delete("k", first)
        assert info.value.code == "PreconditionFailed"
        await store.delete("k", second)
        with pytest.raises(S3Error):
            await store.head("k")

    case.run(t)


def test_conditional_complete(case: StoreCase) -> None:
    async def t(store: Any) -> None:
        data = blob(MIN + 10)

        async def upload(expect: Expect) -> str:
            upload_id = await store.create_multipart("mp", WriteMeta())
            refs = []
            for n, (s, e) in enumerate(((0, MIN), (MIN, MIN + 10)), 1):
                res = await store.upload_part("mp", upload_id, n, body(data[s:e]))
                refs.append(PartRef(n, res.etag))
            try:
                return (await store.complete_multipart("mp", upload_id, refs, expect)).etag
            except S3Error:
                await store.abort_multipart("mp", upload_id)
                raise

        etag = await upload(ABSENT)
        with pytest.raises(S3Error) as info:
            await upload(ABSENT)
        assert info.value.code == "PreconditionFailed"
        case.skip_on_moto("If-Match on CompleteMultipartUpload is ignored")
        with pytest.raises(S3Error) as info:
            await upload(Expect(md5_hex(b"nope")))
        assert info.value.code == "PreconditionFailed"
        assert (await upload(Expect(etag))) == etag

    case.run(t)


def test_copy_missing_source(case: StoreCase) -> None:
    async def t(store: Any) -> None:
        with pytest.raises(S3Error) as info:
            await store.copy("missing", "dst")
        assert info.value.code == "NoSuchKey"

    case.run(t)


# ---- listing ---------------------------------------------------------------

KEYS = ["a/1", "a/2", "a/sub/x", "b", "c/", "c/d/e", "d.txt", "e"]


async def _fill(store: Any) -> None:
    for k in KEYS:
        await put(store, k, k.encode())


def test_list_page_with_delimiter(case: StoreCase) -> None:
    async def t(store: Any) -> None:
        await _fill(store)
        page = await store.list_page("", delimiter="/")
        assert sorted(o.key for o in page.objects) == ["b", "d.txt", "e"]
        assert sorted(page.prefixes) == ["a/", "c/"]
        assert page.next_token is None
        b = next(o for o in page.objects if o.key == "b")
        assert (b.size, b.etag) == (1, md5_hex(b"b"))

        page = await store.list_page("a/", delimiter="/")
        assert sorted(o.key for o in page.objects) == ["a/1", "a/2"]
        assert list(page.prefixes) == ["a/sub/"]

        page = await store.list_page("c/", delimiter="/")
        assert [o.key for o in page.objects] == ["c/"]  # the directory marker itself
        assert list(page.prefixes) == ["c/d/"]

        page = await store.list_page("nothing/", delimiter="/")
        assert list(page.objects) == [] and list(page.prefixes) == []

    case.run(t)


def test_list_page_without_delimiter(case: StoreCase) -> None:
    async def t(store: Any) -> None:
        await _fill(store)
        page = await store.list_page("", delimiter=None)
        assert [o.key for o in page.objects] == sorted(KEYS)
        assert list(page.prefixes) == []
        page = await store.list_page("a", delimiter=None)
        assert [o.key for o in page.objects] == ["a/1", "a/2", "a/sub/x"]

    case.run(t)


@pytest.mark.parametrize("delimiter", [None, "/"])
def test_list_paging_with_max_keys(case: StoreCase, delimiter: str | None) -> None:
    async def t(store: Any) -> None:
        await _fill(store)
        seen: list[str] = []
        pages = 0
        token = None
        while True:
            page = await store.list_page("", delimiter=delimiter, token=token, max_keys=2)
            pages += 1
            entries = [o.key for o in page.objects] + list(page.prefixes)
            assert 1 <= len(entries) <= 2
            seen.extend(entries)
            if page.next_token is None:
                break
            token = page.next_token
            assert pages < 20
        if delimiter is None:
            assert seen == sorted(KEYS)
            assert pages == 4
        else:
            assert sorted(seen) == ["a/", "b", "c/", "d.txt", "e"]
            assert len(seen) == len(set(seen))
            assert pages == 3

    case.run(t)


# ---- multipart ---------------------------------------------------------------

async def _three_parts(store: Any, key: str) -> tuple[str, list[bytes], list[PartRef]]:
    upload_id = await store.create_multipart(key, WriteMeta({"mode": "33188"}, "application/x-test"))
    datas = [blob(MIN, 1), blob(MIN, 2), blob(1234, 3)]
    refs = []
    for n, d in enumerate(datas, 1):
        res = await store.upload_part(key, upload_id, n, body(d))
        assert res.etag == md5_hex(d)
        refs.append(PartRef(n, res.etag))
    return upload_id, datas, refs


def test_multipart_round_trip(case: StoreCase) -> None:
    async def t(store: Any) -> None:
        upload_id, datas, refs = await _three_parts(store, "big")
        result = await store.complete_multipart("big", upload_id, refs)
        expected = multipart_etag([md5_hex(d) for d in datas])
        assert expected.endswith("-3")
        assert result.etag == expected
        info = await store.head("big")
        assert info.etag == expected
        assert info.size == 2 * MIN + 1234
        assert dict(info.metadata) == {"mode": "33188"}  # from CreateMultipartUpload
        assert info.content_type == "application/x-test"
        assert await store.get_range("big", 0, 3 * MIN) == b"".join(datas)
        assert await store.get_range("big", MIN - 5, MIN + 5) == datas[0][-5:] + datas[1][:5]
        assert [u.upload_id for u in (await store.list_uploads("")).uploads] == []

    case.run(t)


def test_one_part_upload_etag_ends_in_1(case: StoreCase) -> None:
    async def t(store: Any) -> None:
        uid = await store.create_multipart("one", WriteMeta())
        res = await store.upload_part("one", uid, 1, body(b"tiny"))
        result = await store.complete_multipart("one", uid, [PartRef(1, res.etag)])
        assert result.etag == multipart_etag([md5_hex(b"tiny")])
        assert result.etag.endswith("-1")
        assert await store.get_range("one", 0, 10) == b"tiny"

    case.run(t)


def test_copy_of_multipart_object_returns_the_new_etag(case: StoreCase) -> None:
    # the filesystem must learn a copied object's ETag from the copy's answer
    async def t(store: Any) -> None:
        upload_id, datas, refs = await _three_parts(store, "mp")
        await store.complete_multipart("mp", upload_id, refs)
        etag = await store.copy("mp", "copy")
        assert etag == (await store.head("copy")).etag
        assert await store.get_range("copy", 0, 3 * MIN) == b"".join(datas)
        self_etag = await store.copy("mp", "mp", WriteMeta({"mode": "33152"}))
        assert self_etag == (await store.head("mp")).etag

    case.run(t)


def test_invalid_part_for_wrong_etag(case: StoreCase) -> None:
    async def t(store: Any) -> None:
        upload_id, _, refs = await _three_parts(store, "k")
        bad = [refs[0], PartRef(2, md5_hex(b"something else")), refs[2]]
        with pytest.raises(S3Error) as info:
            await store.complete_multipart("k", upload_id, bad)
        assert info.value.code == "InvalidPart"
        with pytest.raises(NoSuchKey):
            await store.head("k")
        # the upload is still there; the right list completes it
        result = await store.complete_multipart("k", upload_id, refs)
        assert result.etag is not None and result.etag.endswith("-3")

    case.run(t)


def test_invalid_part_for_missing_part_number(case: StoreCase) -> None:
    async def t(store: Any) -> None:
        uid = await store.create_multipart("k", WriteMeta())
        refs = []
        for n in (1, 2):
            res = await store.upload_part("k", uid, n, body(blob(MIN, n)))
            refs.append(PartRef(n, res.etag))
        # part 3 was never uploaded
        with pytest.raises(S3Error) as info:
            await store.complete_multipart("k", uid, [*refs, PartRef(3, md5_hex(b"never sent"))])
        assert info.value.code == "InvalidPart"
        await store.abort_multipart("k", uid)

    case.run(t)


def test_reuploaded_part_replaces_the_old_one(case: StoreCase) -> None:
    async def t(store: Any) -> None:
        uid = await store.create_multipart("k", WriteMeta())
        old = await store.upload_part("k", uid, 1, body(blob(MIN, 7)))
        new_data = blob(MIN, 8)
        new = await store.upload_part("k", uid, 1, body(new_data))
        last = await store.upload_part("k", uid, 2, body(b"end"))
        with pytest.raises(S3Error) as info:
            await store.complete_multipart("k", uid, [PartRef(1, old.etag), PartRef(2, last.etag)])
        assert info.value.code == "InvalidPart"
        parts = await store.list_parts("k", uid)
        assert [(p.number, p.etag) for p in parts] == [(1, new.etag), (2, last.etag)]
        await store.complete_multipart("k", uid, [PartRef(1, new.etag), PartRef(2, last.etag)])
        assert await store.get_range("k", 0, 2 * MIN) == new_data + b"end"

    case.run(t)


def test_entity_too_small_for_small_non_last_part(case: StoreCase) -> None:
    async def t(store: Any) -> None:
        uid = await store.create_multipart("k", WriteMeta())
        small = await store.upload_part("k", uid, 1, body(blob(MIN - 1)))  # accepted at UploadPart
        last = await store.upload_part("k", uid, 2, body(b"end"))
        with pytest.raises(S3Error) as info:
            await store.complete_multipart("k", uid, [PartRef(1, small.etag), PartRef(2, last.etag)])
        assert info.value.code == "EntityTooSmall"
        with pytest.raises(NoSuchKey):
            await store.head("k")
        await store.abort_multipart("k", uid)

    case.run(t)


def test_invalid_part_order(case: StoreCase) -> None:
    case.skip_on_moto("InvalidPartOrder is ignored; parts are joined in request order")

    async def t(store: Any) -> None:
        upload_id, _, refs = await _three_parts(store, "k")
        with pytest.raises(S3Error) as info:
            await store.complete_multipart("k", upload_id, [refs[1], refs[0], refs[2]])
        assert info.value.code == "InvalidPartOrder"
        with pytest.raises(S3Error) as info:
            await store.complete_multipart("k", upload_id, [refs[0], refs[0], refs[1], refs[2]])
        assert info.value.code == "InvalidPartOrder"

    case.run(t)


def test_bad_content_md5(case: StoreCase) -> None:
    case.skip_on_moto("Content-MD5 and part checksums are never verified")

    async def t(store: Any) -> None:
        uid = await store.create_multipart("k", WriteMeta())
        wrong = Body(5, data=b"hello", md5_b64=digest_bytes(b"HELLO", None)[0].md5_b64)
        with pytest.raises(S3Error) as info:
            await store.upload_part("k", uid, 1, wrong)
        assert info.value.code == "BadDigest"
        with pytest.raises(S3Error) as info:
            await store.put("p", wrong, WriteMeta())
        assert info.value.code == "BadDigest"
        with pytest.raises(NoSuchKey):
            await store.head("p")

    case.run(t)


def test_dead_upload_is_nosuchupload(case: StoreCase) -> None:
    case.skip_on_moto("UploadPart/Complete on a dead upload answer 500, not NoSuchUpload")

    async def t(store: Any) -> None:
        uid = await store.create_multipart("k", WriteMeta())
        res = await store.upload_part("k", uid, 1, body(b"x"))
        await store.abort_multipart("k", uid)
        for call in (
            store.upload_part("k", uid, 2, body(b"y")),
            store.complete_multipart("k", uid, [PartRef(1, res.etag)]),
            store.list_parts("k", uid),
        ):
            with pytest.raises(S3Error) as info:
                await call
            assert info.value.code == "NoSuchUpload"

    case.run(t)


def test_repeated_complete_is_nosuchupload(case: StoreCase) -> None:
    case.skip_on_moto("a repeated Complete is answered 200 while the key holds that object")

    async def t(store: Any) -> None:
        uid = await store.create_multipart("k", WriteMeta())
        res = await store.upload_part("k", uid, 1, body(b"x"))
        await store.complete_multipart("k", uid, [PartRef(1, res.etag)])
        with pytest.raises(S3Error) as info:
            await store.complete_multipart("k", uid, [PartRef(1, res.etag)])
        assert info.value.code == "NoSuchUpload"
        assert await store.get_range("k", 0, 10) == b"x"

    case.run(t)


def test_unknown_upload_id(case: StoreCase) -> None:
    case.skip_on_moto("UploadPart/Complete on a dead upload answer 500, not NoSuchUpload")

    async def t(store: Any) -> None:
        with pytest.raises(S3Error) as info:
            await store.upload_part("k", "no-such-upload-id", 1, body(b"x"))
        assert info.value.code == "NoSuchUpload"

    case.run(t)


def test_abort_removes_upload(case: StoreCase) -> None:
    async def t(store: Any) -> None:
        uid = await store.create_multipart("k", WriteMeta())
        await store.upload_part("k", uid, 1, body(b"x"))
        assert [u.upload_id for u in (await store.list_uploads("")).uploads] == [uid]
        await store.abort_multipart("k", uid)
        assert list((await store.list_uploads("")).uploads) == []
        with pytest.raises(NoSuchKey):
            await store.head("k")

    case.run(t)


def test_list_uploads_shows_open_uploads(case: StoreCase) -> None:
    async def t(store: Any) -> None:
        a1 = await store.create_multipart("a/one", WriteMeta())
        a2 = await store.create_multipart("a/two", WriteMeta())
        a2b = await store.create_multipart("a/two", WriteMeta())  # two uploads of one key
        b = await store.create_multipart("b/three", WriteMeta())
        page = await store.list_uploads("")
        assert sorted((u.key, u.upload_id) for u in page.uploads) == sorted(
            [("a/one", a1), ("a/two", a2), ("a/two", a2b), ("b/three", b)]
        )
        assert page.next_key_marker is None
        page = await store.list_uploads("a/")
        assert sorted((u.key, u.upload_id) for u in page.uploads) == sorted(
            [("a/one", a1), ("a/two", a2), ("a/two", a2b)]
        )
        # a completed upload is no longer listed
        res = await store.upload_part("b/three", b, 1, body(b"z"))
        await store.complete_multipart("b/three", b, [PartRef(1, res.etag)])
        assert "b/three" not in [u.key for u in (await store.list_uploads("")).uploads]

    case.run(t)


def test_list_uploads_initiated_time(case: StoreCase) -> None:
    # `s3fsmpu uploads --older-than` relies on it
    case.skip_on_moto("ListMultipartUploads answers a fixed Initiated of 2010-11-10 "
                      "(found by this suite; not yet listed in S3-FACTS.md)")

    async def t(store: Any) -> None:
        import time

        before = time.time()
        await store.create_multipart("k", WriteMeta())
        (up,) = (await store.list_uploads("")).uploads
        assert before - 60 <= up.initiated <= time.time() + 60

    case.run(t)


def test_list_parts(case: StoreCase) -> None:
    async def t(store: Any) -> None:
        uid = await store.create_multipart("k", WriteMeta())
        assert list(await store.list_parts("k", uid)) == []
        d1, d2 = blob(1000, 1), blob(77, 2)
        await store.upload_part("k", uid, 2, body(d2))
        await store.upload_part("k", uid, 1, body(d1))
        parts = await store.list_parts("k", uid)
        assert [(p.number, p.size, p.etag) for p in parts] == [(1, 1000, md5_hex(d1)), (2, 77, md5_hex(d2))]
        await store.abort_multipart("k", uid)

    case.run(t)


def test_upload_part_copy(case: StoreCase) -> None:
    async def t(store: Any) -> None:
        src = blob(MIN + 100, 9)
        await put(store, "src", src)
        uid = await store.create_multipart("dst", WriteMeta())
        copied = await store.upload_part_copy("dst", uid, 1, "src", 50, 50 + MIN)
        assert copied.etag == md5_hex(src[50 : 50 + MIN])
        tail = await store.upload_part("dst", uid, 2, body(b"tail"))
        result = await store.complete_multipart("dst", uid, [PartRef(1, copied.etag), PartRef(2, tail.etag)])
        assert result.etag == multipart_etag([md5_hex(src[50 : 50 + MIN]), md5_hex(b"tail")])
        assert await store.get_range("dst", 0, 2 * MIN) == src[50 : 50 + MIN] + b"tail"

    case.run(t)


def test_keys_with_odd_characters(case: StoreCase) -> None:
    async def t(store: Any) -> None:
        key = "dir with space/ünïcödé+plus&amp=%20.txt"
        await put(store, key, b"odd")
        assert (await store.head(key)).size == 3
        page = await store.list_page("dir with space/", delimiter="/")
        assert [o.key for o in page.objects] == [key]
        await store.copy(key, key + ".copy")
        assert await store.get_range(key + ".copy", 0, 10) == b"odd"

    case.run(t)


def test_check_bucket(case: StoreCase) -> None:
    case.run(lambda store: store.check_bucket())


def test_check_bucket_missing_bucket(moto_url: str) -> None:
    conn = ConnectionConfig(endpoint_url=moto_url, region="us-east-1", addressing_style="path")

    async def t() -> None:
        store = Boto3Store("no-such-bucket-" + uuid.uuid4().hex[:8], conn)
        with pytest.raises(S3Error) as info:
            await store.check_bucket()
        assert info.value.code == "NoSuchBucket"

    trio.run(t)
