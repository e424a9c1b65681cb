"""Size and duration parsing, bucket[:prefix] locations, part-size limits, and the
read-cache options (--cache-size, --attr-timeout indefinite) from argv to MountConfig."""

from __future__ import annotations

import pytest

from s3fsmpu.config import (
    MountConfig,
    S3Location,
    UploadConfig,
    check_part_size,
    kernel_timeout,
    parse_attr_timeout,
    parse_duration,
    parse_size,
)
from s3fsmpu.fstab import to_argv
from s3fsmpu.options import UserError, build_parser, mount_config
from s3fsmpu.upload.schedule import schedule_for


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5MiB", 5 * 2**20),
        ("8M", 8 * 2**20),
        ("8m", 8 * 2**20),
        ("16777216", 16777216),
        ("1.5G", 3 * 2**29),
        ("5GiB", 5 * 2**30),
        ("64KiB", 65536),
        ("64k", 65536),
        ("1KB", 1000),
        ("2MB", 2_000_000),
        ("1T", 2**40),
        (" 8MiB ", 8 * 2**20),
        ("0", 0),
        ("10b", 10),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected
    assert isinstance(parse_size(text), int)


@pytest.mark.parametrize(
    "text", ["", "  ", "abc", "M", "5XB", "-5M", "5 M B", "0.5", "1.1K", "5MiBs", "1e6", "0x10"]
)
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("90", 90), ("30s", 30), ("15m", 900), ("2h", 7200), ("1d", 86400), ("1w", 604800), ("1.5h", 5400)],
)
def test_parse_duration(text: str, expected: float) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "d", "1y", "-1d", "1 day", "abc", "1dd"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "bucket", "prefix"),
    [
        ("mybucket", "mybucket", ""),
        ("mybucket:", "mybucket", ""),
        ("mybucket:sub/dir", "mybucket", "sub/dir/"),
        ("mybucket:sub/dir/", "mybucket", "sub/dir/"),
        ("mybucket:/sub", "mybucket", "sub/"),
        ("my.bucket-1:a", "my.bucket-1", "a/"),
    ],
)
def test_location_parse(text: str, bucket: str, prefix: str) -> None:
    loc = S3Location.parse(text)
    assert (loc.bucket, loc.prefix) == (bucket, prefix)
    assert S3Location.parse(str(loc)) == loc


@pytest.mark.parametrize("text", ["", ":prefix", "bad/bucket", "has space", "-x:y"])
def test_location_rejects_bad_bucket(text: str) -> None:
    with pytest.raises(ValueError):
        S3Location.parse(text)


def test_check_part_size_limits() -> None:
    assert check_part_size(5 * 2**20) == 5 * 2**20
    assert check_part_size(5 * 2**30) == 5 * 2**30
    for bad in (5 * 2**20 - 1, 5 * 2**30 + 1, 0):
        with pytest.raises(ValueError):
            check_part_size(bad)


def test_upload_config_schedule_uses_part_size() -> None:
    cfg = UploadConfig(part_size=64 << 10, min_part_size=64 << 10)
    assert schedule_for(cfg).part(3).start == 128 << 10
    assert schedule_for(UploadConfig()).part(1).size == 8 << 20
    assert UploadConfig().checks_md5_etags
    assert not UploadConfig(sse="aws:kms").checks_md5_etags
    assert not UploadConfig(sse_c_key=b"k" * 32).checks_md5_etags
    assert UploadConfig(sse="AES256").checks_md5_etags


@pytest.mark.parametrize(("text", "expected"), [("indefinite", float("inf")), ("inf", float("inf")),
                                                ("Indefinite", float("inf")), ("30s", 30.0), ("0", 0.0)])
def test_attr_timeout_may_be_indefinite(text: str, expected: float) -> None:
    assert parse_attr_timeout(text) == expected


def test_the_kernel_gets_a_finite_timeout_of_at_most_a_year() -> None:
    assert kernel_timeout(float("inf")) == 365 * 86400.0
    assert kernel_timeout(10.0) == 10.0
    assert kernel_timeout(0.0) == 0.0


def _mount(*options: str) -> MountConfig:
    args = build_parser().parse_args(["mount", "bucket", "/mnt", *options])
    return mount_config(args)


def test_cache_size_and_an_indefinite_attr_timeout_reach_the_mount_config() -> None:
    assert _mount().cache_size == 0  # off unless asked for
    assert _mount().attr_timeout == 10.0
    config = _mount("--cache-size", "10GiB", "--attr-timeout", "indefinite")
    assert config.cache_size == 10 << 30
    assert config.attr_timeout == float("inf")
    assert _mount("--attr-timeout", "inf").attr_timeout == float("inf")
    assert to_argv("b", "/m", "cache_size=10GiB,attr_timeout=indefinite") == [
        "mount", "b", "/m", "--cache-size", "10GiB", "--attr-timeout", "indefinite"]


def test_a_cache_smaller_than_one_block_is_refused() -> None:
    with pytest.raises(UserError, match="--cache-size"):
        _mount("--cache-size", "1MiB")


@pytest.mark.parametrize("bad", [["--cache-size", "lots"], ["--attr-timeout", "forever"]])
def test_bad_cache_size_or_attr_timeout_is_one_line(bad: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _mount(*bad)
    assert exc.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_the_integrity_modes() -> None:
    md5 = _mount().upload
    assert (md5.integrity, md5.content_md5, md5.checks_md5_etags, md5.whole_object_checksum) == ("md5", True, True, False)
    assert _mount("--checksum-algorithm", "SHA256").upload.checksum_algorithm == "SHA256"
    for mode in ("crc64nvme", "crc32c"):
        up = _mount("--integrity", mode).upload
        assert up.checksum_algorithm == mode.upper()
        assert not up.content_md5 and not up.checks_md5_etags and up.whole_object_checksum
        assert _mount("--integrity", mode, "--checksum-algorithm", mode.upper()).upload == up
    with pytest.raises(UserError, match="--integrity crc64nvme sends CRC64NVME checksums; drop --checksum-algorithm SHA1"):
        _mount("--integrity", "crc64nvme", "--checksum-algorithm", "SHA1")
    assert to_argv("b", "/m", "integrity=crc64nvme") == ["mount", "b", "/m", "--integrity", "crc64nvme"]


def test_only_crc_features_need_awscrt() -> None:
    assert not _mount().needs_awscrt  # MD5, no data cache: awscrt stays out (memory.leave_out_awscrt)
    assert not _mount("--checksum-algorithm", "SHA256").needs_awscrt
    for args in (["--integrity", "crc64nvme"], ["--integrity", "crc32c"], ["--checksum-algorithm", "CRC32"],
                 ["--checksum-algorithm", "CRC32C"], ["--cache-size", "1GiB"]):
        assert _mount(*args).needs_awscrt, args

