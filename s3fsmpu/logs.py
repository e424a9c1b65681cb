"""Logging set-up: one format, to stderr or a file; botocore kept quiet, and pyfuse3's
ERROR for a release reply the kernel no longer waited for kept at DEBUG."""

from __future__ import annotations

import logging
import re

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# the kernel sends a release without waiting for its answer, and forgets it when the mount
# goes away right after a close: pyfuse3 then fails to answer (ENOENT) after our release
# handler ran to its end, and logs an ERROR about nothing lost
UNANSWERED_RELEASE = re.compile(r"fuse_release(dir)?\(\): fuse_reply_\* failed with No such file or directory$")


class UnansweredRelease(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG and UNANSWERED_RELEASE.match(record.getMessage()):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


def setup_logging(level: str = "INFO", log_file: str | None = None) -> None:
    handler: logging.Handler
    handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler()
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "pyfuse3", "werkzeug"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    pyfuse3_log = logging.getLogger("pyfuse3")
    if not any(isinstance(f, UnansweredRelease) for f in pyfuse3_log.filters):
        pyfuse3_log.addFilter(UnansweredRelease())
