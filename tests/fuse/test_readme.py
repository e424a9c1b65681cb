"""The README's Semantics transcript, run in a real mount: the document cannot drift."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.fuse
README = Path(__file__).resolve().parents[2] / "README.md"


def transcript() -> list[tuple[str, str]]:
    block = re.search(r"```console\n(.*?)```", README.read_text(), re.S)
    assert block, "README has no console transcript"
    steps: list[tuple[str, list[str]]] = []
    for line in block.group(1).splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    return [(cmd, "\n".join(out)) for cmd, out in steps]


def test_readme_semantics_transcript(bucket, mounter, s3):
    m = mounter(bucket)
    env = {**os.environ, "TZ": "UTC", "LC_ALL": "C"}
    steps = transcript()
    assert len(steps) >= 8
    for cmd, expected in steps:
        r = subprocess.run(["bash", "-c", cmd], cwd=m.path, capture_output=True, text=True, env=env,
                           timeout=60)
        got = (r.stdout + r.stderr).rstrip("\n")
        assert got == expected, f"$ {cmd}\nexpected:\n{expected}\ngot:\n{got}"
    # and S3 holds what the transcript says
    body = s3.get_object(Bucket=bucket, Key="docs/greeting.txt")["Body"].read()
    assert body == b"hello\nagain\n"
    assert s3.get_object(Bucket=bucket, Key="link")["Body"].read() == b"docs/greeting.txt"
