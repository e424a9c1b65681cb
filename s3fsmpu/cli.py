"""Command line: argv -> configuration -> action, and the one place user errors
become an exit code with exactly one line on stderr (never a traceback).

`mount` without --foreground starts the same command in the foreground in a
new session and returns once that child says the filesystem answers (or
relays its one-line error), so a failed mount exits non-zero in seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import NoReturn

import trio

from s3fsmpu.config import (
    ConnectionConfig,
    MountConfig,
    UploadConfig,
)
from s3fsmpu.errors import S3Error
from s3fsmpu.mountinfo import MountEntry
from s3fsmpu.options import UserError, build_parser, connection_config, mount_config
from s3fsmpu.runtime import pid_alive, pid_file, running_pid, socket_path
from s3fsmpu.stale_mount import DetachError, Occupant, detach, occupant

log = logging.getLogger("s3fsmpu")
READY_TIMEOUT = 60.0


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
    from s3fsmpu.memory import leave_out_awscrt, return_big_buffers_to_the_os

    # before any thread: a worker thread started earlier (the bucket check's) keeps a malloc
    # arena of its own, which held 7 MiB more at the peak of a 1 GiB cp
    return_big_buffers_to_the_os()
    if not config.needs_awscrt:
        leave_out_awscrt()
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
                                    max_connections=conn.max_connections, data_dir=conn.data_dir)
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
