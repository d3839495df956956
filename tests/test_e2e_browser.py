"""The page in a real headless Chromium against a real server on the seed index (plus one hostile file)."""

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from service.config import Settings
from service.embed import Encoders
from service.engine import build_index, source_files
from service.tokenize import WordTokenizer
from service.update import add_files
from tests.browser import CHROMIUM, ask, csp_violations, shot
from tests.conftest import live_server, run_cli, write

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium 未安装（`make browser` 安装）")

QUESTION = "如何推动党建与医疗业务深度融合"
HOSTILE_WORD = "防火墙演练"
API_KEY = "browser-test-key"
HOSTILE_DOCUMENT = f"""关于{HOSTILE_WORD}的工作总结
一、基本情况
今年组织开展{HOSTILE_WORD}，<script>window.__injected = 1</script>参加人员覆盖全部党支部。
二、存在问题
{HOSTILE_WORD}记录中出现<img src=x onerror="window.__injected = 2">这样的文字，页面应原样显示。
"""


@pytest.fixture(scope="module")
def base_url(
    tmp_path_factory: pytest.TempPathFactory, seed_settings: Settings, encoders: Encoders, tokenizer: WordTokenizer
) -> Iterator[str]:
    """A real `dangjian-qa serve` on a free port, indexing the seeds and a document full of markup.

    Uploads are on (DJQA_API_KEY) and kept in the test's own folder.
    """
    folder = tmp_path_factory.mktemp("browser")
    hostile = folder / "hostile.txt"
    hostile.write_text(HOSTILE_DOCUMENT, encoding="utf-8")
    settings = seed_settings.model_copy(update={"index_dir": folder / "index", "uploads_dir": folder / "uploads"})
    build_index([*source_files(seed_settings.seeds_dir), hostile], settings, encoders, tokenizer)
    with live_server(settings, folder / "server.log", DJQA_API_KEY=API_KEY) as url:
        yield url


def test_question_shows_cited_answer_and_highlighted_results(page: Page) -> None:
    ask(page, QUESTION)
    cards = page.locator(".result-card")
    assert cards.count() == 5
    assert cards.first.locator(".passage-text mark").count() > 0
    answer = page.locator("#answer")
    assert answer.is_visible() and "参考答案" in answer.inner_text()
    assert answer.locator("button.cite").count() >= 1 and "【1】" in answer.inner_text()
    assert parse_qs(urlparse(page.url).query)["q"] == [QUESTION]
    assert "找到 5 条相关段落" in page.inner_text("#status")
    shot(page, "search-desktop")


def test_context_opens_and_full_text_marks_the_passage(page: Page) -> None:
    ask(page, QUESTION)
    card = page.locator(".result-card").nth(1)
    passage_id = card.get_attribute("data-passage-id")
    toggle = card.locator(".context-toggle")
    toggle.click()
    assert toggle.get_attribute("aria-expanded") == "true"
    assert card.locator(".context-before").is_visible() and card.locator(".context-after").is_visible()
    shot(page, "context-open")
    card.locator("a.doc-link").click()
    target = page.locator("#doc-view .passage.target")
    target.wait_for(timeout=10_000)
    assert target.get_attribute("data-passage-id") == passage_id
    assert parse_qs(urlparse(page.url).query)["p"] == [passage_id]
    box = target.bounding_box()
    viewport = page.viewport_size
    assert box and box["y"] >= 0 and box["y"] + min(box["height"], 100) <= viewport["height"], "scrolled into view"
    shot(page, "document-view")
    page.click(".back-link")
    page.locator(".result-card").first.wait_for()
    assert parse_qs(urlparse(page.url).query)["q"] == [QUESTION]


def test_off_topic_question_says_not_found_once(page: Page) -> None:
    ask(page, "红烧肉怎么做好吃")
    assert page.locator("#answer").is_hidden() and page.locator("button.cite").count() == 0
    status = page.inner_text("#status")
    assert "未找到与该问题相关的内容" in status and "仅供参考" in status
    assert page.inner_text("main").count("未找到") == 1, "one not-found message, not two"
    shot(page, "not-found")


def test_each_models_rank_is_shown_in_the_explanation(page: Page) -> None:
    ask(page, QUESTION)
    why = page.locator(".result-card .why").first.inner_text()
    assert "m3e-small 第" in why and "multilingual-e5-small 第" in why and "关键词第" in why


