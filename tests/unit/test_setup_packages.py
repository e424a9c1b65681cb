"""scripts/setup installs every external command the tool and the tests run.

The commands are found in the sources (the literal first word of every
`subprocess.run([...])`/`Popen([...])`/`shutil.which(...)`, and each command of
the README transcript that test_readme runs through bash); dpkg says which
Debian package owns each one. A package must be Essential (present on every
Debian) or in scripts/setup's `pkgs=(...)` list.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fuse.test_readme import transcript

ROOT = Path(__file__).resolve().parents[2]
CALL = re.compile(r"""(?:\brun|Popen|check_output|which)\(\s*\[?\s*["']([\w.-]+)["']""")
SHELL_SEP = re.compile(r"&&|\|\||[|;]")

pytestmark = pytest.mark.skipif(shutil.which("dpkg") is None, reason="needs a Debian system (dpkg)")


def commands_run() -> dict[str, str]:
    """command -> where it was found."""
    found: dict[str, str] = {}
    for path in [*(ROOT / "tests").rglob("*.py"), *(ROOT / "s3fsmpu").rglob("*.py")]:
        for name in CALL.findall(path.read_text()):
            found.setdefault(name, str(path.relative_to(ROOT)))
    for cmd, _ in transcript():
        for part in SHELL_SEP.split(cmd):
            if part.strip():
                found.setdefault(part.split()[0], "README.md transcript")
    return found


def owner(command: str) -> str | None:
    """The Debian package that ships `command` (dpkg knows the pre-merged-/usr paths)."""
    for d in ("/usr/bin", "/bin", "/usr/sbin", "/sbin"):
        r = subprocess.run(["dpkg", "-S", f"{d}/{command}"], check=False, capture_output=True, text=True)
        if r.returncode == 0:
            return r.stdout.split(":", 1)[0]
    return None


def setup_packages() -> set[str]:
    m = re.search(r"^pkgs=\(([^)]*)\)", (ROOT / "scripts" / "setup").read_text(), re.MULTILINE)
    assert m, "scripts/setup has no pkgs=(...) list"
    return set(m.group(1).split())


def essential(package: str) -> bool:
    r = subprocess.run(["dpkg-query", "-W", "-f", "${Essential}", package], check=False, capture_output=True, text=True)
    return r.stdout.strip() == "yes"


def test_setup_installs_every_command_the_tests_run():
    found = commands_run()
    assert {"pgrep", "fincore", "fusermount3", "rsync"} <= found.keys(), "the scan no longer sees the calls"
    listed = setup_packages()
    missing = []
    for command, where in sorted(found.items()):
        package = owner(command)
        if package is None:
            missing.append(f"{command} ({where}): no Debian package ships it")
        elif package not in listed and not essential(package):
            missing.append(f"{command} ({where}): package {package} is not in scripts/setup")
    assert not missing, "\n".join(missing)
