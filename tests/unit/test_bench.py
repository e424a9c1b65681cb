"""scripts/bench's package (scripts/benchlib/): the pure parts, without a server or a mount.

The benchmark is opt-in and needs root, so nothing else runs it; these keep
its modules importable and its parsing and arithmetic honest.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))

from benchlib import cli, report, servers, workloads  # noqa: E402
from benchlib.measure import Sample  # noqa: E402
from benchlib.profiling import summarize_profile  # noqa: E402


def test_help_runs_from_anywhere(tmp_path: Path) -> None:
    out = subprocess.run([str(SCRIPTS / "bench"), "--help"], cwd=tmp_path, capture_output=True, text=True,
                         check=True).stdout
    assert out.startswith("usage: scripts/bench [-h] [--size SIZE]")
    assert cli.DOC.split("\n\n")[0] in out
    for option in ("--rgw", "--endpoint URL", "--only WORKLOADS", "--profile [WORKLOADS]", "--server-log FILE"):
        assert option in out


def test_parse_size() -> None:
    assert cli.parse_size("256MiB") == 256 << 20
    assert cli.parse_size("1g") == 1 << 30
    assert cli.parse_size("5MB") == 5 * 10**6
    with pytest.raises(Exception, match="not a size"):
        cli.parse_size("lots")


def test_select_workloads_expands_groups_once_in_order() -> None:
    assert workloads.select_workloads(None) == workloads.WORKLOADS
    assert workloads.select_workloads("cp,tools,server-put") == ["cp", "cat", "rsync", "ls", "server-put"]
    with pytest.raises(SystemExit, match="unknown workload 'dd'"):
        workloads.select_workloads("dd")


def test_count_requests_by_operation(tmp_path: Path) -> None:
    def line(req: str, status: int = 200, sent: int = 0) -> str:
        return f'beast: 0x7f 127.0.0.1 - user [01/Dec/2026:00:00:00.000 +0000] "{req} HTTP/1.1" {status} {sent} - -\n'

    log = tmp_path / "rgw.log"
    log.write_text(line("GET /other/x", sent=99))
    offset = log.stat().st_size
    with open(log, "a") as f:
        f.write(line("POST /b/k?uploads"))
        f.write(line("PUT /b/k?partNumber=1&uploadId=u"))
        f.write(line("PUT /b/k?partNumber=2&uploadId=u"))
        f.write(line("POST /b/k?uploadId=u"))
        f.write(line("HEAD /b/k", status=404))
        f.write(line("GET /b/k", sent=1000))
        f.write(line("GET /b?list-type=2"))
    assert servers.count_requests(str(log), offset, "b") == {
        "UploadPart": 2, "CreateMPU": 1, "CompleteMPU": 1, "HEAD-404": 1, "GET": 1, "LIST": 1, "GET bytes": 1000}


def test_summary_ratios_to_ceilings_and_to_s3fsmpu() -> None:
    samples = {
        ("server-put", "boto3"): [Sample(200.0)],
        ("fuse-write", "fuse_null"): [Sample(400.0)],
        ("cp", "s3fsmpu"): [Sample(90.0), Sample(100.0), Sample(110.0, "broken")],
        ("cp", "s3fs"): [Sample(50.0, None, {"cpu_s": 3.0})],
        ("ls", "s3fsmpu"): [Sample(2.0)],
        ("ls", "s3fs"): [Sample(4.0)],
    }
    rows = {(r["workload"], r["tool"]): r for r in report.summary(samples, ["s3fsmpu", "s3fs"])}
    assert [k for k in rows] == [("server-put", "boto3"), ("fuse-write", "fuse_null"), ("cp", "s3fsmpu"),
                                 ("cp", "s3fs"), ("ls", "s3fsmpu"), ("ls", "s3fs")]
    cp = rows[("cp", "s3fsmpu")]
    assert (cp["value"], cp["runs"], cp["errors"]) == (95.0, 3, ["broken"])  # median of the good runs
    assert (cp["x_server"], cp["x_fuse"]) == (0.475, round(95 / 400, 3))
    assert rows[("cp", "s3fs")]["x_s3fsmpu"] == round(50 / 95, 3)
    assert rows[("cp", "s3fs")]["cpu_s"] == 3.0
    assert rows[("ls", "s3fs")]["x_s3fsmpu"] == 0.5  # seconds: slower is less than 1


def test_summarize_profile_categories(tmp_path: Path) -> None:
    raw = tmp_path / "p.txt"
    raw.write_text("thread (0x1): MainThread;run (trio/_core.py:1);epoll (trio/_io.py:2) 30\n"
                   "thread (0x2): worker;put (s3fsmpu/upload/driver.py:3);md5 (hashlib.py:4) 70\n")
    out = summarize_profile(raw)
    assert out[0].startswith("100 non-idle samples") and "trio main thread 30%" in out[0]
    assert "   70.0%  MD5/checksum hashing" in out
    assert "   70.0%  put (s3fsmpu/upload/driver.py)" in out
