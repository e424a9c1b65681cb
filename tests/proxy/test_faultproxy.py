"""Self-tests for tests/faultproxy.py against a real moto server subprocess.

The assertions about what botocore surfaces are measured facts for
botocore 1.44.5 / moto 5.2.5 (clients use total_max_attempts=1 unless a
test says otherwise).
"""

import hashlib
import http.client
import io
import os
import socket
import subprocess
import sys
import threading
import time

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import (ClientError, ConnectionClosedError,
                                 ReadTimeoutError)

_TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from faultproxy import FaultProxy, op_of  # noqa: E402

from tests.conftest import wait_for  # noqa: E402

BUCKET = "faultproxy-test"
MiB = 1 << 20


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------

def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def moto_url():
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
         str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                c.request("GET", "/moto-api/")
                c.getresponse().read()
                c.close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start")
                time.sleep(0.1)
        yield "http://127.0.0.1:%d" % port
    finally:
        proc.kill()
        proc.wait(10)


def _client(url, retries=None, **cfg):
    kw = dict(s3={"addressing_style": "path"}, connect_timeout=2,
              read_timeout=3)
    kw["retries"] = retries if retries is not None else {
        "mode": "standard", "total_max_attempts": 1}
    kw.update(cfg)
    return boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id="test",
                        aws_secret_access_key="test", config=Config(**kw))


@pytest.fixture(scope="module")
def direct(moto_url):
    c = _client(moto_url, retries={"mode": "standard", "max_attempts": 3})
    c.create_bucket(Bucket=BUCKET)
    return c


@pytest.fixture(scope="module")
def _proxy(moto_url):
    with FaultProxy(moto_url) as p:
        yield p


@pytest.fixture
def proxy(_proxy, direct):
    _proxy.clear_rules()
    _proxy.clear_log()
    yield _proxy
    _proxy.wait_idle(10)
    _proxy.clear_rules()


@pytest.fixture(scope="module")
def s3(_proxy):
    """boto3 client through the proxy, one attempt only."""
    return _client(_proxy.url, max_pool_connections=16)


def _mpu(direct, key, nparts=1, size=100):
    """Create an upload with parts (directly); return (upload_id, parts)."""
    uid = direct.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    parts = []
    for n in range(1, nparts + 1):
        etag = direct.upload_part(Bucket=BUCKET, Key=key, UploadId=uid,
                                  PartNumber=n, Body=b"p%d" % n * size)["ETag"]
        parts.append({"PartNumber": n, "ETag": etag})
    return uid, {"Parts": parts}


def _exists(direct, key):
    try:
        return direct.head_object(Bucket=BUCKET, Key=key)["ETag"]
    except ClientError as e:
        assert e.response["Error"]["Code"] in ("404", "NoSuchKey")
        return None


def _nparts(direct, key, uid):
    return len(direct.list_parts(Bucket=BUCKET, Key=key,
                                 UploadId=uid).get("Parts", []))


def _code(e):
    return e.value.response["Error"]["Code"]


# --------------------------------------------------------------------------
# classification
# --------------------------------------------------------------------------

@pytest.mark.parametrize("method,path,query,headers,op", [
    ("POST", "/b/k", "uploads", None, "CreateMultipartUpload"),
    ("POST", "/b/k", "uploads&x-id=CreateMultipartUpload", None,
     "CreateMultipartUpload"),
    ("PUT", "/b/k", "partNumber=1&uploadId=u&x-id=UploadPart", None,
     "UploadPart"),
    ("PUT", "/b/k", "partNumber=1&uploadId=u",
     {"X-Amz-Copy-Source": "b/src"}, "UploadPartCopy"),
    ("POST", "/b/k", "uploadId=u", None, "CompleteMultipartUpload"),
    ("DELETE", "/b/k", "uploadId=u&x-id=AbortMultipartUpload", None,
     "AbortMultipartUpload"),
    ("GET", "/b/k", "uploadId=u", None, "ListParts"),
    ("GET", "/b", "uploads", None, "ListMultipartUploads"),
    ("PUT", "/b/a/b/c", "x-id=PutObject", None, "PutObject"),
    ("PUT", "/b/k", "", [("x-amz-copy-source", "/b/s")], "CopyObject"),
    ("GET", "/b/k", "x-id=GetObject", None, "GetObject"),
    ("GET", "/b/k", "response-content-type=x&versionId=1", None,
     "GetObject"),
    ("HEAD", "/b/k", "", None, "HeadObject"),
    ("DELETE", "/b/k", "x-id=DeleteObject", None, "DeleteObject"),
    ("POST", "/b", "delete", None, "DeleteObjects"),
    ("GET", "/b", "list-type=2&prefix=a", None, "ListObjectsV2"),
    ("HEAD", "/b", "", None, "HeadBucket"),
    ("GET", "/b", "", None, "Other"),            # ListObjects (v1)
    ("PUT", "/b", "", None, "Other"),            # CreateBucket
    ("PUT", "/b/k", "tagging", None, "Other"),   # PutObjectTagging
    ("GET", "/", "", None, "Other"),             # ListBuckets
])
def test_op_of(method, path, query, headers, op):
    assert op_of(method, path, query, headers) == op


