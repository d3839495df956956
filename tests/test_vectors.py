"""Large-index behaviour on the seeds: the approximate (IVF-PQ) path, forced by lowering the size line.

The seeds hold about 500 units per model, below EXACT_MAX_UNITS; with the line at 100 units the
version gets IVF-PQ indexes, and everything a large index does runs for real on a small one.
"""

import fcntl
import threading
import time
from pathlib import Path

import faiss
import numpy as np
import pytest

from service.config import Settings
from service.embed import Encoders
from service.engine import build_index, load_current, open_searcher, source_files
from service.index import IndexBusy, writer_lock
from service.search import Filters, Searcher
from service.tokenize import WordTokenizer
from service.update import add_files, delete_documents
from service.vectors import ann_file
from tests.conftest import write

QUESTIONS = ["党员领导干部怎样过双重组织生活", "医院党委书记要抓哪些事", "发热门诊党员突击队轮值"]


@pytest.fixture
def approximate(tmp_path: Path, seed_settings: Settings, encoders: Encoders, tokenizer: WordTokenizer, monkeypatch):
    monkeypatch.setattr("service.vectors.EXACT_MAX_UNITS", 100)
    settings = seed_settings.model_copy(update={"index_dir": tmp_path / "index", "uploads_dir": tmp_path / "up"})
    build_index(source_files(settings.seeds_dir), settings, encoders, tokenizer)
    return settings


def stored_ids(ann: faiss.Index) -> np.ndarray:
    """Every unit id stored in an IVF index's inverted lists."""
    invlists = faiss.extract_index_ivf(ann).invlists
    found = [
        faiss.rev_swig_ptr(invlists.get_ids(number), invlists.list_size(number)).copy()
        for number in range(invlists.nlist)
        if invlists.list_size(number)
    ]
    return np.sort(np.concatenate(found)) if found else np.zeros(0, dtype=np.int64)


def exact_row_scores(searcher: Searcher, model: str, vector: np.ndarray) -> np.ndarray:
    """Every passage's best unit similarity, by a full scan of the float16 matrix."""
    index = searcher.store.index
    scores = np.asarray(index.vectors[model].matrix, dtype=np.float32) @ vector
    return np.maximum.reduceat(scores, index.row_starts[:-1])


def test_large_index_is_approximate_and_its_scores_stay_exact(
    approximate: Settings, encoders: Encoders, tokenizer: WordTokenizer
) -> None:
    searcher = open_searcher(approximate, encoders, tokenizer)
    version = next((approximate.index_dir / "versions").iterdir())
    assert all((version / ann_file(i)).is_file() for i in range(len(encoders)))
    assert all(vectors.ann is not None and vectors.exact is None for vectors in searcher.store.index.vectors.values())
    for question in QUESTIONS:
        vectors = searcher.query_vectors(question)
        for model, vector in vectors.items():
            exact = exact_row_scores(searcher, model, vector)
            found = searcher.store.dense(model, vector, searcher.candidates, None)
            assert found and all(abs(score - exact[row]) < 1e-4 for row, score in found.items())
            assert int(np.argmax(exact)) in found  # the best passage is never lost on this small index
        for hit in searcher.search(question, top_k=5, query_vectors=vectors):
            row = next(
                r for r in range(len(searcher.store.index.passages)) if searcher.store.index.passages[r] == hit.passage
            )
            for evidence in hit.models:
                assert (
                    abs(evidence.score - exact_row_scores(searcher, evidence.model, vectors[evidence.model])[row])
                    < 1e-4
                )


