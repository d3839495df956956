"""Learning from users: the question log, feedback, unresolved questions, linked questions, 「文件中没有」."""

import json
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import service.index
from eval.questions import checked_labels, load_questions
from service.config import Settings
from service.embed import Encoders, lexical_text, unit_texts
from service.engine import build_index, open_searcher, open_store, source_files, store_lock
from service.http.app import create_app
from service.linking import link_question
from service.links import load_links
from service.questions import Asked, grouped, near_duplicate, normalised
from service.tokenize import WordTokenizer
from tests.conftest import run_cli

KEY = "question-test-key"
WRITE = {"X-API-Key": KEY}
# The passage on the 「网格化」 management of staff by Party members, and a spoken question for it.
TARGET_SNIPPET = "党员联系职工“网格化”管理体系"
LINKED = "党员一人包几个同事、一个科一个科盯着，有这种分片管的办法吗"
OTHER_WORDING = "让党员分片包干联系职工，每人负责几个人，有这个做法吗"


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, seed_settings: Settings) -> Settings:
    folder = tmp_path_factory.mktemp("questions-api")
    shutil.copytree(seed_settings.index_dir, folder / "index")
    update = {
        "index_dir": folder / "index",
        "uploads_dir": folder / "uploads",
        "api_key": KEY,
        "feedback_per_minute": 5,
    }
    return seed_settings.model_copy(update=update)


@pytest.fixture(scope="module")
def client(settings: Settings, encoders: Encoders, tokenizer: WordTokenizer) -> Iterator[TestClient]:
    with TestClient(create_app(settings, encoders, tokenizer), raise_server_exceptions=False) as test_client:
        yield test_client


def flush(client: TestClient) -> None:
    client.app.state.question_log.flush()  # type: ignore[attr-defined]


def logged(settings: Settings, table: str = "asked") -> list[dict]:
    with sqlite3.connect(settings.question_log_file) as connection:
        connection.row_factory = sqlite3.Row
        return [dict(row) for row in connection.execute(f"SELECT * FROM {table} ORDER BY id")]


def target_id(client: TestClient) -> str:
    results = client.post("/api/search", json={"query": TARGET_SNIPPET, "top_k": 3}).json()["results"]
    return next(row["passage_id"] for row in results if TARGET_SNIPPET in row["text"])


# ---------- pure parts ----------


def test_normalised_questions_ignore_punctuation_width_case_and_particles() -> None:
    assert normalised("请问 支部评星，是咋弄的呢？") == normalised("支部评星是咋弄的")
    assert normalised("ＡＢＣ党建") == "abc党建"


def test_near_duplicates_are_rewordings_not_other_needs() -> None:
    assert near_duplicate(normalised("入党申请书怎么写"), normalised("入党申请书应该怎么写"))
    assert near_duplicate(normalised("医生职称评审需要哪些论文"), normalised("医生评职称需要哪些论文"))
    assert not near_duplicate(normalised("党建工作如何开展"), normalised("党建工作怎么考核"))


def test_grouping_counts_near_duplicates_and_leaves_out_resolved_ones() -> None:
    asked = [
        Asked("2026-01-01T00:00:00+00:00", "支部评星那个是咋弄的", "refused"),
        Asked("2026-01-03T00:00:00+00:00", "支部评星那个是咋弄的呢", "unhelpful"),
        Asked("2026-01-02T00:00:00+00:00", "支部评星那个是怎么弄的", "low_confidence"),
        Asked("2026-01-04T00:00:00+00:00", "入党申请书怎么写", "refused"),
    ]
    groups = grouped(asked)
    assert [(g.question, g.count) for g in groups] == [("支部评星那个是咋弄的", 3), ("入党申请书怎么写", 1)]
    assert groups[0].last_asked == "2026-01-03T00:00:00+00:00"
    assert groups[0].reasons == {"refused": 1, "unhelpful": 1, "low_confidence": 1}
    assert [g.question for g in grouped(asked, [normalised("入党申请书该怎么写")])] == ["支部评星那个是咋弄的"]


def test_linked_questions_are_units_and_bm25_text_of_their_passage(searcher) -> None:
    passage = next(p for p in searcher.store.all_passages() if TARGET_SNIPPET in p.text)
    linked = passage.__class__(**{**passage.__dict__, "questions": (LINKED,)})
    assert unit_texts(linked, False, True)[-1] == LINKED and LINKED not in unit_texts(passage, False, True)
    assert lexical_text(linked).endswith(LINKED) and lexical_text(passage) == f"{passage.section}\n{passage.text}"


