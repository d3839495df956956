"""The Milvus store (DJQA_STORE=milvus) on real Milvus Lite: it ranks as the FAISS store does, through
the HTTP API too, and its changes are whole versions switched by an alias."""

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from eval.questions import checked_labels, load_questions
from eval.run import evaluate_ask, evaluate_rankers, http_rankers
from service.config import Settings
from service.embed import Encoders
from service.engine import migrate_to_milvus, open_searcher, open_store, store_version
from service.index import IndexUnavailable
from service.linking import link_question, unlink_question
from service.links import load_links
from service.search import Searcher
from service.stores import Filters
from service.stores.milvus import client_for, filter_expression, literal
from service.stores.milvus_writer import VersionMoved, versions_in
from service.tokenize import WordTokenizer
from service.update import (
    Change,
    add_files,
    delete_documents,
    removal,
    save_change,
)
from tests.conftest import free_port, live_server, milvus_lite_server, run_cli, stop_server, write

TOLERANCE = 0.01  # the bound on every kind's metrics between the two stores
FEVER = "发热门诊党员先锋岗实行二十四小时轮值，党员医生带头承担夜间接诊任务。"


def milvus_copy(settings: Settings, folder: Path) -> Settings:
    """Milvus settings with collections of their own (a fresh prefix) and an uploads folder of their own."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    return settings.model_copy(
        update={"store": "milvus", "milvus_collection": prefix, "uploads_dir": folder / "uploads"}
    )


@pytest.fixture(scope="module")
def milvus_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Milvus Lite gRPC server for this module: the test process and its servers share it."""
    folder, port = tmp_path_factory.mktemp("milvus-lite"), free_port()
    with milvus_lite_server(folder / "data", port, folder / "milvus.log"):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def milvus_settings(
    tmp_path_factory: pytest.TempPathFactory, seed_settings: Settings, encoders: Encoders, milvus_uri: str
) -> Settings:
    """The seed index copied into Milvus by `migrate`."""
    settings = milvus_copy(seed_settings, tmp_path_factory.mktemp("milvus")).model_copy(
        update={"milvus_uri": milvus_uri}
    )
    migrate_to_milvus(settings, encoders)
    return settings


@pytest.fixture
def private_milvus(milvus_settings: Settings, encoders: Encoders, tmp_path: Path) -> Settings:
    """A copy of the seed index in collections of its own, free to change."""
    settings = milvus_copy(milvus_settings, tmp_path)
    migrate_to_milvus(settings, encoders)
    return settings


@pytest.fixture(scope="module")
def milvus_searcher(milvus_settings: Settings, encoders: Encoders, tokenizer: WordTokenizer) -> Searcher:
    return open_searcher(milvus_settings, encoders, tokenizer)


def ranked(searcher: Searcher, question: str, mode: str, filters: Filters, vectors: dict) -> list[tuple[str, float]]:
    hits = searcher.search(question, top_k=10, mode=mode, filters=filters, query_vectors=vectors)
    return [(hit.passage.passage_id, hit.score) for hit in hits]


def assert_same(ranking: list[tuple[str, float]], expected: list[tuple[str, float]]) -> None:
    assert [passage for passage, _ in ranking] == [passage for passage, _ in expected]
    assert [score for _, score in ranking] == pytest.approx([score for _, score in expected], abs=1e-4)


def test_every_eval_question_ranks_the_same_in_both_stores(searcher: Searcher, milvus_searcher: Searcher) -> None:
    """All questions, all modes, with and without filters: the same passages, the same scores."""
    documents = list(searcher.store.documents.values())
    some = documents[0]
    filter_sets = [
        Filters(),
        Filters(doc_type=some.doc_type),
        Filters(year=some.year),
        Filters(doc_ids=frozenset({some.doc_id, documents[-1].doc_id})),
    ]
    compared = 0
    for number, question in enumerate(load_questions()):
        vectors = searcher.query_vectors(question.question)
        filters = filter_sets[number % len(filter_sets)]
        for mode in ("hybrid", "dense", "lexical"):
            faiss_ranking = ranked(searcher, question.question, mode, filters, vectors)
            assert_same(ranked(milvus_searcher, question.question, mode, filters, vectors), faiss_ranking)
            compared += 1
    assert compared >= 3 * 250


