"""A mount outlives the rotation of its credentials (real kernel mounts, moto enforcing IAM keys).

Two ways credentials change under a long-running mount:
- a sidecar rewrites the shared credentials file: static keys, which
  botocore reads once; the mount reloads them when S3 refuses the old key;
- a credential_process profile whose answers carry an Expiration: botocore
  refreshes them by itself, and the mount must not get in its way (no
  reload needed).
Each rotation is real: the old key is deleted through IAM before the mount
writes again, and the bytes are read back from the bucket with the new key.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tests.iam_moto import IamMoto, credentials_file, iam_moto, write_credentials  # noqa: F401

RELOADED = "credentials reloaded"


def rotate(iam_moto: IamMoto, old: dict[str, str], publish) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """A new key, published where the mount looks, then the old key deleted."""
    new = iam_moto.new_key(old["UserName"])
    publish(new)
    iam_moto.delete_key(old)
    return new


def write_and_check(mount, iam_moto: IamMoto, key: dict[str, str], name: str, data: bytes) -> None:  # type: ignore[no-untyped-def]
    (mount.path / name).write_bytes(data)
    assert (mount.path / name).read_bytes() == data
    got = iam_moto.s3(key).get_object(Bucket=mount.bucket, Key=name)["Body"].read()
    assert got == data


def test_a_rotated_shared_credentials_file_is_reloaded(
        mounter, iam_moto: IamMoto, credentials_file: Path) -> None:  # noqa: F811
    bucket = iam_moto.new_bucket()
    key_a = iam_moto.new_key(iam_moto.new_user())
    write_credentials(credentials_file, key_a, profile="rotated")
    m = mounter(bucket, "--profile", "rotated", "--part-size", "5MiB", endpoint=iam_moto.url)
    write_and_check(m, iam_moto, key_a, "before.txt", b"written with key A\n")

    key_b = rotate(iam_moto, key_a, lambda k: write_credentials(credentials_file, k, profile="rotated"))
    write_and_check(m, iam_moto, key_b, "after.txt", os.urandom(6 << 20))  # two parts
    assert (m.path / "before.txt").read_bytes() == b"written with key A\n"
    assert sorted(os.listdir(m.path)) == ["after.txt", "before.txt"]
    lines = [line for line in m.log.splitlines() if RELOADED in line]
    assert len(lines) == 1 and "INFO" in lines[0] and key_b["AccessKeyId"][-4:] in lines[0], lines


def test_a_credential_process_profile_refreshes_by_itself(
        mounter, iam_moto: IamMoto, credentials_file: Path, tmp_path: Path) -> None:  # noqa: F811
    """Each answer expires 60 s ahead, so botocore reruns the process before every request."""
    current = tmp_path / "current-key"
    script = tmp_path / "credential-process"
    script.write_text(
        "#!/bin/sh\n"
        f"read id secret < '{current}'\n"
        "printf '{\"Version\": 1, \"AccessKeyId\": \"%s\", \"SecretAccessKey\": \"%s\", \"Expiration\": \"%s\"}' "
        "\"$id\" \"$secret\" \"$(date -u -d '+60 seconds' +%Y-%m-%dT%H:%M:%SZ)\"\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    Path(os.environ["AWS_CONFIG_FILE"]).write_text(f"[profile temporary]\ncredential_process = {script}\n")

    def publish(key: dict[str, str]) -> None:
        current.write_text(f"{key['AccessKeyId']} {key['SecretAccessKey']}\n")

    bucket = iam_moto.new_bucket()
    key_a = iam_moto.new_key(iam_moto.new_user())
    publish(key_a)
    m = mounter(bucket, "--profile", "temporary", endpoint=iam_moto.url)
    write_and_check(m, iam_moto, key_a, "before.txt", b"A\n")
    key_b = rotate(iam_moto, key_a, publish)
    write_and_check(m, iam_moto, key_b, "after.txt", b"B\n")
    key_c = rotate(iam_moto, key_b, publish)
    write_and_check(m, iam_moto, key_c, "again.txt", b"C\n")
    assert RELOADED not in m.log  # botocore's own refresh did it
