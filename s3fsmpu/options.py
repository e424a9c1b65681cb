"""The command line's words: the parser of every subcommand, and argv -> the frozen
configuration (config.py), with every value checked, so that a bad option is one
clear line (a UserError) before anything starts.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import os
import re
import sys
from typing import NoReturn

from s3fsmpu import __version__
from s3fsmpu.config import (
    INTEGRITY_MODES,
    ConnectionConfig,
    MountConfig,
    S3Location,
    UploadConfig,
    check_part_size,
    default_cache_dir,
    parse_attr_timeout,
    parse_duration,
    parse_size,
)


class UserError(Exception):
    """Bad input or environment: printed as one line, exit 1."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"s3fsmpu: {message} (see --help)\n")
        sys.exit(2)


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _attr_timeout(text: str) -> float:
    try:
        return parse_attr_timeout(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}, or indefinite") from None


def _mode(text: str) -> int:
    try:
        return int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an octal mode: {text!r}") from None


def _location(text: str) -> S3Location:
    try:
        return S3Location.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_connection_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("connection")
    g.add_argument("--endpoint-url", metavar="URL", help="S3 endpoint (default: AWS)")
    g.add_argument("--region", metavar="R")
    g.add_argument("--profile", metavar="P", help="profile from the AWS config files")
    g.add_argument("--addressing-style", choices=["auto", "path", "virtual"], default="auto")
    g.add_argument("--connect-timeout", type=float, default=5.0, metavar="SECONDS")
    g.add_argument("--read-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="per request; a stalled request is retried (default 60)")
    g.add_argument("--requester-pays", action="store_true")
    g.add_argument("--expected-bucket-owner", metavar="ID")
    g.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    g.add_argument("--log-file", metavar="FILE")


def build_parser() -> Parser:
    parser = Parser(prog="s3fsmpu", description="Mount an S3 bucket with FUSE; files stream to S3 "
                    "as verified multipart uploads.")
    parser.add_argument("--version", action="version", version=f"s3fsmpu {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    m = sub.add_parser("mount", help="mount BUCKET[:PREFIX] on MOUNTPOINT")
    m.add_argument("location", type=_location, metavar="BUCKET[:PREFIX]")
    m.add_argument("mountpoint", metavar="MOUNTPOINT")
    m.add_argument("--local", action="store_true",
                   help="start an embedded S3 server (moto) on 127.0.0.1 and mount it; data lives in memory")
    m.add_argument("--foreground", "-f", action="store_true", help="stay attached; SIGINT/SIGTERM unmount")
    _add_connection_options(m)
    w = m.add_argument_group("write path")
    w.add_argument("--part-size", type=_size, default=8 << 20, metavar="SIZE",
                   help="first part size, >= 5MiB (default 8MiB); doubles every 1,000 parts")
    w.add_argument("--upload-concurrency", type=int, default=8, metavar="N", help="parts in flight per mount")
    w.add_argument("--max-memory", type=_size, default=256 << 20, metavar="SIZE",
                   help="cap on write data waiting for or in upload; writers wait when reached (default 256MiB)")
    m.add_argument("--read-ahead", type=_size, default=32 << 20, metavar="SIZE",
                   help="what a sequential reader holds: 8 MiB chunks fetched ahead in parallel GETs, "
                        "the one read and the one behind (default 32MiB)")
    w.add_argument("--cache-dir", default=None, metavar="DIR",
                   help=f"spool and recovery folder (default {default_cache_dir()})")
    w.add_argument("--checksum-algorithm", default="none",
                   choices=["CRC32", "CRC32C", "SHA1", "SHA256", "CRC64NVME", "none"],
                   help="an extra S3 checksum on every part and PUT (with --integrity md5)")
    w.add_argument("--integrity", default="md5", choices=INTEGRITY_MODES,
                   help="md5: Content-MD5 on every body, ETags checked (default); crc64nvme, crc32c: "
                        "that checksum on every body and of the whole object instead, no MD5 (less CPU; "
                        "for servers with flexible checksums)")
    w.add_argument("--sse", choices=["AES256", "aws:kms"])
    w.add_argument("--sse-kms-key-id", metavar="ID")
    w.add_argument("--sse-c-key-file", metavar="FILE", help="32-byte key, raw or base64")
    w.add_argument("--storage-class", metavar="C")
    w.add_argument("--conflicts", choices=["fail", "overwrite"], default="fail",
                   help="a key another client changed since this mount knew it: fail the close() "
                        "(default; conditional writes) or overwrite it (last writer wins)")
    f = m.add_argument_group("files")
    f.add_argument("--read-only", action="store_true")
    f.add_argument("--allow-other", action="store_true")
    f.add_argument("--allow-non-empty", action="store_true", help="mount over a non-empty directory")
    f.add_argument("--uid", type=int, default=os.getuid())
    f.add_argument("--gid", type=int, default=os.getgid())
    f.add_argument("--file-mode", type=_mode, default=0o644, metavar="OCTAL")
    f.add_argument("--dir-mode", type=_mode, default=0o755, metavar="OCTAL")
    f.add_argument("--attr-timeout", type=_attr_timeout, default=10.0, metavar="DURATION",
                   help="how long attributes and names from S3 are trusted (default 10s); 'indefinite' "
                        "for buckets only this mount changes, or read-only datasets")
    r = m.add_argument_group("read cache")
    r.add_argument("--cache-size", type=_size, default=0, metavar="SIZE",
                   help="keep read and written data in 8 MiB blocks under CACHE_DIR/data, up to SIZE "
                        "(e.g. 10GiB), and always leave 5%% of that disk free (default 0: off)")
    m.add_argument("--metrics-addr", metavar="HOST:PORT",
                   help="serve Prometheus text metrics on http://HOST:PORT/metrics")
    m.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)

    st = sub.add_parser("status", help="uploads in flight, retries, failures, memory, totals of a mount")
    st.add_argument("mountpoint", metavar="MOUNTPOINT")
    st.add_argument("--json", action="store_true", help="JSON for scripts (with --watch: one document a line)")
    st.add_argument("--watch", action="store_true", help="refresh every second until interrupted")

    u = sub.add_parser("unmount", help="wait for pending uploads, then unmount")
    u.add_argument("mountpoint", metavar="MOUNTPOINT")
    u.add_argument("--timeout", type=_duration, default=None, metavar="DURATION",
                   help="give up waiting after this long (default: wait)")

    up = sub.add_parser("uploads", help="list (and with --abort, abort) incomplete multipart uploads")
    up.add_argument("location", type=_location, metavar="BUCKET[:PREFIX]")
    up.add_argument("--abort", action="store_true", help="abort them (default: only list)")
    up.add_argument("--older-than", type=_duration, default=None, metavar="DURATION",
                    help="only uploads initiated longer ago than this (30m, 2h, 1d)")
    _add_connection_options(up)
    return parser


# ---- configuration -----------------------------------------------------------
def connection_config(args: argparse.Namespace) -> ConnectionConfig:
    return ConnectionConfig(
        endpoint_url=args.endpoint_url,
        region=args.region,
        profile=args.profile,
        addressing_style=args.addressing_style,
        connect_timeout=args.connect_timeout,
        read_timeout=args.read_timeout,
        max_connections=max(16, getattr(args, "upload_concurrency", 8) + 8),
        data_dir=os.path.join(cache_dir(args), "botocore"),
    )


def cache_dir(args: argparse.Namespace) -> str:
    """--cache-dir, or the default for commands that have none (uploads)."""
    return os.path.abspath(getattr(args, "cache_dir", None) or default_cache_dir())


def _read_sse_c_key(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise UserError(f"cannot read --sse-c-key-file: {exc.strerror}") from None
    if len(raw) == 32:
        return raw
    try:
        key = base64.b64decode(raw.strip(), validate=True)
    except binascii.Error:
        key = b""
    if len(key) != 32:
        raise UserError("--sse-c-key-file must hold a 32-byte key (raw, or base64)")
    return key


def mount_config(args: argparse.Namespace) -> MountConfig:
    try:
        part_size = check_part_size(args.part_size)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if args.metrics_addr is not None and not re.fullmatch(r"[\w.\-]*:\d{1,5}", args.metrics_addr):
        raise UserError(f"--metrics-addr must be HOST:PORT, not {args.metrics_addr!r}")
    if args.upload_concurrency < 1:
        raise UserError("--upload-concurrency must be at least 1")
    if args.max_memory < part_size:
        raise UserError("--max-memory must be at least --part-size")
    from s3fsmpu.cache import MIN_SIZE  # here: awscrt is not for every command

    if 0 < args.cache_size < MIN_SIZE:
        raise UserError(f"--cache-size must be 0 (off) or at least {MIN_SIZE >> 20}MiB")
    if args.sse_kms_key_id and args.sse != "aws:kms":
        raise UserError("--sse-kms-key-id needs --sse aws:kms")
    algorithm = None if args.checksum_algorithm == "none" else args.checksum_algorithm
    if args.integrity != "md5":
        if algorithm not in (None, args.integrity.upper()):
            raise UserError(f"--integrity {args.integrity} sends {args.integrity.upper()} checksums; "
                            f"drop --checksum-algorithm {algorithm}")
        algorithm = args.integrity.upper()
    from s3fsmpu.checksums import check_algorithm_available

    try:
        check_algorithm_available(algorithm)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    upload = UploadConfig(
        part_size=part_size,
        concurrency=args.upload_concurrency,
        max_memory=args.max_memory,
        checksum_algorithm=algorithm,
        integrity=args.integrity,
        sse=args.sse,
        sse_kms_key_id=args.sse_kms_key_id,
        sse_c_key=_read_sse_c_key(args.sse_c_key_file) if args.sse_c_key_file else None,
        storage_class=args.storage_class,
        requester_pays=args.requester_pays,
        expected_bucket_owner=args.expected_bucket_owner,
        conflicts=args.conflicts,
    )
    return MountConfig(
        location=args.location,
        mountpoint=os.path.realpath(args.mountpoint),
        connection=connection_config(args),
        upload=upload,
        cache_dir=cache_dir(args),
        read_only=args.read_only,
        allow_other=args.allow_other,
        uid=args.uid,
        gid=args.gid,
        file_mode=args.file_mode,
        dir_mode=args.dir_mode,
        attr_timeout=args.attr_timeout,
        read_ahead=args.read_ahead,
        cache_size=args.cache_size,
    )
