"""Operating a mount: status, metrics, SIGUSR1, and help that matches the README."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from s3fsmpu.local_server import free_port
from tests.conftest import S3FSMPU, bucket_bytes, open_uploads, wait_for

pytestmark = pytest.mark.fuse
MIB = 1 << 20
README = Path(__file__).resolve().parents[2] / "README.md"


def status(mountpoint: Path) -> dict:
    r = subprocess.run([S3FSMPU, "status", str(mountpoint), "--json"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_status_follows_a_large_write(s3, bucket, mounter):
    m = mounter(bucket, "--part-size", "5MiB", "--max-memory", "40MiB")
    assert status(m.path)["uploads"] == []
    data = random.randbytes(60 * MIB)
    src = m.cache_dir.parent / "status-src.bin"
    src.write_bytes(data)
    go = m.cache_dir.parent / "status-go"
    # the writer is its own process: every `s3fsmpu status` below forks this test
    # process, and a fork closing an inherited descriptor is a flush (SPEC)
    script = (
        "import os, sys, time\n"
        "src, dst, go = sys.argv[1:4]\n"
        "data = open(src, 'rb').read()\n"
        "with open(dst, 'wb') as f:\n"
        "    f.write(data[: 30 << 20]); f.flush()\n"
        "    while not os.path.exists(go): time.sleep(0.05)\n"
        "    f.write(data[30 << 20 :])\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", script, str(src), str(m.path / "big.bin"), str(go)])
    try:
        assert wait_for(lambda: any(u["parts_done"] >= 5 for u in status(m.path)["uploads"]), timeout=60)
        first = status(m.path)["uploads"][0]
        assert first["key"] == "big.bin" and first["upload_id"]
        assert first["bytes_written"] >= 25 * MIB and first["state"] == "uploading"
        assert first["parts_so_far"] == -(-first["bytes_written"] // (5 * MIB))
        s = status(m.path)
        assert s["max_memory"] == 40 * MIB and 0 <= s["buffered_bytes"] <= 40 * MIB
        assert s["totals"]["completed"] == 0
    finally:
        go.touch()
        assert writer.wait(120) == 0
    after = status(m.path)
    assert after["uploads"] == []
    assert after["totals"]["completed"] >= 1 and after["totals"]["bytes_uploaded"] >= len(data)
    assert bucket_bytes(s3, bucket, "big.bin") == data
    table = subprocess.run([S3FSMPU, "status", str(m.path)], capture_output=True, text=True, timeout=30)
    assert table.returncode == 0 and "since mount: 1 completed" in table.stdout


def test_status_of_no_mount_is_one_line(tmp_path):
    r = subprocess.run([S3FSMPU, "status", str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and "no s3fsmpu mount" in r.stderr


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return resp.read().decode()


def _value(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_metrics_move_when_complete_is_retried(s3, bucket, mounter, proxy):
    port = free_port()
    m = mounter(bucket, "--part-size", "5MiB", "--metrics-addr", f"127.0.0.1:{port}", endpoint=proxy.url)
    before = _metrics(port)
    proxy.add_rule("CompleteMultipartUpload", "status", status=503, code="SlowDown")
    data = random.randbytes(11 * MIB)
    (m.path / "r.bin").write_bytes(data)
    after = _metrics(port)
    assert bucket_bytes(s3, bucket, "r.bin") == data
    assert _value(after, 's3fsmpu_requests_total{operation="CompleteMultipartUpload",outcome="SlowDown"}') == 1
    assert _value(after, 's3fsmpu_requests_total{operation="CompleteMultipartUpload",outcome="ok"}') == 1
    assert _value(after, 's3fsmpu_uploads_total{class="retried"}') == 1
    assert _value(after, "s3fsmpu_retries_total") > _value(before, "s3fsmpu_retries_total")
    assert _value(after, "s3fsmpu_bytes_sent_total") >= len(data)
    assert 's3fsmpu_request_seconds_bucket{operation="UploadPart",le="+Inf"} 3' in after


def test_unmount_reports_uploads_it_waits_for(s3, bucket, mounter, proxy):
    """`s3fsmpu unmount` of a mount with a file still open for writing publishes what was
    written, and says every 2 s what it is waiting for."""
    m = mounter(bucket, "--part-size", "5MiB", endpoint=proxy.url)
    data = random.randbytes(12 * MIB)
    src, go = m.cache_dir.parent / "unmount-src.bin", m.cache_dir.parent / "unmount-go"
    src.write_bytes(data)
    script = (  # its own process: the `s3fsmpu unmount` below forks this one (see above)
        "import sys, time\n"
        "f = open(sys.argv[1], 'wb'); f.write(open(sys.argv[2], 'rb').read()); f.flush()\n"
        "open(sys.argv[3], 'w').close()\n"
        "time.sleep(120)\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", script, str(m.path / "open.bin"), str(src), str(go)])
    try:
        assert wait_for(go.exists, timeout=60)
        stall = proxy.add_rule("UploadPart", "stall", seconds=5.0, then="forward", times=None)
        r = subprocess.run([S3FSMPU, "unmount", str(m.path), "--timeout", "120"],
                           capture_output=True, text=True, timeout=150)
    finally:
        writer.kill()
        writer.wait(30)
    assert r.returncode == 0, r.stderr
    assert stall.hits >= 1
    assert "s3fsmpu: waiting for 1 upload(s) to finish:" in r.stderr, r.stderr
    assert re.search(r"^  open\.bin: \d+/12 MiB$", r.stderr, re.M), r.stderr
    assert not os.path.ismount(m.path)
    assert bucket_bytes(s3, bucket, "open.bin") == data
    assert open_uploads(s3, bucket) == []


def test_sigusr1_logs_state(bucket, mounter):
    m = mounter(bucket)
    pid = m.pid()
    assert pid is not None
    os.kill(pid, signal.SIGUSR1)
    assert wait_for(lambda: "state: {" in m.log, timeout=10)


def _readme_options() -> set[str]:
    text = README.read_text()
    table = text.split("### Options of `mount`", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`(--[a-z][a-z0-9-]*)", table)) | {"--help"}


def _help_options(*command: str) -> set[str]:
    r = subprocess.run([S3FSMPU, *command, "--help"], capture_output=True, text=True, check=True)
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", r.stdout))


def test_every_mount_option_is_in_the_readme_and_back():
    in_help, in_readme = _help_options("mount"), _readme_options()
    assert in_help - in_readme == set(), "options missing from the README"
    assert in_readme - in_help == set(), "README options the command does not have"


def test_every_subcommand_is_documented():
    usage = README.read_text().split("## Usage", 1)[1].split("###", 1)[0]
    for command in ("mount", "unmount", "uploads", "status"):
        assert f"s3fsmpu {command}" in usage
        assert subprocess.run([S3FSMPU, command, "--help"], capture_output=True).returncode == 0
    version = subprocess.run([S3FSMPU, "--version"], capture_output=True, text=True, check=True)
    assert re.fullmatch(r"s3fsmpu \d+\.\d+\.\d+\n", version.stdout)

