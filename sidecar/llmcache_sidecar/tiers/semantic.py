"""The semantic tier: an earlier question of the same scope that means the same, if there is one.

The decision (:class:`~llmcache_sidecar.verifier.MatchPolicy`): with the match verifier on (the
default), the nearest stored questions by cosine (``MatchPolicy.candidates``: one by default)
are scored by the verifier, which reads both texts and both vectors, and the best one is served
if its probability reaches the cut picked by the target precision; entries stored without their text (an old collection) and a
verifier-less configuration fall back to the plain cosine threshold.

Lookups never touch Milvus: the query is embedded (micro-batched, off the loop) and searched in
the in-process :class:`VectorIndex`, which holds the same entries as the Milvus collection:

- loaded from Milvus when the tier first connects (in the background: until the load is done
  lookups see only what is already there, which costs misses, never wrong answers);
- written through on every store: into the index at once, into Milvus by a background writer
  that batches whatever is waiting (a miss never waits for Milvus); a failed write takes its
  entries out of the index again, so the index never keeps what Milvus does not have;
- with a Milvus *server* (shared by replicas), refreshed every ``refresh_seconds`` with the rows
  written since the last refresh, and fully reloaded every ``resync_seconds`` so other replicas'
  deletions disappear too.  Milvus Lite has a single owner, so it needs neither;
- purged of expired entries (read-time check, plus a periodic delete in both places);
- purged on ``invalidate``.

While Milvus is unreachable, every call raises :class:`MilvusError` (the proxy passes requests
through): the index could not be kept in sync, and a store could not be made durable.  The
background loop reconnects, replays the invalidations it could not apply, and reloads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from ..config import Settings
from ..default_model import MODEL_SHA256, ModelFilesError, model_files, sha256_of
from ..embedder import BatchingEmbedder, EmbedderError, OnnxEmbedder
from ..verifier import MatchPolicy, match_policy
from .base import CacheRequest, SemanticMatch
from .milvus_store import QUERY_MAX, MilvusError, MilvusStore, filter_for, fits
from .vector_index import IndexEntry, IndexHit, VectorIndex

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SemanticOptions:
    threshold: float
    ttl_seconds: float
    #: the verifier and its cut; None: the cosine ``threshold`` decides alone
    policy: MatchPolicy | None = None
    #: how often the background loop runs (health check, reconnect)
    tick_seconds: float = 2.0
    #: Milvus server only: pick up the rows other replicas wrote
    refresh_seconds: float = 5.0
    #: Milvus server only: reload everything (drops what other replicas deleted)
    resync_seconds: float = 300.0
    #: clock skew between replicas tolerated by the incremental refresh
    overlap_seconds: float = 30.0
    purge_seconds: float = 60.0
    #: stores waiting for the Milvus writer before new stores are refused
    max_pending_writes: int = 10_000
    #: rows per Milvus upsert
    write_batch: int = 256
    #: embeddings of recent queries kept, so the store after a miss does not embed again
    recent_vectors: int = 1024


class MilvusSemanticTier:
    """:class:`~llmcache_sidecar.tiers.base.SemanticTier` on Milvus + an in-process index."""

    def __init__(self, embedder: BatchingEmbedder, store: MilvusStore, options: SemanticOptions,
                 clock: Callable[[], float] = time.time) -> None:
        self.embedder = embedder
        self.milvus = store
        self.options = options
        self._clock = clock
        self._index = VectorIndex(embedder.dim)
        self._recent: OrderedDict[str, np.ndarray] = OrderedDict()
        self._connected = False
        #: until the first connection attempt ends, calls are quiet misses (start-up is no outage)
        self._starting = True
        self._last_error = "not connected yet"
        self._pending_deletes: list[str] = []
        #: changes made while a full reload runs, replayed on the reloaded index before the swap
        self._journal: list[Callable[[VectorIndex], object]] | None = None
        self._loaded = asyncio.Event()
        self._writes: asyncio.Queue[IndexEntry] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    # -- the SemanticTier protocol ---------------------------------------------------------

    async def lookup(self, request: CacheRequest) -> SemanticMatch | None:
        if request.query is None or self._starting:
            return None
        self._require_milvus()
        vector = await self._vector(request.query)
        policy = self.options.policy
        k = policy.candidates if policy is not None and policy.verifier is not None else 1
        hits = self._index.candidates(request.revision, request.tenant, request.scope, vector, self._clock(), k)
        hit, probability = self._decide(request.query, vector, hits)
        if hit is not None and probability is not None and not await self._second_opinion(hit, request.query,
                                                                                          probability):
            return None
        return SemanticMatch(key=hit.key, similarity=hit.similarity) if hit is not None else None

    def _decide(self, query: str, vector: np.ndarray, hits: list[IndexHit]) -> tuple[IndexHit | None, float | None]:
        """The candidate to serve and the verifier's probability for it: the verifier's best among
        those with text, if it reaches the cut; else the nearest text-less one, if it reaches the
        cosine threshold (no probability then)."""
        policy = self.options.policy
        if policy is None or policy.verifier is None:
            return (hits[0] if hits and hits[0].similarity >= self.options.threshold else None), None
        texted = [h for h in hits if h.text and h.similarity >= policy.floor]
        if texted:
            stored = np.stack([h.vector for h in texted])  # type: ignore[misc]
            probability = policy.verifier.probability([h.text for h in texted], [query[:QUERY_MAX]] * len(texted),
                                                      stored, np.broadcast_to(vector, stored.shape))
            best = int(probability.argmax())
            if probability[best] >= policy.cut:
                return texted[best], float(probability[best])
        textless = [h for h in hits if not h.text]
        return (textless[0] if textless and textless[0].similarity >= policy.threshold else None), None

    async def _second_opinion(self, hit: IndexHit, query: str, probability: float) -> bool:
        """With a cross-encoder in the verifier file: does the stacked score reach its cut?
        (Run off the loop: a few milliseconds of CPU.)  Without one: yes."""
        policy = self.options.policy
        assert policy is not None and policy.verifier is not None and hit.text
        second = policy.verifier.second
        if second is None:
            return True
        ce = await asyncio.to_thread(second.encoder.logits, [hit.text], [query[:QUERY_MAX]])
        return bool(second.stacked(np.array([probability]), ce)[0] >= policy.second_cut)

    async def store(self, request: CacheRequest) -> None:
        if request.query is None or self._starting:
            return
        self._require_milvus()
        vector = await self._vector(request.query)
        now = self._clock()
        entry = IndexEntry(key=request.exact_key, vector=vector, revision=request.revision, tenant=request.tenant,
                           scope=request.scope, created_at=now, expires_at=now + self.options.ttl_seconds,
                           text=request.query[:QUERY_MAX] if self.milvus.has_text else "")
        if not fits(entry):
            raise MilvusError(f"entry too large for the collection: {entry.key[:80]}...")
        if self._writes.qsize() >= self.options.max_pending_writes:
            raise MilvusError(f"{self._writes.qsize()} writes to milvus pending; dropping this one")
        self._change(lambda index: index.add(entry))
        self._writes.put_nowait(entry)

    async def invalidate(self, *, revision: str | None = None, tenant: str | None = None) -> int:
        if self._connected:
            await self.flush()  # a write still queued must not bring a deleted entry back
        removed = self._change(lambda index: index.remove_all(index.keys_where(revision=revision, tenant=tenant)))
        expression = filter_for(revision=revision, tenant=tenant)
        if not self._connected:
            self._pending_deletes.append(expression)
            raise MilvusError(f"milvus unavailable ({self._last_error}); the deletion is applied when it returns")
        try:
            deleted = await self.milvus.delete(expression)
        except MilvusError as exc:
            self._pending_deletes.append(expression)
            self._lost(exc)
            raise
        return max(deleted, removed)

    async def count(self) -> int:
        return len(self._index)

    def forget(self, revision: str) -> int:
        """Drop the in-process entries of ``revision`` (left behind at a revision switch; Milvus
        is the operator's to clean); return how many."""
        return self._change(lambda index: index.remove_all(index.keys_where(revision=revision, tenant=None)))

    # -- lifetime --------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._maintain(), name="llmcache-semantic-sync"),
                       loop.create_task(self._write_behind(), name="llmcache-semantic-writer")]

    async def wait_loaded(self) -> None:
        """Until the first full load from Milvus is done (tests, benchmarks)."""
        await self._loaded.wait()

    async def flush(self) -> None:
        """Until every store so far has reached Milvus (or failed)."""
        await self._writes.join()

    async def aclose(self) -> None:
        if self._connected and self._tasks:
            try:
                await asyncio.wait_for(self.flush(), timeout=5.0)
            except asyncio.TimeoutError:
                log.warning("semantic tier: %d writes to milvus lost at shutdown", self._writes.qsize())
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.milvus.aclose()

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def index(self) -> VectorIndex:
        """The in-process index (read it, never change it: benchmarks and diagnostics)."""
        return self._index

    # -- internals -------------------------------------------------------------------------

    def _require_milvus(self) -> None:
        if not self._connected:
            raise MilvusError(f"milvus unavailable: {self._last_error}")

    def _lost(self, exc: BaseException) -> None:
        if self._connected:
            log.warning("semantic tier: lost milvus at %s (%s); passing through until it returns", self.milvus.uri, exc)
        self._connected = False
        self._last_error = str(exc)

    def _change(self, change: Callable[[VectorIndex], T]) -> T:
        if self._journal is not None:
            self._journal.append(change)
        return change(self._index)

    async def _vector(self, query: str) -> np.ndarray:
        vector = self._recent.get(query)
        if vector is not None:
            self._recent.move_to_end(query)
            return vector
        vector = await self.embedder.embed(query)
        self._recent[query] = vector
        if len(self._recent) > self.options.recent_vectors:
            self._recent.popitem(last=False)
        return vector

    async def _maintain(self) -> None:
        last_refresh = last_resync = last_purge = 0.0
        while True:
            now = time.monotonic()
            try:
                if not self._connected:
                    await self._reconnect(since=self._clock() - (now - last_refresh) - self.options.overlap_seconds)
                    last_refresh = last_purge = time.monotonic()
                elif not self.milvus.local and now - last_resync >= self.options.resync_seconds:
                    await self._reload()
                    last_refresh = last_resync = now
                elif not self.milvus.local and now - last_refresh >= self.options.refresh_seconds:
                    await self._refresh(since=self._clock() - (now - last_refresh) - self.options.overlap_seconds)
                    last_refresh = now
                else:
                    await self.milvus.ping()
                if self._connected and now - last_purge >= self.options.purge_seconds:
                    await self._purge_expired()
                    last_purge = now
            except MilvusError as exc:
                self._lost(exc)
            except Exception:  # noqa: BLE001 - the loop must survive anything and try again
                log.exception("semantic tier: background sync failed")
            self._starting = False
            await asyncio.sleep(self.options.tick_seconds)

    async def _write_behind(self) -> None:
        while True:
            batch = [await self._writes.get()]
            while len(batch) < self.options.write_batch and not self._writes.empty():
                batch.append(self._writes.get_nowait())
            try:
                await self.milvus.upsert(batch)
            except MilvusError as exc:
                self._lost(exc)
                self._change(lambda index: index.remove_all(e.key for e in batch))
            except Exception:  # noqa: BLE001 - the writer must survive anything
                log.exception("semantic tier: writing to milvus failed")
                self._change(lambda index: index.remove_all(e.key for e in batch))
            finally:
                for _ in batch:
                    self._writes.task_done()

    async def _reconnect(self, since: float) -> None:
        await self.milvus.connect()
        while self._pending_deletes:
            await self.milvus.delete(self._pending_deletes[0])
            self._pending_deletes.pop(0)
        self._connected = True
        log.info("semantic tier: connected to milvus at %s (collection %s)", self.milvus.uri, self.milvus.collection)
        if not self._loaded.is_set():
            await self._reload()
        elif not self.milvus.local:
            # back after an outage: the index still holds everything this sidecar wrote (a failed
            # write took its entry out); add what other replicas wrote meanwhile, and let the
            # next periodic full reload drop what they deleted.  A full reload here would cost
            # minutes at 100k entries on every blip.
            await self._refresh(since)

    async def _reload(self) -> None:
        """Rebuild the index from every live row of the collection, then swap it in."""
        self._journal = []
        try:
            entries = await self.milvus.read(f"expires_at > {self._clock()}")
            fresh = VectorIndex(self._index.dim)
            await asyncio.to_thread(fresh.add_all, entries)
            for change in self._journal:
                change(fresh)
            self._index = fresh
        finally:
            self._journal = None
        self._loaded.set()
        log.info("semantic tier: %d entries loaded from milvus", len(fresh))

    async def _refresh(self, since: float) -> None:
        entries = await self.milvus.read(f"created_at >= {since}")
        self._change(lambda index: index.add_all(e for e in entries if e.key not in index))

    async def _purge_expired(self) -> None:
        now = self._clock()
        self._change(lambda index: index.remove_all(index.expired_keys(now)))
        await self.milvus.delete(f"expires_at <= {now}")


