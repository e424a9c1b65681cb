"""Fault-injecting HTTP/1.1 reverse proxy for S3 tests (standard library only).

The proxy sits between an S3 client (botocore / boto3, possibly in another
process such as a FUSE mount) and a moto S3 server, forwards every request
byte-faithfully and, on command, injects faults that real S3 can deliver but
moto never does (200 responses carrying an ``<Error>``, throttling, dropped
connections, stalls, empty bodies, ...).

Usage::

    from faultproxy import FaultProxy

    with FaultProxy("http://127.0.0.1:5000") as proxy:
        s3 = boto3.client("s3", endpoint_url=proxy.url, ...)   # path-style
        rule = proxy.add_rule("CompleteMultipartUpload", "error_in_200",
                              code="InternalError")
        ...
        assert rule.hits == 1
        assert proxy.count("UploadPart") == 3

Public API
==========

``FaultProxy(upstream_url, upstream_timeout=60.0)``
    ``upstream_url`` is ``http://host:port`` of the upstream (moto) server.
``.start() -> None``
    Bind 127.0.0.1 on an ephemeral port and start serving in daemon threads
    (one thread per client connection; keep-alive is supported).
``.url``  -> ``"http://127.0.0.1:PORT"``; ``.port`` -> ``PORT``.
``.connections`` -> number of client connections accepted so far.
``.stop() -> None``
    Close the listener and all client/upstream connections, wake stalled
    threads; returns promptly (joins threads for at most ~2 s).
``with FaultProxy(...) as p:`` starts and stops the proxy.
``.log`` -> list[LogRecord]  (a snapshot copy; records are appended when the
    request head has been read and updated while it is processed).
``.count(op=None, action=None) -> int``  number of logged requests of ``op``
    (``None`` = any op), optionally only those a rule of ``action`` applied to.
``.clear_log()``
``.wait_idle(timeout=10.0) -> bool``  wait until no request is in flight
    (useful after a ``stall`` whose ``then="forward"`` continues in the
    background).  Returns False on timeout.
``.add_rule(op, action, times=1, match=None, **kw) -> Rule``
    ``op``: an operation name as returned by :func:`op_of`, ``"*"`` for any,
    or an iterable of names.  ``times``: how many requests the rule applies to
    (``None`` = forever).  ``match``: optional ``callable(Request) -> bool``
    further filter (e.g. ``lambda r: r.query_params.get("partNumber") == "2"``).
    The first rule (in insertion order) that matches and has applications left
    is used; at most one rule applies per request.
``.clear_rules()``, ``.remove_rule(rule)``
``Rule.hits`` (applications so far), ``Rule.remaining`` (None = unlimited),
``Rule.op``, ``Rule.action``, ``Rule.kw``.

``op_of(method, path, query, headers=None) -> str`` (module function)
    S3 operation name of a path-style request: CreateMultipartUpload,
    UploadPart, UploadPartCopy, CompleteMultipartUpload, AbortMultipartUpload,
    ListParts, ListMultipartUploads, PutObject, CopyObject, GetObject,
    HeadObject, DeleteObject, DeleteObjects, ListObjectsV2, HeadBucket, Other.
    ``headers`` (mapping or list of pairs) is needed to tell UploadPartCopy /
    CopyObject (``x-amz-copy-source``) from UploadPart / PutObject.

``LogRecord`` fields: ``op, method, path, query, status`` (status line sent to
the client, None if nothing was sent), ``bytes_in`` (request body bytes read
from the client, wire framing included), ``bytes_out`` (response body bytes
sent to the client), ``action`` (name of the applied rule's action or None),
``upstream_status`` (status the upstream answered with, None if not
forwarded), ``done`` (processing finished).

Actions
=======

Unless stated otherwise an action that does not forward first drains the
request body (sending ``100 Continue`` first if the client asked for it) so
that the connection stays in sync and stays open (keep-alive).

``"error_in_200"`` -- ``code="InternalError", message=<default for code>,
    forward=False, padding=b"  \\n  \\n", pieces=1, interval=0.0,
    decl_first=False, chunked=False``
    Answer ``200 OK`` whose body is ``padding`` then
    ``<?xml version="1.0" encoding="UTF-8"?>\\n<Error><Code>{code}</Code>
    <Message>..</Message><RequestId>x</RequestId></Error>``.  The padding is
    sent in ``pieces`` parts with ``interval`` seconds between them (and
    before the XML).  ``decl_first=True`` puts the XML declaration before the
    padding (the only well-formed layout; see "measured" below).  ``chunked=True`` uses
    ``Transfer-Encoding: chunked`` instead of ``Content-Length``.
    ``forward=True``: forward upstream first (the side effect happens), then
    send this response instead of the upstream's.
``"pad_200"`` -- ``padding=b"  \\n  \\n", pieces=1, interval=0.0,
    decl_first=False, chunked=False``
    Forward, then relay the upstream response with ``padding`` inserted at
    the start of its body (after the XML declaration if ``decl_first``).
    Non-200 upstream answers are relayed unchanged.
``"status"`` -- ``status=503, code=<default for status>, message=<default>,
    headers=None (extra response headers, dict)``
    Do not forward; answer ``status`` with an S3 XML error body
    (no body for HEAD requests).
``"empty_200"`` -- ``forward=False``
    Answer ``200 OK`` with ``Content-Length: 0``; ``forward=True`` forwards
    first and then replaces the response.
``"drop_response"`` -- ``after_bytes=0, reset=False``
    Forward, read the whole upstream response, then close the client
    connection after sending only the first ``after_bytes`` bytes of the raw
    upstream response (head included; 0 = nothing).  ``reset=True`` closes
    with an RST (SO_LINGER 0) instead of a FIN.
``"drop_request"`` -- ``read_body=False, reset=False``
    Do not forward; close the connection (after draining the body if
    ``read_body``; otherwise right after the request head, without
    ``100 Continue``).
``"stall"`` -- ``seconds=10.0, then="forward", phase="request"``
    ``phase="request"``: wait ``seconds`` right after the request head was
    read (before 100 Continue / body), then either process the request
    normally (``then="forward"``; the response will usually hit a client that
    has timed out and gone, but the request body is normally still in the
    socket buffer so the side effect happens) or close the connection
    (``then="close"``, nothing is forwarded).
    ``phase="response"``: forward first and read the whole upstream response,
    then wait, then send it (``then="forward"``) or close (``then="close"``).
    Waits are interrupted by ``stop()``; they do not block other connections.
``callable(request) -> None | "close" | (status, headers, body)``
    Generic hook; called after the body has been drained into
    ``request.body`` (raw wire bytes).  ``None``: forward normally (using the
    drained body); ``"close"``: close the connection; a tuple: send that
    response (``headers`` dict or list of pairs; Content-Length is added).

``Hold(timeout=120.0)`` (module class) -- a callable action for "hold until released":
    each matching request (body read) waits until ``.release()``, then is
    forwarded.  ``.held`` counts the requests that reached it; ``.wait_held(n,
    timeout)`` waits until ``n`` have.  Release it in a ``finally`` (a held
    request waits at most ``timeout`` seconds).

Notes: the proxy removes the ``Expect: 100-continue`` header when forwarding
(botocore does not sign it) and answers ``100 Continue`` to the client itself;
everything else (request line, headers incl. ``Host``, bodies with their
chunked framing) is relayed unchanged.  Upstream ``1xx`` interim responses are
swallowed.  The hop-by-hop ``Connection``/``Keep-Alive`` headers of upstream
responses are removed (moto's werkzeug server sends ``Connection: close`` on
every response) so that client connections stay persistent like with real S3;
the proxy opens a new upstream connection whenever the old one was closed.
If the upstream cannot be reached the client gets ``502``.

Measured with botocore 1.44.5 on CompleteMultipartUpload, total_max_attempts=1
==============================================================================

* error_in_200, padding before ``<?xml`` (default): ClientError, Error.Code
  ``"500"`` (body is not well-formed XML, so the embedded code is lost).
* error_in_200, ``decl_first=True`` or no padding: ClientError with the
  embedded code (e.g. ``"InternalError"``), HTTPStatusCode 500.
* pad_200 (success body, padding before ``<?xml``): ClientError ``"500"``
  although the upload completed; with ``decl_first=True``: normal result.
* empty_200: returns ``{"ResponseMetadata": ...}`` only -- no ETag, no error
  (not retried with default retries either).
* status: ClientError with the given code (HEAD: code = status string).
* drop_response / drop_request (FIN or RST): ConnectionClosedError.
* stall beyond read_timeout: ReadTimeoutError.
With the default retry config (standard mode, 3 attempts) all of these except
empty_200 and 4xx statuses are retried; moto accepts a repeated Complete of an
already completed upload, so a retried Complete succeeds.
"""

