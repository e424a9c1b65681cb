"""Logging set-up (s3fsmpu/logs.py): pyfuse3's ERROR for a release answered after the
kernel stopped waiting is kept at DEBUG; every other pyfuse3 error stays an ERROR."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from s3fsmpu.logs import setup_logging

LATE = "fuse_release(): fuse_reply_* failed with %s"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root, pyfuse3 = logging.getLogger(), logging.getLogger("pyfuse3")
    handlers, level, pyfuse3_level = root.handlers[:], root.level, pyfuse3.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)
    pyfuse3.setLevel(pyfuse3_level)


@pytest.mark.usefixtures("restore_logging")
def test_an_unanswered_release_is_not_an_error(tmp_path: Path) -> None:
    log_file = tmp_path / "mount.log"
    setup_logging("INFO", str(log_file))
    pyfuse3 = logging.getLogger("pyfuse3")
    pyfuse3.error(LATE, "No such file or directory")
    pyfuse3.error(LATE, "Invalid argument")  # not the kernel forgetting it: still an error
    pyfuse3.error("fuse_write(): fuse_reply_* failed with %s", "No such file or directory")
    logging.getLogger().handlers[0].flush()
    lines = log_file.read_text().splitlines()
    assert len(lines) == 2 and all(" ERROR pyfuse3: " in line for line in lines)
    assert "Invalid argument" in lines[0] and "fuse_write()" in lines[1]

    logging.getLogger().handlers[0].close()
    setup_logging("DEBUG", str(log_file))  # once more: one filter, not two
    assert len(pyfuse3.filters) == 1
    pyfuse3.setLevel(logging.DEBUG)  # setup_logging keeps pyfuse3 at WARNING or above
    pyfuse3.error(LATE, "No such file or directory")
    logging.getLogger().handlers[0].flush()
    assert log_file.read_text().splitlines()[-1].endswith(
        "DEBUG pyfuse3: fuse_release(): fuse_reply_* failed with No such file or directory")
