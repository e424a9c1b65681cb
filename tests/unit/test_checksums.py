"""The whole object's checksum is combined from its parts' (checksums.py), as S3 computes it
over the joined bytes; the values match published ones."""

from __future__ import annotations

import random

import pytest

from s3fsmpu.checksums import COMBINABLE, combine, of_bytes


@pytest.mark.parametrize("algorithm", sorted(COMBINABLE))
def test_combined_parts_equal_the_checksum_of_the_joined_bytes(algorithm: str) -> None:
    rnd = random.Random(algorithm)
    parts = [rnd.randbytes(n) for n in (5 << 20, 1, 0, 77_777, 3)]
    assert combine(algorithm, [(of_bytes(algorithm, p), len(p)) for p in parts]) == of_bytes(algorithm, b"".join(parts))
    assert combine(algorithm, [(of_bytes(algorithm, parts[0]), len(parts[0]))]) == of_bytes(algorithm, parts[0])


def test_known_values() -> None:
    # CRC-32 and CRC-32C of "123456789" are the catalogue's check values; CRC-64/NVME's too
    assert of_bytes("CRC32", b"123456789") == "y/Q5Jg=="  # 0xcbf43926
    assert of_bytes("CRC32C", b"123456789") == "4waSgw=="  # 0xe3069283
    assert of_bytes("CRC64NVME", b"123456789") == "rosUhgp5mIg="  # 0xae8b14860a799888
