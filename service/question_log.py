"""The question log: what users asked, what they found, what they said of it; and the administrator's marks.

One SQLite file (settings.question_log_file, data/questions/questions.sqlite by default):

    asked          one row per /api/search and /api/ask: time, the question and its normalised form,
                   endpoint, mode, collection scope (the filters, JSON), top passage ids, answered
                   (ask only), confidence (ask only), latency. No client address or key is stored.
    feedback       有用 / 没用 on an answer, 「这段回答了我的问题」 on a passage
    out_of_scope   questions an administrator marked 「文件中没有」 (service/answer gate, /api/ask)

A search must never wait for the disk nor fail because of the log, so requests only put a row on an
in-memory queue (put_nowait: a full queue drops the row and counts it) and one writer thread
inserts them in batches. Entries older than settings.question_log_days are pruned at start and
once a day. The administrator's marks are written at once (they are rare and the page waits for
them). Reads open their own connection; WAL lets them run beside the writer. Thread-safe.
"""

import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from service.questions import Asked, QuestionGroup, grouped, near_duplicate, normalised, paraphrase

logger = logging.getLogger("dangjian_qa")

SCHEMA = """
CREATE TABLE IF NOT EXISTS asked (
    id INTEGER PRIMARY KEY, at TEXT NOT NULL, question TEXT NOT NULL, normalised TEXT NOT NULL,
    endpoint TEXT NOT NULL, mode TEXT, scope TEXT, passage_ids TEXT NOT NULL,
    answered INTEGER, confidence REAL, latency_ms REAL
);
CREATE INDEX IF NOT EXISTS asked_at ON asked (at);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY, at TEXT NOT NULL, question TEXT NOT NULL, normalised TEXT NOT NULL,
    helpful INTEGER NOT NULL, passage_id TEXT
);
CREATE INDEX IF NOT EXISTS feedback_at ON feedback (at);
CREATE TABLE IF NOT EXISTS out_of_scope (
    id INTEGER PRIMARY KEY, at TEXT NOT NULL, question TEXT NOT NULL, normalised TEXT NOT NULL UNIQUE
);
"""
QUEUE_SIZE = 10_000  # rows waiting for the writer; beyond it rows are dropped, never the request
BATCH = 500
PRUNE_EVERY_SECONDS = 24 * 3600
REFUSED, LOW_CONFIDENCE, UNHELPFUL = "refused", "low_confidence", "unhelpful"
VectorsOf = Callable[[str], dict[str, np.ndarray]]


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Entry:
    """One search or ask, as the log keeps it."""

    question: str
    endpoint: str  # "search" or "ask"
    mode: str
    scope: dict
    passage_ids: Sequence[str]
    latency_ms: float
    answered: bool | None = None
    confidence: float | None = None
    at: str = ""


@dataclass(frozen=True)
class Feedback:
    question: str
    helpful: bool
    passage_id: str | None = None
    at: str = ""


@dataclass(frozen=True)
class Mark:
    mark_id: int
    question: str
    at: str


