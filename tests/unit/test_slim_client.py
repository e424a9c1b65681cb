"""The mount's botocore session loads less (boto3_client.slim_down) and resolves and signs
exactly as a whole one does (issue 16: idle RSS)."""

from __future__ import annotations

import re

import botocore.session
import pytest

from s3fsmpu.store.boto3_client import ENDPOINT_SERVICES, slim_down

CASES = [("s3", "us-east-1"), ("s3", "us-west-2"), ("s3", "cn-north-1"), ("s3", "us-gov-west-1"),
         ("s3", "eu-central-1"), ("sts", "us-east-1"), ("sts", "eu-west-1"), ("sso", "us-east-1")]


def resolved(session: botocore.session.Session) -> list[str]:
    out = []
    for service, region in CASES:
        client = session.create_client(service, region_name=region, aws_access_key_id="a", aws_secret_access_key="b")
        out.append(client.meta.endpoint_url)
        if service == "s3":
            url = client.generate_presigned_url("get_object", Params={"Bucket": "bkt", "Key": "k"}, ExpiresIn=60)
            out.append(re.sub(r"(X-Amz-Date|X-Amz-Signature|Signature|Expires)=[^&]*", "", url))
    return out


def test_a_slim_session_resolves_like_a_whole_one() -> None:
    whole = resolved(botocore.session.Session())
    slim = botocore.session.Session()
    assert slim_down(slim)  # False: botocore's internals changed, and the mount uses its data whole
    assert resolved(slim) == whole


def test_what_a_slim_session_keeps() -> None:
    session = botocore.session.Session()
    assert slim_down(session)
    resolver = session._get_internal_component("endpoint_resolver")
    kept = {name for p in resolver._endpoint_data["partitions"] for name in p["services"]}
    assert kept and kept <= ENDPOINT_SERVICES
    model = session.get_component("data_loader").load_service_model("s3", "service-2")
    assert model["operations"]["PutObject"]["documentation"] == ""


@pytest.mark.parametrize("operation", ["PutObject", "CompleteMultipartUpload", "ListObjectsV2"])
def test_a_slim_session_still_builds_requests(operation: str) -> None:
    session = botocore.session.Session()
    slim_down(session)
    client = session.create_client("s3", region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b")
    assert client.meta.service_model.operation_model(operation).input_shape is not None
