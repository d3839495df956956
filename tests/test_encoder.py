import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from embeddings.encoder import Encoder, encode_models, open_encoder
from embeddings.model import WEIGHTS_SHA256, is_fetched
from service.config import PROJECT_ROOT
from service.embed import Encoders

TEXTS = ["如何推动党建与医疗业务深度融合", "党员不得信仰宗教", "今天天气怎么样"]


def test_default_model_is_the_verified_m3e_small_in_int8(encoder: Encoder) -> None:
    assert is_fetched(PROJECT_ROOT / "models" / "m3e-small")
    assert encoder.weights_sha256 == WEIGHTS_SHA256 and encoder.dimension == 512 and encoder.engine == "onnx-int8"


def test_vectors_are_normalised_float32(encoder: Encoder) -> None:
    vectors = encoder.encode(TEXTS)
    assert vectors.shape == (3, 512) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_float32_onnx_vectors_match_sentence_transformers_and_int8_stays_close(tmp_path: Path) -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    from sentence_transformers import SentenceTransformer

    model_dir = PROJECT_ROOT / "models" / "m3e-small"
    reference = SentenceTransformer(str(model_dir), device="cpu").encode(TEXTS, normalize_embeddings=True)
    fp32 = open_encoder("m3e-small", model_dir.parent, tmp_path, engine="fp32", query_cache=0)
    int8 = open_encoder("m3e-small", model_dir.parent, tmp_path, engine="int8", query_cache=0)
    assert (fp32.encode(TEXTS) * reference).sum(axis=1).min() > 0.9999
    assert (int8.encode(TEXTS) * reference).sum(axis=1).min() > 0.98


def test_related_texts_are_closer_than_unrelated(encoder: Encoder) -> None:
    query = encoder.encode_query("当领导的过组织生活能不能搞例外")
    related, unrelated = encoder.encode(["坚决反对党员领导干部搞特殊化", "红烧肉的做法"])
    assert query @ related > query @ unrelated


def test_cache_avoids_re_encoding(encoder: Encoder, monkeypatch) -> None:
    texts = ["缓存测试：加强基层党组织建设"]
    first = encoder.encode(texts)
    monkeypatch.setattr(encoder, "embed_batch", lambda batch: (_ for _ in ()).throw(AssertionError("re-encoded")))
    assert np.array_equal(encoder.encode(texts), first)


def test_index_build_encodes_every_distinct_text_once_on_every_worker(encoders: Encoders, monkeypatch) -> None:
    threads: set[str] = set()
    seen: dict[str, list[str]] = {name: [] for name in encoders}
    for name, model in encoders.items():

        def counting(texts: list[str], real=model.embed_batch, name=name) -> np.ndarray:
            threads.add(threading.current_thread().name)
            seen[name].extend(texts)
            time.sleep(0.05)  # long enough that both workers take a batch
            return real(texts)

        monkeypatch.setattr(model, "embed_batch", counting)
    fresh = [f"去重测试 {uuid.uuid4().hex} 第{i}句" for i in range(40)]
    vectors = encode_models(encoders, [*fresh, *fresh[:10]], workers=2)
    for name, model in encoders.items():
        assert sorted(seen[name]) == sorted(fresh) and vectors[name].shape == (50, model.dimension)
        assert np.array_equal(vectors[name][40:], vectors[name][:10])
    assert len(threads) == 2


@pytest.mark.parametrize("model", ["m3e-small", "multilingual-e5-small"])
def test_a_texts_vector_does_not_depend_on_its_batch_or_on_other_questions(encoders: Encoders, model: str) -> None:
    """int8 scales a run's activations as a whole: each text runs alone, so no neighbour changes its vector."""
    encoder = encoders[model]
    questions = ["党风廉政建设主体责任怎么落实", "医德医风", "基层党支部如何开展主题党日活动"]
    single = np.stack([encoder.embed_batch([question])[0] for question in questions])
    assert np.array_equal(single, encoder.embed_batch(questions))
    alone = np.array(encoder.encode_query(questions[0]))
    with ThreadPoolExecutor(6) as pool:
        crowded = list(pool.map(encoder.encode_query, [questions[0], *questions[1:] * 5]))
    assert np.array_equal(crowded[0], alone)