def test_hits_carry_the_same_evidence(searcher: Searcher, milvus_searcher: Searcher) -> None:
    question = "党员医生在发热门诊怎样发挥作用"
    vectors = searcher.query_vectors(question)
    faiss_hit = searcher.search(question, top_k=1, query_vectors=vectors)[0]
    milvus_hit = milvus_searcher.search(question, top_k=1, query_vectors=vectors)[0]
    assert milvus_hit.passage == faiss_hit.passage
    assert milvus_hit.matched_terms == faiss_hit.matched_terms and milvus_hit.highlights == faiss_hit.highlights
    assert [(e.model, e.rank) for e in milvus_hit.models] == [(e.model, e.rank) for e in faiss_hit.models]
    assert (milvus_hit.dense_rank, milvus_hit.lexical_rank) == (faiss_hit.dense_rank, faiss_hit.lexical_rank)


def test_documents_and_their_passages_are_read_back_whole(searcher: Searcher, milvus_searcher: Searcher) -> None:
    faiss_store, milvus_store = searcher.store, milvus_searcher.store
    assert milvus_store.documents == faiss_store.documents
    assert milvus_store.passage_counts() == faiss_store.passage_counts()
    assert list(milvus_store.all_passages()) == list(faiss_store.all_passages())
    doc_id = next(iter(faiss_store.documents))
    assert milvus_store.passages_of(doc_id) == faiss_store.passages_of(doc_id)


def test_collections_scope_searches_as_the_faiss_store_does(
    milvus_settings: Settings, private_settings: Settings, encoders: Encoders, tokenizer: WordTokenizer, tmp_path: Path
) -> None:
    """Documents added into a collection: scoped searches (its candidates, its idf) rank the same in both stores."""
    laws = [
        write(tmp_path / "laws", "纪律处分条例.txt", "党员违反廉洁纪律，收受礼品、礼金、红包的，给予警告处分。\n"),
        write(tmp_path / "laws", "医疗机构管理办法.txt", "医疗机构应当落实党风廉政建设责任制，不得收受红包、回扣。\n"),
    ]
    add_files(private_settings, encoders, tokenizer, laws, collection="法律法规")
    # Copied, not added again: new passages' vectors are float16 in the index folder, float32 in Milvus.
    milvus = milvus_copy(private_settings, tmp_path).model_copy(update={"milvus_uri": milvus_settings.milvus_uri})
    migrate_to_milvus(milvus, encoders)
    faiss_searcher = open_searcher(private_settings, encoders, tokenizer)
    milvus_searcher = open_searcher(milvus, encoders, tokenizer)
    assert milvus_searcher.collections == faiss_searcher.collections
    assert {d.collection for d in milvus_searcher.store.documents.values()} == {"default", "法律法规"}
    for scope in ({"法律法规"}, {"default"}, {"default", "法律法规"}):
        filters = Filters(collections=frozenset(scope))
        for question in ("医务人员收红包怎么处理", "党风廉政建设责任制", "党员医生在发热门诊怎样发挥作用"):
            vectors = faiss_searcher.query_vectors(question)
            for mode in ("hybrid", "dense", "lexical"):
                expected = ranked(faiss_searcher, question, mode, filters, vectors)
                assert_same(ranked(milvus_searcher, question, mode, filters, vectors), expected)
            tokens = tokenizer.query_tokens(question)
            assert milvus_searcher.store.frequencies(tokens, filters.collections) == faiss_searcher.store.frequencies(
                tokens, filters.collections
            )
    rules = write(tmp_path / "rules", "考勤规定.txt", "职工上下班实行电子打卡考勤，迟到早退按规定扣减绩效。\n")
    add_files(milvus, encoders, tokenizer, [rules], collection="规章")
    scoped = open_searcher(milvus, encoders, tokenizer).search(
        "打卡考勤", top_k=5, filters=Filters(collections=frozenset({"规章"}))
    )
    assert [hit.passage.doc_id for hit in scoped] == ["考勤规定"]


