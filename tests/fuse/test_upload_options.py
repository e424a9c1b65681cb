"""Real kernel mounts: metadata and the options that ride on every upload request."""

from __future__ import annotations

import base64
import hashlib
import os
import random
import stat
import threading
import zlib
from urllib.parse import parse_qs
from xml.etree import ElementTree

import boto3
import pytest
from awscrt import checksums
from botocore.config import Config

from tests.conftest import bucket_bytes, wait_for

pytestmark = pytest.mark.fuse
MIB = 1 << 20


class HeaderCapture:
    """A proxy rule action that records each request's headers (and, if asked, body) and forwards it.

    The headers are lower-cased; ":query" holds the query string.
    """

    def __init__(self, bodies: bool = False) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.bodies: list[bytes] = []
        self._keep_bodies = bodies
        self._lock = threading.Lock()

    def __call__(self, request) -> None:  # the proxy's Request: forwarded unchanged
        headers = {k.lower(): v for k, v in request.headers}
        headers[":query"] = request.query
        with self._lock:
            self.seen.append((request.op, headers))
            self.bodies.append(request.body if self._keep_bodies else b"")

    def requests(self, *ops: str) -> list[tuple[str, dict[str, str], bytes]]:
        """(op, headers, body) of each request of `ops`, in the order they arrived."""
        return [(op, h, b) for (op, h), b in zip(self.seen, self.bodies, strict=True) if op in ops]

    def ops_with(self, header: str) -> set[str]:
        return {op for op, h in self.seen if header in h}

    def ops_without(self, header: str) -> set[str]:
        return {op for op, h in self.seen if header not in h}


def test_new_file_metadata_rides_on_the_upload(s3, bucket, mounter, proxy):
    capture = HeaderCapture()
    proxy.add_rule("*", capture, times=None)
    m = mounter(bucket, "--part-size", "5MiB", endpoint=proxy.url)
    big, small = random.randbytes(11 * MIB), b"tiny"
    (m.path / "big.bin").write_bytes(big)
    (m.path / "small.txt").write_bytes(small)
    os.chmod(m.path / "small.txt", 0o600)
    # a chmod of a closed file reaches S3 as one self-copy within about a second
    assert wait_for(lambda: int(s3.head_object(Bucket=bucket, Key="small.txt")["Metadata"]["mode"]) & 0o777
                    == 0o600, timeout=5)
    for key, data in (("big.bin", big), ("small.txt", small)):
        assert bucket_bytes(s3, bucket, key) == data
        meta = s3.head_object(Bucket=bucket, Key=key)["Metadata"]
        assert stat.S_ISREG(int(meta["mode"])) and int(meta["uid"]) == os.getuid()
        assert int(meta["gid"]) == os.getgid()
        assert abs(float(meta["mtime"]) - os.stat(m.path / key).st_mtime) < 5
    assert int(s3.head_object(Bucket=bucket, Key="small.txt")["Metadata"]["mode"]) & 0o777 == 0o600
    # metadata went on Create/PUT: only the explicit chmod costs a copy
    assert [op for op, _ in capture.seen].count("CopyObject") == 1
    creates = [h for op, h in capture.seen if op == "CreateMultipartUpload"]
    assert len(creates) == 1 and "x-amz-meta-mode" in creates[0]


# independent of s3fsmpu.upload.digest: what S3 computes for each algorithm
REFERENCE_DIGEST = {
    "CRC32": lambda b: zlib.crc32(b).to_bytes(4, "big"),
    "CRC32C": lambda b: checksums.crc32c(b).to_bytes(4, "big"),
    "SHA1": lambda b: hashlib.sha1(b).digest(),
    "SHA256": lambda b: hashlib.sha256(b).digest(),
    "CRC64NVME": lambda b: checksums.crc64nvme(b).to_bytes(8, "big"),
}


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def plain_body(headers: dict[str, str], body: bytes) -> bytes:
    """The request body as S3 hashes it; a framed (aws-chunked) body would hash differently."""
    assert "aws-chunked" not in headers.get("content-encoding", "")
    assert "transfer-encoding" not in headers
    assert len(body) == int(headers["content-length"])
    return body