def test_empty_question_asks_for_one(page: Page) -> None:
    page.fill("#q", "   ")
    page.press("#q", "Enter")
    assert "请输入问题" in page.inner_text("#status")
    assert page.locator(".result-card").count() == 0


def test_phone_width_has_no_horizontal_scroll(browser: Browser, base_url: str) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 740}, device_scale_factor=2, is_mobile=True)
    page = context.new_page()
    try:
        page.goto(f"{base_url}/?q={QUESTION}")
        page.locator(".result-card").first.wait_for(timeout=20_000)
        page.locator(".context-toggle").first.click()
        overflow = "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        assert page.evaluate(overflow) <= 0
        shot(page, "search-phone")
        page.locator("a.doc-link").first.click()
        page.locator("#doc-view .passage.target").wait_for(timeout=10_000)
        assert page.evaluate(overflow) <= 0
        shot(page, "document-phone")
    finally:
        context.close()


def test_markup_in_documents_is_shown_as_text(page: Page) -> None:
    ask(page, HOSTILE_WORD)
    card = page.locator(".result-card", has_text=HOSTILE_WORD).first
    assert "<script>" in card.inner_text() or "<img" in card.inner_text()
    card.locator("a.doc-link").click()
    page.locator("#doc-view .passage.target").wait_for(timeout=10_000)
    text = page.inner_text("#doc-view")
    assert "<script>window.__injected = 1</script>" in text and "<img src=x" in text
    assert page.locator("#main script, #main img").count() == 0
    assert page.evaluate("window.__injected") is None
    shot(page, "escaped-markup")


def test_manage_view_uploads_lists_and_deletes_a_document(page: Page, base_url: str, tmp_path: Path) -> None:
    """The upload runs as a job: a progress bar while its passages are encoded, then the result."""
    document = tmp_path / "病理科主题党日.txt"
    mark = uuid.uuid4().hex[:8]  # text no vector cache has seen, so the job takes a few seconds
    lines = [
        f"病理科党支部第{n}次“显微镜下的初心”主题党日（{mark}），党员轮流讲述疑难病例诊断故事。" for n in range(60)
    ]
    document.write_text("\n".join(lines) + "\n", encoding="utf-8")
    page.goto(f"{base_url}/?view=manage")
    page.locator("#doc-table tbody tr").first.wait_for(timeout=10_000)
    limits = page.inner_text("#upload-limits")
    assert "20 MB" in limits and "1,000,000 字" in limits and "2,000 页" in limits
    page.fill("#api-key", API_KEY)
    page.set_input_files("#upload-files", str(document))
    page.click("#upload-btn")
    page.locator(".job-label", has_text=re.compile(r"已编码 [1-9]\d* / 60 个段落")).wait_for(timeout=30_000)
    assert page.locator(".job-progress progress").is_visible()
    shot(page, "upload-progress")
    row = page.locator("#doc-table tbody tr", has_text="病理科主题党日.txt")
    row.wait_for(timeout=60_000)
    assert "新增 1" in page.inner_text("#status") and "病理科" in page.inner_text("#upload-result")
    page.once("dialog", lambda dialog: dialog.accept())
    row.locator(".delete-btn").click()
    row.wait_for(state="detached", timeout=30_000)
    assert "已删除" in page.inner_text("#status")
    assert page.locator("#doc-table tbody tr", has_text="病理科主题党日.txt").count() == 0


