"""Telling a dead s3fsmpu mount from a live one or another filesystem, without a kernel:
mountinfo from a file, the pid lookup and the statfs probe replaced."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from s3fsmpu import stale_mount
from s3fsmpu.stale_mount import Occupant, occupant

MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:39 / /mnt/s3 rw,nosuid,nodev - fuse.s3fsmpu s3fsmpu\\043bkt rw,user_id=0
41 22 0:40 / /mnt/tmp rw - tmpfs tmpfs rw
42 22 0:41 / /mnt/other rw,nosuid,nodev - fuse.sshfs host:/ rw,user_id=0
"""


@pytest.fixture
def info(tmp_path: Path) -> str:
    path = tmp_path / "mountinfo"
    path.write_text(MOUNTINFO)
    return str(path)


def answers(monkeypatch: pytest.MonkeyPatch, probe_errno: int | None, pid: int | None = None) -> list[str]:
    """Fake the probe's answer and the pid file; returns the paths probed."""
    probed: list[str] = []

    def probe(path: str) -> int | None:
        probed.append(path)
        return probe_errno

    monkeypatch.setattr(stale_mount, "probe", probe)
    monkeypatch.setattr(stale_mount, "running_pid", lambda path: pid)
    return probed


@pytest.mark.parametrize("probe_errno", [errno.ENOTCONN, errno.ECONNABORTED])
def test_dead_only_when_ours_and_the_connection_is_gone(info, monkeypatch, probe_errno):
    answers(monkeypatch, probe_errno)
    held, entry = occupant("/mnt/s3", info)
    assert held is Occupant.DEAD and entry is not None and entry.source == "s3fsmpu#bkt"


@pytest.mark.parametrize("probe_errno", [0, errno.EIO, None])  # answers, fails otherwise, or hangs
def test_a_mount_that_answers_or_hangs_is_live(info, monkeypatch, probe_errno):
    answers(monkeypatch, probe_errno)
    assert occupant("/mnt/s3", info)[0] is Occupant.LIVE


def test_a_running_process_makes_it_live_without_touching_the_mount(info, monkeypatch):
    probed = answers(monkeypatch, errno.ENOTCONN, pid=1234)
    assert occupant("/mnt/s3", info)[0] is Occupant.LIVE
    assert probed == []


@pytest.mark.parametrize("path", ["/mnt/tmp", "/mnt/other"])
def test_other_filesystems_are_never_dead_even_when_they_answer_enotconn(info, monkeypatch, path):
    probed = answers(monkeypatch, errno.ENOTCONN)
    assert occupant(path, info)[0] is Occupant.OTHER
    assert probed == []


def test_nothing_mounted(info, monkeypatch):
    answers(monkeypatch, errno.ENOTCONN)
    assert occupant("/mnt/empty", info) == (Occupant.NOTHING, None)


def test_probe_of_a_plain_directory_answers(tmp_path):
    assert stale_mount.probe(str(tmp_path)) == 0
    assert stale_mount.probe(str(tmp_path / "missing")) == errno.ENOENT


def test_an_unwritable_log_file_is_one_line(tmp_path, capsys):
    """`mount` opens --log-file before checking the mount point (to log a detach there)."""
    from s3fsmpu.cli import main

    rc = main(["mount", "bkt", str(tmp_path), "--log-file", str(tmp_path / "no" / "such" / "dir.log")])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and err.startswith("s3fsmpu: cannot open --log-file"), err