from __future__ import annotations

import email.utils
import http
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["FaultProxy", "Hold", "Rule", "LogRecord", "Request", "op_of"]

BUFSIZE = 1 << 20          # recv/sendall buffer for bodies
MAX_HEAD = 256 * 1024      # max size of a request/response head
ACTIONS = ("error_in_200", "pad_200", "status", "empty_200", "drop_response",
           "drop_request", "stall")

DEFAULT_MESSAGES = {
    "InternalError": "We encountered an internal error. Please try again.",
    "SlowDown": "Please reduce your request rate.",
    "ServiceUnavailable": "Please reduce your request rate.",
    "InvalidPart": ("One or more of the specified parts could not be found.  "
                    "The part may not have been uploaded, or the specified "
                    "entity tag may not match the part's entity tag."),
    "InvalidPartOrder": ("The list of parts was not in ascending order. "
                         "Parts must be ordered by part number."),
    "NoSuchUpload": ("The specified upload does not exist. The upload ID may "
                     "be invalid, or the upload may have been aborted or "
                     "completed."),
    "NoSuchKey": "The specified key does not exist.",
    "NoSuchBucket": "The specified bucket does not exist",
    "PreconditionFailed": ("At least one of the pre-conditions you specified "
                           "did not hold"),
    "AccessDenied": "Access Denied",
    "RequestTimeout": ("Your socket connection to the server was not read "
                       "from or written to within the timeout period."),
    "EntityTooSmall": ("Your proposed upload is smaller than the minimum "
                       "allowed object size."),
}
CODE_STATUS = {
    "InternalError": 500, "SlowDown": 503, "ServiceUnavailable": 503,
    "InvalidPart": 400, "InvalidPartOrder": 400, "NoSuchUpload": 404,
    "NoSuchKey": 404, "NoSuchBucket": 404, "PreconditionFailed": 412,
    "AccessDenied": 403, "RequestTimeout": 400, "EntityTooSmall": 400,
}
STATUS_CODE = {500: "InternalError", 503: "SlowDown", 404: "NoSuchKey",
               412: "PreconditionFailed", 403: "AccessDenied",
               400: "InvalidRequest", 409: "OperationAborted",
               501: "NotImplemented", 502: "BadGateway"}

