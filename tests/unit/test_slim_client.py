"""The mount's botocore session loads botocore's data cut to what a mount uses
(store/slim_botocore.py), from a kept copy after the first time, and resolves, signs and
builds requests exactly as a whole one does (issue 16: idle RSS)."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import botocore.session
import pytest

import s3fsmpu
from s3fsmpu.store import slim_botocore
from s3fsmpu.store.slim_botocore import ENDPOINT_SERVICES, OPERATIONS, install

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


def slim_session(keep_dir: str | None) -> botocore.session.Session:
    session = botocore.session.Session()
    assert install(session, keep_dir)  # False: botocore's internals changed; the mount uses its data whole
    return session


def loaded(session: botocore.session.Session) -> tuple[Any, Any]:
    loader = session.get_component("data_loader")
    return loader.load_data("endpoints"), loader.load_service_model("s3", "service-2")


def count_whole_parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the files botocore's own loader parses in this process from now on."""
    parsed: list[str] = []
    whole_load = botocore.loaders.JSONFileLoader.load_file

    def counting(self: Any, file_path: str) -> Any:
        parsed.append(os.path.basename(file_path))
        return whole_load(self, file_path)

    monkeypatch.setattr(botocore.loaders.JSONFileLoader, "load_file", counting)
    return parsed


@pytest.mark.parametrize("kept", [False, True], ids=["cut-now", "kept-cut"])
def test_a_slim_session_resolves_like_a_whole_one(tmp_path: Path, kept: bool) -> None:
    whole = resolved(botocore.session.Session())
    if kept:
        loaded(slim_session(str(tmp_path)))  # writes the cut
    assert resolved(slim_session(str(tmp_path))) == whole


def test_what_a_slim_session_keeps(tmp_path: Path) -> None:
    endpoints, model = loaded(slim_session(str(tmp_path)))
    kept = {name for p in endpoints["partitions"] for name in p["services"]}
    assert {"s3", "sts"} <= kept <= ENDPOINT_SERVICES
    assert model["operations"]["PutObject"]["documentation"] == ""
    assert set(model["operations"]) == OPERATIONS
    assert "SelectObjectContentRequest" not in model["shapes"]  # an operation the mount never sends
    assert len(list(tmp_path.iterdir())) == 2


def test_the_next_session_reads_the_kept_cut_and_a_changed_source_is_cut_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = loaded(slim_session(str(tmp_path)))
    parsed = count_whole_parses(monkeypatch)
    again = loaded(slim_session(str(tmp_path)))
    assert json.dumps(again) == json.dumps(first)
    assert "endpoints" not in parsed and "service-2" not in parsed  # neither parsed whole
    # another botocore (or the same file changed): the kept cut is not that file's
    monkeypatch.setattr(botocore, "__version__", botocore.__version__ + ".next")
    loaded(slim_session(str(tmp_path)))
    assert "endpoints" in parsed and "service-2" in parsed
    assert len(list(tmp_path.iterdir())) == 4


def test_the_first_session_has_a_child_parse_the_whole_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole parse's peak stays in the allocator's arenas for good: it is the child's."""
    parsed = count_whole_parses(monkeypatch)
    endpoints, model = loaded(slim_session(str(tmp_path)))
    assert set(model["operations"]) == OPERATIONS and endpoints["partitions"]
    assert "endpoints" not in parsed and "service-2" not in parsed
    assert len(list(tmp_path.iterdir())) == 2


@pytest.mark.parametrize("damage", ["cut short", "valid JSON, not a cut"])
def test_a_damaged_kept_cut_is_not_used(tmp_path: Path, damage: str) -> None:
    first = loaded(slim_session(str(tmp_path)))
    for f in tmp_path.iterdir():
        f.write_text(f.read_text()[:1000] if damage == "cut short" else '{"operations": {}, "partitions": 1}')
    assert json.dumps(loaded(slim_session(str(tmp_path)))) == json.dumps(first)


def test_a_cut_that_fails_halfway_gives_botocore_its_whole_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """A botocore whose data this cut does not know: the mount uses the data whole."""
    def broken(data: dict[str, Any]) -> bool:
        data["operations"].pop("PutObject")
        raise KeyError("a shape this cut does not know")

    monkeypatch.setitem(slim_botocore.CUTS, os.path.join("s3", "2006-03-01", "service-2"),
                        (broken, slim_botocore.looks_like_cut_s3_model))
    _, model = loaded(slim_session(None))
    assert "PutObject" in model["operations"] and "SelectObjectContent" in model["operations"]


