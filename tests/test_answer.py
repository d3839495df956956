import re

import numpy as np

from service.answer import (
    ASKS_NUMBER,
    MAX_SENTENCES,
    MODEL_FREE_GATE,
    NOT_FOUND,
    NUMBER,
    Answerer,
    Evidence,
    Gate,
    Sentence,
    as_statement,
    compose_answer,
    confidence,
    gate_for,
    gather_evidence,
    select_sentences,
    sentence_scores,
    split_sentences,
)
from service.records import Hit, ModelEvidence, Passage
from service.search import Searcher, idf, term_coverage
from service.text import context_around


def hit(text: str, number: int = 1, **evidence: object) -> Hit:
    passage = Passage(f"doc:{number}", "doc", "标题", ("一、总体要求",), number, 0, len(text), text)
    return Hit(passage=passage, score=1.0, **evidence)


def unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def test_sentences_follow_hit_then_text_order_and_drop_fragments() -> None:
    hits = [hit("要加强党的建设。好的。要落实主体责任！"), hit("坚持从严治党，永远在路上；", 2)]
    texts = [(s.hit, s.text) for s in split_sentences(hits)]
    assert texts == [(0, "要加强党的建设。"), (0, "要落实主体责任！"), (1, "坚持从严治党，永远在路上；")]


def test_run_in_heading_stays_with_the_sentence_that_makes_the_point() -> None:
    text = "三是党建工作创新能力不足。一些党组织活动内容贫乏、形式缺乏新意。领导重视不够。"
    sentences = split_sentences([hit(text)])
    assert sentences[0].text == "三是党建工作创新能力不足。一些党组织活动内容贫乏、形式缺乏新意。"
    assert all(text[s.start : s.end] == s.text for s in sentences)


def test_answer_marks_each_sentence_and_numbers_citations_in_order() -> None:
    hits = [hit("甲句子说的是第一件事。乙句子说的是第二件事。"), hit("丙句子说的是第三件事。", 2)]
    sentences = split_sentences(hits)
    text, citations = compose_answer(sentences, [2, 1, 0], hits)
    assert text == "甲句子说的是第一件事。【1】乙句子说的是第二件事。【1】丙句子说的是第三件事。【2】"
    assert citations == (hits[0], hits[1])


def test_citations_are_only_the_passages_actually_quoted() -> None:
    hits = [hit("第一段没有被引用的句子。"), hit("第二段被引用的重要句子。", 2)]
    text, citations = compose_answer(split_sentences(hits), [1], hits)
    assert text.endswith("【1】") and citations == (hits[1],)


def test_near_duplicates_are_said_once() -> None:
    sentences = [
        Sentence(0, 0, 10, "加强医德医风建设，弘扬职业精神。"),
        Sentence(1, 0, 10, "加强医德医风建设，弘扬崇高职业精神。"),  # same wording, one word more
        Sentence(2, 0, 10, "完全不同的表述但意思一样。"),  # same meaning: same vector
        Sentence(3, 0, 10, "落实全面从严治党主体责任。"),
    ]
    vectors = np.stack([unit(1, 0, 0), unit(0.9, 0.1, 0.3), unit(1, 0, 0), unit(0, 1, 0)])
    chosen = select_sentences(sentences, np.array([1.0, 0.99, 0.98, 0.97]), vectors)
    assert chosen == [0, 3]


def test_answers_are_capped_and_stop_at_weak_sentences() -> None:
    count = MAX_SENTENCES + 3
    words = "甲乙丙丁戊己庚辛壬癸"
    sentences = [Sentence(i, 0, 8, words[i] * 8 + "。") for i in range(count)]
    vectors = np.eye(count, dtype=np.float32)
    assert len(select_sentences(sentences, np.linspace(1.0, 0.99, count), vectors)) == MAX_SENTENCES
    assert select_sentences(sentences, np.array([1.0, 0.5, *([0.4] * (count - 2))]), vectors) == [0]


def test_statements_end_with_a_full_stop() -> None:
    assert as_statement("坚持从严治党；") == "坚持从严治党。"
    assert as_statement("坚持“三会一课”，") == "坚持“三会一课”。"
    assert as_statement("这是问题吗？") == "这是问题吗？"
    assert as_statement("没有标点") == "没有标点。"


def test_words_the_corpus_never_uses_weigh_most() -> None:
    weights = {word: idf(frequency, 3) for word, frequency in {"党建": 3, "医院": 1, "业务": 1}.items()}
    unseen = idf(0, 3)
    assert unseen > weights["医院"] > weights["党建"]
    assert term_coverage(["党建", "红烧肉"], {"党建"}, weights, unseen) < 0.3
    assert term_coverage(["医院", "党建"], {"医院"}, weights, unseen) > 0.5
    assert term_coverage([], set(), weights, unseen) == 0.0