XML_DECL = b'<?xml version="1.0" encoding="UTF-8"?>\n'


# --------------------------------------------------------------------------
# classification
# --------------------------------------------------------------------------

_NEUTRAL_PARAMS = {"x-id", "versionId"}


def _header_get(headers, name: str) -> Optional[str]:
    if headers is None:
        return None
    lname = name.lower()
    items = headers.items() if hasattr(headers, "items") else headers
    for k, v in items:
        if isinstance(k, bytes):
            k = k.decode("latin-1")
        if k.lower() == lname:
            return v.decode("latin-1") if isinstance(v, bytes) else v
    return None


def op_of(method: str, path: str, query: str = "", headers=None) -> str:
    """Classify a path-style S3 request (see module docstring)."""
    method = method.upper()
    if "?" in path and not query:
        path, _, query = path.partition("?")
    q = parse_qs(query or "", keep_blank_values=True)
    keys = set(q)
    parts = path.lstrip("/").split("/", 1)
    bucket = parts[0]
    key = parts[1] if len(parts) > 1 else ""
    copy = _header_get(headers, "x-amz-copy-source") is not None
    if not bucket:
        return "Other"                       # ListBuckets etc.
    # sub-resources other than these mean "some other operation"
    extra = {k for k in keys
             if k not in _NEUTRAL_PARAMS and not k.startswith("response-")
             and not k.startswith("X-Amz-")}
    if key:
        if method == "POST":
            if "uploads" in keys:
                return "CreateMultipartUpload"
            if "uploadId" in keys:
                return "CompleteMultipartUpload"
            return "Other"
        if method == "PUT":
            if "uploadId" in keys and "partNumber" in keys:
                return "UploadPartCopy" if copy else "UploadPart"
            if extra:
                return "Other"
            return "CopyObject" if copy else "PutObject"
        if method == "DELETE":
            if "uploadId" in keys:
                return "AbortMultipartUpload"
            return "Other" if extra else "DeleteObject"
        if method == "GET":
            if "uploadId" in keys:
                return "ListParts"
            return "Other" if extra - {"partNumber"} else "GetObject"
        if method == "HEAD":
            return "Other" if extra - {"partNumber"} else "HeadObject"
        return "Other"
    # bucket-level
    if method == "POST" and "delete" in keys:
        return "DeleteObjects"
    if method == "GET":
        if "uploads" in keys:
            return "ListMultipartUploads"
        if q.get("list-type") == ["2"]:
            return "ListObjectsV2"
        return "Other"
    if method == "HEAD" and not extra:
        return "HeadBucket"
    return "Other"


# --------------------------------------------------------------------------
# data classes
# --------------------------------------------------------------------------

@dataclass
class LogRecord:
    op: str
    method: str
    path: str
    query: str
    status: Optional[int] = None
    bytes_in: int = 0
    bytes_out: int = 0
    action: Optional[str] = None
    upstream_status: Optional[int] = None
    done: bool = False


@dataclass
class Request:
    method: str
    target: str
    version: str
    path: str
    query: str
    headers: List[Tuple[str, str]]
    raw_lines: List[bytes]
    op: str = "Other"
    body: Optional[bytes] = None        # set once drained (raw wire bytes)
    body_started: bool = False          # client body reading has begun
    record: Optional[LogRecord] = None

    def header(self, name: str, default=None):
        v = _header_get(self.headers, name)
        return default if v is None else v

    @property
    def query_params(self) -> dict:
        return {k: v[-1] for k, v in
                parse_qs(self.query, keep_blank_values=True).items()}

    @property
    def bucket(self) -> str:
        return unquote(self.path.lstrip("/").split("/", 1)[0])

    @property
    def key(self) -> str:
        p = self.path.lstrip("/").split("/", 1)
        return unquote(p[1]) if len(p) > 1 else ""


@dataclass
class _Response:
    status: int
    reason: str
    headers: List[Tuple[str, str]]
    head_raw: bytes
    body_raw: bytes
    chunked: bool
    close_delimited: bool = False

    @property
    def body(self) -> bytes:
        return _dechunk(self.body_raw) if self.chunked else self.body_raw


class Rule:
    def __init__(self, op, action, times, match, kw):
        if isinstance(op, str):
            self.ops = None if op == "*" else {op}
        else:
            self.ops = set(op)
        self.op = op
        self.action = action
        self.times = times
        self.remaining = times
        self.match = match
        self.kw = kw
        self.hits = 0

    def _matches(self, req: Request) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.ops is not None and req.op not in self.ops:
            return False
        if self.match is not None and not self.match(req):
            return False
        return True

    @property
    def action_name(self) -> str:
        return self.action if isinstance(self.action, str) else getattr(
            self.action, "__name__", "callable")

    def __repr__(self):
        return (f"Rule(op={self.op!r}, action={self.action_name!r}, "
                f"times={self.times!r}, hits={self.hits}, kw={self.kw!r})")


