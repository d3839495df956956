"""Chinese word tokens for BM25: jieba with the domain dictionary, minus stopwords and punctuation."""

import logging
import re
from pathlib import Path

import jieba

from service.atomic import write_atomic

WORD = re.compile(r"[\w\u4e00-\u9fff]", re.UNICODE)


def read_word_list(path: Path) -> list[str]:
    """Non-empty, non-comment lines' first column."""
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.split()[0] for line in lines if line.strip() and not line.lstrip().startswith("#")]


def trimmed_dictionary(cache_dir: Path, min_freq: int) -> Path | None:
    """jieba's dictionary without words rarer than min_freq, written once into the cache.

    Loading jieba's full 349k-word dictionary is the largest part of start-up (~1.3 s here); the
    137k words with frequency >= 5 load in ~0.4 s and rank our eval questions within one question of
    the full dictionary (compare with DJQA_JIEBA_MIN_FREQ=0). None (full dictionary) when min_freq <= 1.
    """
    if min_freq <= 1:
        return None
    target = cache_dir / "jieba" / f"dict-min{min_freq}.txt"
    if not target.is_file():
        source = Path(jieba.__file__).parent / "dict.txt"
        kept = [line for line in source.read_text(encoding="utf-8").splitlines() if int(line.split()[1]) >= min_freq]
        write_atomic(target, ("\n".join(kept) + "\n").encode("utf-8"))
    return target


def read_expansions(path: Path | None) -> dict[str, tuple[str, ...]]:
    """Spoken word -> the official terms it stands for (one line each: the word, then the terms)."""
    if path is None or not path.is_file():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = [line.split() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return {row[0]: tuple(row[1:]) for row in rows if len(row) > 1}


class WordTokenizer:
    """jieba's search-mode cut (whole words plus their sub-words), domain terms kept whole."""

    def __init__(
        self, user_dict: Path, stopwords: Path, dictionary: Path | None = None, spoken_terms: Path | None = None
    ) -> None:
        jieba.setLogLevel(logging.WARNING)
        self.jieba = jieba.Tokenizer(str(dictionary)) if dictionary else jieba.Tokenizer()
        if dictionary:
            self.jieba.tmp_dir = str(dictionary.parent)  # jieba's own load cache sits beside the file
        self.domain_terms = read_word_list(user_dict)
        for term in self.domain_terms:
            # A high frequency makes jieba prefer the whole term over its parts.
            self.jieba.add_word(term, freq=max(self.jieba.FREQ.get(term, 0), 200_000))
        self.stopwords = frozenset(read_word_list(stopwords))
        self.expansions = read_expansions(spoken_terms)

    def tokens(self, text: str) -> list[str]:
        """Tokens in order of appearance, lower-cased, without stopwords and punctuation."""
        return [
            token.lower()
            for token in self.jieba.cut_for_search(text)
            if len(token) > 1 and WORD.search(token) and token not in self.stopwords
        ]

    def query_tokens(self, text: str) -> list[str]:
        """A question's distinct tokens, then those of the official terms its spoken words stand for.

        Staff type 「收红包」 where documents say 「红包回扣」: the official words let BM25 find the
        passage. Only queries are expanded, so the index does not depend on the expansion file.
        """
        official = [term for spoken, terms in self.expansions.items() if spoken in text for term in terms]
        return list(dict.fromkeys([*self.tokens(text), *(t for term in official for t in self.tokens(term))]))
