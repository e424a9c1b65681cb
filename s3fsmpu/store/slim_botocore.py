"""botocore's data cut to what a mount uses, and kept cut on disk for the next mount.

A botocore session parses endpoints.json (every AWS service's endpoints: ~7 MB
of Python objects) and S3's service model (116 operations, ~3 MB with their
documentation) whole. A mount needs S3's and the credential services'
endpoints, the operations it sends and no documentation. Cutting after the
parse frees the objects but not the peak, and the allocator keeps the arenas
the peak took (a mount's idle RSS was the same with or without the cut). So
the cut is made by a child process, which writes it to a directory (the
mount's cache dir), keyed by botocore's version, the source file and what is
cut; the mount, and every later one, parses ~110 KB instead of 10 MB (idle
RSS 3 MiB lower, start-up peak 5 MiB lower). A source the cut does not know
(a botocore whose S3 model lacks an operation) is noted beside the cuts, so
later mounts use it whole without starting a child each time. A start
touches what it reads; writing a new cut (after a botocore upgrade) removes
what no mount has touched for STALE_CUT.

It leans on botocore internals (the loader's `file_loader`, the data files'
names): where they change, botocore's own data is used whole, and `install`
says False. Only botocore's own files are cut; a user's models
(AWS_DATA_PATH, ~/.aws/models) are used as they are.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import botocore
import botocore.session

log = logging.getLogger(__name__)

# the S3 operations a mount sends (boto3_store, and cli's CreateBucket under --local), and
# CreateSession, which botocore itself sends to sign for S3 Express directory buckets: the
# model keeps these and the shapes they reach (tests/unit/test_slim_client.py checks that
# the package calls no other, and that the client has create_session)
OPERATIONS = frozenset({
    "AbortMultipartUpload", "CompleteMultipartUpload", "CopyObject", "CreateBucket",
    "CreateMultipartUpload", "CreateSession", "DeleteObject", "GetObject", "HeadBucket",
    "HeadObject", "ListMultipartUploads", "ListObjectsV2", "ListParts", "PutObject",
    "UploadPart", "UploadPartCopy",
})

# endpoints.json entries a mount may use: S3's, and those of the credential providers
ENDPOINT_SERVICES = frozenset({"s3", "sts", "sso", "sso-oidc", "iam"})

CHILD_TIMEOUT = 30.0  # well within the 60 s a background mount has to come up
STALE_CUT = 30 * 86400.0  # seconds unused after which a kept cut is removed


def cut_endpoints(data: dict[str, Any]) -> bool:
    partitions = data.get("partitions")
    if not isinstance(partitions, list):
        return False
    for partition in partitions:
        services = partition.get("services", {})
        partition["services"] = OrderedDict((k, v) for k, v in services.items() if k in ENDPOINT_SERVICES)
    return True


def cut_s3_model(model: dict[str, Any]) -> bool:
    """Keep the operations a mount sends and the shapes they reach; empty the
    documentation (read for help texts, never to make a request)."""
    operations, shapes = model.get("operations"), model.get("shapes")
    if not isinstance(operations, dict) or not isinstance(shapes, dict) or not operations.keys() >= OPERATIONS:
        return False
    reached: set[str] = set()
    todo = [ref["shape"] for name in OPERATIONS for part in ("input", "output") if (ref := operations[name].get(part))]
    todo += [ref["shape"] for name in OPERATIONS for ref in operations[name].get("errors", [])]
    while todo:
        name = todo.pop()
        if name in reached:
            continue
        reached.add(name)
        shape = shapes[name]
        todo += [shape[part]["shape"] for part in ("member", "key", "value") if part in shape]
        todo += [member["shape"] for member in shape.get("members", {}).values()]
    model["operations"] = OrderedDict((k, v) for k, v in operations.items() if k in OPERATIONS)
    model["shapes"] = OrderedDict((k, v) for k, v in shapes.items() if k in reached)
    _empty_documentation(model)
    return True


def _empty_documentation(node: Any) -> None:
    if isinstance(node, dict):
        for key in ("documentation", "documentationUrl"):
            if key in node:
                node[key] = ""  # botocore reads some of them: emptied, not removed
        for value in node.values():
            _empty_documentation(value)
    elif isinstance(node, list):
        for value in node:
            _empty_documentation(value)


def looks_like_cut_endpoints(data: dict[str, Any]) -> bool:
    return isinstance(data.get("partitions"), list)


def looks_like_cut_s3_model(data: dict[str, Any]) -> bool:
    operations = data.get("operations")
    return isinstance(operations, dict) and operations.keys() == OPERATIONS and isinstance(data.get("shapes"), dict)


# botocore's data files a mount cuts, by their path under botocore/data (no extension):
# how to cut one, and how to tell a kept cut is whole
CUTS: dict[str, tuple[Callable[[dict[str, Any]], bool], Callable[[dict[str, Any]], bool]]] = {
    "endpoints": (cut_endpoints, looks_like_cut_endpoints),
    os.path.join("s3", "2006-03-01", "service-2"): (cut_s3_model, looks_like_cut_s3_model),
}


def _code_hash() -> str:
    """The cut is this module's work: a kept cut is used only by the same code."""
    try:
        with open(__file__, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()[:16]
    except OSError:
        return "unknown"


_CODE = _code_hash()
_KEPT = ",".join(sorted(OPERATIONS | ENDPOINT_SERVICES))  # in the key even where _CODE is unknown


class SlimFiles:
    """A botocore file loader that answers the files in CUTS cut, from `keep_dir` when a
    cut of the same source is there, else by parsing and cutting the source (and writing
    the cut there). Any other file, or any failure, is botocore's own loader's answer."""

    def __init__(self, inner: Any, builtin_dir: str, keep_dir: str | None, cut_in_child: bool = True) -> None:
        self.inner = inner
        self.builtin_dir = builtin_dir
        self.keep_dir = keep_dir
        self.cut_in_child = cut_in_child

    def exists(self, file_path: str) -> bool:
        return bool(self.inner.exists(file_path))

    def load_file(self, file_path: str) -> Any:
        how = CUTS.get(os.path.relpath(file_path, self.builtin_dir))
        source = _source(file_path) if how is not None else None
        if how is None or source is None:
            return self.inner.load_file(file_path)
        cut, looks_cut = how
        kept = self._kept_path(file_path, source)
        mark = _whole_mark(kept)
        data = _read_cut(kept, looks_cut)
        if data is None and not _used(mark) and kept is not None and self.cut_in_child and self._can_keep():
            _cut_in_a_child(os.path.dirname(kept))  # the whole parse's peak is then the child's
            data = _read_cut(kept, looks_cut)
        if data is not None:
            _used(kept)
            return data
        if _used(mark):  # a source this cut does not know (noted before, or by the child just
            return self.inner.load_file(file_path)  # now): used whole, no cut tried again
        data = self.inner.load_file(file_path)
        try:
            done = isinstance(data, dict) and cut(data)
        except (KeyError, TypeError, AttributeError) as exc:  # a layout this cut does not know
            log.debug("botocore's %s is used whole: %r", file_path, exc)
            self._keep(mark, None)
            return self.inner.load_file(file_path)  # afresh: the cut may have changed it halfway
        if done:
            self._keep(kept, data)
        else:
            log.debug("botocore's %s is used whole: not a layout this cut knows", file_path)
            self._keep(mark, None)
        return data

    def _kept_path(self, file_path: str, source: os.stat_result) -> str | None:
        if self.keep_dir is None:
            return None
        what = f"{botocore.__version__}|{file_path}|{source.st_size}|{source.st_mtime_ns}|{_CODE}|{_KEPT}"
        return os.path.join(self.keep_dir, hashlib.sha256(what.encode()).hexdigest()[:24] + ".json")

    def _can_keep(self) -> bool:
        """Make the keep dir (0700, and the cache dir above it if new) and say if it takes
        files: no child is started for a cut that could not be kept."""
        assert self.keep_dir is not None
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.keep_dir)), mode=0o700, exist_ok=True)
            os.makedirs(self.keep_dir, mode=0o700, exist_ok=True)
        except OSError:
            return False
        return os.access(self.keep_dir, os.W_OK | os.X_OK)

    def _keep(self, path: str | None, data: dict[str, Any] | None) -> None:
        """Write a cut (or, for None, an empty mark: this source cannot be cut) to `path`,
        and remove what no mount has used for STALE_CUT (botocore upgraded since)."""
        if path is None or not self._can_keep():
            return
        try:
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
            try:
                with os.fdopen(fd, "w") as f:
                    if data is not None:
                        json.dump(data, f, separators=(",", ":"))
                os.replace(tmp, path)  # whole or not at all, for mounts starting at once
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as exc:
            log.debug("cut botocore data not kept at %s: %s", path, exc)
        _remove_stale(os.path.dirname(path))