_ACTION_KW = {
    "error_in_200": {"code", "message", "forward", "padding", "pieces",
                     "interval", "decl_first", "chunked"},
    "pad_200": {"padding", "pieces", "interval", "decl_first", "chunked"},
    "status": {"status", "code", "message", "headers"},
    "empty_200": {"forward"},
    "drop_response": {"after_bytes", "reset"},
    "drop_request": {"read_body", "reset"},
    "stall": {"seconds", "then", "phase"},
}


# --------------------------------------------------------------------------
# low-level connection helpers
# --------------------------------------------------------------------------

class _ClientGone(Exception):
    pass


class _UpstreamError(Exception):
    pass


class _Close(Exception):
    """Close the client connection now (fault injection)."""

    def __init__(self, reset=False):
        super().__init__()
        self.reset = reset


class _Conn:
    """A socket plus a read buffer; raises ``exc`` on I/O errors / EOF."""

    def __init__(self, sock: socket.socket, exc):
        self.sock = sock
        self.exc = exc
        self.buf = bytearray()
        self.scratch = None

    def _fill(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except OSError as e:
            raise self.exc(repr(e)) from None
        if not data:
            return False
        self.buf += data
        return True

    def read_head(self) -> Optional[bytes]:
        """Return a head ending in CRLFCRLF, or None on EOF before any byte."""
        while True:
            while self.buf[:2] == b"\r\n":
                del self.buf[:2]
            idx = self.buf.find(b"\r\n\r\n")
            if idx >= 0:
                head = bytes(self.buf[:idx + 4])
                del self.buf[:idx + 4]
                return head
            if len(self.buf) > MAX_HEAD:
                raise self.exc("head too large")
            if not self._fill():
                if self.buf:
                    raise self.exc("EOF inside head")
                return None

    def readline(self) -> bytes:
        while True:
            idx = self.buf.find(b"\n")
            if idx >= 0:
                line = bytes(self.buf[:idx + 1])
                del self.buf[:idx + 1]
                return line
            if len(self.buf) > MAX_HEAD:
                raise self.exc("line too long")
            if not self._fill():
                raise self.exc("EOF inside line")

    def pipe(self, n: Optional[int], out) -> int:
        """Move ``n`` bytes (None = until EOF) from this connection to
        ``out`` (a _Conn, a bytearray, or None to discard)."""
        moved = 0
        if self.buf:
            take = len(self.buf) if n is None else min(n, len(self.buf))
            if take:
                _emit(out, memoryview(self.buf)[:take])
                del self.buf[:take]
                moved += take
        if self.scratch is None:
            self.scratch = bytearray(BUFSIZE)
        mv = memoryview(self.scratch)
        while n is None or moved < n:
            want = BUFSIZE if n is None else min(BUFSIZE, n - moved)
            try:
                k = self.sock.recv_into(mv[:want], want)
            except OSError as e:
                raise self.exc(repr(e)) from None
            if not k:
                if n is None:
                    break
                raise self.exc("EOF inside body")
            _emit(out, mv[:k])
            moved += k
        return moved

    def send(self, data) -> None:
        try:
            self.sock.sendall(data)
        except OSError as e:
            raise self.exc(repr(e)) from None


def _emit(out, data) -> None:
    if out is None:
        return
    if isinstance(out, bytearray):
        out += data
    else:
        out.send(data)


def _dechunk(raw: bytes) -> bytes:
    out = bytearray()
    pos = 0
    while True:
        eol = raw.index(b"\r\n", pos)
        size = int(raw[pos:eol].split(b";", 1)[0].strip(), 16)
        pos = eol + 2
        if size == 0:
            return bytes(out)
        out += raw[pos:pos + size]
        pos += size + 2


def _parse_headers(lines: List[bytes]) -> List[Tuple[str, str]]:
    headers = []
    for line in lines:
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        headers.append((name.strip().decode("latin-1"),
                        value.strip().decode("latin-1")))
    return headers


def _framing(headers, allow_close: bool):
    """('chunked', None) | ('length', n) | ('close', None) | ('none', 0)."""
    te = _header_get(headers, "transfer-encoding")
    if te is not None and te.lower().replace(" ", "").endswith("chunked"):
        return ("chunked", None)
    cl = _header_get(headers, "content-length")
    if cl is not None:
        return ("length", int(cl.split(",")[0].strip()))
    return ("close", None) if allow_close else ("none", 0)


def _relay_body(src: _Conn, framing, out) -> int:
    kind, n = framing
    if kind == "length":
        return src.pipe(n, out) if n else 0
    if kind == "close":
        return src.pipe(None, out)
    if kind == "none":
        return 0
    moved = 0           # chunked: relay the framing unchanged
    while True:
        line = src.readline()
        _emit(out, line)
        moved += len(line)
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise src.exc("bad chunk size line %r" % line) from None
        if size == 0:
            while True:                      # trailers up to empty line
                t = src.readline()
                _emit(out, t)
                moved += len(t)
                if t in (b"\r\n", b"\n"):
                    return moved
        moved += src.pipe(size, out)
        crlf = src.readline()
        _emit(out, crlf)
        moved += len(crlf)


def _connection_tokens(headers) -> set:
    v = _header_get(headers, "connection") or ""
    return {t.strip().lower() for t in v.split(",") if t.strip()}


_HOP_BY_HOP = (b"connection", b"keep-alive", b"proxy-connection")


def _strip_hop_headers(head: bytes, framing) -> bytes:
    """Remove Connection/Keep-Alive headers from an upstream response head
    so the client connection can stay persistent (moto's server answers
    every request with ``Connection: close``).  Close-delimited responses
    keep their head unchanged (the client connection is closed after)."""
    if framing[0] == "close":
        return head
    lines = head[:-4].split(b"\r\n")
    kept = [lines[0]] + [ln for ln in lines[1:] if ln.partition(b":")[0]
                         .strip().lower() not in _HOP_BY_HOP]
    if len(kept) == len(lines):
        return head
    return b"\r\n".join(kept) + b"\r\n\r\n"


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _error_xml(code: str, message: Optional[str], resource: str = "") -> bytes:
    from xml.sax.saxutils import escape
    msg = message if message is not None else DEFAULT_MESSAGES.get(code, code)
    return (XML_DECL + (
        "<Error><Code>%s</Code><Message>%s</Message><Resource>%s</Resource>"
        "<RequestId>x</RequestId><HostId>faultproxy</HostId></Error>"
        % (escape(code), escape(msg), escape(resource))).encode("utf-8"))


class _ConnState:
    def __init__(self, client: _Conn):
        self.client = client
        self.up: Optional[_Conn] = None
        self.continue_sent = False


# --------------------------------------------------------------------------
# the proxy
# --------------------------------------------------------------------------

class Hold:
    """A rule action that holds each request until ``release()`` (see the module docstring)."""

    def __init__(self, timeout: float = 120.0) -> None:
        self.timeout = timeout
        self.held = 0
        self._released = threading.Event()
        self._changed = threading.Condition()

    def __call__(self, request: Request) -> None:
        with self._changed:
            self.held += 1
            self._changed.notify_all()
        self._released.wait(self.timeout)

    def wait_held(self, n: int = 1, timeout: float = 30.0) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.held >= n, timeout)

    def release(self) -> None:
        self._released.set()