# --------------------------------------------------------------------------
# plain forwarding
# --------------------------------------------------------------------------

def test_forward_basic_ops(proxy, s3, direct):
    data = os.urandom(300 * 1024)
    s3.put_object(Bucket=BUCKET, Key="basic/a", Body=data)
    s3.put_object(Bucket=BUCKET, Key="basic/b", Body=io.BytesIO(data))  # Expect
    assert s3.get_object(Bucket=BUCKET, Key="basic/a")["Body"].read() == data
    assert direct.get_object(Bucket=BUCKET, Key="basic/b")["Body"].read() \
        == data
    assert s3.head_object(Bucket=BUCKET, Key="basic/b")["ContentLength"] \
        == len(data)
    s3.head_bucket(Bucket=BUCKET)
    keys = [o["Key"] for o in s3.list_objects_v2(
        Bucket=BUCKET, Prefix="basic/")["Contents"]]
    assert keys == ["basic/a", "basic/b"]
    s3.copy_object(Bucket=BUCKET, Key="basic/c",
                   CopySource={"Bucket": BUCKET, "Key": "basic/a"})
    s3.delete_object(Bucket=BUCKET, Key="basic/c")
    s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [
        {"Key": "basic/a"}, {"Key": "basic/b"}]})
    assert _exists(direct, "basic/a") is None

    assert proxy.count("PutObject") == 2
    assert proxy.count("GetObject") == 1
    assert proxy.count("HeadObject") == 1
    assert proxy.count("HeadBucket") == 1
    assert proxy.count("ListObjectsV2") == 1
    assert proxy.count("CopyObject") == 1
    assert proxy.count("DeleteObject") == 1
    assert proxy.count("DeleteObjects") == 1
    log = proxy.log
    assert len(log) == proxy.count() == 9
    puts = [r for r in log if r.op == "PutObject"]
    assert all(r.status == 200 and r.bytes_in >= len(data) for r in puts)
    get = [r for r in log if r.op == "GetObject"][0]
    assert get.bytes_out == len(data) and get.action is None and get.done
    heads = [r for r in log if r.method == "HEAD"]
    assert all(r.bytes_out == 0 for r in heads)


def test_forward_multipart_3x5mib_parallel(proxy, s3, direct):
    key = "mpu/3x5"
    blobs = [os.urandom(5 * MiB) for _ in range(3)]
    uid = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    etags = {}

    def up(n):
        body = io.BytesIO(blobs[n - 1]) if n % 2 else blobs[n - 1]
        etags[n] = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=uid,
                                  PartNumber=n, Body=body)["ETag"]

    threads = [threading.Thread(target=up, args=(n,)) for n in (1, 2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert s3.list_parts(Bucket=BUCKET, Key=key, UploadId=uid)["Parts"]
    res = s3.complete_multipart_upload(
        Bucket=BUCKET, Key=key, UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etags[n]}
                                   for n in (1, 2, 3)]})
    assert res["ETag"].strip('"').endswith("-3")
    got = direct.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert hashlib.sha256(got).digest() == \
        hashlib.sha256(b"".join(blobs)).digest()
    got = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert got == b"".join(blobs)
    assert proxy.count("CreateMultipartUpload") == 1
    assert proxy.count("UploadPart") == 3
    assert proxy.count("ListParts") == 1
    assert proxy.count("CompleteMultipartUpload") == 1
    assert all(r.bytes_in >= 5 * MiB and r.status == 200
               for r in proxy.log if r.op == "UploadPart")