def _whole_mark(kept: str | None) -> str | None:
    """Where a mount notes that the source of the cut `kept` cannot be cut."""
    return None if kept is None else os.path.splitext(kept)[0] + ".whole"


def _used(path: str | None) -> bool:
    """Whether `path` exists; its mtime then says it was used now (see _remove_stale)."""
    if path is None:
        return False
    try:
        os.utime(path)
    except FileNotFoundError:
        return False
    except OSError:  # there, but not ours to touch (another user's mount wrote it)
        return os.path.lexists(path)
    return True


def _remove_stale(keep_dir: str) -> None:
    """Remove the cuts, marks and leftovers that no mount has used for STALE_CUT: those of
    an older botocore. (Not sooner: two installs of different versions may share the dir.)"""
    cutoff = time.time() - STALE_CUT
    try:
        entries = list(os.scandir(keep_dir))
    except OSError:
        return
    for entry in entries:
        try:
            if entry.name.endswith((".json", ".whole", ".tmp")) and entry.stat().st_mtime < cutoff:
                os.unlink(entry.path)
        except OSError:
            continue


def _source(file_path: str) -> os.stat_result | None:
    """The stat of the file botocore's loader reads for `file_path` (the first of its extensions)."""
    for ext in (".json", ".json.gz"):
        try:
            return os.stat(file_path + ext)
        except OSError:
            continue
    return None