class FaultProxy:
    def __init__(self, upstream_url: str, upstream_timeout: float = 60.0):
        u = urlsplit(upstream_url)
        if u.scheme not in ("http", ""):
            raise ValueError("only http:// upstreams are supported")
        self.upstream_host = u.hostname or "127.0.0.1"
        self.upstream_port = u.port or 80
        self.upstream_timeout = upstream_timeout
        self._lock = threading.RLock()
        self._idle = threading.Condition(self._lock)
        self._inflight = 0
        self._log: List[LogRecord] = []
        self._rules: List[Rule] = []
        self._socks: set = set()
        self._threads: set = set()
        self._stopping = threading.Event()
        self._listener: Optional[socket.socket] = None
        self._accept_thread: Optional[threading.Thread] = None
        self.port: Optional[int] = None
        self.connections = 0

    # ---- lifecycle -------------------------------------------------------
    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("proxy not started")
        return "http://127.0.0.1:%d" % self.port

    def start(self) -> None:
        if self._listener is not None:
            raise RuntimeError("already started")
        self._stopping.clear()
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", 0))
        ls.listen(256)
        ls.settimeout(0.2)
        self._listener = ls
        self.port = ls.getsockname()[1]
        t = threading.Thread(target=self._accept_loop, name="faultproxy-accept",
                             daemon=True)
        self._accept_thread = t
        t.start()

    def stop(self) -> None:
        self._stopping.set()
        ls, self._listener = self._listener, None
        if ls is not None:
            try:
                ls.close()
            except OSError:
                pass
        if self._accept_thread is not None:
            self._accept_thread.join(2.0)
            self._accept_thread = None
        with self._lock:
            socks = list(self._socks)
            threads = list(self._threads)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + 2.0
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            leftover = list(self._socks)
            self._socks.clear()
            self._inflight = 0
            self._idle.notify_all()
        for s in leftover:
            try:
                s.close()
            except OSError:
                pass

    def __enter__(self) -> "FaultProxy":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- rules and log ---------------------------------------------------
    def add_rule(self, op, action, times: Optional[int] = 1,
                 match: Optional[Callable[[Request], bool]] = None,
                 **kw) -> Rule:
        if isinstance(action, str):
            if action not in _ACTION_KW:
                raise ValueError("unknown action %r" % action)
            bad = set(kw) - _ACTION_KW[action]
            if bad:
                raise TypeError("unexpected keyword(s) for %s: %s"
                                % (action, ", ".join(sorted(bad))))
            if action == "stall":
                if kw.get("then", "forward") not in ("forward", "close"):
                    raise ValueError("then must be 'forward' or 'close'")
                if kw.get("phase", "request") not in ("request", "response"):
                    raise ValueError("phase must be 'request' or 'response'")
        elif not callable(action):
            raise TypeError("action must be a name or a callable")
        elif kw:
            raise TypeError("callable actions take no keyword arguments")
        rule = Rule(op, action, times, match, kw)
        with self._lock:
            self._rules.append(rule)
        return rule

    def remove_rule(self, rule: Rule) -> None:
        with self._lock:
            if rule in self._rules:
                self._rules.remove(rule)

    def clear_rules(self) -> None:
        with self._lock:
            self._rules.clear()

    @property
    def rules(self) -> List[Rule]:
        with self._lock:
            return list(self._rules)

    @property
    def log(self) -> List[LogRecord]:
        with self._lock:
            return list(self._log)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def count(self, op: Optional[str] = None,
              action: Optional[str] = None) -> int:
        with self._lock:
            return sum(1 for r in self._log
                       if (op is None or r.op == op)
                       and (action is None or r.action == action))

    def wait_idle(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._inflight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def _take_rule(self, req: Request) -> Optional[Rule]:
        with self._lock:
            for rule in self._rules:
                try:
                    ok = rule._matches(req)
                except Exception:
                    ok = False
                if ok:
                    if rule.remaining is not None:
                        rule.remaining -= 1
                    rule.hits += 1
                    return rule
        return None

    # ---- accept / per-connection loop -------------------------------------
    def _track(self, sock) -> None:
        with self._lock:
            self._socks.add(sock)

    def _untrack_close(self, sock, reset=False) -> None:
        with self._lock:
            self._socks.discard(sock)
        try:
            if reset:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                struct.pack("ii", 1, 0))
            else:
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
            sock.close()
        except OSError:
            pass

    def _accept_loop(self) -> None:
        ls = self._listener
        while not self._stopping.is_set():
            try:
                csock, _addr = ls.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            if self._stopping.is_set():
                csock.close()
                break
            csock.settimeout(None)
            csock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._track(csock)
            with self._lock:
                self.connections += 1
            t = threading.Thread(target=self._serve, args=(csock,),
                                 name="faultproxy-conn", daemon=True)
            with self._lock:
                self._threads.add(t)
            t.start()

    def _serve(self, csock: socket.socket) -> None:
        st = _ConnState(_Conn(csock, _ClientGone))
        reset = False
        try:
            while not self._stopping.is_set():
                head = st.client.read_head()
                if head is None:
                    break
                if not self._handle(st, head):
                    break
        except _Close as c:
            reset = c.reset
        except (_ClientGone, _UpstreamError, OSError, ValueError):
            pass
        finally:
            self._drop_upstream(st)
            self._untrack_close(csock, reset=reset)
            with self._lock:
                self._threads.discard(threading.current_thread())

    # ---- request handling -------------------------------------------------
    def _parse_request(self, head: bytes) -> Request:
        lines = head[:-4].split(b"\r\n")
        try:
            method, target, version = lines[0].decode("latin-1").split(" ", 2)
        except ValueError:
            raise _ClientGone("bad request line %r" % lines[0]) from None
        path, _, query = target.partition("?")
        headers = _parse_headers(lines[1:])
        req = Request(method=method, target=target, version=version.strip(),
                      path=path, query=query, headers=headers,
                      raw_lines=lines[1:])
        req.op = op_of(method, path, query, headers)
        return req

    def _handle(self, st: _ConnState, head: bytes) -> bool:
        req = self._parse_request(head)
        st.continue_sent = False
        rec = LogRecord(op=req.op, method=req.method, path=req.path,
                        query=req.query)
        req.record = rec
        rule = self._take_rule(req)
        if rule is not None:
            rec.action = rule.action_name
        with self._lock:
            self._log.append(rec)
            self._inflight += 1
        try:
            keep = self._dispatch(st, req, rule)
        finally:
            rec.done = True
            with self._idle:
                self._inflight = max(0, self._inflight - 1)
                self._idle.notify_all()
        conn = _connection_tokens(req.headers)
        if "close" in conn:
            return False
        if req.version == "HTTP/1.0" and "keep-alive" not in conn:
            return False
        return keep

    def _dispatch(self, st: _ConnState, req: Request,
                  rule: Optional[Rule]) -> bool:
        if rule is None:
            return self._forward(st, req)
        act, kw = rule.action, rule.kw
        if callable(act):
            self._drain(st, req, keep=True)
            result = act(req)
            if result is None:
                return self._forward(st, req)
            if result == "close":
                raise _Close()
            status, headers, body = result
            if isinstance(headers, dict):
                headers = list(headers.items())
            self._send_synth(st, req, status, list(headers or []),
                             [(body or b"", 0.0)])
            return True

        if act == "stall":
            seconds = float(kw.get("seconds", 10.0))
            then = kw.get("then", "forward")
            if kw.get("phase", "request") == "request":
                self._wait(seconds)
                if then == "close":
                    raise _Close()
                return self._forward(st, req)
            resp = self._forward_capture(st, req)
            self._wait(seconds)
            if then == "close":
                raise _Close()
            self._send_raw_response(st, req, resp)
            return not resp.close_delimited

        if act == "drop_request":
            if kw.get("read_body", False):
                self._drain(st, req)
            raise _Close(reset=kw.get("reset", False))

        if act == "drop_response":
            resp = self._forward_capture(st, req)
            n = int(kw.get("after_bytes", 0))
            if n > 0:
                data = (resp.head_raw + resp.body_raw)[:n]
                st.client.send(data)
                req.record.bytes_out = max(0, len(data) - len(resp.head_raw))
            raise _Close(reset=kw.get("reset", False))

        if act == "status":
            status = int(kw.get("status", 503))
            code = kw.get("code") or STATUS_CODE.get(status, "InternalError")
            self._drain(st, req)
            headers = [("Content-Type", "application/xml")]
            headers += list((kw.get("headers") or {}).items())
            body = _error_xml(code, kw.get("message"), req.path)
            self._send_synth(st, req, status, headers, [(body, 0.0)])
            return True

        if act == "empty_200":
            if kw.get("forward", False):
                self._forward_capture(st, req)
            else:
                self._drain(st, req)
            self._send_synth(st, req, 200, [], [(b"", 0.0)])
            return True

        if act in ("error_in_200", "pad_200"):
            padding = kw.get("padding", b"  \n  \n")
            if isinstance(padding, str):
                padding = padding.encode()
            pieces = max(1, int(kw.get("pieces", 1)))
            interval = float(kw.get("interval", 0.0))
            decl_first = kw.get("decl_first", False)
            if act == "error_in_200":
                if kw.get("forward", False):
                    self._forward_capture(st, req)
                else:
                    self._drain(st, req)
                code = kw.get("code", "InternalError")
                doc = _error_xml(code, kw.get("message"), req.path)
                headers = [("Content-Type", "application/xml")]
            else:
                resp = self._forward_capture(st, req)
                doc = resp.body
                if resp.status != 200:
                    self._send_raw_response(st, req, resp)
                    return not resp.close_delimited
                headers = [(k, v) for k, v in resp.headers
                           if k.lower() not in ("content-length",
                                                "transfer-encoding",
                                                "connection", "date")]
            prefix = b""
            if decl_first and doc.startswith(b"<?xml"):
                end = doc.index(b"?>") + 2
                prefix, doc = doc[:end], doc[end:]
            size = -(-len(padding) // pieces) if padding else 0
            segs = [(prefix, 0.0)] if prefix else []
            for i in range(pieces):
                piece = padding[i * size:(i + 1) * size] if size else b""
                segs.append((piece, interval if (i or prefix) else 0.0))
            segs.append((doc, interval))
            self._send_synth(st, req, 200, headers, segs,
                             chunked=kw.get("chunked", False))
            return True
        raise AssertionError(act)

    def _wait(self, seconds: float) -> None:
        if self._stopping.wait(seconds):
            raise _Close()

    # ---- body helpers -----------------------------------------------------
    def _send_continue(self, st: _ConnState, req: Request) -> None:
        if st.continue_sent:
            return
        expect = (req.header("expect") or "").lower()
        if expect == "100-continue" and req.version == "HTTP/1.1":
            st.client.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            st.continue_sent = True

    def _drain(self, st: _ConnState, req: Request, keep=False) -> None:
        """Read the request body (after 100 Continue); keep it if asked."""
        if req.body is not None:
            return
        framing = _framing(req.headers, allow_close=False)
        if framing == ("none", 0) or framing == ("length", 0):
            req.body = b""
            return
        if req.body_started:
            raise _Close()                  # partially consumed: give up
        req.body_started = True
        self._send_continue(st, req)
        buf = bytearray() if keep else None
        req.record.bytes_in = _relay_body(st.client, framing, buf)
        req.body = bytes(buf) if keep else b""

    # ---- upstream -----------------------------------------------------------
    def _drop_upstream(self, st: _ConnState) -> None:
        if st.up is not None:
            self._untrack_close(st.up.sock)
            st.up = None

    def _upstream(self, st: _ConnState) -> _Conn:
        if st.up is not None:
            try:
                r, _, _ = select.select([st.up.sock], [], [], 0)
            except (OSError, ValueError):
                r = [True]
            if r or st.up.buf:      # EOF or stray bytes: don't reuse
                self._drop_upstream(st)
        if st.up is None:
            try:
                s = socket.create_connection(
                    (self.upstream_host, self.upstream_port),
                    timeout=self.upstream_timeout)
            except OSError as e:
                raise _UpstreamError(repr(e)) from None
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._track(s)
            if self._stopping.is_set():
                self._untrack_close(s)
                raise _Close()
            st.up = _Conn(s, _UpstreamError)
        return st.up

    def _request_head(self, req: Request) -> bytes:
        lines = [("%s %s %s" % (req.method, req.target, req.version))
                 .encode("latin-1")]
        for raw in req.raw_lines:
            name = raw.partition(b":")[0].strip().lower()
            if name == b"expect":
                continue
            lines.append(raw)
        return b"\r\n".join(lines) + b"\r\n\r\n"

    def _send_upstream(self, st: _ConnState, req: Request) -> _Conn:
        """Send the request (head + body) upstream; returns the connection."""
        up = self._upstream(st)
        head = self._request_head(req)
        if req.body is not None:
            up.send(head + req.body)
            return up
        framing = _framing(req.headers, allow_close=False)
        if framing in (("none", 0), ("length", 0)):
            up.send(head)
            req.body = b""
            return up
        up.send(head)
        self._send_continue(st, req)
        req.body_started = True
        req.record.bytes_in = _relay_body(st.client, framing, up)
        return up

    def _read_response_head(self, req: Request, up: _Conn):
        while True:
            head = up.read_head()
            if head is None:
                raise _UpstreamError("upstream closed before response")
            lines = head[:-4].split(b"\r\n")
            parts = lines[0].decode("latin-1").split(" ", 2)
            try:
                status = int(parts[1])
            except (IndexError, ValueError):
                raise _UpstreamError("bad status line %r" % lines[0]) from None
            if 100 <= status < 200 and status != 101:
                continue                      # swallow interim responses
            reason = parts[2] if len(parts) > 2 else ""
            headers = _parse_headers(lines[1:])
            if (req.method == "HEAD" or status in (204, 304)
                    or 100 <= status < 200):
                framing = ("none", 0)
            else:
                framing = _framing(headers, allow_close=True)
            req.record.upstream_status = status
            return head, status, reason, headers, framing

    def _reusable(self, req, headers, framing) -> bool:
        return framing[0] != "close" and \
            "close" not in _connection_tokens(headers)

    def _forward(self, st: _ConnState, req: Request) -> bool:
        """Forward and stream the response back. Returns keep-alive."""
        try:
            up = self._send_upstream(st, req)
            head, status, reason, headers, framing = \
                self._read_response_head(req, up)
        except _UpstreamError:
            self._drop_upstream(st)
            self._drain(st, req)
            self._send_synth(st, req, 502, [("Content-Type", "application/xml")],
                             [(_error_xml("BadGateway", "faultproxy: upstream "
                                          "unreachable", req.path), 0.0)])
            return True
        try:
            st.client.send(_strip_hop_headers(head, framing))
        except _ClientGone:
            self._drop_upstream(st)
            raise
        req.record.status = status
        try:
            req.record.bytes_out = _relay_body(up, framing, st.client)
        except (_ClientGone, _UpstreamError):
            self._drop_upstream(st)
            raise
        if not self._reusable(req, headers, framing):
            self._drop_upstream(st)
        return framing[0] != "close"

    def _forward_capture(self, st: _ConnState, req: Request) -> _Response:
        """Forward and read the complete response into memory."""
        try:
            up = self._send_upstream(st, req)
            head, status, reason, headers, framing = \
                self._read_response_head(req, up)
            body = bytearray()
            _relay_body(up, framing, body)
        except _UpstreamError:
            self._drop_upstream(st)
            self._drain(st, req)
            body = _error_xml("BadGateway", "faultproxy: upstream error",
                              req.path)
            head = (b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/xml"
                    b"\r\nContent-Length: %d\r\n\r\n" % len(body))
            return _Response(502, "Bad Gateway",
                             [("Content-Type", "application/xml"),
                              ("Content-Length", str(len(body)))],
                             head, body, False)
        if not self._reusable(req, headers, framing):
            self._drop_upstream(st)
        return _Response(status, reason, headers,
                         _strip_hop_headers(head, framing), bytes(body),
                         framing[0] == "chunked", framing[0] == "close")

    # ---- responses to the client ------------------------------------------
    def _send_raw_response(self, st: _ConnState, req: Request,
                           resp: _Response) -> None:
        req.record.status = resp.status
        if resp.body_raw:
            st.client.send(resp.head_raw + resp.body_raw)
        else:
            st.client.send(resp.head_raw)
        req.record.bytes_out = len(resp.body_raw)

    def _send_synth(self, st: _ConnState, req: Request, status: int,
                    headers: List[Tuple[str, str]],
                    segments: List[Tuple[bytes, float]],
                    chunked: bool = False) -> None:
        """Send a response made of ``segments`` [(bytes, delay_before)]."""
        total = sum(len(b) for b, _ in segments)
        head_only = req.method == "HEAD"
        hl = ["HTTP/1.1 %d %s" % (status, _reason(status))]
        names = {k.lower() for k, _ in headers}
        if "date" not in names:
            hl.append("Date: " + email.utils.formatdate(usegmt=True))
        if "x-amz-request-id" not in names:
            hl.append("x-amz-request-id: FAULTPROXY")
        if "server" not in names:
            hl.append("Server: AmazonS3")
        hl += ["%s: %s" % (k, v) for k, v in headers]
        if chunked and not head_only:
            hl.append("Transfer-Encoding: chunked")
        else:
            hl.append("Content-Length: %d" % (0 if head_only else total))
        head = ("\r\n".join(hl) + "\r\n\r\n").encode("latin-1")
        req.record.status = status
        if head_only:
            st.client.send(head)
            return
        pending = head
        sent = 0
        for data, delay in segments:
            if delay > 0:
                if pending:
                    st.client.send(pending)
                    pending = b""
                self._wait(delay)
            if chunked:
                if data:
                    pending += b"%x\r\n" % len(data) + data + b"\r\n"
            else:
                pending += data
            sent += len(data)
        if chunked:
            pending += b"0\r\n\r\n"
        if pending:
            st.client.send(pending)
        req.record.bytes_out = sent
