"""A streamed, generated answer reaches the page in headless Chromium: from the scripted model server,
and from a real one (llama-cpp-python's OpenAI-compatible server with SmolLM2-135M-Instruct).

The real server runs in its own venv: `scripts/llm_test_server.sh` makes it and prints the two
variables this test reads (DJQA_TEST_LLAMA_PYTHON, DJQA_TEST_LLM_MODEL); `.ci/run` exports them.
SmolLM2 is English-only, so its Chinese answers are mostly removed by the grounding check: the test
asserts the protocol (citations, streamed text in the answer box, a final answer that is either the
checked generated text or the extractive fallback with its reason), not the wording.
"""

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser

from service.config import Settings
from tests.browser import CHROMIUM, csp_violations, shot
from tests.conftest import free_port, live_server, stop_server
from tests.llm_stub import StubModelServer, passages_in, reply

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium 未安装（`make browser` 安装）")

QUESTION = "如何推动党建与医疗业务深度融合"
INVENTED = "卫健系统党委决定每年向每名党员发放一千元学习补贴。"
LLAMA_PYTHON = os.environ.get("DJQA_TEST_LLAMA_PYTHON")
LLM_MODEL = os.environ.get("DJQA_TEST_LLM_MODEL")
LLAMA_MISSING = (
    "DJQA_TEST_LLAMA_PYTHON / DJQA_TEST_LLM_MODEL 未设置（运行 scripts/llm_test_server.sh 并导出它打印的变量）"
)
# The first request on a busy 2-core machine evaluates the whole prompt from scratch: allow minutes.
LLAMA_TIMEOUT_S = 240


def first_statement(text: str) -> str:
    return next(piece for piece in text.replace("；", "。").split("。") if len(piece) >= 15) + "。"


def llama_server(log: Path) -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server on a free port; yields its /v1 URL once it answers."""
    port = free_port()
    command = [LLAMA_PYTHON, "-m", "llama_cpp.server", "--model", LLM_MODEL, "--host", "127.0.0.1"]
    command += ["--port", str(port), "--n_ctx", "4096", "--verbose", "False"]
    with log.open("ab") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)  # type: ignore[arg-type]
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"llama 服务未就绪：\n{log.read_text(errors='replace')[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=2):
                    break
            except OSError:
                time.sleep(0.3)
        yield url
    finally:
        stop_server(server)


@pytest.fixture(scope="module", params=["stub", "llama"])
def model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(kind, OpenAI-compatible base URL): the scripted server, or the real llama one when it is installed."""
    if request.param == "stub":
        stub = StubModelServer().start()
        # One supported sentence and one invented: the check removes the second, so the final text differs.
        stub.script = lambda prompt: reply(
            *first_statement(passages_in(prompt)[1]), "【1】", INVENTED[:12], INVENTED[12:], "【1】"
        )
        yield "stub", stub.url
        stub.stop()
        return
    if not (LLAMA_PYTHON and LLM_MODEL):
        pytest.skip(LLAMA_MISSING)
    yield from (("llama", url) for url in llama_server(tmp_path_factory.mktemp("llama") / "llama.log"))


@pytest.fixture(scope="module")
def base_url(
    model: tuple[str, str], tmp_path_factory: pytest.TempPathFactory, seed_settings: Settings
) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("llm-page")
    llm = {
        "DJQA_LLM_BASE_URL": model[1],
        "DJQA_LLM_MODEL": "smollm2",
        "DJQA_LLM_API_KEY": "sk-e2e-not-a-real-key",
        "DJQA_LLM_TIMEOUT_S": str(LLAMA_TIMEOUT_S),
        "DJQA_LLM_MAX_TOKENS": "64",
        "DJQA_LLM_CONTEXT_CHARS": "600",  # SmolLM2's byte-level tokenizer: ~2 tokens a Chinese character
    }
    with live_server(seed_settings, folder / "server.log", **llm) as url:
        yield url


def test_streamed_answer_protocol(base_url: str, model: tuple[str, str]) -> None:
    """citations first, then text deltas, then the final checked answer (or the extractive fallback)."""
    events = []
    with httpx.stream(
        "POST", f"{base_url}/api/ask", json={"question": QUESTION, "stream": True}, timeout=LLAMA_TIMEOUT_S + 30
    ) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line[len("event: ") :]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[len("data: ") :])))
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "citations" and events[0][1]["citations"] and kinds[-1] == "final"
    assert "delta" in kinds, "the model's text streamed before the final answer"
    final = events[-1][1]
    assert final["found"]
    assert final["mode_used"] == "generate" or final["fallback_reason"]["code"] in ("ungrounded", "llm_empty")
    if model[0] == "stub":
        assert final["mode_used"] == "generate" and final["removed_sentences"] == 1 and INVENTED not in final["answer"]


def test_streamed_answer_reaches_the_page(browser: Browser, base_url: str, model: tuple[str, str]) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.extend(csp_violations([message.text])))
    try:
        page.goto(base_url)
        page.locator("#answer-modes").wait_for(state="visible", timeout=10_000)
        assert page.locator("input[name=answer-mode][value=generate]").is_checked()
        page.fill("#q", QUESTION)
        page.press("#q", "Enter")
        answer = page.locator("#answer[data-mode-used]")
        answer.wait_for(timeout=(LLAMA_TIMEOUT_S + 30) * 1000)
        assert int(answer.get_attribute("data-deltas") or 0) >= 1, "streamed text was rendered in the answer box"
        assert answer.locator("button.cite").count() >= 1 and "参考答案" in answer.inner_text()
        if answer.get_attribute("data-mode-used") == "extract":
            assert "摘编答案" in answer.locator(".answer-note").inner_text()
        else:
            assert "语言模型" in answer.locator(".disclaimer").inner_text()
        if model[0] == "stub":
            assert INVENTED not in answer.inner_text() and "已删去 1 句" in answer.inner_text()
        shot(page, f"generated-answer-{model[0]}")
        page.click("input[name=answer-mode][value=extract]")
        page.locator("#answer[data-mode-used=extract]").wait_for(timeout=20_000)
        assert page.locator("#answer .answer-note").count() == 0
    finally:
        context.close()
    assert not errors, f"页面脚本出错或违反内容安全策略：{errors}"