# ---------- the log ----------


def test_searches_and_asks_are_logged_without_client_addresses(client: TestClient, settings: Settings) -> None:
    client.post("/api/search", json={"query": "党风廉政建设", "top_k": 3, "doc_type": "讲话"})
    client.get("/api/search", params={"q": "支部 书记"})
    client.post("/api/ask", json={"question": "今天天气怎么样"})
    flush(client)
    rows = logged(settings)[-3:]
    assert [row["endpoint"] for row in rows] == ["search", "search", "ask"]
    first, _, ask = rows
    assert first["question"] == "党风廉政建设" and json.loads(first["scope"]) == {"doc_type": "讲话"}
    assert first["mode"] == "hybrid" and len(json.loads(first["passage_ids"])) <= 3 and first["latency_ms"] >= 0
    assert ask["answered"] == 0 and ask["confidence"] < 0.5 and first["answered"] is None
    assert "testclient" not in settings.question_log_file.read_bytes().decode(errors="ignore")


def test_a_search_with_an_empty_document_filter_is_logged_too(client: TestClient, settings: Settings) -> None:
    assert client.post("/api/search", json={"query": "党建", "doc_ids": []}).status_code == 200
    assert client.post("/api/search", json={"query": "党建引领发展", "top_k": 1}).status_code == 200
    flush(client)
    empty, after = logged(settings)[-2:]
    assert json.loads(empty["scope"]) == {"doc_ids": []} and after["question"] == "党建引领发展"


def test_logging_never_waits_for_the_disk(client: TestClient) -> None:
    log = client.app.state.question_log  # type: ignore[attr-defined]
    with sqlite3.connect(log.path, timeout=30) as blocker:  # the writer cannot write while this holds the lock
        blocker.execute("BEGIN EXCLUSIVE")
        started = time.perf_counter()
        for _ in range(20):
            assert client.post("/api/search", json={"query": "党建引领", "top_k": 1}).status_code == 200
        took = time.perf_counter() - started
        blocker.rollback()
    assert took < 20 * 0.5
    flush(client)


def test_question_log_can_be_switched_off(settings: Settings, encoders: Encoders, tokenizer: WordTokenizer) -> None:
    off = settings.model_copy(update={"question_log": False, "question_log_dir": settings.index_dir.parent / "off"})
    with TestClient(create_app(off, encoders, tokenizer)) as quiet:
        assert quiet.post("/api/search", json={"query": "党建"}).status_code == 200
        assert quiet.post("/api/feedback", json={"question": "党建", "helpful": True}).status_code == 403
        assert quiet.get("/api/config").json()["question_log"] is False
    assert not off.question_log_file.exists()


# ---------- feedback and unresolved questions ----------


def test_feedback_is_open_limited_in_size_and_rate_and_lands_in_the_log(client: TestClient, settings: Settings) -> None:
    body = {"question": "支部评星那个是咋弄的", "helpful": False}
    assert client.post("/api/feedback", json=body).json() == {"accepted": True}
    assert client.post("/api/feedback", json={**body, "helpful": True, "passage_id": "x:1"}).status_code == 202
    assert client.post("/api/feedback", json={**body, "question": "长" * 600}).status_code == 400
    assert client.post("/api/feedback", json={**body, "helpful": "no"}).status_code == 422
    statuses = [client.post("/api/feedback", json=body).status_code for _ in range(5)]
    assert statuses[-1] == 429 and 202 in statuses
    flush(client)
    rows = logged(settings, "feedback")
    assert rows[0]["helpful"] == 0 and rows[1]["passage_id"] == "x:1"


def test_unresolved_questions_group_refusals_and_unhelpful_answers(client: TestClient) -> None:
    for question in ("入党申请书怎么写", "入党申请书应该怎么写", "入党申请书怎么写"):
        client.post("/api/ask", json={"question": question})
    flush(client)
    assert client.get("/api/questions?status=unresolved").status_code == 401
    groups = client.get("/api/questions?status=unresolved", headers=WRITE).json()["groups"]
    top = next(g for g in groups if "入党申请书" in g["question"])
    assert top["question"] == "入党申请书怎么写" and top["count"] >= 3 and top["reasons"]["refused"] >= 3
    assert top["variants"] == ["入党申请书应该怎么写"] and top["last_asked"]
    assert any(g["question"] == "支部评星那个是咋弄的" and g["reasons"].get("unhelpful") for g in groups)