def test_keepalive_and_concurrency(proxy, s3, direct):
    s3.put_object(Bucket=BUCKET, Key="ka/x", Body=b"hello")
    before = proxy.connections
    for _ in range(40):
        s3.head_object(Bucket=BUCKET, Key="ka/x")
    assert proxy.connections - before <= 1       # one persistent connection

    errors = []

    def worker(i):
        try:
            body = os.urandom(256 * 1024 + i)
            s3.put_object(Bucket=BUCKET, Key="ka/%d" % i, Body=body)
            for _ in range(3):
                assert s3.get_object(Bucket=BUCKET, Key="ka/%d" % i)[
                    "Body"].read() == body
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert proxy.count("GetObject") == 36


def test_chunked_request_body(proxy, direct):
    data = [os.urandom(70000), os.urandom(5), os.urandom(300000)]
    c = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    c.request("PUT", "/%s/chunked/obj" % BUCKET, body=iter(data),
              encode_chunked=True,
              headers={"Transfer-Encoding": "chunked"})
    r = c.getresponse()
    r.read()
    assert r.status == 200
    # connection still in sync (and alive) for a second request
    conns = proxy.connections
    c.request("PUT", "/%s/chunked/obj2" % BUCKET, body=b"second")
    r = c.getresponse()
    assert r.status == 200 and r.read() == b""
    assert proxy.connections == conns
    c.close()
    rec = [x for x in proxy.log if x.op == "PutObject"][0]
    assert rec.bytes_in > sum(map(len, data))    # wire framing counted
    assert direct.get_object(Bucket=BUCKET, Key="chunked/obj2")[
        "Body"].read() == b"second"
    assert direct.get_object(Bucket=BUCKET, Key="chunked/obj")[
        "Body"].read() == b"".join(data)


# --------------------------------------------------------------------------
# actions
# --------------------------------------------------------------------------

def test_error_in_200_complete(proxy, s3, direct):
    # (a) default layout: whitespace *before* the XML declaration.  That is
    # not well-formed XML, so botocore cannot read the code: Code == "500".
    uid, parts = _mpu(direct, "e200/a")
    rule = proxy.add_rule("CompleteMultipartUpload", "error_in_200",
                          code="InternalError")
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket=BUCKET, Key="e200/a",
                                     UploadId=uid, MultipartUpload=parts)
    assert _code(e) == "500"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert rule.hits == 1
    assert _exists(direct, "e200/a") is None
    assert _nparts(direct, "e200/a", uid) == 1      # upload still open

    # declaration first (what real S3 does): the embedded code surfaces
    proxy.add_rule("CompleteMultipartUpload", "error_in_200",
                   code="InvalidPart", decl_first=True, pieces=3,
                   interval=0.05)
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket=BUCKET, Key="e200/a",
                                     UploadId=uid, MultipartUpload=parts)
    assert _code(e) == "InvalidPart"
    assert proxy.log[-1].status == 200 and proxy.log[-1].upstream_status \
        is None
    # rules used up: the same connection works and completes normally
    res = s3.complete_multipart_upload(Bucket=BUCKET, Key="e200/a",
                                       UploadId=uid, MultipartUpload=parts)
    assert res["ETag"] == _exists(direct, "e200/a")


def test_error_in_200_forward(proxy, s3, direct):
    uid, parts = _mpu(direct, "e200/f")
    proxy.add_rule("CompleteMultipartUpload", "error_in_200",
                   code="InternalError", forward=True, decl_first=True,
                   chunked=True)
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket=BUCKET, Key="e200/f",
                                     UploadId=uid, MultipartUpload=parts)
    assert _code(e) == "InternalError"
    assert proxy.log[-1].upstream_status == 200
    assert _exists(direct, "e200/f") is not None    # side effect happened


def test_pad_200_success_body(proxy, s3, direct):
    uid, parts = _mpu(direct, "pad/1")
    proxy.add_rule("CompleteMultipartUpload", "pad_200", decl_first=True,
                   padding=b" \n" * 20, pieces=4, interval=0.02)
    res = s3.complete_multipart_upload(Bucket=BUCKET, Key="pad/1",
                                       UploadId=uid, MultipartUpload=parts)
    assert res["ETag"] == _exists(direct, "pad/1")

    # whitespace before the declaration: botocore reports a *success* as a
    # 500 error (body is not well-formed XML)
    uid, parts = _mpu(direct, "pad/2")
    proxy.add_rule("CompleteMultipartUpload", "pad_200")
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket=BUCKET, Key="pad/2",
                                     UploadId=uid, MultipartUpload=parts)
    assert _code(e) == "500"
    assert _exists(direct, "pad/2") is not None


