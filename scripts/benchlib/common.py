"""What every part of the benchmark shares: where the repository, its venv and
bench-results/ are, the size unit, the progress log on stderr, run() for short
helper commands, and tool_version() to read a program's version.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent  # scripts/benchlib/ -> the repository
VENV_BIN = ROOT / ".venv" / "bin"
RESULTS = ROOT / "bench-results"
MIB = 1 << 20


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def use_project() -> None:
    """Make `import s3fsmpu` find this repository's package (the bench borrows a few helpers)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def run(cmd: list[str], timeout: float | None = None, check: bool = True, **kw: Any) -> subprocess.CompletedProcess:
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    r = subprocess.run(cmd, timeout=timeout, text=True, **kw)
    if check and r.returncode != 0:
        err = (r.stderr or "").strip().splitlines()
        raise RuntimeError(f"{' '.join(cmd[:3])}... exit {r.returncode}: {err[-1] if err else ''}")
    return r


def tool_version(cmd: list[str], pattern: str) -> str:
    """The first group of `pattern` in what `cmd` prints, or "?"."""
    try:
        out = run(cmd, timeout=20, check=False)
        m = re.search(pattern, out.stdout + out.stderr)
        return m.group(1) if m else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"
