"""Recognise title, metadata and heading levels; give every paragraph its section path."""

import re
from dataclasses import dataclass

from service.records import TITLE_LEVEL, Block
from service.text import CLOSERS, COLONS, COMMAS, FULL_STOPS, SENTENCE_ENDS, numbered_level

CLAUSE_END = re.compile(rf"[{SENTENCE_ENDS}{COLONS}]")
SENTENCE_END = re.compile(rf"[{FULL_STOPS}][{CLOSERS}]*$")
TERMINAL_PUNCT = re.compile(rf"[{SENTENCE_ENDS}{COMMAS}{COLONS}]$")
# A title ends on the document's genre: a speech, a report … or a law, a regulation, a rule. An edition
# date in brackets may follow (「…条例（2022-12-30）」).
GENRE_END = r"[（(][^（）()]{0,20}[）)]$|$"
TITLE_WORDS = re.compile(
    rf"(讲话|发言|致辞|报告|总结|汇报|材料|做法|意见|方案|通知|要点|计划|规划|纲要"
    rf"|法|条例|办法|规定|细则|规则|决定|决议|解释)(?:{GENRE_END})"
)
# Laws, regulations and rules: a title naming the genre, or a body of numbered articles (第一条 …).
STATUTE_TITLE = re.compile(rf"(法|条例|办法|规定|细则|规则|决定|决议|解释)(?:{GENRE_END})")
ARTICLE = re.compile(r"第[一二三四五六七八九十百零〇]+条[\s　]")
MIN_ARTICLES = 3
# A dated header line under a statute's title: 「2016年2月6日 … 修订」「… 通过」「… 施行」.
DATED_LINE = re.compile(r"((?:19|20)\d{2})年\d{1,2}月\d{1,2}日")
ENACTED = re.compile(r"通过|公布|发布|修订|修正|批准|审议")
CHAPTER = re.compile(r"第[一二三四五六七八九十]+章")
HEADER_LINES = 8
MEETING = re.compile(r"召开(?:了)?(?:\d{4}年)?([^，。,；]{4,40}?(?:会议|大会|座谈会|推进会|部署会|会))")
YEAR = re.compile(r"((?:19|20)\d{2})年")
LEVEL_MARKERS = {  # 全县, 县委, 县卫健局 / 县卫生健康局 …
    level: (f"全{level}", f"{level}委", f"{level}卫") for level in ("省", "市", "区", "县")
}
HEADLINE_MAX = 25  # an unnumbered line this short, without closing punctuation, is a heading
HEADING_MAX = 40  # longer inline headings are shortened for the section path
TITLE_CLAUSE_MIN = 8  # shorter closing clauses are verdicts (「成效明显」), not the subject
LEAD_SENTENCE_MIN = 50  # a shorter opening sentence names its subject first
SALUTATION_MAX = 8  # "同志们：" and the like are kept in the text but are not passages


@dataclass(frozen=True)
class Paragraph:
    """A cleaned block with its place in the document's outline."""

    text: str
    section_path: tuple[str, ...]
    is_passage: bool  # False for heading-only lines, the title and salutations
    page: int | None = None


@dataclass(frozen=True)
class Outline:
    title: str
    doc_type: str | None
    year: int | None
    level: str | None
    paragraphs: tuple[Paragraph, ...]


def shorten(text: str, limit: int = HEADING_MAX) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def split_inline_heading(text: str) -> tuple[str, bool]:
    """`（一）统一思想激发活力，组织建设更坚实。认真组织…` -> ("（一）统一思想激发活力…", True).

    The heading is the first sentence, cut at its first comma for the section path; the line is body
    text too when it ends a sentence (one-sentence points such as `二要强化考核，把…挂钩。`).
    """
    match = CLAUSE_END.search(text)
    heading = text[: match.start()] if match else text
    comma = re.search(r"[，,]", heading)
    if comma:
        heading = heading[: comma.start()] + "…"
    return shorten(heading), bool(SENTENCE_END.search(text)) or (match is not None and match.end() < len(text))


def is_headline(text: str, next_text: str | None) -> bool:
    """A short unnumbered line with no closing punctuation, followed by longer body text."""
    return (
        len(text) <= HEADLINE_MAX
        and not TERMINAL_PUNCT.search(text)
        and next_text is not None
        and len(next_text) > len(text)
    )


def is_title_line(text: str, next_text: str | None) -> bool:
    if numbered_level(text) is not None or len(text) > 60 or TERMINAL_PUNCT.search(text):
        return False
    return bool(TITLE_WORDS.search(text)) or (next_text or "").startswith("同志们")


def first_sentence_title(text: str) -> str:
    """A title from the opening sentence: shortened, or the last substantial clause of a long one.

    Reports open with a long lead sentence that gives context first and ends on what they are about:
    「按照…要求，*卫健局结合实际，…，实行“四个统一”融合业务工作，成效明显。」 -> 「实行“四个统一”融合业务工作」.
    """
    sentence = CLAUSE_END.split(text, maxsplit=1)[0]
    if len(sentence) <= 36:
        return sentence
    clauses = [clause.strip() for clause in re.split(r"[，,]", sentence)]
    substantial = [clause for clause in clauses if TITLE_CLAUSE_MIN <= len(clause) <= 36]
    if len(sentence) > LEAD_SENTENCE_MIN and substantial:
        return substantial[-1]
    cut = max(sentence.rfind(mark, 0, 36) for mark in "，,、")
    return (sentence[:cut] if cut > 8 else sentence[:35]) + "…"


