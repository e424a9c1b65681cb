"""The systems under test and how each is mounted: s3fsmpu, and the peers
s3fs-fuse (also as s3fs-md5, with Content-MD5 on every part) and rclone, each
with the same part size and concurrency, and each with its own local data
cache when a workload asks for one (the read workloads), plus
scripts/fuse_null.py for the FUSE ceiling. Mount is one such mount started by us, which knows how to leave;
find_tools() chooses (and with --peers installs) the peers, collect_versions()
records what ran. The boto3 ceilings need no mount: see workloads.py.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import IO

from .common import MIB, ROOT, VENV_BIN, log, run, tool_version, use_project
from .measure import proc_alive, proc_cpu, proc_hwm_mib

PEERS = ["s3fs", "rclone"]
# s3fs with Content-MD5 on every part, as s3fsmpu sends (SPEC); s3fs's default sends none.
# Only `cp` is measured for it: the other workloads do not upload parts.
S3FS_MD5 = "s3fs-md5"


def mounted_paths() -> dict[str, str]:
    out = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            out[fields[4].replace("\\040", " ")] = fields[sep + 1]
    return out


def is_mounted(path: str | Path) -> bool:
    return str(path) in mounted_paths()


def read_ahead_kb(path: str | Path) -> int | None:
    """The kernel read-ahead of the mount at `path` (s3fsmpu and fuse_null raise it to 2 MiB)."""
    use_project()
    try:
        from s3fsmpu.mountinfo import find_mount

        entry = find_mount(str(path))
        return None if entry is None else int(Path(f"/sys/class/bdi/{entry.device}/read_ahead_kb").read_text())
    except (ImportError, OSError, ValueError):
        return None


class Mount:
    """One FUSE mount of a tool, started by us; knows how to leave."""

    def __init__(self, tool: str, mnt: Path, pid: int | None, proc: subprocess.Popen | None, log_path: Path | None):
        self.tool, self.mnt, self.pid, self.proc, self.log_path = tool, mnt, pid, proc, log_path

    def cpu(self) -> float | None:
        return proc_cpu(self.pid) if self.pid else None

    def hwm(self) -> float | None:
        return proc_hwm_mib(self.pid) if self.pid else None

    def unmount(self, timeout: float = 300) -> float:
        """Unmount (waiting for pending uploads); return the seconds it took."""
        t0 = time.monotonic()
        mnt = str(self.mnt)
        try:
            if self.tool == "s3fsmpu":
                r = run([str(VENV_BIN / "s3fsmpu"), "unmount", mnt, "--timeout", str(int(timeout))],
                        timeout=timeout + 30, check=False)
                if r.returncode != 0:
                    log(f"s3fsmpu unmount: {r.stderr.strip()}")
            elif is_mounted(mnt):
                run(["fusermount3", "-u", mnt], timeout=timeout, check=False)
            deadline = time.monotonic() + timeout
            while self.pid and proc_alive(self.pid) and time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        finally:
            self.force()
        return time.monotonic() - t0

    def force(self) -> None:
        """Whatever state it is in: no process, no mount."""
        if self.pid and proc_alive(self.pid):
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
                try:
                    os.kill(self.pid, sig)
                except ProcessLookupError:
                    break
                deadline = time.monotonic() + wait
                while proc_alive(self.pid) and time.monotonic() < deadline:
                    if self.proc is not None and self.proc.poll() is not None:
                        break
                    time.sleep(0.1)
                if not proc_alive(self.pid):
                    break
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        if is_mounted(self.mnt):
            run(["fusermount3", "-u", "-z", str(self.mnt)], timeout=30, check=False)


def wait_mounted(mnt: Path, proc: subprocess.Popen | None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_mounted(mnt):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"mount process exited with code {proc.returncode}")
        time.sleep(0.1)
    raise RuntimeError(f"{mnt} not mounted after {timeout:.0f} s")


def find_tools(args: argparse.Namespace, notes: list[str]) -> list[str]:
    """s3fsmpu, and the peers that are installed (installing them with --peers), cut to --tools."""
    tools = ["s3fsmpu"]
    if args.skip_peers:
        return tools
    missing = [p for p in PEERS if not shutil.which(p)]
    if missing and args.peers:
        log(f"installing {' '.join(missing)} with apt-get ...")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run(["apt-get", "update", "-qq"], timeout=600, check=False, env=env)
        r = run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
                timeout=900, check=False, env=env)
        if r.returncode != 0:
            notes.append(f"apt-get install {' '.join(missing)} failed: {r.stderr.strip()[-200:]}")
    for p in PEERS:
        if shutil.which(p):
            tools.append(p)
            if p == "s3fs":
                tools.append(S3FS_MD5)
        else:
            notes.append(f"{p} not installed (use --peers to install it)")
    if args.tools:
        want = [t.strip() for t in args.tools.split(",")]
        tools = [t for t in tools if t in want]
    return tools


def collect_versions(tools: list[str]) -> dict[str, str]:
    versions = {"s3fsmpu": tool_version([str(VENV_BIN / "s3fsmpu"), "--version"], r"s3fsmpu (\S+)")}
    if "s3fs" in tools:
        versions["s3fs"] = tool_version(["s3fs", "--version"], r"V(\S+)")
    if "rclone" in tools:
        versions["rclone"] = tool_version(["rclone", "version"], r"rclone v(\S+)")
    import boto3

    versions["boto3"] = boto3.__version__
    versions["python"] = platform.python_version()
    return versions


def data_cache_dir(tool: str, work: Path) -> Path:
    """Where `tool` keeps file data on local disk when a workload mounts it with a data
    cache: s3fsmpu under its --cache-dir (so its log stays in one place), the peers in
    a directory of their own."""
    return work / "cache-s3fsmpu" / "data" if tool == "s3fsmpu" else work / f"datacache-{tool}"


def start_mount(tool: str, bucket: str, mnt: Path, work: Path, endpoint: str, args: argparse.Namespace,
                cache_size: int = 0) -> Mount:
    """Start `tool`'s mount of `bucket` at `mnt` (not yet waited for); its files go in `work`.
    With `cache_size` the tool keeps file data in data_cache_dir() (s3fsmpu --cache-size,
    s3fs -o use_cache, which has no size limit, rclone --vfs-cache-mode full)."""
    P = args.part_size
    conc = args.concurrency
    if cache_size and tool != "s3fsmpu":
        data_cache_dir(tool, work).mkdir(parents=True, exist_ok=True)
    if tool == "s3fsmpu":
        cache = work / "cache-s3fsmpu"
        cmd = [str(VENV_BIN / "s3fsmpu"), "mount", bucket, str(mnt), "--endpoint-url", endpoint,
               "--region", "us-east-1", "--addressing-style", "path", "--part-size", str(P),
               "--upload-concurrency", str(conc), "--max-memory", str(args.max_memory),
               "--cache-dir", str(cache), "--integrity", args.integrity, "--cache-size", str(cache_size)]
        r = run(cmd, timeout=120, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"s3fsmpu mount failed: {r.stderr.strip()}")
        use_project()
        from s3fsmpu.cli import pid_file

        pid = int(open(pid_file(str(mnt))).read().strip())
        return Mount(tool, mnt, pid, None, cache / "mount.log")
    if tool in ("s3fs", S3FS_MD5):
        pw = work / "s3fs.passwd"
        pw.write_text(f"{os.environ['AWS_ACCESS_KEY_ID']}:{os.environ['AWS_SECRET_ACCESS_KEY']}\n")
        pw.chmod(0o600)
        logp = work / f"{tool}.log"
        opts = [f"url={endpoint}", "use_path_request_style", f"passwd_file={pw}",
                f"parallel_count={conc}", f"multipart_size={max(5, P // MIB)}", "dbglevel=warn"]
        if tool == S3FS_MD5:
            opts.append("enable_content_md5")
        if cache_size:
            opts.append(f"use_cache={data_cache_dir(tool, work)}")
        proc = subprocess.Popen(["s3fs", bucket, str(mnt), "-f", "-o", ",".join(opts)],
                                stdout=open(logp, "a"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return Mount(tool, mnt, proc.pid, proc, logp)
    if tool == "rclone":
        logp = work / "rclone.log"
        conf = work / "rclone.conf"
        conf.touch()
        env = {k: v for k, v in os.environ.items() if k not in ("AWS_CA_BUNDLE", "AWS_PROFILE")}
        env.update({
               "RCLONE_CONFIG": str(conf),
               "RCLONE_CONFIG_BENCH_TYPE": "s3",
               "RCLONE_CONFIG_BENCH_PROVIDER": "Ceph" if args.rgw else "Other",
               "RCLONE_CONFIG_BENCH_ENDPOINT": endpoint,
               "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
               "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"],
               "RCLONE_CONFIG_BENCH_REGION": "us-east-1",
               "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE": "true"})
        cache_opts = (["--vfs-cache-mode", "full", "--cache-dir", str(data_cache_dir(tool, work)),
                       "--vfs-cache-max-size", str(cache_size)] if cache_size else ["--vfs-cache-mode", "off"])
        cmd = ["rclone", "mount", f"bench:{bucket}", str(mnt), *cache_opts,
               "--s3-chunk-size", f"{P // 1024}k", "--s3-upload-concurrency", str(conc),
               "--log-file", str(logp), "--log-level", "NOTICE"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=open(logp, "a"),
                                stdin=subprocess.DEVNULL)
        return Mount(tool, mnt, proc.pid, proc, logp)
    raise ValueError(tool)


def start_fuse_null(mnt: Path, size: int, logf: IO[str]) -> Mount:
    """scripts/fuse_null.py at `mnt`: a pyfuse3 filesystem that does no I/O (`null` reads `size` bytes)."""
    proc = subprocess.Popen([str(VENV_BIN / "python"), str(ROOT / "scripts" / "fuse_null.py"), str(mnt),
                             "--size", str(size)], stdout=logf, stderr=subprocess.STDOUT)
    return Mount("fuse_null", mnt, proc.pid, proc, None)
