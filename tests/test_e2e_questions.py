"""The feedback buttons and the administrator's 问题反馈 view in headless Chromium against a real server."""

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from service.config import Settings
from tests.browser import CHROMIUM, ask, shot
from tests.conftest import live_server

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium 未安装（`make browser` 安装）")

API_KEY = "questions-browser-key"
SPOKEN = "党员一人包几个同事、一个科一个科盯着，有这种分片管的办法吗"
TARGET = "网格化"
UNANSWERABLE = "今天天气怎么样，会下雨吗"
ANSWERED = "如何推动党建与医疗业务深度融合"


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory, seed_settings: Settings) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("browser-questions")
    shutil.copytree(seed_settings.index_dir, folder / "index")
    settings = seed_settings.model_copy(update={"index_dir": folder / "index", "uploads_dir": folder / "uploads"})
    with live_server(settings, folder / "server.log", DJQA_API_KEY=API_KEY) as url:
        yield url


def test_users_feedback_and_the_administrator_links_and_marks_questions(page: Page, base_url: str) -> None:
    ask(page, ANSWERED)
    page.locator("#answer .feedback-btn[data-helpful=true]").click()
    expect(page.locator("#answer .feedback-note")).to_have_text("谢谢反馈")
    first = page.locator(".result-card").first
    first.locator(".answered-btn").click()
    expect(first.locator(".answered-btn")).to_have_text("谢谢反馈")
    ask(page, SPOKEN)  # refused, answered with low confidence, or answered and then marked 没用
    if page.locator("#answer").is_visible():
        page.locator("#answer .feedback-btn[data-helpful=false]").click()
        expect(page.locator("#answer .feedback-note")).to_have_text("谢谢反馈")
    ask(page, UNANSWERABLE)

    page.goto(f"{base_url}/?view=manage")
    page.fill("#api-key", API_KEY)
    page.click("#questions-btn")
    spoken = page.locator(".question-item", has_text=SPOKEN)
    spoken.wait_for(timeout=10_000)
    assert "次 · 最近" in spoken.inner_text()
    assert page.locator(".question-item", has_text=ANSWERED).count() == 0, "有用 is not a problem"
    spoken.locator(".question-query").fill("党员联系职工网格化管理")
    spoken.locator(".find-btn").click()
    candidate = spoken.locator(".candidate", has_text=TARGET).first
    candidate.wait_for(timeout=10_000)
    shot(page, "question-feedback")
    candidate.locator(".link-btn").click()
    spoken.wait_for(state="detached", timeout=60_000)
    assert "已把" in page.inner_text("#status")
    page.locator(".question-item", has_text=UNANSWERABLE).locator(".out-of-scope-btn").click()
    page.locator(".question-item", has_text=UNANSWERABLE).wait_for(state="detached", timeout=10_000)

    page.goto(base_url)
    ask(page, SPOKEN)
    top = page.locator(".result-card").first
    assert TARGET in top.inner_text()
    expect(top.locator(".matched-question")).to_have_text(f"关联问题：{SPOKEN}")
    ask(page, UNANSWERABLE)
    assert "文件中没有" in page.inner_text("#status")
    page.goto(f"{base_url}/?view=manage")
    page.fill("#api-key", API_KEY)
    page.click("#questions-btn")
    expect(page.locator("#status")).not_to_contain_text("正在加载")
    assert page.locator(".question-item", has_text=SPOKEN).count() == 0
    assert page.locator(".question-item", has_text=UNANSWERABLE).count() == 0


def test_feedback_buttons_are_shown_only_with_a_question_log(
    browser: Browser, tmp_path: Path, seed_settings: Settings
) -> None:
    settings = seed_settings.model_copy(update={"uploads_dir": tmp_path / "uploads"})
    with live_server(settings, tmp_path / "server.log", DJQA_QUESTION_LOG="false") as url:
        context = browser.new_context(locale="zh-CN")
        page = context.new_page()
        page.goto(url)
        ask(page, SPOKEN)
        assert page.locator(".result-card").count() > 0
        assert page.locator(".answered-btn").count() == 0 and page.locator(".feedback-btn").count() == 0
        context.close()