def test_a_source_this_cut_does_not_know_is_noted_so_no_later_start_tries_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A botocore whose S3 model lacks an operation the cut keeps: the first start has the
    child find that out once and note it; later starts use the model whole at once."""
    children: list[str] = []

    def child(keep_dir: str) -> None:  # the child, in process: it must see the patched OPERATIONS
        children.append(keep_dir)
        loaded(slim_session_in_process(keep_dir))

    monkeypatch.setattr(slim_botocore, "_cut_in_a_child", child)
    monkeypatch.setattr(slim_botocore, "OPERATIONS", OPERATIONS | {"AnOperationThisModelLacks"})
    s3_model = os.path.join("s3", "2006-03-01", "service-2")
    cut, looks_cut = slim_botocore.CUTS[s3_model]
    tries: list[int] = []

    def counted(data: dict[str, Any]) -> bool:
        tries.append(1)
        return cut(data)

    monkeypatch.setitem(slim_botocore.CUTS, s3_model, (counted, looks_cut))
    for _ in range(3):
        endpoints, model = loaded(slim_session(str(tmp_path)))
        assert "SelectObjectContent" in model["operations"]  # whole
        assert {name for p in endpoints["partitions"] for name in p["services"]} <= ENDPOINT_SERVICES  # cut
    assert children == [str(tmp_path)]
    assert len(tries) == 1  # the child's: no start tried to cut it again
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".whole"]


def slim_session_in_process(keep_dir: str) -> botocore.session.Session:
    session = botocore.session.Session()
    assert install(session, keep_dir, cut_in_child=False)
    return session


def test_what_no_mount_used_for_a_month_goes_when_a_new_cut_is_kept(tmp_path: Path) -> None:
    """Each botocore upgrade keeps new cuts; the old ones go once unused for STALE_CUT."""
    month_ago = time.time() - slim_botocore.STALE_CUT - 86400
    for name, when in [("old.json", month_ago), ("old.whole", month_ago), ("crashed.tmp", month_ago),
                       ("recent.json", time.time() - 2 * 86400), ("notes.txt", month_ago)]:
        (tmp_path / name).write_text("{}")
        os.utime(tmp_path / name, (when, when))
    loaded(slim_session(str(tmp_path)))
    left = {p.name for p in tmp_path.iterdir()}
    assert left >= {"recent.json", "notes.txt"} and not left & {"old.json", "old.whole", "crashed.tmp"}
    cuts = [p for p in tmp_path.iterdir() if p.name not in ("recent.json", "notes.txt")]
    assert len(cuts) == 2
    for p in cuts:  # a cut read by a start is one in use: its mtime says so
        os.utime(p, (month_ago, month_ago))
    loaded(slim_session(str(tmp_path)))
    assert all(p.stat().st_mtime > time.time() - 600 for p in cuts)


def test_the_cache_dir_the_keep_dir_creates_is_private(tmp_path: Path) -> None:
    loaded(slim_session(str(tmp_path / "cache" / "botocore")))
    assert (tmp_path / "cache").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "cache" / "botocore").stat().st_mode & 0o777 == 0o700


def test_with_nowhere_to_keep_it_the_cut_is_made_each_time(tmp_path: Path) -> None:
    unwritable = tmp_path / "file"
    unwritable.write_text("")
    endpoints, model = loaded(slim_session(str(unwritable / "botocore")))
    assert set(model["operations"]) == OPERATIONS
    endpoints, model = loaded(slim_session(None))
    assert set(model["operations"]) == OPERATIONS


def test_the_mount_sends_only_operations_the_slim_model_keeps() -> None:
    """Every operation the store names in `_call` and every client method the package calls
    is kept: one left out would be an AttributeError on the first such request."""
    package = Path(s3fsmpu.__file__).parent
    named = set(re.findall(r'_call\(\s*"(\w+)"', (package / "store" / "boto3_store.py").read_text()))
    methods = {m for f in package.rglob("*.py") for m in re.findall(r"client\.([a-z]+(?:_[a-z0-9]+)+)\b", f.read_text())}
    client = slim_session(None).create_client("s3", region_name="us-east-1", aws_access_key_id="a",
                                              aws_secret_access_key="b")
    assert len(named) >= 14 and named <= OPERATIONS
    assert len(methods) >= 15
    for method in methods:
        assert hasattr(client, method), method
    # botocore itself sends CreateSession to sign requests to S3 Express directory buckets:
    # without it a mount of one failed at its first request (AttributeError)
    assert hasattr(client, "create_session")


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_a_slim_session_still_builds_requests(operation: str) -> None:
    client = slim_session(None).create_client("s3", region_name="us-east-1", aws_access_key_id="a",
                                              aws_secret_access_key="b")
    assert client.meta.service_model.operation_model(operation).input_shape is not None


def test_the_cut_is_checked_by_the_file_loader_of_this_botocore() -> None:
    """install() leans on the loader's `file_loader` and BUILTIN_DATA_PATH."""
    session = slim_session(None)
    loader = session.get_component("data_loader")
    assert isinstance(loader.file_loader, slim_botocore.SlimFiles)
    assert os.path.isfile(os.path.join(loader.BUILTIN_DATA_PATH, "endpoints.json"))
