"""Shared fixtures: the real model, a real index of the seeds in a temporary folder."""

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from embeddings.encoder import Encoder
from service.config import PROJECT_ROOT, Settings
from service.embed import Encoders
from service.engine import build_index, open_encoders, open_searcher, open_tokenizer, source_files
from service.search import Searcher
from service.tokenize import WordTokenizer
from tests.browser import CHROMIUM, CHROMIUM_ARGS, csp_violations


def make_settings(index_dir: Path, **overrides: object) -> Settings:
    """Settings for a test: the project's model and vector cache, an index and an uploads folder of its own."""
    overrides = {"uploads_dir": index_dir.parent / f"{index_dir.name}-uploads", **overrides}
    return Settings(index_dir=index_dir, cache_dir=PROJECT_ROOT / "data" / "cache", **overrides)


@pytest.fixture(scope="session", autouse=True)
def private_uploads_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Commands run by tests never read or write the real data/uploads (tests give their own dirs)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJQA_UPLOADS_DIR", str(tmp_path_factory.mktemp("uploads-unused")))
        yield


def write(folder: Path, name: str, text: str) -> Path:
    """A UTF-8 text file made for a test."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")
    return folder / name


def run_cli(settings: Settings, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    """`python -m service.cli ARGS` in a subprocess, on the settings' index, cache and uploads."""
    env = {
        **os.environ,
        "DJQA_INDEX_DIR": str(settings.index_dir),
        "DJQA_CACHE_DIR": str(settings.cache_dir),
        "DJQA_UPLOADS_DIR": str(settings.uploads_dir),
        **extra_env,
    }
    command = [sys.executable, "-m", "service.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=PROJECT_ROOT, timeout=180)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(settings: Settings, log: Path, **extra_env: str) -> tuple[str, subprocess.Popen[bytes]]:
    """Start a real `dangjian-qa serve` on a free port and the settings' folders; returns its URL once healthy."""
    env = {
        **os.environ,
        "DJQA_INDEX_DIR": str(settings.index_dir),
        "DJQA_CACHE_DIR": str(settings.cache_dir),
        "DJQA_UPLOADS_DIR": str(settings.uploads_dir),
        **extra_env,
    }
    port = free_port()
    with log.open("ab") as output:
        command = [sys.executable, "-m", "service.cli", "serve", "--port", str(port)]
        server = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"服务启动失败（退出码 {server.returncode}）：\n{log.read_text(errors='replace')}")
        if time.monotonic() > deadline:
            server.kill()
            raise RuntimeError(f"服务 90 秒内未就绪：\n{log.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(f"{url}/api/health", timeout=2) as response:
                if response.status == 200:
                    return url, server
        except OSError:
            time.sleep(0.2)


def stop_server(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


@contextlib.contextmanager
def live_server(settings: Settings, log: Path, **extra_env: str) -> Iterator[str]:
    """A real `dangjian-qa serve` on a free port and the settings' folders; yields its base URL."""
    url, server = start_server(settings, log, **extra_env)
    try:
        yield url
    finally:
        stop_server(server)


@contextlib.contextmanager
def milvus_lite_server(data_dir: Path, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Milvus Lite's gRPC server (`python -m milvus_lite server`) on a port, shared by several processes."""
    command = [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data_dir), "--host", "127.0.0.1"]
    with log.open("ab") as output:
        server = subprocess.Popen([*command, "--port", str(port)], stdout=output, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    try:
        while True:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Milvus Lite 未能启动：\n{log.read_text(errors='replace')}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.2)
        yield server
    finally:
        stop_server(server)


@pytest.fixture
def private_settings(tmp_path: Path, seed_settings: Settings) -> Settings:
    """A private copy of the seed index, free to change, and an empty uploads folder."""
    shutil.copytree(seed_settings.index_dir, tmp_path / "index")
    return seed_settings.model_copy(update={"index_dir": tmp_path / "index", "uploads_dir": tmp_path / "uploads"})


@pytest.fixture(scope="session")
def encoders() -> Encoders:
    """The configured embedding models (m3e-small and multilingual-e5-small by default)."""
    # One thread per model, as index builds use them: tests build indexes (the archive slice's among them).
    return open_encoders(make_settings(PROJECT_ROOT / "data" / "unused"), build=True)


@pytest.fixture(scope="session")
def encoder(encoders: Encoders) -> Encoder:
    """m3e-small's ONNX encoder, for the tests of that encoder."""
    return encoders["m3e-small"]


@pytest.fixture(scope="session")
def tokenizer() -> WordTokenizer:
    return open_tokenizer(make_settings(PROJECT_ROOT / "data" / "unused"))


@pytest.fixture(scope="session")
def seed_settings(tmp_path_factory: pytest.TempPathFactory, encoders: Encoders, tokenizer: WordTokenizer) -> Settings:
    """Settings whose index holds the five seed documents."""
    settings = make_settings(tmp_path_factory.mktemp("seed-index") / "index")
    build_index(source_files(settings.seeds_dir), settings, encoders, tokenizer)
    return settings


@pytest.fixture(scope="session")
def searcher(seed_settings: Settings, encoders: Encoders, tokenizer: WordTokenizer) -> Searcher:
    return open_searcher(seed_settings, encoders, tokenizer)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's headless Chromium, one per browser test module."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser, base_url: str) -> Iterator[Page]:
    """A fresh page on the module's `base_url`; fails the test on a script error or a CSP violation."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.extend(csp_violations([message.text])))
    page.goto(base_url)
    yield page
    context.close()
    assert not errors, f"页面脚本出错或违反内容安全策略：{errors}"