def complete_parts(body: bytes) -> dict[int, dict[str, str]]:
    """The <Part> entries of a CompleteMultipartUpload body: number -> {field: text}."""
    parts = {}
    for element in ElementTree.fromstring(body).iter():
        if element.tag.rpartition("}")[2] == "Part":
            fields = {child.tag.rpartition("}")[2]: child.text or "" for child in element}
            parts[int(fields["PartNumber"])] = fields
    return parts


@pytest.mark.parametrize("algorithm", [*REFERENCE_DIGEST, None])
def test_content_md5_and_checksum_values_match_the_bytes_sent(algorithm, s3, bucket, mounter, proxy):
    capture = HeaderCapture(bodies=True)
    proxy.add_rule("*", capture, times=None)
    option = ("--checksum-algorithm", algorithm) if algorithm else ()
    m = mounter(bucket, "--part-size", "5MiB", *option, endpoint=proxy.url)
    data = random.randbytes(12 * MIB + 5)
    (m.path / "c.bin").write_bytes(data)
    (m.path / "s.bin").write_bytes(b"small one")
    assert bucket_bytes(s3, bucket, "c.bin") == data
    assert bucket_bytes(s3, bucket, "s.bin") == b"small one"
    header = f"x-amz-checksum-{algorithm.lower()}" if algorithm else None
    sent: dict[int, bytes] = {}  # part number -> the body of its last UploadPart
    for op, h, body in capture.requests("UploadPart", "PutObject"):
        raw = plain_body(h, body)
        assert h["content-md5"] == b64(hashlib.md5(raw).digest()), op
        # payload signing is off: no body is SHA-256 hashed twice
        assert h.get("x-amz-content-sha256") == "UNSIGNED-PAYLOAD"
        if header:
            assert h[header] == b64(REFERENCE_DIGEST[algorithm](raw)), op
        else:
            assert not [k for k in h if k.startswith("x-amz-checksum-")], op
        if op == "UploadPart":
            sent[int(parse_qs(h[":query"])["partNumber"][0])] = raw
    assert sorted(sent) == [1, 2, 3] and b"".join(sent[n] for n in (1, 2, 3)) == data
    creates = [h for _, h, _ in capture.requests("CreateMultipartUpload")]
    assert [h.get("x-amz-checksum-algorithm", "").upper() for h in creates] == [algorithm or ""]
    # Complete lists each part's ETag (its MD5) and, with an algorithm, its checksum
    (_, _, complete), = capture.requests("CompleteMultipartUpload")
    listed = complete_parts(complete)
    assert sorted(listed) == [1, 2, 3]
    for n, fields in listed.items():
        assert fields["ETag"].strip('"') == hashlib.md5(sent[n]).hexdigest()
        expected = b64(REFERENCE_DIGEST[algorithm](sent[n])) if algorithm else None
        assert fields.get(f"Checksum{algorithm}") == expected, n


@pytest.mark.parametrize("mode", ["crc64nvme", "crc32c"])
def test_crc_integrity_sends_no_md5_and_the_whole_object_checksum(mode, s3, bucket, mounter, proxy):
    """--integrity crc64nvme|crc32c: no Content-MD5 on any body, the checksum of each body in
    its header, a FULL_OBJECT upload whose Complete carries the checksum of the whole file,
    and the object in the bucket carries that checksum. moto echoes no part checksum, so the
    mount says once that the server does not confirm them."""
    algorithm = mode.upper()
    capture = HeaderCapture(bodies=True)
    proxy.add_rule("*", capture, times=None)
    m = mounter(bucket, "--part-size", "5MiB", "--integrity", mode, endpoint=proxy.url)
    data = random.randbytes(12 * MIB + 5)
    (m.path / "c.bin").write_bytes(data)
    (m.path / "s.bin").write_bytes(b"small one")
    # read without botocore's response validation: moto keeps a COMPOSITE CRC32C although the
    # upload was created FULL_OBJECT, and serves it as if it were the whole object's
    plain = boto3.client("s3", endpoint_url=s3.meta.endpoint_url, region_name="us-east-1",
                         config=Config(response_checksum_validation="when_required",
                                       s3={"addressing_style": "path"}))
    assert bucket_bytes(plain, bucket, "c.bin") == data
    assert bucket_bytes(plain, bucket, "s.bin") == b"small one"
    header = f"x-amz-checksum-{mode}"
    bodies = capture.requests("UploadPart", "PutObject")
    assert sorted(op for op, _, _ in bodies) == ["PutObject", "UploadPart", "UploadPart", "UploadPart"]
    for op, h, body in bodies:
        raw = plain_body(h, body)
        assert "content-md5" not in h, op
        assert h[header] == b64(REFERENCE_DIGEST[algorithm](raw)), op
    (create,) = [h for _, h, _ in capture.requests("CreateMultipartUpload")]
    assert (create["x-amz-checksum-algorithm"].upper(), create["x-amz-checksum-type"]) == (algorithm, "FULL_OBJECT")
    ((_, complete, body),) = capture.requests("CompleteMultipartUpload")
    assert complete["x-amz-checksum-type"] == "FULL_OBJECT"
    assert complete[header] == b64(REFERENCE_DIGEST[algorithm](data))
    assert sorted(complete_parts(body)) == [1, 2, 3]
    if mode == "crc64nvme":  # moto computes it over the joined bytes (its CRC32C is composite)
        head = s3.head_object(Bucket=bucket, Key="c.bin", ChecksumMode="ENABLED")
        assert head["ChecksumCRC64NVME"] == b64(REFERENCE_DIGEST[algorithm](data))
    assert m.log.count(f"does not confirm x-amz-checksum-{mode}") == 1