class QuestionLog:
    """The log file with its writer thread; `record` and `feedback` never block nor raise."""

    def __init__(self, path: Path, keep_days: int, low_confidence: float) -> None:
        self.path = path
        self.keep_days = keep_days
        self.low_confidence = low_confidence
        self.queue: queue.Queue[Entry | Feedback | None] = queue.Queue(QUEUE_SIZE)
        self.dropped = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as connection:
            connection.execute("PRAGMA journal_mode = WAL")
            connection.executescript(SCHEMA)
        self.pruned_at = 0.0
        self.thread = threading.Thread(target=self.write_loop, name="question-log", daemon=True)
        self.thread.start()

    def connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=10, check_same_thread=False)
        connection.execute("PRAGMA busy_timeout = 10000")
        return connection

    # --- writing, off the request path -------------------------------------------------------------

    def record(self, entry: Entry | Feedback) -> None:
        """Queue a row for the writer; a full queue drops it (counted), it never waits."""
        try:
            self.queue.put_nowait(entry)
        except queue.Full:
            self.dropped += 1

    def flush(self) -> None:
        """Wait until every queued row is written (tests, shutdown)."""
        self.queue.join()

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=5)

    def write_loop(self) -> None:
        connection = self.connect()
        while True:
            rows = [self.queue.get()]
            while len(rows) < BATCH:
                try:
                    rows.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self.write(connection, [row for row in rows if row is not None])
                if time.monotonic() - self.pruned_at > PRUNE_EVERY_SECONDS:
                    self.prune(connection)
            except Exception:  # a full or broken disk, a bad row: rows are lost, never the thread or a search
                logger.exception("问题日志写入失败")
            finally:
                for _ in rows:
                    self.queue.task_done()
            if None in rows:
                connection.close()
                return

    @staticmethod
    def write(connection: sqlite3.Connection, rows: list[Entry | Feedback]) -> None:
        asked = [
            (
                e.at or now(),
                e.question,
                normalised(e.question),
                e.endpoint,
                e.mode,
                json.dumps(e.scope, ensure_ascii=False),
                json.dumps(list(e.passage_ids), ensure_ascii=False),
                None if e.answered is None else int(e.answered),
                e.confidence,
                e.latency_ms,
            )
            for e in rows
            if isinstance(e, Entry)
        ]
        feedback = [
            (f.at or now(), f.question, normalised(f.question), int(f.helpful), f.passage_id)
            for f in rows
            if isinstance(f, Feedback)
        ]
        with connection:
            connection.executemany(
                "INSERT INTO asked (at, question, normalised, endpoint, mode, scope, passage_ids, answered,"
                " confidence, latency_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                asked,
            )
            connection.executemany(
                "INSERT INTO feedback (at, question, normalised, helpful, passage_id) VALUES (?, ?, ?, ?, ?)", feedback
            )

    def prune(self, connection: sqlite3.Connection) -> None:
        """Drop entries older than keep_days (the administrator's marks stay)."""
        cutoff = (datetime.now(UTC) - timedelta(days=self.keep_days)).isoformat(timespec="seconds")
        with connection:
            connection.execute("DELETE FROM asked WHERE at < ?", (cutoff,))
            connection.execute("DELETE FROM feedback WHERE at < ?", (cutoff,))
        self.pruned_at = time.monotonic()

    # --- reading -----------------------------------------------------------------------------------

    def entries(self, since: str = "") -> list[dict]:
        """The logged searches and asks since an ISO time, oldest first."""
        with self.connect() as connection:
            connection.row_factory = sqlite3.Row
            rows = connection.execute("SELECT * FROM asked WHERE at >= ? ORDER BY id", (since,)).fetchall()
        return [
            {**dict(row), "scope": json.loads(row["scope"]), "passage_ids": json.loads(row["passage_ids"])}
            for row in rows
        ]

    def feedback_rows(self) -> list[dict]:
        with self.connect() as connection:
            connection.row_factory = sqlite3.Row
            return [dict(row) for row in connection.execute("SELECT * FROM feedback ORDER BY id")]

    def needing_attention(self) -> list[Asked]:
        """Every asking that was refused, answered with low confidence, or marked 没用."""
        with self.connect() as connection:
            asked = connection.execute(
                "SELECT at, question, answered, confidence, passage_ids FROM asked"
                " WHERE endpoint = 'ask' AND (answered = 0 OR confidence < ?)",
                (self.low_confidence,),
            ).fetchall()
            unhelpful = connection.execute("SELECT at, question FROM feedback WHERE helpful = 0").fetchall()
        found = [
            Asked(at, question, REFUSED if not answered else LOW_CONFIDENCE, tuple(json.loads(ids)))
            for at, question, answered, confidence, ids in asked
        ]
        return found + [Asked(at, question, UNHELPFUL) for at, question in unhelpful]

    def unresolved(self, resolved: Sequence[str]) -> list[QuestionGroup]:
        """Questions needing attention, near-duplicates grouped, most frequent first; `resolved` are
        linked questions, whose groups are left out like those marked out of scope."""
        done = [normalised(text) for text in resolved] + [normalised(mark.question) for mark in self.marks()]
        return grouped(self.needing_attention(), done)

    # --- the administrator's 「文件中没有」 marks ------------------------------------------------------

    def mark_out_of_scope(self, question: str) -> Mark:
        """Mark a question as one the documents do not answer (idempotent by normalised text)."""
        with self.connect() as connection, connection:
            connection.execute(
                "INSERT OR IGNORE INTO out_of_scope (at, question, normalised) VALUES (?, ?, ?)",
                (now(), question, normalised(question)),
            )
            row = connection.execute(
                "SELECT id, question, at FROM out_of_scope WHERE normalised = ?", (normalised(question),)
            ).fetchone()
        return Mark(*row)

    def unmark(self, mark_id: int) -> bool:
        with self.connect() as connection, connection:
            return connection.execute("DELETE FROM out_of_scope WHERE id = ?", (mark_id,)).rowcount > 0

    def marks(self, since: str = "") -> list[Mark]:
        with self.connect() as connection:
            rows = connection.execute("SELECT id, question, at FROM out_of_scope WHERE at >= ? ORDER BY id", (since,))
            return [Mark(*row) for row in rows]

    def out_of_scope(self, question: str, vectors_of: VectorsOf | None = None) -> Mark | None:
        """The mark the question near-duplicates or, given `vectors_of` (a text's query vectors by
        model), closely paraphrases (questions.paraphrase); None when there is none."""
        text, marks = normalised(question), self.marks()
        near = next((mark for mark in marks if near_duplicate(normalised(mark.question), text)), None)
        if near is not None or vectors_of is None or not marks:
            return near
        asked = vectors_of(question)
        return next((mark for mark in marks if paraphrase(asked, vectors_of(mark.question))), None)