def test_a_question_marked_out_of_scope_and_its_paraphrases_are_refused(client: TestClient) -> None:
    question = "医生职称评审需要哪些论文"
    marked = client.post("/api/questions/out-of-scope", json={"question": question}, headers=WRITE)
    assert marked.status_code == 201 and marked.json()["question"] == question
    # the same words, near-duplicates (bigrams), a close paraphrase (both models' query vectors)
    for wording in (
        question,
        "请问医生职称评审需要哪些论文呢",
        "医生评职称需要哪些论文",
        "评主任医师职称时要发表几篇论文",
    ):
        answer = client.post("/api/ask", json={"question": wording}).json()
        assert answer["found"] is False and "文件中没有" in answer["answer"], wording
    assert client.post("/api/ask", json={"question": "如何推动党建与医疗业务深度融合"}).json()["found"] is True
    other_need = client.post("/api/ask", json={"question": "医生晋升高级职称需要什么条件"}).json()
    assert "文件中没有" not in other_need["answer"]
    streamed = client.post("/api/ask", json={"question": question, "stream": True})
    assert streamed.text.startswith("event: final\n") and "文件中没有" in streamed.text
    listed = client.get("/api/questions", headers=WRITE).json()
    assert question in [mark["question"] for mark in listed["out_of_scope"]]
    assert not any("职称评审" in g["question"] for g in listed["groups"])
    assert client.delete(f"/api/questions/out-of-scope/{marked.json()['id']}", headers=WRITE).status_code == 204
    assert "文件中没有" not in client.post("/api/ask", json={"question": question}).json()["answer"]


# ---------- linked questions ----------


def test_a_linked_question_goes_live_finds_its_passage_and_is_shown(client: TestClient, settings: Settings) -> None:
    passage_id = target_id(client)
    before = client.get("/api/health").json()["index_version"]
    response = client.post(f"/api/passages/{passage_id}/questions", json={"question": LINKED}, headers=WRITE)
    assert response.status_code == 201, response.text
    link = response.json()
    assert link["question"] == LINKED and link["passage_id"] == passage_id and link["id"]
    assert client.get("/api/health").json()["index_version"] != before
    again = client.post(f"/api/passages/{passage_id}/questions", json={"question": LINKED}, headers=WRITE)
    assert again.status_code == 409
    listed = client.get(f"/api/passages/{passage_id}/questions").json()["questions"]
    assert [row["question"] for row in listed] == [LINKED]
    top = client.post("/api/search", json={"query": LINKED, "top_k": 1}).json()["results"][0]
    assert top["passage_id"] == passage_id and top["matched_question"] == LINKED
    assert top["linked_questions"] == [LINKED]
    other = client.post("/api/search", json={"query": "查一下党风廉政建设的主体责任", "top_k": 5}).json()["results"]
    assert all(row["matched_question"] is None for row in other)
    assert client.post("/api/passages/nope:1/questions", json={"question": LINKED}, headers=WRITE).status_code == 404
    assert client.post(f"/api/passages/{passage_id}/questions", json={"question": LINKED}).status_code == 401
    assert [link.question for link in load_links(settings.uploads_dir)] == [LINKED]


def test_export_writes_linked_and_out_of_scope_questions_as_an_eval_set(
    client: TestClient, settings: Settings, tmp_path: Path, searcher
) -> None:
    passage_id = target_id(client)
    if not client.get(f"/api/passages/{passage_id}/questions").json()["questions"]:
        client.post(f"/api/passages/{passage_id}/questions", json={"question": LINKED}, headers=WRITE)
    client.post("/api/questions/out-of-scope", json={"question": "护士资格证怎么考"}, headers=WRITE)
    out = tmp_path / "exported.jsonl"
    finished = run_cli(settings, "export-questions", "--out", str(out))
    assert finished.returncode == 0, finished.stderr
    questions = load_questions(out)
    assert {(q.question, q.kind) for q in questions} >= {(LINKED, "colloquial"), ("护士资格证怎么考", "near_domain")}
    labels = checked_labels(questions, list(searcher.store.all_passages()))
    assert labels[next(q.id for q in questions if q.question == LINKED)] == {passage_id}
    later = run_cli(settings, "export-questions", "--since", "2999-01-01")
    assert later.returncode == 0 and later.stdout == ""
    assert run_cli(settings, "export-questions", "--since", "yesterday").returncode == 2