def test_storage_class_sse_and_bucket_options(s3, bucket, mounter, proxy):
    capture = HeaderCapture()
    proxy.add_rule("*", capture, times=None)
    m = mounter(bucket, "--part-size", "5MiB", "--storage-class", "STANDARD_IA", "--sse", "AES256",
                "--requester-pays", "--expected-bucket-owner", "123456789012", endpoint=proxy.url)
    data = random.randbytes(7 * MIB)
    (m.path / "o.bin").write_bytes(data)
    (m.path / "p.txt").write_bytes(b"put")
    for key in ("o.bin", "p.txt"):
        head = s3.head_object(Bucket=bucket, Key=key)
        assert head.get("StorageClass") == "STANDARD_IA"
        assert head.get("ServerSideEncryption") == "AES256"
    assert bucket_bytes(s3, bucket, "o.bin") == data
    writes = {"CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "PutObject"}
    assert writes <= capture.ops_with("x-amz-request-payer")
    assert writes <= capture.ops_with("x-amz-expected-bucket-owner")
    assert {"CreateMultipartUpload", "PutObject"} <= capture.ops_with("x-amz-storage-class")


def ssec_headers(key: bytes) -> dict[str, str]:
    """The SSE-C request headers for `key`, as S3 expects them."""
    prefix = "x-amz-server-side-encryption-customer-"
    return {prefix + "algorithm": "AES256", prefix + "key": b64(key),
            prefix + "key-md5": b64(hashlib.md5(key).digest())}


def test_sse_c_headers_on_every_part_and_reads(s3, bucket, mounter, proxy, tmp_path):
    key = os.urandom(32)
    key_file = tmp_path / "sse-c.key"
    key_file.write_bytes(key)
    # an object from another client: the mount must HEAD and GET it with the key
    other = random.randbytes(3 * MIB)
    s3.put_object(Bucket=bucket, Key="other.bin", Body=other, SSECustomerAlgorithm="AES256",
                  SSECustomerKey=key)
    capture = HeaderCapture()
    proxy.add_rule("*", capture, times=None)
    m = mounter(bucket, "--part-size", "5MiB", "--sse-c-key-file", str(key_file), "--checksum-algorithm",
                "CRC32", endpoint=proxy.url)
    data = random.randbytes(11 * MIB)
    (m.path / "enc.bin").write_bytes(data)
    got = s3.get_object(Bucket=bucket, Key="enc.bin", SSECustomerAlgorithm="AES256", SSECustomerKey=key)
    assert got["Body"].read() == data
    # ETags are not MD5s under SSE-C: the upload token in the metadata settles identity
    assert "s3fsmpu-token" in s3.head_object(Bucket=bucket, Key="enc.bin", SSECustomerAlgorithm="AES256",
                                             SSECustomerKey=key)["Metadata"]
    assert (m.path / "other.bin").read_bytes() == other
    assert (m.path / "enc.bin").read_bytes() == data
    expected = ssec_headers(key)
    every = {"CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "HeadObject", "GetObject"}
    assert every <= {op for op, _ in capture.seen}
    for op, h in capture.seen:
        if op in every:
            assert {k: h.get(k) for k in expected} == expected, op
    assert key.hex() not in m.log and b64(key) not in m.log