def test_status_on_upload_part(proxy, s3, direct):
    # (b) with a file-like body (Expect: 100-continue): body is drained and
    # the connection stays usable.
    uid = direct.create_multipart_upload(Bucket=BUCKET, Key="st/1")["UploadId"]
    proxy.add_rule("UploadPart", "status", status=503, code="SlowDown",
                   headers={"Retry-After": "1"})
    conns = proxy.connections
    with pytest.raises(ClientError) as e:
        s3.upload_part(Bucket=BUCKET, Key="st/1", UploadId=uid, PartNumber=1,
                       Body=io.BytesIO(b"z" * (5 * MiB)))
    assert _code(e) == "SlowDown"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    rec = proxy.log[-1]
    assert (rec.status, rec.bytes_in, rec.upstream_status) == \
        (503, 5 * MiB, None)
    assert _nparts(direct, "st/1", uid) == 0
    s3.upload_part(Bucket=BUCKET, Key="st/1", UploadId=uid, PartNumber=1,
                   Body=io.BytesIO(b"z" * (5 * MiB)))
    assert _nparts(direct, "st/1", uid) == 1
    assert proxy.connections == conns               # kept alive

    # 404 NoSuchUpload / 412 on Complete
    uid, parts = _mpu(direct, "st/2")
    proxy.add_rule("CompleteMultipartUpload", "status", status=404,
                   code="NoSuchUpload")
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket=BUCKET, Key="st/2", UploadId=uid,
                                     MultipartUpload=parts)
    assert _code(e) == "NoSuchUpload"
    proxy.add_rule("HeadObject", "status", status=412,
                   code="PreconditionFailed")
    s3.put_object(Bucket=BUCKET, Key="st/3", Body=b"x")
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=BUCKET, Key="st/3")
    assert _code(e) == "412"                # HEAD: no body, code = status
    assert _exists(direct, "st/2") is None


def test_drop_response_complete(proxy, s3, direct):
    # (c)
    uid, parts = _mpu(direct, "drop/resp")
    proxy.add_rule("CompleteMultipartUpload", "drop_response")
    with pytest.raises(ConnectionClosedError):
        s3.complete_multipart_upload(Bucket=BUCKET, Key="drop/resp",
                                     UploadId=uid, MultipartUpload=parts)
    assert proxy.log[-1].upstream_status == 200
    assert proxy.log[-1].status is None
    assert _exists(direct, "drop/resp") is not None


def test_drop_request_upload_part(proxy, s3, direct):
    # (d)
    uid = direct.create_multipart_upload(Bucket=BUCKET,
                                         Key="drop/req")["UploadId"]
    proxy.add_rule("UploadPart", "drop_request")
    with pytest.raises(ConnectionClosedError):
        s3.upload_part(Bucket=BUCKET, Key="drop/req", UploadId=uid,
                       PartNumber=1, Body=io.BytesIO(b"q" * MiB))
    proxy.add_rule("UploadPart", "drop_request", read_body=True, reset=True)
    with pytest.raises(ConnectionClosedError):
        s3.upload_part(Bucket=BUCKET, Key="drop/req", UploadId=uid,
                       PartNumber=1, Body=b"q" * MiB)
    assert [r.bytes_in for r in proxy.log] == [0, MiB]
    assert _nparts(direct, "drop/req", uid) == 0


def test_stall_complete_then_forward(proxy, s3, direct):
    # (e) the client times out (read_timeout=3) but the request is processed
    uid, parts = _mpu(direct, "stall/fwd")
    proxy.add_rule("CompleteMultipartUpload", "stall", seconds=4)
    other = {}

    def concurrent():
        assert wait_for(lambda: proxy.count("CompleteMultipartUpload") == 1, timeout=5)
        s3.head_bucket(Bucket=BUCKET)
        other["done"] = time.monotonic()

    t = threading.Thread(target=concurrent)
    t.start()
    t0 = time.monotonic()
    with pytest.raises(ReadTimeoutError):
        s3.complete_multipart_upload(Bucket=BUCKET, Key="stall/fwd",
                                     UploadId=uid, MultipartUpload=parts)
    timed_out = time.monotonic()
    assert timed_out - t0 > 2.5  # the client's read timeout, not an early error
    t.join()
    # other connections are unaffected: answered while this one was still stalled
    assert other["done"] < timed_out
    assert _exists(direct, "stall/fwd") is None   # still stalled
    assert proxy.wait_idle(5)
    assert _exists(direct, "stall/fwd") is not None


