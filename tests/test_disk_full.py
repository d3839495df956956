"""A full disk is 507 「磁盘空间不足」 and leaves the index untouched: a real ENOSPC from a small tmpfs."""

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.embed import Encoders
from service.http.app import create_app
from service.index import current_version
from service.tokenize import WordTokenizer

KEY = "disk-full-key"
WRITE = {"X-API-Key": KEY}
SPARE = 256 * 1024  # free space left on the disk beside the index: room for an upload, not for a new version


def tree_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


@pytest.fixture
def full_disk(tmp_path: Path, seed_settings: Settings) -> Iterator[Settings]:
    """The seed index on a tmpfs just large enough to hold it (and jobs and uploads beside it)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    size = tree_bytes(seed_settings.index_dir) + SPARE
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.decode(errors='replace')}")
    try:
        shutil.copytree(seed_settings.index_dir, disk / "index")
        yield seed_settings.model_copy(
            update={"index_dir": disk / "index", "uploads_dir": disk / "uploads", "api_key": KEY}
        )
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.fixture
def client(full_disk: Settings, encoders: Encoders, tokenizer: WordTokenizer) -> Iterator[TestClient]:
    with TestClient(create_app(full_disk, encoders, tokenizer), raise_server_exceptions=False) as test_client:
        yield test_client


def index_state(settings: Settings) -> tuple[str | None, list[str]]:
    return current_version(settings.index_dir), sorted(p.name for p in (settings.index_dir / "versions").iterdir())


def assert_disk_full(response: httpx.Response | dict) -> None:
    error = response["error"] if isinstance(response, dict) else response.json()["error"]
    assert error["code"] == "insufficient_storage" and "磁盘空间不足" in error["message"]


def test_upload_job_on_a_full_disk_fails_507_and_leaves_the_index(client: TestClient, full_disk: Settings) -> None:
    before = index_state(full_disk)
    text = "消化内科党支部开展“胃肠健康进社区”义诊活动，党员医生轮流坐诊。\n".encode()
    response = client.post("/api/documents", files={"files": ("义诊.txt", text)}, headers=WRITE)
    assert response.status_code == 202, response.text
    deadline = time.monotonic() + 60
    while (job := client.get(response.headers["location"], headers=WRITE).json())["state"] in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert job["state"] == "failed" and job["status"] == 507, job
    assert_disk_full(job)
    assert index_state(full_disk) == before, "no new version, no half-written staging folder"
    assert not list(full_disk.uploads_dir.glob("*")), "no original and no staged copy left behind"
    assert client.get("/api/health").json()["documents"] == 5
    assert client.post("/api/search", json={"query": "义诊"}).status_code == 200


def test_upload_larger_than_the_free_space_is_507_at_once(client: TestClient, full_disk: Settings) -> None:
    before = index_state(full_disk)
    big = "党建引领医院高质量发展。\n".encode() * (2 * SPARE // 36)
    response = client.post("/api/documents", files={"files": ("大文件.txt", big)}, headers=WRITE)
    assert response.status_code == 507, response.text
    assert_disk_full(response)
    assert index_state(full_disk) == before
    assert not list(full_disk.jobs_path.glob("*")), "the partial upload is removed"


def test_delete_on_a_full_disk_is_507_and_keeps_the_document(client: TestClient, full_disk: Settings) -> None:
    before = index_state(full_disk)
    doc_id = client.get("/api/documents").json()["documents"][0]["doc_id"]
    response = client.delete(f"/api/documents/{doc_id}", headers=WRITE)
    assert response.status_code == 507, response.text
    assert_disk_full(response)
    assert index_state(full_disk) == before
    assert client.get(f"/api/documents/{doc_id}").status_code == 200
