"""Command line: argv -> configuration -> action, and the one place user errors
become an exit code with exactly one line on stderr (never a traceback).

`mount` without --foreground starts the same command in the foreground in a
new session and returns once that child says the filesystem answers (or
relays its one-line error), so a failed mount exits non-zero in seconds.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import dataclasses
import logging
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import NoReturn

import trio

from s3fsmpu import __version__
from s3fsmpu.config import (
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
from s3fsmpu.errors import S3Error
from s3fsmpu.mountinfo import MountEntry
from s3fsmpu.runtime import pid_alive, pid_file, running_pid, socket_path
from s3fsmpu.stale_mount import DetachError, Occupant, detach, occupant

log = logging.getLogger("s3fsmpu")
READY_TIMEOUT = 60.0


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
                   help="how far sequential readers are fetched ahead, in parallel 8 MiB GETs (default 32MiB)")
    w.add_argument("--cache-dir", default=None, metavar="DIR",
                   help=f"spool and recovery folder (default {default_cache_dir()})")
    w.add_argument("--checksum-algorithm", default="none",
                   choices=["CRC32", "CRC32C", "SHA1", "SHA256", "CRC64NVME", "none"])
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
    )


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
    from s3fsmpu.cache import BLOCK_SIZE  # here: awscrt is not for every command

    if 0 < args.cache_size < BLOCK_SIZE:
        raise UserError(f"--cache-size must be 0 (off) or at least one block ({BLOCK_SIZE >> 20}MiB)")
    if args.sse_kms_key_id and args.sse != "aws:kms":
        raise UserError("--sse-kms-key-id needs --sse aws:kms")
    algorithm = None if args.checksum_algorithm == "none" else args.checksum_algorithm
    from s3fsmpu.upload.digest import check_algorithm_available

    try:
        check_algorithm_available(algorithm)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    upload = UploadConfig(
        part_size=part_size,
        concurrency=args.upload_concurrency,
        max_memory=args.max_memory,
        checksum_algorithm=algorithm,
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
        cache_dir=os.path.abspath(args.cache_dir or default_cache_dir()),
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


def check_mountpoint(path: str, allow_non_empty: bool) -> None:
    """Refuse a missing, busy or non-empty mount point; detach one a killed s3fsmpu left dead."""
    held, entry = occupant(path)
    if held is Occupant.DEAD and entry is not None:
        _detach(path, entry)
    elif held is not Occupant.NOTHING:
        raise UserError(f"mountpoint {path} is busy: something is already mounted there")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UserError(f"mountpoint {path} does not exist") from None
    except OSError as exc:
        # ENOTCONN: a crashed mount still sits there
        raise UserError(f"mountpoint {path}: {exc.strerror} (a stale mount? try: s3fsmpu unmount {path})") from None
    import stat as stat_mod

    if not stat_mod.S_ISDIR(st.st_mode):
        raise UserError(f"mountpoint {path} is not a directory")
    if os.path.ismount(path):
        raise UserError(f"mountpoint {path} is busy: something is already mounted there")
    if not allow_non_empty and os.listdir(path):
        raise UserError(f"mountpoint {path} is not empty (use --allow-non-empty to mount over it)")


def describe(exc: S3Error, endpoint: str | None, bucket: str) -> str:
    where = endpoint or "AWS S3"
    if exc.code == "NoSuchBucket":
        return f"bucket {bucket!r} does not exist at {where}"
    if exc.code == "AccessDenied":
        return f"access denied to bucket {bucket!r} at {where} (check credentials and policy)"
    if exc.code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "NoCredentials", "ProfileNotFound"):
        return f"credentials rejected by {where}: {exc.message or exc.code}"
    if exc.code in ("ConnectionError", "Timeout"):
        return f"cannot reach {where}: {exc.code.lower()}"
    return f"cannot use bucket {bucket!r} at {where}: {exc}"


# ---- commands ----------------------------------------------------------------


def cmd_mount(args: argparse.Namespace, argv: Sequence[str]) -> int:
    config = mount_config(args)
    if args.ready_fd is None:
        _log_to(args.log_level, args.log_file)  # for the line saying a dead mount was detached
        check_mountpoint(config.mountpoint, args.allow_non_empty)
        if not args.foreground:
            return _spawn_background(config, argv)
    return _run_foreground(args, config)


def _spawn_background(config: MountConfig, argv: Sequence[str]) -> int:
    read_fd, write_fd = os.pipe()
    log_path = os.path.join(config.cache_dir, "mount.log")
    os.makedirs(config.cache_dir, mode=0o700, exist_ok=True)
    cmd = [sys.executable, "-m", "s3fsmpu", *argv, "--ready-fd", str(write_fd)]
    with open(os.devnull, "rb") as devnull, open(log_path, "ab") as logf:
        child = subprocess.Popen(cmd, stdin=devnull, stdout=logf, stderr=logf, pass_fds=(write_fd,),
                                 start_new_session=True)
    os.close(write_fd)
    deadline = time.monotonic() + READY_TIMEOUT
    message = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([read_fd], [], [], 0.5)
        if ready:
            chunk = os.read(read_fd, 4096)
            if not chunk:
                break
            message += chunk
            if message.endswith(b"\n"):
                break
        elif child.poll() is not None:
            break
    os.close(read_fd)
    text = message.decode(errors="replace").strip()
    if text == "OK":
        return 0
    if not text:
        if child.poll() is None:
            child.kill()
            text = f"the mount did not answer within {READY_TIMEOUT:.0f} s"
        else:
            text = f"the mount process exited with code {child.returncode} (log: {log_path})"
    sys.stderr.write(f"s3fsmpu: {text}\n")
    return 1


def _run_foreground(args: argparse.Namespace, config: MountConfig) -> int:
    from s3fsmpu.logs import setup_logging

    setup_logging(args.log_level, args.log_file)
    ready_fd = args.ready_fd

    def report(line: str) -> None:
        if ready_fd is not None:
            try:
                os.write(ready_fd, (line + "\n").encode())
                os.close(ready_fd)
            except OSError:
                pass

    local_proc = None
    try:
        conn = config.connection
        if args.local:
            from s3fsmpu.local_server import CREDENTIALS, start_moto

            os.environ.update(CREDENTIALS)
            local_proc, url = start_moto()
            conn = ConnectionConfig(endpoint_url=url, region="us-east-1", addressing_style="path",
                                    max_connections=conn.max_connections)
            config = dataclasses.replace(config, connection=conn)
        from s3fsmpu.store.boto3_store import Boto3Store

        store = Boto3Store(config.location.bucket, conn, config.upload)
        if args.local:
            store.client.create_bucket(Bucket=config.location.bucket)
        try:
            trio.run(store.check_bucket)
        except S3Error as exc:
            raise UserError(describe(exc, conn.endpoint_url, config.location.bucket)) from None

        from s3fsmpu.mount import serve

        pidf = pid_file(config.mountpoint)

        def ready() -> None:
            with open(pidf, "w") as f:
                f.write(f"{os.getpid()}\n")
            report("OK")

        try:
            trio.run(serve, config, store, ready, args.metrics_addr)
        finally:
            try:
                os.unlink(pidf)
            except FileNotFoundError:
                pass
        return 0
    except UserError as exc:
        report(str(exc))
        if ready_fd is None:
            sys.stderr.write(f"s3fsmpu: {exc}\n")
        return 1
    except RuntimeError as exc:  # pyfuse3.init and the embedded server report failures this way
        msg = f"cannot mount on {config.mountpoint}: {exc}"
        report(msg)
        if ready_fd is None:
            sys.stderr.write(f"s3fsmpu: {msg}\n")
        return 1
    finally:
        if local_proc is not None:
            local_proc.terminate()


def _log_to(level: str, log_file: str | None) -> None:
    from s3fsmpu.logs import setup_logging

    try:
        setup_logging(level, log_file)
    except OSError as exc:
        raise UserError(f"cannot open --log-file {log_file}: {exc.strerror or exc}") from None


def _detach(path: str, entry: MountEntry) -> None:
    try:
        detach(path, entry)
    except (DetachError, OSError, subprocess.SubprocessError) as exc:
        raise UserError(f"mountpoint {path} holds a dead s3fsmpu mount that cannot be detached: {exc}") from None


def cmd_unmount(args: argparse.Namespace) -> int:
    mountpoint = os.path.abspath(args.mountpoint)
    _log_to("WARNING", None)  # for the line saying a dead mount was detached
    pid = running_pid(mountpoint)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = None if args.timeout is None else time.monotonic() + args.timeout
        last_report = time.monotonic()
        while pid_alive(pid):
            if deadline is not None and time.monotonic() > deadline:
                raise UserError(f"{mountpoint}: uploads still pending after {args.timeout:.0f} s")
            time.sleep(0.1)
            if time.monotonic() - last_report >= 2:
                last_report = time.monotonic()
                sys.stderr.write(f"s3fsmpu: {_pending(mountpoint)}\n")
        return 0
    held, entry = occupant(mountpoint)
    if held is Occupant.DEAD and entry is not None:
        _detach(mountpoint, entry)
        return 0
    if held is not Occupant.LIVE:
        raise UserError(f"{mountpoint} is not an s3fsmpu mount")
    result = subprocess.run(["fusermount3", "-u", mountpoint], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise UserError(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "unmount failed")
    return 0


def _pending(mountpoint: str) -> str:
    from s3fsmpu.control import query

    try:
        status = query(socket_path(mountpoint), timeout=1)
    except (OSError, ValueError):
        return f"waiting for {mountpoint} to finish its uploads..."
    ups = status["uploads"]
    left = sum(max(0, u["bytes_written"] - u["bytes_sent"]) for u in ups)
    return (f"waiting for {len(ups)} upload(s) to finish: {left / (1 << 20):.1f} MiB left to send"
            + "".join(f"\n  {u['key']}: {u['bytes_sent'] >> 20}/{u['bytes_written'] >> 20} MiB" for u in ups))


def cmd_status(args: argparse.Namespace) -> int:
    from s3fsmpu.status_cmd import run_status

    mountpoint = os.path.abspath(args.mountpoint)
    try:
        return run_status(socket_path(mountpoint), args.json, args.watch)
    except (ConnectionRefusedError, FileNotFoundError):
        raise UserError(f"no s3fsmpu mount answers on {mountpoint}") from None
    except OSError as exc:
        raise UserError(f"cannot ask the mount on {mountpoint}: {exc.strerror or exc}") from None


def cmd_uploads(args: argparse.Namespace) -> int:
    from s3fsmpu.store.boto3_store import Boto3Store
    from s3fsmpu.uploads_cmd import run_uploads

    conn = connection_config(args)
    upload = UploadConfig(requester_pays=args.requester_pays, expected_bucket_owner=args.expected_bucket_owner)
    store = Boto3Store(args.location.bucket, conn, upload)
    try:
        return trio.run(run_uploads, store, args.location.prefix, args.abort, args.older_than, sys.stdout)
    except S3Error as exc:
        raise UserError(describe(exc, conn.endpoint_url, args.location.bucket)) from None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "mount":
            return cmd_mount(args, argv)
        if args.command == "unmount":
            return cmd_unmount(args)
        if args.command == "uploads":
            return cmd_uploads(args)
        if args.command == "status":
            return cmd_status(args)
    except UserError as exc:
        sys.stderr.write(f"s3fsmpu: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    raise AssertionError(args.command)


def entry() -> NoReturn:
    sys.exit(main())