def derive_title(texts: list[str], fallback: str) -> str:
    """Speeches name their meeting in the opening ("今天召开…会议"); else the opening sentence."""
    body = [text for text in texts if len(text) > SALUTATION_MAX and numbered_level(text) is None]
    if texts and texts[0].startswith("同志们"):
        for text in body[:2]:
            if meeting := MEETING.search(text):
                return f"在{meeting.group(1)}上的讲话"
    return first_sentence_title(body[0]) if body else fallback


def is_statute(title: str, texts: list[str]) -> bool:
    """A law, regulation or rule: its title names the genre, or its body is numbered articles."""
    return bool(STATUTE_TITLE.search(title)) or sum(bool(ARTICLE.match(text)) for text in texts) >= MIN_ARTICLES


def detect_doc_type(title: str, texts: list[str], headings: list[str]) -> str | None:
    """讲话, 汇报, 经验交流, 工作总结 or 法规 where the title or the text says so, else None (unknown)."""
    heading_text = " ".join(headings)
    if is_statute(title, texts):
        # Before the report rules: a regulation's chapters (「存在问题的处理」) are no work summary.
        return "法规"
    if re.search(r"讲话|致辞", title) or (texts and texts[0].startswith("同志们")):
        return "讲话"
    if "汇报" in title:
        return "汇报"
    if re.search(r"交流|经验|典型", title) or re.search(r"主要做法|经验做法", heading_text):
        return "经验交流"
    if "总结" in title or re.search(r"下一步|工作打算|存在(的)?问题", heading_text):
        return "工作总结"
    return None


def header_years(texts: list[str]) -> list[int]:
    """Years a statute's dated header lines (under the title, before the first chapter or article) give
    for its adoption, publication and revisions; a date only followed by 「施行」 is when it took effect."""
    years = []
    for text in texts[:HEADER_LINES]:
        if ARTICLE.match(text) or CHAPTER.match(text) or numbered_level(text) is not None:
            break
        if not DATED_LINE.match(text):
            continue
        dates = list(DATED_LINE.finditer(text))
        for date, following in zip(dates, [*dates[1:], None], strict=True):
            said = text[date.end() : following.start() if following else len(text)]
            if not ("施行" in said and not ENACTED.search(said)):
                years.append(int(date.group(1)))
    return years


def detect_year(title: str, texts: list[str], statute: bool = False) -> int | None:
    """The year the title states; for a statute, the latest adoption or revision its header states (the
    edition the text is, not the first one), else unknown; for other documents a year stated in the
    opening paragraphs."""
    if match := YEAR.search(title):
        return int(match.group(1))
    if statute:
        years = header_years(texts)
        return max(years) if years else None
    for text in texts[:3]:
        if match := YEAR.search(text):
            return int(match.group(1))
    return None


def detect_level(title: str, texts: list[str]) -> str | None:
    """县/区/市/省, by which administrative markers the opening uses most."""
    opening = title + "".join(texts[:4])
    counts = {level: sum(opening.count(m) for m in markers) for level, markers in LEVEL_MARKERS.items()}
    level, count = max(counts.items(), key=lambda item: item[1])
    return level if count else None


def outline(blocks: list[Block], fallback_title: str) -> Outline:
    """Title, metadata and sectioned paragraphs of cleaned, non-empty blocks."""
    texts = [block.text for block in blocks]
    title_index = next(
        (i for i, text in enumerate(texts[:3]) if is_title_line(text, texts[i + 1] if i + 1 < len(texts) else None)),
        None,
    )
    # A title the file format marks (docx "Title" style) wins over one recognised from the text.
    title_index = next((i for i, block in enumerate(blocks) if block.heading_level == TITLE_LEVEL), title_index)
    title = texts[title_index] if title_index is not None else ""
    body_texts = texts[title_index + 1 :] if title_index is not None else texts
    if not title:
        title = derive_title(body_texts, fallback_title)

    paragraphs: list[Paragraph] = []
    stack: list[tuple[int, str, bool]] = []  # (level, heading, numbered) of the section path
    for i, block in enumerate(blocks):
        text = block.text
        if i == title_index:
            paragraphs.append(Paragraph(text, (), False, block.page))
            continue
        next_text = texts[i + 1] if i + 1 < len(texts) else None
        level = None if block.table_row else block.heading_level or numbered_level(text)
        has_body = block.heading_level is None
        heading = text
        numbered = level is not None
        if level is None and not block.table_row and is_headline(text, next_text):
            # Unnumbered headlines sit one level below the innermost numbered heading.
            level = max((entry[0] for entry in stack if entry[2]), default=0) + 1
            has_body = False
        elif level is not None and block.heading_level is None:
            heading, has_body = split_inline_heading(text)
        if level is not None:
            stack = [entry for entry in stack if entry[0] < level] + [(level, heading, numbered)]
        path = tuple(entry[1] for entry in stack)
        is_passage = has_body and len(text) > SALUTATION_MAX
        paragraphs.append(Paragraph(text, path, is_passage, block.page))

    headings = [name for p in paragraphs for name in p.section_path[-1:]]
    doc_type = detect_doc_type(title, body_texts, headings)
    return Outline(
        title=title,
        doc_type=doc_type,
        year=detect_year(title, body_texts, statute=doc_type == "法规"),
        level=detect_level(title, body_texts),
        paragraphs=tuple(paragraphs),
    )