@asynccontextmanager
async def open_semantic_tier(settings: Settings, *, observe_embedding: Callable[[float], None] | None = None,
                             ) -> AsyncIterator[MilvusSemanticTier | None]:
    """The tier for ``settings``, open for the duration of the block; ``None`` (logged) if the
    embedding model cannot be loaded: the sidecar then serves without a semantic tier."""
    try:
        files = await asyncio.to_thread(model_files, settings.embedding_model)
        embedder = await asyncio.to_thread(OnnxEmbedder, files, settings.embedding_device)
        model_sha256 = MODEL_SHA256 if settings.embedding_model is None else await asyncio.to_thread(sha256_of, files.model)
    except (ModelFilesError, EmbedderError) as exc:
        log.error("semantic tier disabled: %s", exc)
        yield None
        return
    policy = await asyncio.to_thread(match_policy, settings, model_sha256)
    log.info("semantic hits decided by: %s", policy.describe())
    batcher = BatchingEmbedder(embedder, observe=observe_embedding)
    store = MilvusStore(settings.milvus_uri, settings.cache_name, embedder.dim, model=model_sha256)
    options = SemanticOptions(threshold=policy.threshold, ttl_seconds=settings.effective_semantic_ttl, policy=policy)
    tier = MilvusSemanticTier(batcher, store, options)
    await tier.start()
    try:
        yield tier
    finally:
        await tier.aclose()
        await batcher.aclose()
