"""S3Filesystem: the FUSE-agnostic core that fuse_ops calls.

Everything the mount does lives in the rooms it is made of (see state.py for
the floor plan) and is testable without a kernel: the pyfuse3 adapter only
converts arguments and errors. This module only puts them together and says
what unmount does.
"""

from __future__ import annotations

import logging

from s3fsmpu.fs.changes import Changes
from s3fsmpu.fs.state import Attr, DirEntry

log = logging.getLogger(__name__)

__all__ = ["Attr", "DirEntry", "S3Filesystem"]


class S3Filesystem(Changes):
    async def shutdown(self) -> None:
        """Unmount: publish every file still dirty and every pending attribute change."""
        if self.uploader is not None:
            await self.apply_pending_metadata()
            for node in self.inodes.nodes():
                if node.writer is not None:
                    writer, node.writer = node.writer, None
                    try:
                        await writer.close()
                    except Exception as exc:  # noqa: BLE001 - one file's failure must not stop the rest
                        log.error("at unmount, %s", exc)
            await self.uploader.drain()
        self.metacache.close()
