"""scripts/bench's package (scripts/benchlib/): the pure parts, without a server or a mount.

The benchmark is opt-in and needs root, so nothing else runs it; these keep
its modules importable and its parsing and arithmetic honest.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))

from benchlib import cli, preader, report, run, servers, workloads, workloads_reads  # noqa: E402
from benchlib.measure import Sample  # noqa: E402
from benchlib.profiling import summarize_profile  # noqa: E402


def test_help_runs_from_anywhere(tmp_path: Path) -> None:
    out = subprocess.run([str(SCRIPTS / "bench"), "--help"], cwd=tmp_path, capture_output=True, text=True,
                         check=True).stdout
    assert out.startswith("usage: scripts/bench [-h] [--size SIZE]")
    assert cli.DOC.split("\n\n")[0] in out
    for option in ("--rgw", "--endpoint URL", "--only WORKLOADS", "--profile [WORKLOADS]", "--server-log FILE",
                   "--bigdir-keys N"):
        assert option in out
    for name in ("reads (per tool)", "reread  cat", "random  200 os.pread", "dirs (per tool) bigdir"):
        assert name in cli.DOC  # the epilog, which --help prints as it is
    assert cli.DOC.split("\n\n", 1)[1] in out


def test_parse_size() -> None:
    assert cli.parse_size("256MiB") == 256 << 20
    assert cli.parse_size("1g") == 1 << 30
    assert cli.parse_size("5MB") == 5 * 10**6
    with pytest.raises(Exception, match="not a size"):
        cli.parse_size("lots")


def test_select_workloads_expands_groups_once_in_order() -> None:
    assert workloads.select_workloads(None) == workloads.WORKLOADS
    assert workloads.select_workloads("cp,tools,server-put") == ["cp", "cat", "rsync", "ls", "server-put"]
    assert workloads.select_workloads("reads,dirs,random") == ["reread", "random", "bigdir"]
    with pytest.raises(SystemExit, match="unknown workload 'dd'"):
        workloads.select_workloads("dd")


def test_listed_dirs_of_the_chosen_workloads_one_row_per_command() -> None:
    b = SimpleNamespace(args=SimpleNamespace(bigdir_keys=2000), only=["bigdir", "cp"])
    (d,) = workloads.listed_dirs(b)  # type: ignore[arg-type]
    assert (d.prefix, d.entries, d.body) == ("bigdir2000", 2000, b"x")
    assert d.commands == {"bigdir-ls-f": ["ls", "-f"], "bigdir-ls-l": ["ls", "-l"], "bigdir-find": ["find"]}
    assert list(d.commands) == workloads.rows_of("bigdir")
    b.only = ["ls"]
    assert [(d.prefix, d.commands) for d in workloads.listed_dirs(b)] == [  # type: ignore[arg-type]
        ("ls5000", {"ls": ["ls", "-l"]})]


def test_report_rows_in_order_with_their_units() -> None:
    assert report.ORDER[:10] == ["server-put", "server-get", "server-rsync", "fuse-write", "fuse-read", "cp", "cat",
                                 "rsync-1", "rsync-2", "ls"]
    assert report.ORDER[10:] == ["reread-cold", "reread-warm", "reread-disk", "random-cold", "random-warm",
                                 "random-disk", "bigdir-ls-f", "bigdir-ls-l", "bigdir-find"]
    assert all(len(row) <= 11 for row in report.ORDER[10:])  # the table's workload column
    assert {r for r, u in report.UNITS.items() if u == "s"} == {
        "server-rsync", "rsync-1", "rsync-2", "ls", "reread-cold", "reread-warm", "reread-disk",
        "bigdir-ls-f", "bigdir-ls-l", "bigdir-find"}


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


def test_summary_read_phases_against_their_cold_read() -> None:
    samples = {
        ("reread-cold", "s3fsmpu"): [Sample(2.0), Sample(4.0), Sample(3.0)],
        ("reread-warm", "s3fsmpu"): [Sample(0.3)],
        ("reread-disk", "s3fsmpu"): [Sample(None, "mount failed")],
        ("random-cold", "s3fsmpu"): [Sample(10.0)],
        ("random-disk", "s3fsmpu"): [Sample(40.0, None, {"ms_per_read": 6.55})],
        ("reread-warm", "rclone"): [Sample(1.5)],
    }
    rows = {(r["workload"], r["tool"]): r for r in report.summary(samples, ["s3fsmpu", "rclone"])}
    assert rows[("reread-warm", "s3fsmpu")]["x_cold"] == 0.1  # seconds over the median cold seconds
    assert rows[("random-disk", "s3fsmpu")]["x_cold"] == 0.25  # MB/s: the time ratio is the inverse
    assert rows[("random-disk", "s3fsmpu")]["ms_per_read"] == 6.55
    assert "x_cold" not in rows[("reread-cold", "s3fsmpu")]
    assert "x_cold" not in rows[("reread-disk", "s3fsmpu")]  # no value
    assert "x_cold" not in rows[("reread-warm", "rclone")]  # no cold read of its own
    assert rows[("reread-warm", "rclone")]["x_s3fsmpu"] == 0.2


def test_fmt_value_keeps_small_times_readable() -> None:
    assert report.fmt_value(348.04, "MB/s") == "348.0 MB/s"
    assert report.fmt_value(1.3, "s") == "1.30 s"
    assert report.fmt_value(0.0421, "s") == "0.042 s"


def test_preader_offsets_are_seeded_aligned_and_whole(tmp_path: Path) -> None:
    offs = preader.offsets(1 << 20, 50, 256 * 1024, 4096, 42)
    assert offs == preader.offsets(1 << 20, 50, 256 * 1024, 4096, 42)
    assert offs != preader.offsets(1 << 20, 50, 256 * 1024, 4096, 43)
    assert all(o % 4096 == 0 and 0 <= o <= (1 << 20) - 256 * 1024 for o in offs)
    assert preader.offsets(256 * 1024, 3, 256 * 1024, 4096, 1) == [0, 0, 0]
    with pytest.raises(ValueError, match="shorter than one read"):
        preader.offsets(1000, 1, 4096, 4096, 1)


def test_preader_reads_what_slicing_gives_as_a_script_too(tmp_path: Path) -> None:
    import hashlib

    data = bytes(range(256)) * 4096  # 1 MiB
    f = tmp_path / "f.bin"
    f.write_bytes(data)
    offs = preader.offsets(len(data), 5, 8192, 4096, 7)
    got = preader.read_at(str(f), offs, 8192)
    assert got["bytes"] == 5 * 8192
    assert got["sha256"] == hashlib.sha256(b"".join(data[o:o + 8192] for o in offs)).hexdigest()
    out = subprocess.run([sys.executable, preader.__file__, str(f), str(len(data)), "5", "8192", "4096", "7"],
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out)["sha256"] == got["sha256"]


def test_dir_mib_counts_the_files_below(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "block").write_bytes(b"x" * (3 << 19))
    (tmp_path / "index").write_bytes(b"x" * (1 << 19))
    assert workloads_reads.dir_mib(tmp_path) == 2.0
    assert workloads_reads.dir_mib(tmp_path / "missing") == 0


def test_data_cache_size_holds_the_file_twice_and_one_block() -> None:
    assert workloads_reads.data_cache_size(1 << 30) == 2 << 30
    assert workloads_reads.data_cache_size(1 << 20) == 8 << 20


def test_add_requests_counts_gets_for_reads_only(tmp_path: Path) -> None:
    log = tmp_path / "rgw.log"
    log.write_text("".join(
        f'beast: 0x7f 127.0.0.1 - u [01/Dec/2026:00:00:00.000 +0000] "{r} HTTP/1.1" 200 {n} - -\n'
        for r, n in (("HEAD /b/big.bin", 0), ("GET /b/big.bin", 3000), ("GET /b/big.bin", 1000))))
    bench = SimpleNamespace(server_log=str(log), buckets={"s3fsmpu": "b"})
    read, listed = Sample(), Sample()
    run.Bench.add_requests(bench, read, 0, "s3fsmpu", 2000)  # type: ignore[arg-type]
    run.Bench.add_requests(bench, listed, 0, "s3fsmpu", None)  # type: ignore[arg-type]
    assert (read.extra["requests"], read.extra["gets"], read.extra["read_amplification"]) == (3, 2, 2.0)
    assert listed.extra["requests"] == 3 and "gets" not in listed.extra
    run.Bench.add_requests(bench, listed, None, "s3fsmpu", 2000)  # type: ignore[arg-type]  # no log: nothing
    assert "gets" not in listed.extra


def test_attempt_rows_gives_every_row_of_a_failed_workload_its_error(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    args = argparse.Namespace(size=1 << 20, part_size=8 << 20, concurrency=8, only="reread", profile=None,
                              server_log=None, debug=False)
    bench = run.Bench(args)

    def two_then_fail(record: object) -> None:
        record("reread-cold", Sample(2.0))  # type: ignore[operator]
        raise RuntimeError("unmount hung")

    bench.attempt_rows("reread", workloads.rows_of("reread"), "s3fsmpu", two_then_fail)
    bench.attempt_rows("random", workloads.rows_of("random"), "s3fsmpu", two_then_fail)  # not chosen: not run
    assert {k: [(s.value, s.error) for s in v] for k, v in bench.samples.items()} == {
        ("reread-cold", "s3fsmpu"): [(2.0, None)],
        ("reread-warm", "s3fsmpu"): [(None, "RuntimeError: unmount hung")],
        ("reread-disk", "s3fsmpu"): [(None, "RuntimeError: unmount hung")]}


def test_summarize_profile_categories(tmp_path: Path) -> None:
    raw = tmp_path / "p.txt"
    raw.write_text("thread (0x1): MainThread;run (trio/_core.py:1);epoll (trio/_io.py:2) 30\n"
                   "thread (0x2): worker;put (s3fsmpu/upload/driver.py:3);md5 (hashlib.py:4) 70\n")
    out = summarize_profile(raw)
    assert out[0].startswith("100 non-idle samples") and "trio main thread 30%" in out[0]
    assert "   70.0%  MD5/checksum hashing" in out
    assert "   70.0%  put (s3fsmpu/upload/driver.py)" in out
