"""fstab options -> s3fsmpu mount arguments."""

from __future__ import annotations

import pytest

from s3fsmpu.fstab import to_argv


def test_options_map_to_flags_and_generic_ones_are_ignored():
    argv = to_argv("b:p", "/mnt", "_netdev,nofail,noauto,x-systemd.automount,rw,dev,suid,"
                   "endpoint_url=http://h:1,part_size=16MiB,read_only,allow_other,file_mode=0600")
    assert argv == ["mount", "b:p", "/mnt", "--endpoint-url", "http://h:1", "--part-size", "16MiB",
                    "--read-only", "--allow-other", "--file-mode", "0600"]
    assert to_argv("b", "/m", "ro") == ["mount", "b", "/m", "--read-only"]


@pytest.mark.parametrize("bad", ["frobnicate", "part_size", "read_only=yes"])
def test_bad_options_are_refused(bad):
    with pytest.raises(ValueError):
        to_argv("b", "/m", bad)