def _read_cut(path: str | None, looks_cut: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f, object_pairs_hook=OrderedDict)  # as botocore's loader reads
    except (OSError, ValueError) as exc:
        if not isinstance(exc, FileNotFoundError):
            log.debug("cut botocore data at %s not used: %s", path, exc)
        return None
    if not isinstance(data, dict) or not looks_cut(data):
        log.debug("cut botocore data at %s not used: not a whole cut", path)
        return None
    return data


def _cut_in_a_child(keep_dir: str) -> None:
    """Have a child process parse botocore's data whole and keep the cut in `keep_dir`;
    if it fails, the caller cuts in process (and its RSS keeps that peak)."""
    try:
        subprocess.run([sys.executable, "-m", __name__, keep_dir], check=True, timeout=CHILD_TIMEOUT,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except subprocess.CalledProcessError as exc:
        log.debug("botocore's data not cut in a child: %s: %s", exc, exc.stderr.decode(errors="replace")[-2000:])
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("botocore's data not cut in a child: %s", exc)


def install(session: botocore.session.Session, keep_dir: str | None, cut_in_child: bool = True) -> bool:
    """Make `session`'s data loader answer the files in CUTS cut (see the module doc); a cut
    not kept yet is made by a child process (`cut_in_child`), or else in this one."""
    try:
        loader = session.get_component("data_loader")
        loader.file_loader = SlimFiles(loader.file_loader, loader.BUILTIN_DATA_PATH, keep_dir, cut_in_child)
    except (AttributeError, TypeError) as exc:
        log.debug("botocore's data is used whole: %r", exc)
        return False
    return True


if __name__ == "__main__":  # _cut_in_a_child
    child = botocore.session.Session()
    install(child, sys.argv[1], cut_in_child=False)
    child.get_component("data_loader").load_data("endpoints")
    child.get_component("data_loader").load_service_model("s3", "service-2")