GATE = Gate(bias=-20.0, cosine_weights={"m": 20.0}, coverage=2.0, agreement=1.0, verbatim=2.0)


def test_confidence_grows_with_the_evidence() -> None:
    off_topic = Evidence(cosines={"m": 0.69}, coverage=0.0, agreement=0.0)
    on_topic = Evidence(cosines={"m": 0.95}, coverage=0.8, agreement=1.0)
    assert confidence(off_topic, GATE) < 0.5 < confidence(on_topic, GATE)
    assert confidence(Evidence({"m": 0.8}, 0.5, 0.0), GATE) > confidence(Evidence({"m": 0.8}, 0.0, 0.0), GATE)
    assert confidence(Evidence({"m": 0.8}, 0.0, 0.0, verbatim=1.0), GATE) > confidence(
        Evidence({"m": 0.8}, 0.0, 0.0), GATE
    )
    assert (
        0.0
        <= confidence(Evidence({"m": -1.0}, 0.0, 0.0), GATE)
        <= confidence(Evidence({"m": 1.0}, 1.0, 1.0), GATE)
        <= 1.0
    )


def test_an_unknown_model_profile_uses_the_model_free_gate() -> None:
    assert gate_for(["my-own-model"]) is MODEL_FREE_GATE
    assert gate_for(["multilingual-e5-small", "m3e-small"]) is not MODEL_FREE_GATE


def test_evidence_is_the_best_hit_not_the_first() -> None:
    hits = [
        hit("甲", 1, matched_terms=("党建",), models=(ModelEvidence("m", 1, 0.7),), lexical_rank=1),
        hit("乙", 2, models=(ModelEvidence("m", 2, 0.8),)),
    ]
    idf = {"党建": 1.0, "融合": 3.0}
    evidence = gather_evidence(hits, ["党建", "融合"], idf, 5.0, "党建融合")
    assert evidence == Evidence(cosines={"m": 0.8}, coverage=0.25, agreement=1.0, verbatim=0.0)


def test_a_keyword_the_passage_contains_word_for_word_counts_as_verbatim() -> None:
    hits = [hit("各党支部要落实党务公开制度。")]
    assert gather_evidence(hits, ["党务公开"], {}, 5.0, "党务公开").verbatim == 1.0
    assert gather_evidence(hits, ["党务"], {}, 5.0, "党务怎么公开").verbatim == 0.0


def test_sentence_scores_favour_a_number_when_the_question_asks_for_one() -> None:
    cosines = np.array([[0.80, 0.90], [0.79, 0.89]], dtype=np.float32)
    plain = sentence_scores(cosines, [], [[], []], {}, 5.0, [False, False])
    with_number = sentence_scores(cosines, [], [[], []], {}, 5.0, [False, True])
    assert plain[0] > plain[1] and with_number[1] > with_number[0]
    assert ASKS_NUMBER.search("近三年发展了多少名党员") and not ASKS_NUMBER.search("怎样加强医德医风建设")
    assert NUMBER.search("新发展党员21名") and NUMBER.search("培养三名骨干") and not NUMBER.search("加强党的建设")


def test_context_is_cut_at_sentence_ends() -> None:
    text = "开头一句话。" + "甲" * 200 + "。前文最后一句。\n【段落本身】\n后文第一句。后文第二句；" + "乙" * 200 + "。"
    start = text.index("【")
    end = text.index("】") + 1
    before, after = context_around(text, start, end, limit=150)
    assert before == "前文最后一句。"
    assert after == "后文第一句。后文第二句；"
    assert context_around("短文。【段】后。", 3, 6) == ("短文。", "后。")


def test_context_without_a_sentence_end_is_marked_as_cut() -> None:
    text = "甲" * 300 + "【段】" + "乙" * 300
    before, after = context_around(text, 300, 303, limit=20)
    assert before == "…" + "甲" * 20 and after == "乙" * 20 + "…"


def test_answerer_cites_on_topic_and_declines_off_topic(searcher: Searcher) -> None:
    answerer = Answerer(searcher, min_confidence=0.5)
    answer = answerer.answer("党风廉政建设主体责任怎么落实", top_k=5)
    assert answer.found and answer.citations and 0.5 <= answer.confidence <= 1.0
    assert len(re.findall(r"【\d+】", answer.text)) <= MAX_SENTENCES
    declined = answerer.answer("红烧肉怎么做好吃")
    assert not declined.found and declined.text == NOT_FOUND and declined.citations == ()
