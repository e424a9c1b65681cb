"""A moto server that checks every request's signature against IAM access keys.

moto enforces authentication once `/moto-api/reset-auth` sets its count of
unauthenticated requests to 0: an unknown or deleted access key is
InvalidAccessKeyId, a wrong secret SignatureDoesNotMatch, a HEAD a bare 403.
It does not expire tokens (no ExpiredToken; the fault proxy plays that).
So rotation is real here: a key deleted through IAM stops working.
The session's shared moto server keeps auth off; this one is separate.
"""

from __future__ import annotations

import json
import os
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from s3fsmpu.local_server import start_moto

ALLOW_ALL = json.dumps({"Version": "2012-10-17",
                        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})


class IamMoto:
    """The server, an admin key for IAM, and users whose keys the tests rotate."""

    def __init__(self) -> None:
        self.proc, self.url = start_moto()
        iam = self._client("iam", {"AccessKeyId": "bootstrap", "SecretAccessKey": "bootstrap"})
        self._allow_all(iam, "admin")
        self.admin = iam.create_access_key(UserName="admin")["AccessKey"]
        request = urllib.request.Request(self.url + "/moto-api/reset-auth", data=b"0", method="POST",
                                         headers={"Content-Type": "text/plain"})  # flask eats form bodies
        urllib.request.urlopen(request, timeout=10).close()
        self.iam = self._client("iam", self.admin)

    @staticmethod
    def _allow_all(iam: Any, user: str) -> None:
        iam.create_user(UserName=user)
        iam.put_user_policy(UserName=user, PolicyName="all", PolicyDocument=ALLOW_ALL)

    def new_user(self) -> str:
        """A user allowed everything; IAM allows each user two keys, so one per test."""
        user = "u-" + uuid.uuid4().hex[:12]
        self._allow_all(self.iam, user)
        return user

    def _client(self, service: str, key: dict[str, str]) -> Any:
        return boto3.client(service, endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"],
                            config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}))

    def s3(self, key: dict[str, str] | None = None) -> Any:
        """An S3 client signing with `key` (the admin's by default)."""
        return self._client("s3", key or self.admin)

    def new_key(self, user: str) -> dict[str, str]:
        return self.iam.create_access_key(UserName=user)["AccessKey"]  # type: ignore[no-any-return]

    def delete_key(self, key: dict[str, str]) -> None:
        self.iam.delete_access_key(UserName=key["UserName"], AccessKeyId=key["AccessKeyId"])

    def new_bucket(self) -> str:
        name = "cred-" + uuid.uuid4().hex[:12]
        self.s3().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def write_credentials(path: Path, key: dict[str, str], profile: str = "default") -> None:
    """Replace the shared credentials file at once, as a rotating sidecar does."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"[{profile}]\naws_access_key_id = {key['AccessKeyId']}\n"
                   f"aws_secret_access_key = {key['SecretAccessKey']}\n")
    os.replace(tmp, path)


@pytest.fixture(scope="module")
def iam_moto() -> Iterator[IamMoto]:
    server = IamMoto()
    yield server
    server.stop()


@pytest.fixture
def credentials_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """AWS_SHARED_CREDENTIALS_FILE for this process and the mounts it starts; no env keys."""
    path = tmp_path / "credentials"
    config = tmp_path / "config"
    config.write_text("")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(path))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return path
