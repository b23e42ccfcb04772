"""Sentence embeddings on onnxruntime, and the micro-batcher that keeps them off the event loop.

:class:`OnnxEmbedder` is synchronous: tokenise (``tokenizers``), run the transformer, mean-pool the
last hidden state under the attention mask, L2-normalise — what sentence-transformers does for
all-MiniLM-L6-v2, so cosine similarity is a plain dot product.

:class:`BatchingEmbedder` is what the async code calls.  Requests go to a queue; one consumer
takes *whatever is waiting* (up to ``max_batch``) and runs it as one batch in a worker thread.  A
lone request is sent at once; requests that arrive while a batch runs form the next one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from .default_model import ModelFiles

log = logging.getLogger(__name__)

Device = Literal["auto", "cuda", "cpu"]

#: sentence-transformers' max_seq_length for all-MiniLM-L6-v2; longer texts are truncated.
MAX_TOKENS = 256

#: how far (1 - cosine) a text's vector in a batch may be from its vector alone before the model is
#: run one text at a time; float32 padding noise is far below it
BATCH_TOLERANCE = 1e-4


class EmbedderError(RuntimeError):
    """The embedder cannot produce a vector (model failed to load or to run, or it is closed);
    the proxy counts it as ``llmcache_backend_errors_total{backend="embedder"}``."""

    backend = "embedder"


def choose_providers(device: Device, available: Sequence[str]) -> list[str]:
    """onnxruntime providers for ``device``: CUDA first when asked for (or auto) and present."""
    if device in ("auto", "cuda") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        log.warning("embedding device 'cuda' asked for but CUDAExecutionProvider is not available "
                    "(install the extra llmcache[gpu], i.e. onnxruntime-gpu); running on CPU")
    return ["CPUExecutionProvider"]


class OnnxEmbedder:
    """A sentence-transformers-style embedding model run by onnxruntime (thread-safe ``embed``)."""

    def __init__(self, files: ModelFiles, device: Device = "auto", *, threads: int = 1) -> None:
        """``threads``: onnxruntime intra-op threads (0: one per core).  One by default: the sidecar
        shares its pod with the app and its own event loop, and measured here on 2 busy cores one
        thread was as fast for a single query and faster than two (docs/benchmarks.md); concurrent
        requests get throughput from batching instead."""
        self.name = files.name
        try:
            self._tokenizer = Tokenizer.from_file(str(files.tokenizer))
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads  # 0: onnxruntime's default (one per core)
            providers = choose_providers(device, ort.get_available_providers())
            self._session = ort.InferenceSession(str(files.model), options, providers=providers)
        except Exception as exc:
            raise EmbedderError(f"cannot load the embedding model {files.model}: {exc}") from exc
        self._tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest in the batch
        self._input_names = {i.name for i in self._session.get_inputs()}
        self.provider = self._session.get_providers()[0]
        self.dim = int(self._session.get_outputs()[0].shape[-1])
        try:
            self.one_at_a_time = self._batch_dependent()
        except Exception as exc:
            raise EmbedderError(f"cannot run the embedding model {files.model}: {exc}") from exc
        log.info("embedding model %s loaded: provider %s, %d dimensions%s", files.name, self.provider, self.dim,
                 "; run one text at a time (a text's vector depends on its batch)" if self.one_at_a_time else "")

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32, each row of unit length."""
        if self.one_at_a_time and len(texts) > 1:
            return np.concatenate([self._run([text]) for text in texts])
        return self._run(texts)

    def _batch_dependent(self) -> bool:
        """Does a text's vector change with the texts batched with it?  It does for dynamically
        quantised models (``DynamicQuantizeLinear`` scales the activations of the whole batch,
        padding included: all-mpnet-base-v2's int8 export gives cosines down to 0.96 between a
        question embedded alone and in a batch).  Such a model is run one text at a time, so a
        question gets the same vector at lookup, at store and in calibration; on CPU that costs
        nothing, as the padding of a batch costs more than the batching saves."""
        probe = ["How do I reset my password?",
                 "What is the boiling point of water at the top of Mount Everest, in degrees Celsius?"]
        together = self._run(probe)
        alone = np.concatenate([self._run([text]) for text in probe])
        return bool(((together * alone).sum(axis=1) < 1 - BATCH_TOLERANCE).any())

    def _run(self, texts: Sequence[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, feeds)[0]
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)


class BatchingEmbedder:
    """Async front of an :class:`OnnxEmbedder`: one worker thread, concurrent calls batched.

    Create it inside a running event loop; ``aclose`` it when done.
    """

    def __init__(self, embedder: OnnxEmbedder, *, max_batch: int = 32,
                 observe: Callable[[float], None] | None = None) -> None:
        self.embedder = embedder
        self.max_batch = max_batch
        #: called with the seconds each ``embed`` call took (queueing included)
        self._observe = observe
        self._queue: asyncio.Queue[tuple[str, asyncio.Future[np.ndarray]]] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmcache-embed")
        self._consumer = asyncio.get_running_loop().create_task(self._consume(), name="llmcache-embed-batcher")
        self._closed = False
        #: sizes of the batches run so far (observability, and the batcher's tests)
        self.batches_run = 0

    @property
    def dim(self) -> int:
        return self.embedder.dim

    async def embed(self, text: str) -> np.ndarray:
        if self._closed:
            raise EmbedderError("the embedder is closed")
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        started = time.perf_counter()
        self._queue.put_nowait((text, future))
        vector = await future
        if self._observe is not None:
            self._observe(time.perf_counter() - started)
        return vector

    async def _consume(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            batch = [(text, future) for text, future in batch if not future.cancelled()]
            if not batch:
                continue
            try:
                vectors = await loop.run_in_executor(self._executor, self.embedder.embed, [t for t, _ in batch])
            except asyncio.CancelledError:
                _fail(batch, EmbedderError("the embedder is closed"))
                raise
            except Exception as exc:  # noqa: BLE001 - every waiter gets the failure
                _fail(batch, exc if isinstance(exc, EmbedderError) else EmbedderError(f"embedding failed: {exc}"))
                continue
            self.batches_run += 1
            for (_, future), vector in zip(batch, vectors):
                if not future.done():
                    future.set_result(vector)

    async def aclose(self) -> None:
        """Stop taking requests; waiters still queued get :class:`EmbedderError`."""
        self._closed = True
        self._consumer.cancel()
        try:
            await self._consumer
        except asyncio.CancelledError:
            pass
        waiting = [self._queue.get_nowait() for _ in range(self._queue.qsize())]
        _fail(waiting, EmbedderError("the embedder is closed"))
        self._executor.shutdown(wait=False, cancel_futures=True)


def _fail(batch: Sequence[tuple[str, asyncio.Future[np.ndarray]]], error: Exception) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(error)