def test_limits_come_from_one_setting_for_api_cli_and_page(
    tmp_path: Path, seed_settings: Settings, browser: Browser
) -> None:
    """DJQA_MAX_TOP_K and DJQA_MAX_QUERY_CHARS change the API's schema and checks, the CLI and the page."""
    limits = {"DJQA_MAX_TOP_K": "7", "DJQA_DEFAULT_TOP_K": "3", "DJQA_MAX_QUERY_CHARS": "30"}
    with live_server(seed_settings, tmp_path / "server.log", **limits) as url:
        spec = httpx.get(f"{url}/openapi.json").json()
        top_k = next(p for p in spec["paths"]["/api/search"]["get"]["parameters"] if p["name"] == "top_k")
        assert top_k["schema"]["maximum"] == 7
        assert httpx.get(f"{url}/api/search", params={"q": "党建", "top_k": 8}).status_code == 422
        assert httpx.post(f"{url}/api/search", json={"query": "党建", "top_k": 7}).status_code == 200
        assert httpx.post(f"{url}/api/ask", json={"question": "党" * 31}).json()["error"]["code"] == "query_too_long"
        context = browser.new_context(locale="zh-CN")
        page = context.new_page()
        page.goto(url)
        # expect() polls from outside the page: a string predicate would be eval'd inside and break the CSP.
        expect(page.locator("#q")).to_have_attribute("maxlength", "30")
        options = page.eval_on_selector_all("#top-k option", "options => options.map(o => Number(o.value))")
        assert max(options) == 7 and page.input_value("#top-k") == "3"
        modes = page.eval_on_selector_all("input[name=mode]", "inputs => inputs.map(i => i.value)")
        assert modes == ["hybrid", "dense", "lexical"]
        context.close()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in limits.items():
            patch.setenv(name, value)
        assert run_cli(seed_settings, "search", "党建", "-k", "8").returncode == 2
        assert run_cli(seed_settings, "search", "党建", "-k", "7").returncode == 0


def test_api_docs_render_offline_with_an_authorize_button(browser: Browser, base_url: str) -> None:
    """/docs needs nothing beyond 127.0.0.1 (every other request is refused) and keeps the strict CSP."""
    context = browser.new_context(locale="zh-CN")
    page = context.new_page()
    requested: list[str] = []
    console: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.on("console", lambda message: console.append(message.text))
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(base_url) else route.abort())
    try:
        page.goto(f"{base_url}/docs")
        page.locator(".swagger-ui .info .title").wait_for(timeout=20_000)
        assert "党建问答 API" in page.inner_text(".swagger-ui .info .title")
        page.locator(".opblock-summary-path", has_text="/api/search").first.wait_for()
        page.click("button.authorize")
        dialog = page.locator(".modal-ux")
        dialog.wait_for()
        assert "BearerKey" in dialog.inner_text() and "X-API-Key" in dialog.inner_text()
        shot(page, "api-docs")
    finally:
        context.close()
    outside = [url for url in requested if not url.startswith((base_url, "data:"))]
    assert outside == [] and csp_violations(console) == []


def test_server_sends_security_headers_and_no_server_header(base_url: str) -> None:
    response = httpx.get(f"{base_url}/api/health")
    assert "server" not in response.headers
    assert "default-src 'self'" in response.headers["content-security-policy"]


RULES = "规章制度"
RULE_COUNT = 24  # with the five seeds: two pages of the document list (20 a page)


@pytest.fixture(scope="module")
def collections_url(
    tmp_path_factory: pytest.TempPathFactory, seed_settings: Settings, encoders: Encoders, tokenizer: WordTokenizer
) -> Iterator[str]:
    """A server on the seeds (collection default) and RULE_COUNT short rules in the collection 规章制度."""
    folder = tmp_path_factory.mktemp("browser-collections")
    settings = seed_settings.model_copy(update={"index_dir": folder / "index", "uploads_dir": folder / "uploads"})
    build_index(source_files(seed_settings.seeds_dir), settings, encoders, tokenizer)
    rules = [
        write(
            folder / "rules",
            f"规章第{n}号.txt",
            f"第{n}号规定：各级医疗机构应当落实党风廉政建设主体责任，医务人员不得收受患者红包，违者按第{n}条处理。\n",
        )
        for n in range(1, RULE_COUNT + 1)
    ]
    add_files(settings, encoders, tokenizer, rules, collection=RULES)
    with live_server(settings, folder / "server.log", DJQA_API_KEY=API_KEY) as url:
        yield url


def passage_docs(page: Page) -> set[str]:
    ids = page.locator(".result-card").evaluate_all("cards => cards.map(card => card.dataset.passageId)")
    return {passage_id.split(":")[0] for passage_id in ids}


