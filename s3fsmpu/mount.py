"""Running a mount: pyfuse3.init -> nursery -> pyfuse3.main -> publish pending uploads -> close.

SIGINT/SIGTERM end the main loop; every file still dirty is then uploaded
(or fails with its bytes kept) before the mount goes away, so a clean
unmount leaves no incomplete multipart upload behind.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable

import pyfuse3
import trio

from s3fsmpu.cache import open_data_cache
from s3fsmpu.config import MountConfig
from s3fsmpu.control import serve_control
from s3fsmpu.fs.core import S3Filesystem
from s3fsmpu.fs.data_cache import CacheAccess
from s3fsmpu.fuse_ops import FuseOperations
from s3fsmpu.kernel_readahead import tune_read_ahead
from s3fsmpu.memory import (
    MemoryBudget,
    memory_snapshot,
    return_big_buffers_to_the_os,
    trim_heap,
    trim_while_idle,
)
from s3fsmpu.metrics import InstrumentedStore, Metrics, serve_metrics
from s3fsmpu.runtime import socket_path
from s3fsmpu.store.base import ObjectStore
from s3fsmpu.store.conditional import ConditionalWrites
from s3fsmpu.upload.uploader import Uploader

log = logging.getLogger(__name__)


def fuse_options(config: MountConfig) -> set[str]:
    opts = set(pyfuse3.default_options)
    opts |= {f"fsname=s3fsmpu#{config.location}", "subtype=s3fsmpu"}
    if config.allow_other:
        opts.add("allow_other")
    if config.read_only:
        opts.add("ro")
    return opts


def empty_snapshot(budget: MemoryBudget) -> dict[str, object]:
    """A read-only mount's status: no uploads, and the readers' share of the budget."""
    totals = dict.fromkeys(("completed", "failed", "retries", "repaired", "settled_by_head",
                            "completed_after_retry", "parts_uploaded", "parts_copied", "bytes_uploaded"), 0)
    return {"uploads": [], **memory_snapshot(budget), "failures": [], "totals": totals}


async def announce_when_tuned(config: MountConfig, ready: Callable[[], None] | None,
                              tune: Callable[[str], Awaitable[None]] = tune_read_ahead) -> None:
    """Say the mount is ready only once its read-ahead is raised.

    A file keeps the read-ahead it was opened with, so if `mount` returned
    first, a `cat` started right after it would get 128 KiB reads throughout.
    """
    await tune(config.mountpoint)
    log.info("mounted %s on %s", config.location, config.mountpoint)
    if ready is not None:
        ready()


async def serve(config: MountConfig, store: ObjectStore, ready: Callable[[], None] | None = None,
                metrics_addr: str | None = None) -> None:
    os.makedirs(config.cache_dir, mode=0o700, exist_ok=True)
    return_big_buffers_to_the_os()  # the RSS follows the budget, not the allocator's history
    metrics = Metrics()
    store = ConditionalWrites(InstrumentedStore(store, metrics), config.upload.conflicts == "fail")
    async with trio.open_nursery() as nursery:
        # one budget for write parts and read-ahead; a read-only mount's readers may use all of it
        budget = MemoryBudget(config.upload.max_memory, config.upload.max_memory if config.read_only else None)
        uploader = None if config.read_only else Uploader(store, config.upload, config.cache_dir, nursery, budget)

        def snapshot() -> dict[str, object]:
            return uploader.snapshot() if uploader else empty_snapshot(budget)

        await nursery.start(serve_control, socket_path(config.mountpoint), snapshot)
        if metrics_addr:
            await nursery.start(serve_metrics, metrics_addr, lambda: metrics.render(snapshot()))
        nursery.start_soon(_dump_on_sigusr1, snapshot)
        disk_cache = await trio.to_thread.run_sync(open_data_cache, config.cache_dir, config.cache_size,
                                                   config.bucket_scope)
        fs = S3Filesystem(store, config, uploader, nursery,
                          CacheAccess(disk_cache) if disk_cache is not None else None, budget)
        pyfuse3.init(FuseOperations(fs), config.mountpoint, fuse_options(config))
        try:
            nursery.start_soon(_terminate_on_signal)
            nursery.start_soon(fs.pending_metadata_loop)
            nursery.start_soon(trim_while_idle, budget)
            nursery.start_soon(announce_when_tuned, config, ready)
            # the imports and boto3's service model are ~80,000 objects that live
            # as long as the mount: spare each full collection (~45 ms) walking them
            gc.collect()
            gc.freeze()
            trim_heap()
            await pyfuse3.main(min_tasks=4, max_tasks=64)
            log.info("unmounting %s: waiting for pending uploads", config.mountpoint)
            await fs.shutdown()
        finally:
            pyfuse3.close(unmount=True)
            nursery.cancel_scope.cancel()
        stats = uploader.stats if uploader else None
        if stats is not None:
            log.info(
                "unmounted: uploads completed=%d failed=%d retries=%d repaired=%d settled_by_head=%d bytes=%d",
                stats.completed, stats.failed, stats.retries, stats.repaired,
                stats.settled_by_head, stats.bytes_uploaded,
            )


async def _dump_on_sigusr1(snapshot: Callable[[], dict[str, object]]) -> None:
    with trio.open_signal_receiver(signal.SIGUSR1) as signals:
        async for _ in signals:
            log.info("state: %s", json.dumps(snapshot()))


async def _terminate_on_signal() -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("signal %d: unmounting", signum)
            pyfuse3.terminate()