def test_filters_on_an_approximate_index(
    approximate: Settings, encoders: Encoders, tokenizer: WordTokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    searcher = open_searcher(approximate, encoders, tokenizer)
    doc_id = next(iter(searcher.store.index.documents))
    monkeypatch.setattr("service.vectors.EXACT_MAX_UNITS", 10)  # the bitmap selector inside IVF, not a scan
    for mode in ("dense", "hybrid"):
        hits = searcher.search(QUESTIONS[0], top_k=5, mode=mode, filters=Filters(doc_ids=frozenset({doc_id})))
        assert hits and all(hit.passage.doc_id == doc_id for hit in hits)


def test_add_and_remove_update_the_approximate_index_in_place(
    approximate: Settings, encoders: Encoders, tokenizer: WordTokenizer, tmp_path: Path
) -> None:
    before = load_current(approximate, encoders)
    trained = before.manifest["ann_trained_units"]
    add_files(
        approximate,
        encoders,
        tokenizer,
        [write(tmp_path / "docs", "fever.txt", "发热门诊党员突击队轮值制度。每班两人，党员带头。")],
    )
    added = load_current(approximate, encoders)
    assert added.manifest["ann_trained_units"] == trained  # grown by far less than twice: not retrained
    new_ids = set(added.unit_ids.tolist()) - set(before.unit_ids.tolist())
    for vectors in added.vectors.values():
        assert set(stored_ids(vectors.ann).tolist()) == set(added.unit_ids.tolist())
    delete_documents(approximate, encoders, ["fever"])
    removed = load_current(approximate, encoders)
    for vectors in removed.vectors.values():
        stored = set(stored_ids(vectors.ann).tolist())
        assert stored == set(removed.unit_ids.tolist()) and not stored & new_ids
    searcher = open_searcher(approximate, encoders, tokenizer)
    assert all(hit.passage.doc_id != "fever" for hit in searcher.search("发热门诊党员突击队轮值", mode="dense"))


def test_scores_stay_exact_once_a_removal_leaves_a_gap_in_the_unit_ids(
    approximate: Settings, encoders: Encoders, tokenizer: WordTokenizer
) -> None:
    # Fresh unit ids are consecutive and found by subtraction; a document removed from the middle
    # leaves a gap, and they must then be looked up. Wrong positions would give other units' scores.
    middle = list(load_current(approximate, encoders).documents)[2]
    delete_documents(approximate, encoders, [middle])
    searcher = open_searcher(approximate, encoders, tokenizer)
    for vectors in searcher.store.index.vectors.values():
        ids = vectors.unit_ids
        assert ids[-1] - ids[0] + 1 > len(ids)  # the gap
        assert np.array_equal(vectors.positions_of_ids(ids[::-1]), np.arange(len(ids))[::-1])
    for question in QUESTIONS:
        for model, vector in searcher.query_vectors(question).items():
            exact = exact_row_scores(searcher, model, vector)
            found = searcher.store.dense(model, vector, searcher.candidates, None)
            assert found and all(abs(score - exact[row]) < 1e-4 for row, score in found.items())
            assert int(np.argmax(exact)) in found


def test_an_index_grown_twice_over_is_retrained(
    approximate: Settings, encoders: Encoders, tokenizer: WordTokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = load_current(approximate, encoders)
    assert set(before.manifest["ann_trained_units"].values()) == {len(before.unit_ids)}
    monkeypatch.setattr("service.vectors.RETRAIN_GROWTH", 0.5)  # any size counts as grown: retrain
    delete_documents(approximate, encoders, [next(iter(before.documents))])
    after = load_current(approximate, encoders)
    assert set(after.manifest["ann_trained_units"].values()) == {len(after.unit_ids)} != {len(before.unit_ids)}


def test_a_writer_waits_for_the_lock_then_gives_up_with_a_message(approximate: Settings) -> None:
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with (approximate.index_dir / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(5)
    started = time.monotonic()
    with pytest.raises(IndexBusy, match="仍在进行"), writer_lock(approximate.index_dir, timeout=0.5):
        pass
    assert 0.4 < time.monotonic() - started < 3
    release.set()
    holder.join()
    with writer_lock(approximate.index_dir, timeout=0.5):
        pass
