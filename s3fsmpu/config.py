"""Frozen configuration of a mount and the parsers for sizes and durations.

The CLI turns argv into these; everything below receives them ready-made.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

MIB = 1 << 20
GIB = 1 << 30
# S3's multipart rules: every part but the last at least 5 MiB, none over
# 5 GiB, numbered 1..10,000 (upload/schedule.py lays files out within them)
MIN_PART_SIZE = 5 * MIB
MAX_PART_SIZE = 5 * GIB
MAX_PARTS = 10_000

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kb": 1000,
    "kib": 1 << 10,
    "m": 1 << 20,
    "mb": 1000**2,
    "mib": 1 << 20,
    "g": 1 << 30,
    "gb": 1000**3,
    "gib": 1 << 30,
    "t": 1 << 40,
    "tb": 1000**4,
    "tib": 1 << 40,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """'5MiB', '8M', '16777216' -> bytes. K/M/G alone are binary, as in dd and s3fs."""
    m = _SIZE_RE.match(text)
    unit = m.group(2).lower() if m else ""
    if not m or unit not in _UNITS:
        raise ValueError(f"not a size: {text!r} (examples: 8MiB, 16M, 5242880)")
    value = float(m.group(1)) * _UNITS[unit]
    if value != int(value):
        raise ValueError(f"not a whole number of bytes: {text!r}")
    return int(value)


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """'90', '30s', '15m', '2h', '1d' -> seconds."""
    m = _DURATION_RE.match(text)
    if not m:
        raise ValueError(f"not a duration: {text!r} (examples: 30s, 15m, 2h, 1d)")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


INDEFINITE = ("indefinite", "inf")
# the longest timeout handed to the kernel: "indefinite" without relying on how
# libfuse and the kernel convert an infinite double (libfuse clamps it to
# ULONG_MAX seconds, the kernel then to its longest jiffies offset); a mount up
# for a year asks once more
KERNEL_TIMEOUT_MAX = 365 * 86400.0


def parse_attr_timeout(text: str) -> float:
    """A duration, or 'indefinite' / 'inf' (float('inf')): names from S3 are trusted until remount."""
    if text.strip().lower() in INDEFINITE:
        return float("inf")
    return parse_duration(text)


def kernel_timeout(attr_timeout: float) -> float:
    """The entry/attr timeout to give pyfuse3 for `attr_timeout`: finite, at most a year."""
    return min(attr_timeout, KERNEL_TIMEOUT_MAX)


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "s3fsmpu")


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str = ""  # "" or ends with "/"

    @classmethod
    def parse(cls, text: str) -> S3Location:
        bucket, _, prefix = text.partition(":")
        if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9.\-_]{1,254}", bucket):
            raise ValueError(f"not a bucket name: {bucket!r}")
        prefix = prefix.strip("/")
        return cls(bucket, prefix + "/" if prefix else "")

    def __str__(self) -> str:
        return f"{self.bucket}:{self.prefix}" if self.prefix else self.bucket


@dataclass(frozen=True)
class ConnectionConfig:
    """Where S3 is and how requests behave; shared by `mount` and `uploads`."""

    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    addressing_style: str = "auto"
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    # boto3 worker threads; also the connection pool size
    max_connections: int = 16
    # where botocore's data, cut to what a mount uses, is kept for the next start (None: not kept)
    data_dir: str | None = None


# what verifies the bytes of a write (README, "What each integrity mode verifies")
INTEGRITY_MODES = ("md5", "crc64nvme", "crc32c")


@dataclass(frozen=True)
class UploadConfig:
    """Everything that rides on an upload."""

    part_size: int = 8 << 20
    concurrency: int = 8
    max_memory: int = 256 << 20
    checksum_algorithm: str | None = None  # None = no flexible checksum
    # "md5": Content-MD5 on every body and ETags checked as MD5s; "crc64nvme"/"crc32c": no
    # MD5 at all, the flexible checksum of that name on every body and of the whole object
    integrity: str = "md5"
    sse: str | None = None
    sse_kms_key_id: str | None = None
    sse_c_key: bytes | None = field(default=None, repr=False)
    storage_class: str | None = None
    requester_pays: bool = False
    expected_bucket_owner: str | None = None
    # "fail": a publish replaces only the version this mount knew (conditional writes);
    # "overwrite": last writer wins
    conflicts: str = "fail"
    # attempts per part and per Complete, and the backoff ceiling
    max_attempts: int = 6
    backoff_base: float = 0.2
    backoff_max: float = 5.0
    # only for tests: lets parts be smaller than S3's 5 MiB
    min_part_size: int = MIN_PART_SIZE
    # the largest server-side copy part when writing on after a flush (S3: 5 GiB);
    # tests lower it to copy a small prefix in a few parts
    copy_part_max: int = MAX_PART_SIZE
    # a spool up to this size stays in the page cache (and off the disk, if it
    # is gone within the kernel's dirty expiry); past it, uploaded parts are
    # written back and their pages dropped
    spool_resident: int = 64 << 20

    @property
    def content_md5(self) -> bool:
        return self.integrity == "md5"

    @property
    def whole_object_checksum(self) -> bool:
        """The crc modes send each multipart object's checksum at Complete (FULL_OBJECT)."""
        return self.integrity != "md5"

    @property
    def checks_md5_etags(self) -> bool:
        """ETags are checked against our MD5s: S3 computes them as MD5s except under SSE-KMS
        and SSE-C, and only the md5 integrity mode computes MD5s."""
        return self.content_md5 and self.sse != "aws:kms" and self.sse_c_key is None


@dataclass(frozen=True)
class MountConfig:
    location: S3Location
    mountpoint: str
    connection: ConnectionConfig = field(default_factory=ConnectionConfig)
    upload: UploadConfig = field(default_factory=UploadConfig)
    cache_dir: str = field(default_factory=default_cache_dir)
    read_only: bool = False
    allow_other: bool = False
    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)
    file_mode: int = 0o644
    dir_mode: int = 0o755
    # seconds the kernel and the mount may trust attributes and listings; inf = until remount
    attr_timeout: float = 10.0
    read_ahead: int = 32 << 20
    # bytes of the data cache under cache_dir/data (s3fsmpu.cache); 0 = off
    cache_size: int = 0

    @property
    def needs_awscrt(self) -> bool:
        """The mount computes CRCs: the crc integrity modes, a CRC --checksum-algorithm
        (parts' CRCs are combined into the object's) and the data cache's block checks.
        (botocore also wants it for multi-region access point ARNs, which BUCKET[:PREFIX]
        cannot name.)"""
        crcs = ("CRC32", "CRC32C", "CRC64NVME")  # s3fsmpu.checksums.COMBINABLE, which imports nothing here
        return not self.upload.content_md5 or self.upload.checksum_algorithm in crcs or self.cache_size > 0

    @property
    def bucket_scope(self) -> str:
        """Names the bucket for local caches: one key with one ETag in two buckets differs."""
        return f"{self.connection.endpoint_url}|{self.location.bucket}"


def check_part_size(size: int) -> int:
    if not MIN_PART_SIZE <= size <= MAX_PART_SIZE:
        raise ValueError("--part-size must be between 5MiB and 5GiB")
    return size