def test_stall_complete_then_close(proxy, s3, direct):
    uid, parts = _mpu(direct, "stall/close")
    proxy.add_rule("CompleteMultipartUpload", "stall", seconds=3.5,
                   then="close")
    with pytest.raises(ReadTimeoutError):
        s3.complete_multipart_upload(Bucket=BUCKET, Key="stall/close",
                                     UploadId=uid, MultipartUpload=parts)
    assert proxy.wait_idle(5)
    assert _exists(direct, "stall/close") is None
    assert proxy.log[-1].upstream_status is None


def test_stop_does_not_hang_on_stall(moto_url):
    p = FaultProxy(moto_url)
    p.start()
    p.add_rule("HeadBucket", "stall", seconds=60, times=None)
    c = _client(p.url, read_timeout=30)
    result = {}

    def call():
        try:
            c.head_bucket(Bucket=BUCKET)
        except Exception as e:
            result["exc"] = e

    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.5)
    assert p.count("HeadBucket") == 1
    stopper = threading.Thread(target=p.stop)
    stopper.start()
    stopper.join(30)  # the stall is 60 s: stop() must not wait it out
    assert not stopper.is_alive()
    t.join(5)
    assert not t.is_alive()
    assert isinstance(result.get("exc"), ConnectionClosedError)


def test_empty_200(proxy, s3, direct):
    # (f)
    uid, parts = _mpu(direct, "empty/1")
    proxy.add_rule("CompleteMultipartUpload", "empty_200")
    res = s3.complete_multipart_upload(Bucket=BUCKET, Key="empty/1",
                                       UploadId=uid, MultipartUpload=parts)
    res.pop("ResponseMetadata")
    assert res == {}                           # no ETag, no error
    assert _exists(direct, "empty/1") is None

    proxy.add_rule("CompleteMultipartUpload", "empty_200", forward=True)
    res = s3.complete_multipart_upload(Bucket=BUCKET, Key="empty/1",
                                       UploadId=uid, MultipartUpload=parts)
    assert "ETag" not in res
    assert _exists(direct, "empty/1") is not None

    uid = direct.create_multipart_upload(Bucket=BUCKET, Key="empty/2")[
        "UploadId"]
    proxy.add_rule("UploadPart", "empty_200")
    res = s3.upload_part(Bucket=BUCKET, Key="empty/2", UploadId=uid,
                         PartNumber=1, Body=io.BytesIO(b"e" * 1000))
    assert "ETag" not in res
    assert _nparts(direct, "empty/2", uid) == 0


def test_times_and_match(proxy, s3, direct):
    uid = direct.create_multipart_upload(Bucket=BUCKET, Key="times")[
        "UploadId"]

    def put(n=1):
        return s3.upload_part(Bucket=BUCKET, Key="times", UploadId=uid,
                              PartNumber=n, Body=b"t" * 1000)

    rule = proxy.add_rule("UploadPart", "status", times=2, status=500,
                          code="InternalError")
    for _ in range(2):
        with pytest.raises(ClientError) as e:
            put()
        assert _code(e) == "InternalError"
    put()
    assert (rule.hits, rule.remaining) == (2, 0)
    assert proxy.count("UploadPart") == 3
    assert proxy.count("UploadPart", action="status") == 2

    proxy.clear_rules()
    forever = proxy.add_rule(["UploadPart", "PutObject"], "status",
                             times=None, status=503)
    for _ in range(3):
        with pytest.raises(ClientError) as e:
            put()
        assert _code(e) == "SlowDown"
    assert forever.hits == 3 and forever.remaining is None
    proxy.clear_rules()

    only2 = proxy.add_rule("*", "status", status=500, times=None,
                           match=lambda r: r.query_params.get("partNumber")
                           == "2")
    put(1)
    with pytest.raises(ClientError):
        put(2)
    assert only2.hits == 1


def test_callable_action(proxy, s3, direct):
    seen = []

    def hook(req):
        seen.append((req.op, req.key, len(req.body)))
        if req.op == "PutObject":
            return None                          # forward (buffered body)
        return (503, {"Content-Type": "application/xml"},
                b"<Error><Code>SlowDown</Code><Message>m</Message></Error>")

    proxy.add_rule(["PutObject", "GetObject"], hook, times=2)
    s3.put_object(Bucket=BUCKET, Key="hook/1", Body=b"abc")
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=BUCKET, Key="hook/1")
    assert _code(e) == "SlowDown"
    assert seen == [("PutObject", "hook/1", 3), ("GetObject", "hook/1", 0)]
    assert direct.get_object(Bucket=BUCKET, Key="hook/1")["Body"].read() \
        == b"abc"


