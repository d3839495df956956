import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from embeddings.encoder import Encoder, QueryBatcher
from embeddings.model import WEIGHTS_SHA256, is_fetched
from service.embed import Encoders

TEXTS = ["如何推动党建与医疗业务深度融合", "党员不得信仰宗教", "今天天气怎么样"]


def test_default_model_is_the_verified_m3e_small(encoder: Encoder) -> None:
    assert is_fetched(encoder.model_dir)
    assert encoder.weights_sha256 == WEIGHTS_SHA256 and encoder.dimension == 512


def test_vectors_are_normalised_float32(encoder: Encoder) -> None:
    vectors = encoder.encode(TEXTS)
    assert vectors.shape == (3, 512) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_onnx_vectors_match_sentence_transformers(encoder: Encoder) -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(encoder.model_dir), device="cpu").encode(TEXTS, normalize_embeddings=True)
    cosines = (encoder.encode(TEXTS) * reference).sum(axis=1)
    assert cosines.min() > 0.9999


def test_related_texts_are_closer_than_unrelated(encoder: Encoder) -> None:
    query = encoder.encode_query("当领导的过组织生活能不能搞例外")
    related, unrelated = encoder.encode(["坚决反对党员领导干部搞特殊化", "红烧肉的做法"])
    assert query @ related > query @ unrelated


def test_cache_avoids_re_encoding(encoder: Encoder, monkeypatch) -> None:
    texts = ["缓存测试：加强基层党组织建设"]
    first = encoder.encode(texts)
    monkeypatch.setattr(encoder, "embed_batch", lambda batch: (_ for _ in ()).throw(AssertionError("re-encoded")))
    assert np.array_equal(encoder.encode(texts), first)


def test_concurrent_questions_share_model_runs_and_each_gets_its_own_vector() -> None:
    runs: list[list[str]] = []

    def slow_embed(texts: list[str]) -> np.ndarray:
        runs.append(list(texts))
        time.sleep(0.05)
        return np.array([[float(len(text)), 1.0] for text in texts], dtype=np.float32)

    batcher = QueryBatcher(slow_embed)
    texts = ["问" * n for n in range(1, 9)]
    with ThreadPoolExecutor(8) as pool:
        vectors = list(pool.map(batcher, texts))
    assert [float(vector[0]) for vector in vectors] == [float(len(text)) for text in texts]
    assert len(runs) < len(texts) and sorted(t for run in runs for t in run) == sorted(texts)


def test_a_failed_run_reaches_every_waiting_question() -> None:
    def broken(texts: list[str]) -> np.ndarray:
        raise RuntimeError("model gone")

    with pytest.raises(RuntimeError, match="model gone"):
        QueryBatcher(broken)("党建")


@pytest.mark.parametrize("model", ["m3e-small", "multilingual-e5-small"])
def test_batched_query_vectors_equal_single_ones(encoders: Encoders, model: str) -> None:
    encoder = encoders[model]
    questions = ["党风廉政建设主体责任怎么落实", "医德医风", "基层党支部如何开展主题党日活动"]
    single = np.stack([encoder.query_batcher.embed([question])[0] for question in questions])
    batched = encoder.query_batcher.embed(questions)
    assert np.allclose(single, batched, atol=1e-4)
