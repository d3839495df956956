"""Chinese word tokens for BM25: jieba with the domain dictionary, minus stopwords and punctuation."""

import logging
import re
from pathlib import Path

import jieba

WORD = re.compile(r"[\w\u4e00-\u9fff]", re.UNICODE)


def read_word_list(path: Path) -> list[str]:
    """Non-empty, non-comment lines' first column."""
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.split()[0] for line in lines if line.strip() and not line.lstrip().startswith("#")]


class WordTokenizer:
    """jieba's search-mode cut (whole words plus their sub-words), domain terms kept whole."""

    def __init__(self, user_dict: Path, stopwords: Path) -> None:
        jieba.setLogLevel(logging.WARNING)
        self.jieba = jieba.Tokenizer()
        self.domain_terms = read_word_list(user_dict)
        for term in self.domain_terms:
            # A high frequency makes jieba prefer the whole term over its parts.
            self.jieba.add_word(term, freq=max(self.jieba.FREQ.get(term, 0), 200_000))
        self.stopwords = frozenset(read_word_list(stopwords))

    def tokens(self, text: str) -> list[str]:
        """Tokens in order of appearance, lower-cased, without stopwords and punctuation."""
        return [
            token.lower()
            for token in self.jieba.cut_for_search(text)
            if len(token) > 1 and WORD.search(token) and token not in self.stopwords
        ]