def test_default_retry_config(proxy, direct):
    """botocore's default retry config (standard mode, 3 attempts in
    1.44.5): one-shot faults are retried transparently."""
    c = _client(proxy.url, retries={})
    uid, parts = _mpu(direct, "retry/1")
    proxy.add_rule("CompleteMultipartUpload", "error_in_200",
                   code="InternalError")
    res = c.complete_multipart_upload(Bucket=BUCKET, Key="retry/1",
                                      UploadId=uid, MultipartUpload=parts)
    assert res["ETag"] == _exists(direct, "retry/1")
    assert proxy.count("CompleteMultipartUpload") == 2

    # dropped response after the upload completed: the retry of Complete
    # succeeds against moto (moto accepts a repeated Complete)
    uid, parts = _mpu(direct, "retry/2")
    proxy.add_rule("CompleteMultipartUpload", "drop_response")
    res = c.complete_multipart_upload(Bucket=BUCKET, Key="retry/2",
                                      UploadId=uid, MultipartUpload=parts)
    assert res["ETag"] == _exists(direct, "retry/2")
    assert proxy.count("CompleteMultipartUpload") == 4

    # empty 200 is not retried: returned dict without ETag
    uid, parts = _mpu(direct, "retry/3")
    proxy.add_rule("CompleteMultipartUpload", "empty_200")
    res = c.complete_multipart_upload(Bucket=BUCKET, Key="retry/3",
                                      UploadId=uid, MultipartUpload=parts)
    assert "ETag" not in res
    assert proxy.count("CompleteMultipartUpload") == 5


# --------------------------------------------------------------------------
# throughput
# --------------------------------------------------------------------------

def _sink_upstream():
    """Minimal HTTP/1.1 upstream: reads the body, answers 200 (chunked for
    GET /chunked).  Returns (port, closer)."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)

    def conn(c):
        f = c.makefile("rb")
        buf = bytearray(MiB)
        mv = memoryview(buf)
        try:
            while True:
                line = f.readline()
                if not line:
                    return
                n = 0
                while True:
                    h = f.readline()
                    if h in (b"\r\n", b""):
                        break
                    if h.lower().startswith(b"content-length:"):
                        n = int(h.split(b":")[1])
                got = n
                while n:
                    k = f.readinto(mv[:min(n, len(buf))])
                    if not k:
                        return
                    n -= k
                if line.startswith(b"GET /chunked"):
                    c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked"
                              b"\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
                else:
                    body = b"%d" % got
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n"
                              % len(body) + body)
        except OSError:
            pass
        finally:
            c.close()

    def loop():
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            threading.Thread(target=conn, args=(c,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return ls.getsockname()[1], ls.close


def test_throughput_and_chunked_response():
    port, close = _sink_upstream()
    data = os.urandom(64 * MiB)
    try:
        with FaultProxy("http://127.0.0.1:%d" % port) as p:
            c = http.client.HTTPConnection("127.0.0.1", p.port, timeout=30)
            c.request("GET", "/chunked")
            r = c.getresponse()
            assert r.read() == b"hello world"
            best = 0.0
            for _ in range(3):
                t = time.perf_counter()
                c.request("PUT", "/b/k", body=data)
                r = c.getresponse()
                assert r.read() == b"%d" % len(data)
                best = max(best, len(data) / (time.perf_counter() - t))
            c.close()
            print("\nproxy throughput, 64 MiB PUT: %.0f MB/s" % (best / 1e6))
            assert best > 150e6
            assert p.log[-1].bytes_in == len(data)
    finally:
        close()


def test_boto3_64mib_put_via_proxy(proxy, s3, direct):
    data = os.urandom(64 * MiB)
    c = _client(proxy.url, read_timeout=60)
    t = time.perf_counter()
    c.put_object(Bucket=BUCKET, Key="big/64", Body=data)
    via = time.perf_counter() - t
    t = time.perf_counter()
    direct.put_object(Bucket=BUCKET, Key="big/64d", Body=data)
    dt = time.perf_counter() - t
    print("\nboto3 64 MiB put_object to moto: via proxy %.2fs, direct %.2fs"
          % (via, dt))
    assert proxy.log[-1].bytes_in == len(data)
    assert direct.head_object(Bucket=BUCKET, Key="big/64")[
        "ContentLength"] == len(data)
    direct.delete_objects(Bucket=BUCKET, Delete={"Objects": [
        {"Key": "big/64"}, {"Key": "big/64d"}]})
