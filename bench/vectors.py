"""Embeddings of the stored questions, cached on disk outside the repository.

Embedding 100,000 questions with the shipped model takes 10-20 minutes of one core here, so the
vectors are kept under ``~/.cache/llmcache-bench/`` (``LLMCACHE_BENCH_CACHE`` overrides it), in
blocks of :data:`BLOCK` texts named by the sha256 of the model files' names and the block's
texts: any change to either embeds again, and a run cut short resumes where it stopped.

For entry counts beyond what can be embedded here (the 1,000,000 point of the entries curve),
:func:`perturbed` makes more unit vectors from real ones (a real vector plus Gaussian noise,
normalised): they keep the real vectors' distribution in the space, which a uniform random
vector would not.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path

import numpy as np

from llmcache_sidecar.default_model import MODEL_NAME, MODEL_SHA256

BLOCK = 5000
#: cosine between a perturbed vector and the real one it was made from, on average
PERTURBED_COSINE = 0.85
#: names the model in the cache files: the shipped model's pinned sha256
MODEL_ID = f"{MODEL_NAME}:{MODEL_SHA256}"


def cache_dir() -> Path:
    return Path(os.environ.get("LLMCACHE_BENCH_CACHE", Path.home() / ".cache" / "llmcache-bench"))


def _block_file(model_id: str, texts: list[str]) -> Path:
    digest = hashlib.sha256(model_id.encode())
    for text in texts:
        digest.update(b"\0" + text.encode())
    return cache_dir() / f"vectors-{digest.hexdigest()[:24]}.npy"


def stored_vectors(texts: list[str], *, verbose: bool = True) -> np.ndarray:
    """``(len(texts), dim)`` unit vectors of ``texts`` by the shipped model, from the cache or
    embedded now (and cached)."""
    from llmcache_sidecar.calibration import embed_texts
    from llmcache_sidecar.default_model import default_model_files
    from llmcache_sidecar.embedder import OnnxEmbedder

    embedder: OnnxEmbedder | None = None
    blocks = []
    cache_dir().mkdir(parents=True, exist_ok=True)
    for start in range(0, len(texts), BLOCK):
        chunk = texts[start:start + BLOCK]
        path = _block_file(MODEL_ID, chunk)
        if path.is_file():
            blocks.append(np.load(path))
            continue
        if embedder is None:
            embedder = OnnxEmbedder(default_model_files(), "cpu")
        started = time.perf_counter()
        vectors = embed_texts(embedder, chunk)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, vectors)
        tmp.replace(path)
        blocks.append(vectors)
        if verbose:
            print(f"  embedded stored questions {start + len(chunk)}/{len(texts)} "
                  f"({time.perf_counter() - started:.0f} s for {len(chunk)}; cached in {path})", file=sys.stderr)
    return np.concatenate(blocks) if blocks else np.empty((0, 384), dtype=np.float32)


def entry_vectors(entries: int) -> np.ndarray:
    """Vectors of the corpus's first ``entries`` stored questions (see :func:`bench.corpus.load_corpus`).

    The stored questions do not depend on how many are asked for (a larger corpus extends a
    smaller one), so the vectors come from whole cached blocks where they exist; only a partial
    last block that is not cached whole is embedded on its own (small runs, e.g. the smoke test)."""
    from bench.corpus import load_corpus

    whole = -(-entries // BLOCK) * BLOCK
    texts = load_corpus(whole).stored
    partial_start = entries - entries % BLOCK
    if entries % BLOCK and not _block_file(MODEL_ID, texts[partial_start:whole]).is_file():
        texts = texts[:entries]
    return stored_vectors(texts)[:entries]


def perturbed(real: np.ndarray, count: int, seed: int = 10) -> np.ndarray:
    """``count`` unit vectors, each a random row of ``real`` plus noise (cosine to it ~0.85)."""
    rng = np.random.default_rng(seed)
    dim = real.shape[1]
    sigma = float(np.sqrt(1 / PERTURBED_COSINE**2 - 1))  # noise of norm sigma: cos = 1/sqrt(1+sigma^2)
    out = np.empty((count, dim), dtype=np.float32)
    for start in range(0, count, 100_000):
        n = min(100_000, count - start)
        rows = real[rng.integers(0, len(real), n)]
        noise = rng.standard_normal((n, dim)).astype(np.float32) * (sigma / np.sqrt(dim))
        block = rows + noise
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start:start + n] = block
    return out
