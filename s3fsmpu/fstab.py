"""`mount.fuse.s3fsmpu`: the helper mount(8) runs for fstab entries of type fuse.s3fsmpu.

    BUCKET[:PREFIX] /mnt fuse.s3fsmpu _netdev,endpoint_url=URL,part_size=16MiB 0 0

mount(8) calls `mount.fuse.s3fsmpu SOURCE MOUNTPOINT -o OPTIONS`. Every
`s3fsmpu mount` option can be written as `-o`, dashes as underscores
(`part_size=16MiB`, `read_only`, `allow_other`); the generic options that
mount(8) and systemd pass along are accepted and ignored.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import cast

from s3fsmpu import cli, options

# options mount(8), fstab and systemd use that mean nothing to s3fsmpu
IGNORED = {"defaults", "auto", "noauto", "nofail", "_netdev", "user", "users", "nouser", "owner",
           "group", "rw", "dev", "nodev", "suid", "nosuid", "exec", "noexec", "atime", "noatime",
           "diratime", "nodiratime", "relatime", "norelatime", "strictatime", "sync", "async",
           "comment", "loop", "x-gvfs-show", "bg", "fg", "silent", "loud"}
ALIASES = {"ro": "read_only"}


def to_argv(source: str, mountpoint: str, options: str) -> list[str]:
    """`-o` options -> `s3fsmpu mount` arguments; raises ValueError for unknown ones."""
    known = _known_flags()
    argv = ["mount", source, mountpoint]
    for item in filter(None, (o.strip() for o in options.split(","))):
        name, has_value, value = item.partition("=")
        name = ALIASES.get(name, name)
        if name in IGNORED or name.startswith(("x-systemd.", "x-", "comment=")):
            continue
        flag = "--" + name.replace("_", "-")
        takes_value = known.get(flag)
        if takes_value is None:
            raise ValueError(f"unknown option {name!r}")
        if takes_value != bool(has_value):
            raise ValueError(f"option {name!r} {'needs' if takes_value else 'takes no'} value")
        argv += [flag, value] if has_value else [flag]
    return argv


def _known_flags() -> dict[str, bool]:
    """Flags of `s3fsmpu mount` -> whether each takes a value."""
    parser = options.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    mount = cast("dict[str, argparse.ArgumentParser]", sub.choices)["mount"]
    flags = {}
    for action in mount._actions:
        for opt in action.option_strings:
            if opt.startswith("--") and opt not in ("--help", "--ready-fd"):
                flags[opt] = action.nargs != 0
    return flags


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    options: list[str] = []
    positional: list[str] = []
    i = 0
    while i < len(args):
        if args[i] == "-o" and i + 1 < len(args):
            options.append(args[i + 1])
            i += 2
        elif args[i].startswith("-o") and len(args[i]) > 2:
            options.append(args[i][2:])
            i += 1
        elif args[i] in ("-n", "-s", "-f", "-v"):  # mount(8)'s own flags
            i += 1
        else:
            positional.append(args[i])
            i += 1
    if len(positional) != 2:
        sys.stderr.write("usage: mount.fuse.s3fsmpu BUCKET[:PREFIX] MOUNTPOINT [-o OPTIONS]\n")
        return 2
    try:
        mount_argv = to_argv(positional[0], positional[1], ",".join(options))
    except ValueError as exc:
        sys.stderr.write(f"s3fsmpu: {exc}\n")
        return 2
    return cli.main(mount_argv)


def entry() -> None:
    sys.exit(main())