def test_linked_questions_survive_a_rebuild_and_go_with_their_document(
    client: TestClient, settings: Settings, encoders: Encoders, tokenizer: WordTokenizer
) -> None:
    passage_id = target_id(client)
    if not client.get(f"/api/passages/{passage_id}/questions").json()["questions"]:
        client.post(f"/api/passages/{passage_id}/questions", json={"question": LINKED}, headers=WRITE)
    build_index(source_files(settings.seeds_dir), settings, encoders, tokenizer, with_uploads=True)
    searcher = open_searcher(settings, encoders, tokenizer)
    hit = searcher.search(LINKED, top_k=1)[0]
    assert hit.passage.questions == (LINKED,) and hit.matched_question == LINKED
    link_id = client.get(f"/api/passages/{passage_id}/questions").json()["questions"][0]["id"]
    assert client.delete(f"/api/passages/{passage_id}/questions/{link_id}", headers=WRITE).status_code == 204
    assert client.get(f"/api/passages/{passage_id}/questions").json()["questions"] == []
    top = client.post("/api/search", json={"query": LINKED, "top_k": 3}).json()["results"]
    assert all(row["linked_questions"] == [] for row in top)
    # Linked again; the same document uploaded again changes nothing, an edited one keeps the link of
    # its unchanged passage; then the document is removed and the link goes with it.
    client.post(f"/api/passages/{passage_id}/questions", json={"question": LINKED}, headers=WRITE)
    doc_id = passage_id.rpartition(":")[0]
    original = next(path for path in source_files(settings.seeds_dir) if path.stem == doc_id).read_bytes()
    same = client.post("/api/documents", files=[("files", (f"{doc_id}.txt", original))], headers=WRITE)
    assert same.status_code == 409 and len(load_links(settings.uploads_dir)) == 1
    edited = original + "\n后勤党支部坚持每周一次安全生产巡查，发现问题立行立改。\n".encode()
    job = client.post("/api/documents", files=[("files", (f"{doc_id}.txt", edited))], headers=WRITE).json()
    deadline = time.monotonic() + 120
    while job["state"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.2)
        job = client.get(f"/api/jobs/{job['job_id']}", headers=WRITE).json()
    assert job["status"] == 200 and job["result"]["replaced"], job
    top = client.post("/api/search", json={"query": LINKED, "top_k": 1}).json()["results"][0]
    assert top["linked_questions"] == [LINKED] and top["matched_question"] == LINKED
    assert client.delete(f"/api/documents/{doc_id}", headers=WRITE).status_code == 200
    assert load_links(settings.uploads_dir) == []
    assert not any(Path(settings.uploads_dir).glob(".incoming-*"))


def test_a_passage_holds_a_bounded_number_of_linked_characters(client: TestClient) -> None:
    passage_id = client.post("/api/search", json={"query": "党风廉政建设", "top_k": 1}).json()["results"][0][
        "passage_id"
    ]
    long_questions = [f"第{n}个很长的问题" + "党风廉政建设" * 80 for n in range(7)]  # about 490 characters each
    statuses = [
        client.post(f"/api/passages/{passage_id}/questions", json={"question": q}, headers=WRITE).status_code
        for q in long_questions
    ]
    assert statuses == [201] * 6 + [409]
    for row in client.get(f"/api/passages/{passage_id}/questions").json()["questions"]:
        assert client.delete(f"/api/passages/{passage_id}/questions/{row['id']}", headers=WRITE).status_code == 204


class Killed(BaseException):
    """Stands for the process dying at that moment (nothing after it runs)."""


def test_a_link_cut_short_after_the_switch_is_completed_by_the_next_writer(
    private_settings: Settings, encoders: Encoders, tokenizer: WordTokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(private_settings, encoders)
    passage = next(p for p in store.all_passages() if TARGET_SNIPPET in p.text)

    def die(*args: object, **kwargs: object) -> None:
        raise Killed()

    monkeypatch.setattr(service.index, "prune_versions", die)  # runs just after CURRENT names the new version
    with pytest.raises(Killed):
        link_question(private_settings, encoders, tokenizer, passage.passage_id, LINKED)
    monkeypatch.undo()
    assert load_links(private_settings.uploads_dir) == []  # the links file's move had not happened yet
    with store_lock(private_settings):  # the next writer carries out the live version's pending moves
        pass
    assert [link.question for link in load_links(private_settings.uploads_dir)] == [LINKED]
    hit = open_searcher(private_settings, encoders, tokenizer).search(LINKED, top_k=1)[0]
    assert hit.passage.questions == (LINKED,)
