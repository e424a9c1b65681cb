"""The S3 server the benchmark talks to, and the benchmark's own boto3 client
of it: starting radosgw (scripts/start-rgw) or moto, or taking a given
endpoint; the client, configured as s3fsmpu configures its own; the buckets
(create, empty, delete, count keys); and the S3 requests each workload sent,
counted from radosgw's access log.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from .common import ROOT, log, run, tool_version, use_project


@dataclass
class Server:
    name: str
    endpoint: str
    log: str | None  # radosgw's log with the access lines, if we know it


def start_server(args: argparse.Namespace, cleanups: list[Callable[[], None]]) -> Server:
    """radosgw with --rgw, the server at --endpoint, else moto; how to stop it goes on `cleanups`."""
    server_log = args.server_log
    if args.rgw:
        script = ROOT / "scripts" / "start-rgw"
        log("starting radosgw (scripts/start-rgw) ...")
        cleanups.append(lambda: run([str(script), "stop" if args.keep_rgw_data else "purge"],
                                    timeout=120, check=False))
        r = subprocess.run([str(script), "start"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=900)
        if r.returncode != 0:
            raise RuntimeError("start-rgw failed: " + " | ".join(r.stderr.strip().splitlines()[-5:]))
        env = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
        os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
        endpoint = env["S3_ENDPOINT"]
        rgw_dir = os.environ.get("RGW_DIR", "/tmp/s3fsmpu-rgw")
        if not server_log:
            server_log = f"{rgw_dir}/log/client.rgw.a.log"
        name = "radosgw (ceph " + tool_version(["ceph", "--version"], r"ceph version (\S+)") + ")"
    elif args.endpoint:
        endpoint = args.endpoint
        name = f"external {args.endpoint}"
        if not os.environ.get("AWS_ACCESS_KEY_ID"):
            raise RuntimeError("--endpoint needs AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the environment")
    else:
        use_project()
        from s3fsmpu.local_server import CREDENTIALS, start_moto

        os.environ.update(CREDENTIALS)
        proc, url = start_moto()
        cleanups.append(lambda: (proc.terminate(), proc.wait(timeout=10)))
        endpoint = url
        import moto

        name = f"moto {moto.__version__} (in-memory, 1 process)"
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    log(f"S3 server: {name} at {endpoint}")
    return Server(name, endpoint, server_log)


def make_client(endpoint: str, conc: int) -> Any:
    """A boto3 client configured the way s3fsmpu configures its own."""
    import boto3
    from botocore.config import Config

    cfg = Config(
        retries={"mode": "standard", "total_max_attempts": 3},
        connect_timeout=5, read_timeout=120,
        max_pool_connections=max(16, conc + 8),
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": "path", "payload_signing_enabled": False},
        tcp_keepalive=True,
    )
    client = boto3.session.Session().client("s3", endpoint_url=endpoint, region_name="us-east-1", config=cfg)
    use_project()
    try:
        from s3fsmpu.store.boto3_client import raise_send_blocksize

        raise_send_blocksize(client)  # 1 MiB socket writes, as the mount sends
    except ImportError:
        pass
    return client


# ---- buckets -----------------------------------------------------------------------
def create_bucket(client: Any, name: str, stamp: str) -> str:
    bucket = f"bench-{name}-{stamp}".lower()
    client.create_bucket(Bucket=bucket)
    return bucket


def empty_bucket(client: Any, bucket: str, prefix: str = "") -> None:
    c = client
    try:
        for page in c.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix):
            for u in page.get("Uploads", []):
                c.abort_multipart_upload(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])
    except Exception as exc:
        log(f"aborting uploads in {bucket}: {exc}")
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            c.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})


def delete_buckets(client: Any, buckets: Iterable[str]) -> None:
    for bucket in buckets:
        try:
            empty_bucket(client, bucket)
            client.delete_bucket(Bucket=bucket)
        except Exception as exc:
            log(f"deleting bucket {bucket}: {exc}")


def count_keys(client: Any, bucket: str, prefix: str) -> tuple[int, int]:
    """(files, bytes) under `prefix`, directory markers not counted."""
    n = total = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            if not o["Key"].endswith("/"):
                n += 1
                total += o["Size"]
    return n, total


# ---- requests, from radosgw's access log ------------------------------------------------
def log_offset(path: str | None) -> int | None:
    try:
        return os.path.getsize(path) if path else None
    except OSError:
        return None


BEAST = re.compile(r'beast: \S+ \S+ - \S+ \[[^\]]+\] "([A-Z]+) (/[^ ?"]*)(\?[^ "]*)? HTTP[^"]*" (\d+) (\d+)')


def count_requests(log_path: str, offset: int, bucket: str) -> dict[str, int] | None:
    """S3 requests to `bucket` in radosgw's access log since `offset`, by operation."""
    time.sleep(0.5)  # the log is written asynchronously
    try:
        with open(log_path, "rb") as f:
            f.seek(offset)
            data = f.read().decode(errors="replace")
    except OSError:
        return None
    ops: dict[str, int] = {}
    for m in BEAST.finditer(data):
        method, path, query, status = m.group(1), m.group(2), m.group(3) or "", m.group(4)
        sent = int(m.group(5))
        if not (path == f"/{bucket}" or path.startswith(f"/{bucket}/")):
            continue
        keys = {kv.split("=")[0] for kv in query[1:].split("&")} if query else set()
        if method == "GET":
            if "uploads" in keys:
                op = "ListMPUs"
            elif "uploadId" in keys:
                op = "ListParts"
            else:
                op = "LIST" if path.rstrip("/") == f"/{bucket}" else "GET"
                if op == "GET":
                    ops["GET bytes"] = ops.get("GET bytes", 0) + sent
        elif method == "HEAD":
            op = "HEAD" if status.startswith("2") else f"HEAD-{status}"
        elif method == "PUT":
            op = "UploadPart" if "partNumber" in keys else "PUT/COPY"
        elif method == "POST":
            op = ("CreateMPU" if "uploads" in keys else "CompleteMPU" if "uploadId" in keys
                  else "DeleteObjects" if "delete" in keys else "POST")
        else:
            op = method
        ops[op] = ops.get(op, 0) + 1
    got = ops.pop("GET bytes", 0)
    out = dict(sorted(ops.items(), key=lambda kv: -kv[1]))
    if got:
        out["GET bytes"] = got
    return out
