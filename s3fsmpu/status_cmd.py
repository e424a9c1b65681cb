"""`s3fsmpu status MOUNTPOINT [--json] [--watch]`: what a mount is doing now."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from s3fsmpu.control import query


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def render_table(status: dict[str, Any]) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title="uploads in flight", expand=False)
    for col in ("key", "written", "sent", "parts done/so far", "in flight", "MB/s", "age", "state"):
        table.add_column(col, justify="left" if col in ("key", "state") else "right")
    for u in status["uploads"]:
        state = u["state"] + (f" (kept in {u['recovery_file']})" if u["recovery_file"] else "")
        table.add_row(u["key"], _mib(u["bytes_written"]), _mib(u["bytes_sent"]),
                      f"{u['parts_done']}/{u['parts_so_far']}", str(u["parts_in_flight"]),
                      f"{u['mb_per_s']:.1f}", f"{u['age_s']:.0f}s", state)
    t = status["totals"]
    lines = [
        f"buffered {_mib(status['buffered_bytes'])} for writes and "
        f"{_mib(status.get('read_ahead_bytes', 0))} read ahead, of --max-memory {_mib(status['max_memory'])}",
        f"since mount: {t['completed']} completed ({t['completed_after_retry']} after retries, "
        f"{t['settled_by_head']} settled by HEAD, {t['repaired']} repaired), {t['failed']} failed, "
        f"{t['retries']} retries, {t['parts_uploaded']} parts sent, {t['parts_copied']} copied, "
        f"{_mib(t['bytes_uploaded'])} uploaded",
    ]
    lines += [f"failed upload kept in {p}" for p in status["failures"]]
    return Group(table, *(Text(line) for line in lines))


def run_status(socket: str, as_json: bool, watch: bool, interval: float = 1.0) -> int:
    if as_json and not watch:
        sys.stdout.write(json.dumps(query(socket), indent=2) + "\n")
        return 0
    if as_json:  # one JSON document per line, for scripts that follow along
        while True:
            sys.stdout.write(json.dumps(query(socket)) + "\n")
            sys.stdout.flush()
            time.sleep(interval)
    from rich.console import Console
    from rich.live import Live

    console = Console()
    if not watch:
        console.print(render_table(query(socket)))
        return 0
    with Live(render_table(query(socket)), console=console, refresh_per_second=4) as live:
        while True:
            time.sleep(interval)
            live.update(render_table(query(socket)))
