"""Report uploads stream from disk: bounded memory, every byte checked, clear failures."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from slack_sdk.web import WebClient

from tests.slackapp.fake_slack import FakeSlack
from trailseal.errors import SlackError
from trailseal.slackapp.upload import Upload, share_files

HOME = "T0HOME"


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack(HOME, "Home Org") as server:
        server.add_channel("C1", "general", members=[])
        yield server


def web_for(fake: FakeSlack) -> WebClient:
    return WebClient(token="xoxb-test", base_url=fake.base_url)


def big_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 1 << 20))
            f.write(block)
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


def test_a_large_file_is_uploaded_whole_in_bounded_memory(tmp_path: Path, fake: FakeSlack) -> None:
    size = 48 * 1024 * 1024
    sha = big_file(tmp_path / "rows.csv", size)
    (tmp_path / "bundle.zip").write_bytes(b"PK small")
    web = web_for(fake)
    tracemalloc.start()
    try:
        ids = share_files(
            web,
            [Upload(tmp_path / "rows.csv", "rows"), Upload(tmp_path / "bundle.zip", "bundle")],
            "C1",
            "1700000000.000001",
            "the comment",
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The fake Slack runs in this process and reads in 64 KiB blocks; a client that read
    # the file whole (as files_upload_v2 does) would peak above its 48 MiB.
    assert peak < 8 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB while uploading 48 MiB"
    rows, bundle = (fake.files[i] for i in ids)
    assert (rows.received, rows.sha256, rows.data) == (size, sha, None)
    assert bundle.data == b"PK small"
    assert rows.shared_to == bundle.shared_to == ["C1"]
    assert rows.thread_ts == "1700000000.000001"
    assert (rows.title, bundle.title) == ("rows", "bundle")
    assert [c.method for c in fake.calls if c.method != "upload"] == [
        "files.getUploadURLExternal",
        "files.getUploadURLExternal",
        "files.completeUploadExternal",
    ]


def test_a_refused_upload_names_the_file_and_shares_nothing(
    tmp_path: Path, fake: FakeSlack
) -> None:
    path = tmp_path / "rows.csv"
    path.write_bytes(b"a,b\n")
    web = web_for(fake)
    first = share_files(web, [Upload(path, "rows")], "C1", None, "x")
    # The fake answers 404 for a file id that already has its bytes: reuse that URL.
    fake_id = first[0]
    fake.files[fake_id].shared_to.clear()

    def get_url(**_: object) -> dict[str, str]:
        return {"upload_url": f"{fake.origin}/upload/v1/{fake_id}", "file_id": fake_id}

    web.files_getUploadURLExternal = get_url  # type: ignore[method-assign,assignment]
    with pytest.raises(SlackError, match=r"refused the upload of rows\.csv \(HTTP 404\)") as err:
        share_files(web, [Upload(path, "rows")], "C1", None, "x")
    assert err.value.code == "http_404"
    assert not fake.files[fake_id].shared_to


def test_a_slack_error_names_the_step(tmp_path: Path, fake: FakeSlack) -> None:
    path = tmp_path / "rows.csv"
    path.write_bytes(b"a,b\n")
    fake.fail("files.getUploadURLExternal", "invalid_auth")
    with pytest.raises(SlackError, match=r"files\.getUploadURLExternal failed: invalid_auth"):
        share_files(web_for(fake), [Upload(path, "rows")], "C1", None, "x")


def test_an_upload_url_that_is_not_http_is_refused(tmp_path: Path, fake: FakeSlack) -> None:
    path = tmp_path / "rows.csv"
    path.write_bytes(b"a,b\n")
    web = web_for(fake)

    def get_url(**_: object) -> dict[str, str]:
        return {"upload_url": f"file://{path}", "file_id": "F1"}

    web.files_getUploadURLExternal = get_url  # type: ignore[method-assign,assignment]
    with pytest.raises(SlackError, match="no usable upload_url"):
        share_files(web, [Upload(path, "rows")], "C1", None, "x")


def test_an_unreachable_upload_url_is_a_slack_error(tmp_path: Path, fake: FakeSlack) -> None:
    path = tmp_path / "rows.csv"
    path.write_bytes(b"a,b\n")
    web = web_for(fake)

    def get_url(**_: object) -> dict[str, str]:
        return {"upload_url": "http://127.0.0.1:9/upload/v1/F1", "file_id": "F1"}

    web.files_getUploadURLExternal = get_url  # type: ignore[method-assign,assignment]
    with pytest.raises(SlackError, match=r"uploading rows\.csv to Slack failed") as err:
        share_files(web, [Upload(path, "rows")], "C1", None, "x")
    assert err.value.code == "upload_failed"
