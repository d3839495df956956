"""Questions linked to passages, as changes of the index: each one a new live version.

A link or unlink re-embeds the passage's whole document with its passages' linked questions
(service/links.py) and writes a new version through update.save_change, the way a replaced document
is: the document keeps its place, its unchanged units come from the vector cache (only the new
question is encoded), and the links file is staged as a pending move of that version, so the file
and the served version change together. Callers hold nothing; these take the writer lock.
"""

from collections.abc import Iterable
from contextlib import closing

from service.config import Settings
from service.embed import Encoders
from service.engine import open_store, store_lock
from service.links import (
    MAX_LINKED_CHARS,
    MAX_LINKS_PER_PASSAGE,
    Link,
    load_links,
    new_link,
    passage_key,
    staged_links,
    with_questions,
)
from service.originals import remove_incoming
from service.records import Passage
from service.stores import Store
from service.tokenize import WordTokenizer
from service.update import Change, UpdateError, debris_unless_live, embed_in_batches, save_change


class UnknownPassage(UpdateError):
    """No passage of the live version has this id."""

    def __init__(self, passage_id: str) -> None:
        super().__init__(f"索引中没有段落 {passage_id}（段落编号见检索结果的 passage_id）")


class UnknownLink(UpdateError):
    """The passage has no linked question with this id."""

    def __init__(self, passage_id: str, link_id: str) -> None:
        super().__init__(f"段落 {passage_id} 没有编号为 {link_id} 的关联问题")


class DuplicateLink(UpdateError):
    """The question is already linked to the passage."""

    def __init__(self, link: Link) -> None:
        self.link = link
        super().__init__(f"该问题已关联到此段落（关联编号 {link.link_id}）")


class TooManyLinks(UpdateError):
    def __init__(self) -> None:
        super().__init__(
            f"一个段落最多关联 {MAX_LINKS_PER_PASSAGE} 个问题、共 {MAX_LINKED_CHARS} 字，请先删除不再需要的"
        )


def find_passage(index: Store, passage_id: str) -> Passage:
    """The live version's passage with this id; UnknownPassage when there is none."""
    doc_id = passage_id.rpartition(":")[0]
    if doc_id not in index.documents:
        raise UnknownPassage(passage_id)
    found = next((p for p in index.passages_of(doc_id) if p.passage_id == passage_id), None)
    if found is None:
        raise UnknownPassage(passage_id)
    return found


def links_of(passage: Passage, links: Iterable[Link]) -> list[Link]:
    return [link for link in links if link.key == passage_key(passage)]


def relink(
    settings: Settings, encoders: Encoders, tokenizer: WordTokenizer, index: Store, links: list[Link], doc_id: str
) -> str:
    """Save `links` as the links file and a new live version whose passages of `doc_id` carry them; its name."""
    passages = with_questions(index.passages_of(doc_id), links)
    change = Change({doc_id}, [index.documents[doc_id]], passages)
    change.unit_vectors, change.tokens = embed_in_batches(passages, settings, encoders, tokenizer)
    moves = staged_links(settings.uploads_dir, links)
    with debris_unless_live(settings, moves):
        return save_change(index, change, settings, moves=moves)[0]


def link_question(
    settings: Settings, encoders: Encoders, tokenizer: WordTokenizer, passage_id: str, question: str
) -> Link:
    """Link a question to a passage; live (a new version whose passage has it as a unit) before returning."""
    with store_lock(settings), closing(open_store(settings, encoders)) as index:
        remove_incoming(settings.uploads_dir)
        passage = find_passage(index, passage_id)
        links = load_links(settings.uploads_dir)
        existing = links_of(passage, links)
        if same := next((link for link in existing if link.question == question), None):
            raise DuplicateLink(same)
        linked_chars = sum(len(link.question) for link in existing) + len(question)
        if len(existing) >= MAX_LINKS_PER_PASSAGE or linked_chars > MAX_LINKED_CHARS:
            raise TooManyLinks()
        link = new_link(passage, question)
        relink(settings, encoders, tokenizer, index, [*links, link], passage.doc_id)
    return link


def unlink_question(
    settings: Settings, encoders: Encoders, tokenizer: WordTokenizer, passage_id: str, link_id: str
) -> None:
    """Remove a linked question from its passage; live before returning."""
    with store_lock(settings), closing(open_store(settings, encoders)) as index:
        remove_incoming(settings.uploads_dir)
        passage = find_passage(index, passage_id)
        links = load_links(settings.uploads_dir)
        if not any(link.link_id == link_id for link in links_of(passage, links)):
            raise UnknownLink(passage_id, link_id)
        relink(
            settings, encoders, tokenizer, index, [link for link in links if link.link_id != link_id], passage.doc_id
        )