def test_document_list_pages_filters_searches_and_sorts(browser: Browser, collections_url: str) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    page = context.new_page()
    page.goto(f"{collections_url}/?view=manage")
    rows = page.locator("#doc-table tbody tr")
    expect(page.locator("#doc-page-info")).to_have_text(f"第 1 / 2 页 · 共 {RULE_COUNT + 5} 篇", timeout=10_000)
    assert rows.count() == 20
    assert rows.first.locator(".col-collection").inner_text() == RULES, "newest first"
    page.click("#doc-next")
    expect(page.locator("#doc-page-info")).to_have_text(f"第 2 / 2 页 · 共 {RULE_COUNT + 5} 篇")
    expect(rows).to_have_count(RULE_COUNT + 5 - 20)
    assert page.locator("#doc-next").is_disabled()
    page.select_option("#doc-collection", "default")
    expect(page.locator("#doc-page-info")).to_have_text("第 1 / 1 页 · 共 5 篇")
    assert set(rows.locator(".col-collection").all_inner_texts()) == {"default"}
    assert page.locator("#doc-collection option", has_text=f"{RULES}（{RULE_COUNT} 篇）").count() == 1
    page.select_option("#doc-collection", RULES)
    page.fill("#doc-search", "第7号")
    expect(page.locator("#doc-page-info")).to_have_text("第 1 / 1 页 · 共 1 篇")
    assert "规章第7号" in rows.first.inner_text()
    page.fill("#doc-search", "")
    page.select_option("#doc-sort", "title")
    expect(page.locator("#doc-page-info")).to_have_text(f"第 1 / 2 页 · 共 {RULE_COUNT} 篇")
    titles = rows.locator(".col-title a").all_inner_texts()
    assert titles[:3] == ["第1号规定", "第2号规定", "第3号规定"] and titles[-1] == "第20号规定", "numbers in order"
    shot(page, "document-list-collections")
    context.close()


def test_search_scope_limits_results_to_one_collection(browser: Browser, collections_url: str) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    page = context.new_page()
    page.goto(collections_url)
    expect(page.locator("#scope option", has_text=f"{RULES}（{RULE_COUNT} 篇）")).to_have_count(1, timeout=10_000)
    page.select_option("#top-k", "10")
    ask(page, "党风廉政建设主体责任怎么落实")
    unscoped = passage_docs(page)
    assert any(doc.startswith("规章第") for doc in unscoped) and not all(doc.startswith("规章第") for doc in unscoped)
    page.select_option("#scope", RULES)  # searches again at once
    expect(page.locator("#status")).to_contain_text(f"在文档集「{RULES}」中找到 10 条", timeout=20_000)
    assert all(doc.startswith("规章第") for doc in passage_docs(page))
    assert parse_qs(urlparse(page.url).query)["c"] == [RULES]
    assert all(
        doc.startswith("规章第")
        for doc in page.locator("#answer .source-list a, #answer a").evaluate_all(
            "links => links.map(a => new URLSearchParams(a.search).get('doc')).filter(Boolean)"
        )
    )
    page.select_option("#scope", "default")
    expect(page.locator("#status")).to_contain_text("在文档集「default」中找到", timeout=20_000)
    assert not any(doc.startswith("规章第") for doc in passage_docs(page))
    page.reload()  # the scope is in the URL: a shared link searches the same collection
    expect(page.locator("#status")).to_contain_text("在文档集「default」中找到", timeout=20_000)
    assert page.locator("#scope").input_value() == "default"
    context.close()


def test_manage_view_uploads_into_a_new_collection(browser: Browser, collections_url: str, tmp_path: Path) -> None:
    document = tmp_path / "院感制度.txt"
    document.write_text("医院感染管理委员会每季度召开一次会议，党员科主任带头落实手卫生和消毒隔离制度。\n", "utf-8")
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    page = context.new_page()
    page.goto(f"{collections_url}/?view=manage")
    expect(page.locator("#doc-page-info")).to_contain_text("共", timeout=10_000)
    page.fill("#api-key", API_KEY)
    page.fill("#upload-collection", "院感管理")
    page.set_input_files("#upload-files", str(document))
    page.click("#upload-btn")
    expect(page.locator("#status")).to_contain_text("新增 1", timeout=60_000)
    assert "文档集「院感管理」" in page.inner_text("#status")
    page.select_option("#doc-collection", "院感管理")
    expect(page.locator("#doc-page-info")).to_have_text("第 1 / 1 页 · 共 1 篇")
    assert page.locator("#doc-table tbody tr .col-collection").all_inner_texts() == ["院感管理"]
    page.fill("#upload-collection", "院感 管理")
    page.set_input_files("#upload-files", str(document))
    page.click("#upload-btn")
    expect(page.locator("#status")).to_contain_text("只能包含汉字", timeout=10_000)
    context.close()
