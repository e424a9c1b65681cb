"""Real kernel mounts: metadata and the options that ride on every upload request."""

from __future__ import annotations

import os
import random
import stat
import threading

import pytest

from tests.conftest import bucket_bytes, wait_for

pytestmark = pytest.mark.fuse
MIB = 1 << 20


class HeaderCapture:
    """A proxy rule action that records each request's headers and forwards it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []
        self._lock = threading.Lock()

    def __call__(self, request) -> None:  # noqa: ANN001 - the proxy's Request
        headers = {k.lower(): v for k, v in request.headers}
        with self._lock:
            self.seen.append((request.op, headers))
        return None

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


@pytest.mark.parametrize("algorithm,header", [("CRC32", "x-amz-checksum-crc32"),
                                              ("CRC32C", "x-amz-checksum-crc32c"),
                                              ("SHA256", "x-amz-checksum-sha256")])
def test_checksum_on_every_part(algorithm, header, s3, bucket, mounter, proxy):
    capture = HeaderCapture()
    proxy.add_rule("*", capture, times=None)
    m = mounter(bucket, "--part-size", "5MiB", "--checksum-algorithm", algorithm, endpoint=proxy.url)
    data = random.randbytes(12 * MIB)
    (m.path / "c.bin").write_bytes(data)
    (m.path / "s.bin").write_bytes(b"small one")
    assert bucket_bytes(s3, bucket, "c.bin") == data
    assert bucket_bytes(s3, bucket, "s.bin") == b"small one"
    parts = [h for op, h in capture.seen if op == "UploadPart"]
    assert len(parts) == 3
    assert all(header in h and "content-md5" in h for h in parts)
    creates = [h for op, h in capture.seen if op == "CreateMultipartUpload"]
    assert creates[0].get("x-amz-checksum-algorithm", "").upper() == algorithm
    puts = [h for op, h in capture.seen if op == "PutObject"]
    assert puts and all(header in h and "content-md5" in h for h in puts)


def test_no_checksum_means_content_md5_only(s3, bucket, mounter, proxy):
    capture = HeaderCapture()
    proxy.add_rule("*", capture, times=None)
    m = mounter(bucket, "--part-size", "5MiB", endpoint=proxy.url)
    (m.path / "n.bin").write_bytes(random.randbytes(6 * MIB))
    parts = [h for op, h in capture.seen if op in ("UploadPart", "PutObject")]
    assert parts and all("content-md5" in h for h in parts)
    assert not any(k.startswith("x-amz-checksum-") for h in parts for k in h)
    # payload signing is off: no body is SHA-256 hashed twice
    assert all(h.get("x-amz-content-sha256") == "UNSIGNED-PAYLOAD" for h in parts)


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


def test_sse_c_headers_on_every_part_and_reads(s3, bucket, mounter, proxy, tmp_path):
    key = os.urandom(32)
    key_file = tmp_path / "sse-c.key"
    key_file.write_bytes(key)
    capture = HeaderCapture()
    proxy.add_rule("*", capture, times=None)
    m = mounter(bucket, "--part-size", "5MiB", "--sse-c-key-file", str(key_file), "--checksum-algorithm",
                "CRC32", endpoint=proxy.url)
    data = random.randbytes(11 * MIB)
    (m.path / "enc.bin").write_bytes(data)
    got = s3.get_object(Bucket=bucket, Key="enc.bin", SSECustomerAlgorithm="AES256", SSECustomerKey=key)
    assert got["Body"].read() == data
    ssec = "x-amz-server-side-encryption-customer-key"
    assert {"CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"} <= capture.ops_with(ssec)
    # ETags are not MD5s under SSE-C: the upload token in the metadata settles identity
    assert "s3fsmpu-token" in s3.head_object(Bucket=bucket, Key="enc.bin", SSECustomerAlgorithm="AES256",
                                             SSECustomerKey=key)["Metadata"]
    assert (m.path / "enc.bin").read_bytes() == data
    assert "sse-c" not in m.log.lower() or key.hex() not in m.log