def test_a_year_no_field_can_hold_matches_nothing_instead_of_failing(
    searcher: Searcher, milvus_searcher: Searcher
) -> None:
    for year in (10**20, 2**63, -(2**63) - 1):
        for store_searcher in (searcher, milvus_searcher):
            assert store_searcher.search("党建工作", top_k=3, filters=Filters(year=year)) == []


def test_filter_values_are_quoted_not_interpreted() -> None:
    assert literal('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'
    expression = filter_expression(Filters(doc_ids=frozenset({'x" or doc_id != "'}), doc_type="讲话", year=2024))
    assert expression == 'doc_id in ["x\\" or doc_id != \\""] and doc_type == "讲话" and year == 2024'
    assert filter_expression(Filters(collections=frozenset({"法规", "b"}))) == 'collection in ["b","法规"]'


def test_the_eval_set_scores_the_same_through_both_stores_apis(
    seed_settings: Settings, milvus_settings: Settings, searcher: Searcher, tmp_path: Path
) -> None:
    """The issue's bar: every kind's hit@5 and MRR@10, and /api/ask's rates, within 0.01 over HTTP."""
    questions = [q for q in load_questions() if q.asked_of("seeds")]  # the archive's questions need the archive
    labels = checked_labels(questions, list(searcher.store.all_passages()))
    measured = {}
    milvus_env = {
        "DJQA_STORE": "milvus",
        "DJQA_MILVUS_URI": milvus_settings.milvus_uri,
        "DJQA_MILVUS_COLLECTION": milvus_settings.milvus_collection,
    }
    for store, extra in (("faiss", {}), ("milvus", milvus_env)):
        with live_server(seed_settings, tmp_path / f"{store}.log", DJQA_QUERY_CACHE_SIZE="0", **extra) as url:
            rankers, asker = http_rankers(url, ["hybrid"])
            measured[store] = {
                "systems": evaluate_rankers(rankers, questions, labels),
                "ask": evaluate_ask(asker, questions, labels),
            }
    by_kind = {store: result["systems"]["hybrid"]["all"] for store, result in measured.items()}
    assert by_kind["faiss"].keys() == by_kind["milvus"].keys() and len(by_kind["faiss"]) >= 8
    for kind, metrics in by_kind["faiss"].items():
        for metric in ("hit@5", "mrr@10"):
            assert by_kind["milvus"][kind][metric] == pytest.approx(metrics[metric], abs=TOLERANCE), (kind, metric)
    faiss_ask, milvus_ask = measured["faiss"]["ask"]["all"], measured["milvus"]["ask"]["all"]
    for rate in ("answered_on_topic", "refused_off_topic", "fact_present"):
        assert milvus_ask[rate] == pytest.approx(faiss_ask[rate], abs=TOLERANCE), rate


def test_add_and_remove_write_new_versions_and_keep_one_before(
    private_milvus: Settings, encoders: Encoders, tokenizer: WordTokenizer, tmp_path: Path
) -> None:
    settings = private_milvus
    first = store_version(settings)
    report = add_files(settings, encoders, tokenizer, [write(tmp_path / "in", "发热门诊.txt", FEVER)])
    assert report.version == store_version(settings) != first
    searcher = open_searcher(settings, encoders, tokenizer)
    assert searcher.search("发热门诊先锋岗轮值", top_k=1, mode="lexical")[0].passage.doc_id == "发热门诊"
    assert (settings.uploads_dir / "发热门诊.txt").read_text(encoding="utf-8") == FEVER, "the original is kept"
    again = add_files(settings, encoders, tokenizer, [write(tmp_path / "again", "副本.txt", FEVER)])
    assert not again.changed, "the same content is a duplicate, as with FAISS"
    manifest = delete_documents(settings, encoders, ["发热门诊"])
    assert manifest["document_count"] == len(searcher.store.documents) - 1
    assert "发热门诊" not in open_store(settings, encoders).documents
    assert not (settings.uploads_dir / "发热门诊.txt").exists()
    client = client_for(settings)
    assert len(versions_in(client, settings.milvus_collection, 10)) == 2, "the live version and the one before"


def test_a_change_that_fails_leaves_the_live_version_and_no_debris(
    private_milvus: Settings, encoders: Encoders
) -> None:
    settings = private_milvus
    store = open_store(settings, encoders)
    before = (store.version, versions_in(client_for(settings), settings.milvus_collection, 10))

    class Broken(Exception):
        pass

    kept_chunks = store.chunks

    def failing_chunks(drop: set[str]):
        yield from kept_chunks(drop)
        raise Broken

    store.chunks = failing_chunks  # the copy of kept passages fails half-way (a lost connection, say)
    with pytest.raises(Broken):
        save_change(store, removal(store, [next(iter(store.documents))]), settings)
    assert (store_version(settings), versions_in(client_for(settings), settings.milvus_collection, 10)) == before


def test_a_change_built_on_a_version_another_writer_replaced_is_refused(
    private_milvus: Settings, encoders: Encoders
) -> None:
    settings = private_milvus
    stale = open_store(settings, encoders)
    migrate_to_milvus(settings, encoders)  # another writer's change goes live meanwhile
    live = store_version(settings)
    with pytest.raises(VersionMoved):
        save_change(stale, Change({next(iter(stale.documents))}), settings)
    assert store_version(settings) == live


def test_a_store_without_an_index_says_how_to_make_one(
    milvus_settings: Settings, encoders: Encoders, tmp_path: Path
) -> None:
    empty = milvus_settings.model_copy(update={"milvus_uri": str(tmp_path / "empty.db")})
    with pytest.raises(IndexUnavailable, match="dangjian-qa migrate"):
        open_store(empty, encoders)


def test_cli_builds_into_milvus_and_lists_its_documents(milvus_settings: Settings, tmp_path: Path) -> None:
    settings = milvus_copy(milvus_settings, tmp_path)
    where = {"DJQA_MILVUS_URI": settings.milvus_uri, "DJQA_MILVUS_COLLECTION": settings.milvus_collection}
    built = run_cli(settings, "index", "--store", "milvus", **where)
    assert built.returncode == 0, built.stderr
    assert "Milvus" in built.stdout
    listed = run_cli(settings, "docs", "--json", DJQA_STORE="milvus", **where)
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == len(list(settings.seeds_dir.iterdir()))


# ---------- replicas: stateless servers on one store ----------

REPLICA_WAIT_SECONDS = 5.0  # a replica checks the alias once a second (live.RELOAD_CHECK_SECONDS), then loads
KEY = "replica-test-key"


def until(seconds: float, check: Callable[[], bool]) -> float:
    """Seconds until check() holds; fails the test after `seconds`."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < seconds, f"not within {seconds} s"
        time.sleep(0.1)
    return time.monotonic() - started


def status_of(client: httpx.Client, method: str, path: str, **kwargs: object) -> int:
    try:
        return client.request(method, path, **kwargs).status_code
    except httpx.TransportError:
        return 0


def test_two_replicas_share_one_store_and_survive_its_restart(
    milvus_settings: Settings, encoders: Encoders, tmp_path: Path
) -> None:
    """Add through one replica, find through the other; the store stops: 503; it comes back: 200."""
    port = free_port()
    settings = milvus_copy(milvus_settings, tmp_path).model_copy(update={"milvus_uri": f"http://127.0.0.1:{port}"})
    env = {
        "DJQA_STORE": "milvus",
        "DJQA_MILVUS_URI": settings.milvus_uri,
        "DJQA_MILVUS_COLLECTION": settings.milvus_collection,
        "DJQA_MILVUS_TIMEOUT_S": "3",
        "DJQA_API_KEY": KEY,
        "DJQA_UPLOADS_DIR": str(tmp_path / "uploads"),
    }
    store_log = tmp_path / "milvus.log"
    question = {"query": "发热门诊先锋岗轮值", "top_k": 1, "mode": "lexical"}

    def top_doc(client: httpx.Client) -> str | None:
        response = client.post("/api/search", json=question)
        return response.json()["results"][0]["doc_id"] if response.status_code == 200 else None

    with milvus_lite_server(tmp_path / "data", port, store_log) as store:
        migrate_to_milvus(settings, encoders)
        with (
            live_server(settings, tmp_path / "a.log", **env, DJQA_JOBS_DIR=str(tmp_path / "jobs-a")) as first,
            live_server(settings, tmp_path / "b.log", **env, DJQA_JOBS_DIR=str(tmp_path / "jobs-b")) as second,
            httpx.Client(base_url=first, timeout=30) as writer,
            httpx.Client(base_url=second, timeout=30) as reader,
        ):
            assert reader.get("/api/health").json()["store"] == "milvus"
            assert top_doc(reader) != "发热门诊"
            files = {"files": ("发热门诊.txt", FEVER.encode())}
            job = writer.post("/api/documents", files=files, headers={"X-API-Key": KEY}).json()

            def job_state() -> dict:
                return writer.get(f"/api/jobs/{job['job_id']}", headers={"X-API-Key": KEY}).json()

            until(120, lambda: job_state()["state"] in ("done", "failed"))
            assert job_state()["state"] == "done", job_state()
            seconds = until(REPLICA_WAIT_SECONDS, lambda: top_doc(reader) == "发热门诊")
            print(f"the other replica answered with the new document {seconds:.1f} s after the job was done")

            stop_server(store)
            files = {"files": ("护理.txt", "护理部党支部开展“最美护士”评选活动。".encode())}
            job = writer.post("/api/documents", files=files, headers={"X-API-Key": KEY}).json()
            until(60, lambda: job_state()["state"] in ("done", "failed"))
            assert job_state()["status"] == 503 and job_state()["error"]["code"] == "store_unavailable"
            assert f":{port}" not in job_state()["error"]["message"]
            for client in (writer, reader):
                response = client.post("/api/search", json=question)
                assert response.status_code == 503 and response.json()["error"]["code"] == "store_unavailable"
                message = response.json()["error"]["message"]
                assert "Milvus" in message and f":{port}" not in message, "the address is for the log only"
                assert client.get("/api/health").status_code == 503

            with milvus_lite_server(tmp_path / "data", port, store_log):
                for client in (writer, reader):
                    until(30, lambda client=client: status_of(client, "GET", "/api/health") == 200)
                    assert top_doc(client) == "发热门诊", "the added document outlived the restart"


def test_an_approximate_index_rescores_passages_exactly(
    milvus_settings: Settings, searcher: Searcher, encoders: Encoders, tokenizer: WordTokenizer, tmp_path: Path
) -> None:
    """With HNSW the nearest units are approximate: their passages are scored again over every unit."""
    settings = milvus_copy(milvus_settings, tmp_path).model_copy(update={"milvus_index": "HNSW"})
    migrate_to_milvus(settings, encoders)
    approximate = open_searcher(settings, encoders, tokenizer)
    assert not approximate.store.exact
    for question in [q.question for q in load_questions()][::25]:
        vectors = searcher.query_vectors(question)
        for model, vector in vectors.items():
            found = approximate.store.dense(model, vector, searcher.candidates, "")
            exact = searcher.store.row_scores(model, list(found), vector)
            assert found == pytest.approx(exact, abs=1e-4)
        # The shortlist may hold other passages than an exact scan's (min-max then scales them
        # differently), but not lose the best one.
        top = approximate.search(question, top_k=1, query_vectors=vectors)[0].passage
        assert top == searcher.search(question, top_k=1, query_vectors=vectors)[0].passage


def test_linked_questions_are_units_in_milvus_too(
    private_milvus: Settings, encoders: Encoders, tokenizer: WordTokenizer
) -> None:
    spoken = "党员一人包几个同事、一个科一个科盯着，有这种分片管的办法吗"
    store = open_store(private_milvus, encoders)
    passage = next(p for p in store.all_passages() if "网格化" in p.text)
    link = link_question(private_milvus, encoders, tokenizer, passage.passage_id, spoken)
    hit = open_searcher(private_milvus, encoders, tokenizer).search(spoken, top_k=1)[0]
    assert hit.passage.passage_id == passage.passage_id and hit.matched_question == spoken
    unlink_question(private_milvus, encoders, tokenizer, passage.passage_id, link.link_id)
    assert all(not p.questions for p in open_store(private_milvus, encoders).all_passages())
    link_question(private_milvus, encoders, tokenizer, passage.passage_id, spoken)
    delete_documents(private_milvus, encoders, [passage.doc_id])
    assert load_links(private_milvus.uploads_dir) == []
