"""Counters and histograms of a mount, in Prometheus' text format (--metrics-addr).

`InstrumentedStore` wraps the ObjectStore and counts every request by S3
operation and outcome (ok or the S3 code), with its latency and bytes;
upload outcomes come from the driver's counters. One small HTTP server
answers GET /metrics; nothing is collected beyond what these counters hold.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from s3fsmpu.errors import S3Error
from s3fsmpu.store.base import Body
from s3fsmpu.store.wrapper import StoreWrapper

log = logging.getLogger(__name__)

OPERATION = {
    "head": "HeadObject", "get_range": "GetObject", "get_range_into": "GetObject", "list_page": "ListObjectsV2",
    "put": "PutObject",
    "copy": "CopyObject", "delete": "DeleteObject", "create_multipart": "CreateMultipartUpload",
    "upload_part": "UploadPart", "upload_part_copy": "UploadPartCopy",
    "complete_multipart": "CompleteMultipartUpload", "abort_multipart": "AbortMultipartUpload",
    "list_uploads": "ListMultipartUploads", "list_parts": "ListParts", "check_bucket": "HeadBucket",
}
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str]] = Counter()
        self.latency: dict[str, list[int]] = {}
        self.latency_sum: defaultdict[str, float] = defaultdict(float)
        self.bytes_up = 0
        self.bytes_down = 0

    def observe(self, operation: str, outcome: str, seconds: float) -> None:
        self.requests[(operation, outcome)] += 1
        counts = self.latency.setdefault(operation, [0] * (len(BUCKETS) + 1))
        counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.latency_sum[operation] += seconds

    def render(self, snapshot: dict[str, Any] | None) -> str:
        out = [
            "# HELP s3fsmpu_requests_total S3 requests by operation and outcome (ok or the S3 code).",
            "# TYPE s3fsmpu_requests_total counter",
        ]
        for (op, outcome), n in sorted(self.requests.items()):
            out.append(f's3fsmpu_requests_total{{operation="{op}",outcome="{outcome}"}} {n}')
        out += ["# HELP s3fsmpu_request_seconds S3 request latency.", "# TYPE s3fsmpu_request_seconds histogram"]
        for op, counts in sorted(self.latency.items()):
            cumulative = 0
            for bound, n in zip((*BUCKETS, float("inf")), counts, strict=True):
                cumulative += n
                le = "+Inf" if bound == float("inf") else repr(bound)
                out.append(f's3fsmpu_request_seconds_bucket{{operation="{op}",le="{le}"}} {cumulative}')
            out.append(f's3fsmpu_request_seconds_sum{{operation="{op}"}} {self.latency_sum[op]:.6f}')
            out.append(f's3fsmpu_request_seconds_count{{operation="{op}"}} {cumulative}')
        out += ["# TYPE s3fsmpu_bytes_sent_total counter", f"s3fsmpu_bytes_sent_total {self.bytes_up}",
                "# TYPE s3fsmpu_bytes_received_total counter", f"s3fsmpu_bytes_received_total {self.bytes_down}"]
        if snapshot is not None:
            t = snapshot["totals"]
            out += ["# HELP s3fsmpu_uploads_total Finished uploads by class.",
                    "# TYPE s3fsmpu_uploads_total counter"]
            succeeded_first_try = t["completed"] - t["completed_after_retry"]
            for cls, n in (("success", succeeded_first_try), ("retried", t["completed_after_retry"]),
                           ("reconciled_by_head", t["settled_by_head"]), ("repaired", t["repaired"]),
                           ("failed", t["failed"])):
                out.append(f's3fsmpu_uploads_total{{class="{cls}"}} {n}')
            out += ["# TYPE s3fsmpu_retries_total counter", f"s3fsmpu_retries_total {t['retries']}",
                    "# TYPE s3fsmpu_uploads_in_flight gauge",
                    f"s3fsmpu_uploads_in_flight {len(snapshot['uploads'])}",
                    "# TYPE s3fsmpu_buffered_bytes gauge", f"s3fsmpu_buffered_bytes {snapshot['buffered_bytes']}",
                    "# TYPE s3fsmpu_max_memory_bytes gauge", f"s3fsmpu_max_memory_bytes {snapshot['max_memory']}"]
        return "\n".join(out) + "\n"


class InstrumentedStore(StoreWrapper):
    """Counts every call of the wrapped store; otherwise transparent."""

    def __init__(self, inner: Any, metrics: Metrics) -> None:
        super().__init__(inner)
        self.metrics = metrics

    def wraps(self, name: str) -> bool:
        return name in OPERATION

    async def around(self, name: str, args: tuple[Any, ...], call: Callable[[], Awaitable[Any]]) -> Any:
        t0 = time.monotonic()
        outcome = "ok"
        try:
            result = await call()
        except S3Error as exc:
            outcome = exc.code
            raise
        finally:
            self.metrics.observe(OPERATION[name], outcome, time.monotonic() - t0)
        if isinstance(result, bytes):
            self.metrics.bytes_down += len(result)
        elif name == "get_range_into":
            self.metrics.bytes_down += result
        self.metrics.bytes_up += sum(a.length for a in args if isinstance(a, Body))
        return result


async def serve_metrics(addr: str, render: Callable[[], str],
                        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    host, _, port = addr.rpartition(":")
    listeners = await trio.open_tcp_listeners(int(port), host=host or "127.0.0.1")
    task_status.started()

    async def handle(stream: trio.abc.Stream) -> None:
        try:
            request = b""
            with trio.move_on_after(5):
                while b"\r\n\r\n" not in request and len(request) < 8192:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        break
                    request += chunk
            path = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b"/"
            if path.split(b"?")[0] in (b"/metrics", b"/"):
                body, status = render().encode(), b"200 OK"
            else:
                body, status = b"not found\n", b"404 Not Found"
            await stream.send_all(b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain; version=0.0.4\r\n"
                                  b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
                                  + body)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            await stream.aclose()

    await trio.serve_listeners(handle, listeners)
