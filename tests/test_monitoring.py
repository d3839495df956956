"""GET /metrics on a real server: requests by route template, encoding and search-stage times, the
served index, jobs by state, generation fallbacks; open by default, behind the key when asked."""

import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.config import Settings
from tests.conftest import live_server, run_cli, write

KEY = "metrics-key-4b1d"
MODELS = ("m3e-small", "multilingual-e5-small")


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, seed_settings: Settings) -> Settings:
    """A private copy of the seed index: the test adds a document to it."""
    folder = tmp_path_factory.mktemp("metrics")
    shutil.copytree(seed_settings.index_dir, folder / "index")
    return seed_settings.model_copy(update={"index_dir": folder / "index", "uploads_dir": folder / "uploads"})


@pytest.fixture(scope="module")
def url(settings: Settings) -> Iterator[str]:
    with live_server(settings, settings.index_dir.parent / "server.log") as base:
        yield base


def call(url: str, path: str, body: dict | None = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url + path, data=data, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of GET /metrics by (name, sorted labels)."""
    status, text = call(url, "/metrics")
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
    }


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def test_requests_are_counted_by_route_template_and_status(url: str) -> None:
    before = samples(url)
    assert call(url, "/api/search", {"query": "党风廉政建设主体责任", "top_k": 3})[0] == 200
    assert call(url, "/api/documents/no-such-document")[0] == 404
    assert call(url, "/no/such/path/at/all")[0] == 404
    after = samples(url)
    search = {"method": "POST", "route": "/api/search", "status": "200"}
    assert value(after, "djqa_http_requests_total", **search) == value(before, "djqa_http_requests_total", **search) + 1
    assert value(after, "djqa_http_request_duration_seconds_count", **search) >= 1
    assert value(after, "djqa_http_request_duration_seconds_sum", **search) > 0
    # The template, not the raw path: one series however many documents are asked for.
    document = {"method": "GET", "route": "/api/documents/{doc_id}", "status": "404"}
    assert value(after, "djqa_http_requests_total", **document) >= 1
    assert value(after, "djqa_http_requests_total", method="GET", route="unmatched", status="404") >= 1
    assert not any("no-such-document" in str(key) or "/no/such" in str(key) for key in after)


def test_encoding_and_every_search_stage_are_timed(url: str) -> None:
    before = samples(url)
    assert call(url, "/api/search", {"query": "如何推动党建与医疗业务深度融合", "mode": "hybrid"})[0] == 200
    after = samples(url)

    def grew(name: str, **labels: str) -> bool:
        return value(after, f"{name}_count", **labels) > value(before, f"{name}_count", **labels)

    for model in MODELS:
        assert grew("djqa_encode_seconds", model=model), model
        assert grew("djqa_search_stage_seconds", stage="dense", model=model), model
        assert grew("djqa_search_stage_seconds", stage="rescore", model=model), model
    for stage in ("lexical", "fusion", "rows"):
        assert grew("djqa_search_stage_seconds", stage=stage, model=""), stage


def test_served_index_and_jobs_are_reported_and_follow_a_new_version(url: str, settings: Settings) -> None:
    found = samples(url)
    health = json.loads(call(url, "/api/health")[1])
    assert value(found, "djqa_index_documents") == health["documents"]
    assert value(found, "djqa_index_passages") == health["passages"]
    assert value(found, "djqa_index_info", version=health["index_version"], store="faiss") == 1
    assert {"queued", "running", "done", "failed"} <= {
        dict(labels).get("state") for name, labels in found if name == "djqa_jobs"
    }

    folder = settings.index_dir.parent / "new-docs"
    write(folder, "metrics.txt", "检验科党支部推行“样本零差错”承诺制，党员带头落实双人核对，差错率逐季下降。\n")
    assert run_cli(settings, "add", str(folder)).returncode == 0
    time.sleep(1.2)  # the server looks for a new version at most once a second
    found = samples(url)
    assert value(found, "djqa_index_documents") == health["documents"] + 1
    assert value(found, "djqa_index_info", version=health["index_version"], store="faiss") == 0


def test_generation_fallbacks_are_counted_by_reason(url: str) -> None:
    before = samples(url)
    status, _ = call(url, "/api/ask", {"question": "如何推动党建与医疗业务深度融合", "mode": "generate"})
    assert status == 200
    after = samples(url)
    name = "djqa_generation_fallbacks_total"
    assert value(after, name, reason="llm_not_configured") == value(before, name, reason="llm_not_configured") + 1


def test_metrics_can_require_the_key(settings: Settings, tmp_path: Path) -> None:
    extra = {"DJQA_METRICS_REQUIRE_KEY": "true", "DJQA_API_KEY": KEY}
    with live_server(settings, tmp_path / "server.log", **extra) as base:
        status, body = call(base, "/metrics")
        assert status == 401 and json.loads(body)["error"]["code"] == "unauthorized"
        status, body = call(base, "/metrics", headers={"Authorization": f"Bearer {KEY}"})
        assert status == 200 and b"djqa_index_passages" in body
        assert call(base, "/api/health")[0] == 200  # health stays open
