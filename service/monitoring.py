"""Prometheus metrics, served by GET /metrics (service/http/routes/system.py).

Counters and histograms live in prometheus_client's default registry (beside its process metrics) and
are updated on the request path: a clock read and one `observe` per stage, about a microsecond each
against a search's 20 ms, never anything per passage. What the served index holds and the upload jobs
by state are read only when /metrics is scraped (`ServedState`).

Thread-safe: prometheus_client guards every update with its own lock.
"""

from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

T = TypeVar("T")
disable_created_metrics()  # no `*_created` series beside every counter and histogram: they double the output

# From a cached /api/config (under a millisecond) to a generated answer (tens of seconds).
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# A search stage: 0.1 ms (BM25 on the seeds) to a second (a Milvus round trip under load).
STAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

REQUESTS = Counter(
    "djqa_http_requests", "HTTP requests by method, route template and status", ["method", "route", "status"]
)
REQUEST_SECONDS = Histogram(
    "djqa_http_request_duration_seconds",
    "Time from a request's arrival to its response's last byte, by method, route template and status",
    ["method", "route", "status"],
    buckets=REQUEST_BUCKETS,
)
ENCODE_SECONDS = Histogram(
    "djqa_encode_seconds", "Time to encode a question, per embedding model", ["model"], buckets=STAGE_BUCKETS
)
# stage: dense (a model's nearest passages), rescore (that model's exact scores of the other
# retrievers' candidates), lexical (BM25), fusion (fused scores and ranks), rows (the hits' passages).
STAGE_SECONDS = Histogram(
    "djqa_search_stage_seconds",
    "Time of a search stage: dense and rescore per model, lexical, fusion, rows",
    ["stage", "model"],
    buckets=STAGE_BUCKETS,
)
GENERATION_FALLBACKS = Counter(
    "djqa_generation_fallbacks",
    "Answers given extractively although generation was asked for, by reason (service/generate.py FALLBACKS)",
    ["reason"],
)


def timed(seconds: Histogram, work: Callable[..., T], *args: object) -> T:
    """work(*args), its duration observed in `seconds` (a histogram with its labels chosen)."""
    with seconds.time():
        return work(*args)


class ServedState(Collector):
    """Gauges read at scrape time: the served index version and its counts, upload jobs by state."""

    def __init__(self, served: Callable[[], tuple[str, str, Mapping]], job_states: Callable[[], Mapping[str, int]]):
        self.served = served  # () -> (version, store kind, manifest)
        self.job_states = job_states

    def collect(self) -> Iterator[Metric]:
        version, store, manifest = self.served()
        info = GaugeMetricFamily("djqa_index_info", "The served index version (value 1)", labels=["version", "store"])
        info.add_metric([version, store], 1)
        yield info
        yield GaugeMetricFamily("djqa_index_documents", "Documents in the served index", manifest["document_count"])
        yield GaugeMetricFamily("djqa_index_passages", "Passages in the served index", manifest["passage_count"])
        jobs = GaugeMetricFamily("djqa_jobs", "Upload jobs kept by this server, by state", labels=["state"])
        for state, count in sorted(self.job_states().items()):
            jobs.add_metric([state], count)
        yield jobs


def exposition(app_registry: CollectorRegistry) -> bytes:
    """The Prometheus text format of the process-wide metrics and those of one app."""
    return generate_latest(REGISTRY) + generate_latest(app_registry)
