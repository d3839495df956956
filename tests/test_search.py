import itertools

import pytest

from service.search import Filters, Searcher, combine_dense, dense_weights, fuse, idf, term_coverage


def test_fusion_prefers_passages_strong_in_both_lists() -> None:
    dense = {1: 0.9, 2: 0.5, 3: 0.7}
    lexical = {1: 2.0, 2: 9.0, 3: 8.0}
    fused = fuse({"m": dense}, {"m": 0.5}, lexical, 0.5)
    assert max(fused, key=fused.__getitem__) == 3
    assert all(0.0 <= score <= 1.0 for score in fused.values())


def test_fusion_weights_move_the_ranking() -> None:
    dense, lexical = {1: 0.9, 2: 0.1}, {1: 0.0, 2: 5.0}
    assert max(fuse({"m": dense}, {"m": 0.9}, lexical, 0.1).items(), key=lambda i: i[1])[0] == 1
    assert max(fuse({"m": dense}, {"m": 0.1}, lexical, 0.9).items(), key=lambda i: i[1])[0] == 2


def test_each_model_is_normalised_before_the_models_are_averaged() -> None:
    """e5's cosines sit in a narrow band: raw, its 0.01 steps would vanish beside m3e's 0.2 steps."""
    m3e, e5 = {1: 0.90, 2: 0.70}, {1: 0.86, 2: 0.88}
    equal = combine_dense({"m3e": m3e, "e5": e5}, {"m3e": 0.25, "e5": 0.25})
    assert equal[1] == equal[2] == 0.5
    leaning_e5 = combine_dense({"m3e": m3e, "e5": e5}, dense_weights(["m3e", "e5"], {"e5": 2.0}, 0.5))
    assert leaning_e5[2] > leaning_e5[1]
    assert combine_dense({"m3e": m3e}, {"m3e": 0.5}) == m3e, "one model keeps its cosines"


@pytest.mark.parametrize("mode", ["hybrid", "dense", "lexical"])
def test_each_mode_returns_ranked_passages(searcher: Searcher, mode: str) -> None:
    hits = searcher.search("党风廉政建设主体责任怎么落实", top_k=5, mode=mode)
    assert len(hits) == 5
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(h.passage.title and h.passage.passage_id for h in hits)


def test_hybrid_hits_explain_their_rank(searcher: Searcher) -> None:
    hits = searcher.search("如何推动党建与医疗业务深度融合", top_k=5)
    top = hits[0]
    assert top.dense_rank is not None and top.lexical_rank is not None
    assert {"党建", "业务", "融合"} <= set(top.matched_terms)
    assert "融合" in top.passage.text


def test_highlights_cover_matched_terms_in_the_text(searcher: Searcher) -> None:
    for hit in searcher.search("三会一课制度落实情况", top_k=5):
        for start, end in hit.highlights:
            fragment = hit.passage.text[start:end].lower()
            assert any(term in fragment for term in hit.matched_terms)


def test_domain_terms_stay_whole(searcher: Searcher) -> None:
    assert "三会一课" in searcher.tokenizer.tokens("怎样落实三会一课")
    assert "一岗双责" in searcher.tokenizer.tokens("一岗双责是什么意思")
    assert "如何" not in searcher.tokenizer.tokens("如何落实一岗双责")


def test_results_never_overlap_within_a_paragraph(searcher: Searcher) -> None:
    hits = searcher.search("加强党风廉政建设和医德医风建设", top_k=30)
    spans = sorted((h.passage.doc_id, h.passage.start, h.passage.end) for h in hits)
    for (doc_a, _, end_a), (doc_b, start_b, _) in itertools.pairwise(spans):
        assert doc_a != doc_b or end_a <= start_b


def test_filters_restrict_results(searcher: Searcher) -> None:
    doc_id = searcher.store.index.passages[0].doc_id
    hits = searcher.search("党建工作", top_k=10, filters=Filters(doc_ids=frozenset({doc_id})))
    assert hits and all(h.passage.doc_id == doc_id for h in hits)
    speeches = searcher.search("党建工作", top_k=10, filters=Filters(doc_type="讲话", year=2020))
    assert speeches and all(h.passage.doc_type == "讲话" and h.passage.year == 2020 for h in speeches)
    assert searcher.search("党建工作", filters=Filters(year=1990)) == []


def test_query_without_content_words_still_answers_by_meaning(searcher: Searcher) -> None:
    hits = searcher.search("怎么办？", top_k=3)
    assert len(hits) == 3 and all(h.lexical_rank is None for h in hits)


def test_religion_paraphrase_finds_the_rule(searcher: Searcher) -> None:
    texts = [h.passage.text for h in searcher.search("党员能不能信仰宗教", top_k=3)]
    assert any("宗教" in text for text in texts)


def vocabulary_coverage(query_tokens: list[str], frequency: dict[str, int], passage_count: int) -> float:
    """term_coverage against the vocabulary, as Searcher.search computes it."""
    weights = {word: idf(count, passage_count) for word, count in frequency.items()}
    return term_coverage(query_tokens, weights, weights, idf(0, passage_count))


def test_coverage_is_full_when_every_word_is_in_the_index() -> None:
    frequency = {"党员": 40, "宗教": 1}
    assert vocabulary_coverage(["党员", "宗教"], frequency, 100) == 1.0
    assert vocabulary_coverage([], frequency, 100) == 0.0


def test_coverage_shrinks_when_the_rare_words_are_unknown() -> None:
    frequency = {"党员": 40}
    coverage = vocabulary_coverage(["党员", "得罪"], frequency, 100)
    assert 0.0 < coverage < 0.3  # the unseen word weighs most: it is what the question is about


def test_fusion_with_zero_weights_does_not_divide_by_zero() -> None:
    assert set(fuse({"m": {1: 0.5}}, {"m": 0.0}, {1: 2.0}, 0.0).values()) == {0.0}


def test_paraphrase_with_unknown_words_follows_the_dense_ranking(searcher: Searcher) -> None:
    question = "出差、开会花的钱现在是不是卡得很紧"  # dev split; no word of it is in the corpus
    tokens = searcher.tokenizer.query_tokens(question)
    assert searcher.coverage(tokens) == 0.0 and searcher.idf_of(tokens) == {}
    hybrid = searcher.search(question, top_k=3)
    assert [hit.dense_rank for hit in hybrid] == [1, 2, 3]


def test_every_hit_carries_each_models_rank_and_cosine(searcher: Searcher) -> None:
    for hit in searcher.search("党风廉政建设主体责任怎么落实", top_k=5):
        assert [evidence.model for evidence in hit.models] == list(searcher.encoders)
        assert all(evidence.rank >= 1 and -1.0 <= evidence.score <= 1.0 for evidence in hit.models)
