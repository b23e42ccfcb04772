"""The in-process nearest-neighbour index that answers semantic lookups without a Milvus round trip.

Entries are partitioned by ``(revision, tenant, scope)``: a lookup only ever compares against
entries whose every other key part is equal, so each partition is searched on its own and the
filter costs nothing.  A small partition is a numpy matrix searched exactly (one mat-vec); once it
grows past ``hnsw_from`` entries it moves to an HNSW graph (hnswlib, inner product on unit
vectors = cosine), so a lookup stays at a fraction of a millisecond at 100,000 entries.

Not thread-safe: the owner (the semantic tier) mutates and searches it from the event loop only,
or builds a fresh one in a worker thread before swapping it in.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import hnswlib
import numpy as np

PartitionKey = tuple[str, str, str]  # revision, tenant, scope

HNSW_FROM = 2048
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 100
HNSW_EF_SEARCH = 64
#: graph insertion threads: one, so a bulk load (in a worker thread, the GIL released) leaves the
#: other core to the event loop
BUILD_THREADS = 1
#: candidates an HNSW search returns, so expired entries near the top do not hide a live one
HNSW_CANDIDATES = 8


@dataclass(frozen=True, slots=True)
class IndexEntry:
    key: str
    vector: np.ndarray  # float32, unit length
    revision: str
    tenant: str
    scope: str
    created_at: float
    expires_at: float
    #: the question that was embedded ("" when unknown: rows of a collection made before the
    #: text was stored); the match verifier reads it
    text: str = ""

    @property
    def partition(self) -> PartitionKey:
        return (self.revision, self.tenant, self.scope)


@dataclass(frozen=True, slots=True)
class IndexHit:
    key: str
    similarity: float
    created_at: float
    text: str = ""
    #: the stored vector (the verifier's embedding features need it)
    vector: np.ndarray | None = None


class _Partition:
    """The entries of one (revision, tenant, scope); labels are slots, never reused in HNSW mode."""

    def __init__(self, dim: int, hnsw_from: int) -> None:
        self.dim = dim
        self.hnsw_from = hnsw_from
        self.keys: list[str | None] = []
        self.texts: list[str] = []
        self.created: list[float] = []
        self.expires = np.empty(0, dtype=np.float64)
        self.slot_of: dict[str, int] = {}
        self.matrix = np.empty((0, dim), dtype=np.float32)  # exact mode only
        self.free: list[int] = []  # exact mode only: slots to reuse
        self.hnsw: hnswlib.Index | None = None

    def __len__(self) -> int:
        return len(self.slot_of)

    def add(self, entry: IndexEntry) -> None:
        slot = self.slot_of.get(entry.key)
        if slot is not None:  # the same question again: refresh its lifetime, keep its vector
            self.created[slot] = entry.created_at
            self.expires[slot] = entry.expires_at
            return
        if self.hnsw is None and len(self.slot_of) + 1 > self.hnsw_from:
            self._to_hnsw()
        if self.hnsw is None and self.free:
            slot = self.free.pop()
            self.keys[slot], self.created[slot], self.expires[slot] = entry.key, entry.created_at, entry.expires_at
            self.texts[slot] = entry.text
            self.matrix[slot] = entry.vector
        else:
            slot = len(self.keys)
            self.keys.append(entry.key)
            self.texts.append(entry.text)
            self.created.append(entry.created_at)
            self.expires = _grow(self.expires, slot + 1)
            self.expires[slot] = entry.expires_at
            if self.hnsw is None:
                self.matrix = _grow(self.matrix, slot + 1)
                self.matrix[slot] = entry.vector
            else:
                if slot >= self.hnsw.get_max_elements():
                    self.hnsw.resize_index(max(2 * self.hnsw.get_max_elements(), slot + 1))
                self.hnsw.add_items(entry.vector[None, :], np.array([slot]), num_threads=1)
        self.slot_of[entry.key] = slot

    def add_many(self, entries: list[IndexEntry]) -> None:
        """Like ``add`` for each entry, but one multi-threaded graph insertion in HNSW mode."""
        fresh = {e.key: e for e in entries if e.key not in self.slot_of}
        if self.hnsw is None and len(self.slot_of) + len(fresh) <= self.hnsw_from:
            for entry in entries:
                self.add(entry)
            return
        for entry in entries:
            if entry.key not in fresh:
                self.add(entry)
        if self.hnsw is None:
            self._to_hnsw()
        assert self.hnsw is not None
        start = len(self.keys)
        for offset, entry in enumerate(fresh.values()):
            self.keys.append(entry.key)
            self.texts.append(entry.text)
            self.created.append(entry.created_at)
            self.slot_of[entry.key] = start + offset
        self.expires = _grow(self.expires, len(self.keys))
        self.expires[start:len(self.keys)] = [e.expires_at for e in fresh.values()]
        if len(self.keys) > self.hnsw.get_max_elements():
            self.hnsw.resize_index(max(2 * self.hnsw.get_max_elements(), len(self.keys)))
        if fresh:
            self.hnsw.add_items(np.stack([e.vector for e in fresh.values()]), np.arange(start, len(self.keys)),
                                num_threads=BUILD_THREADS)

    def remove(self, key: str) -> bool:
        slot = self.slot_of.pop(key, None)
        if slot is None:
            return False
        self.keys[slot] = None
        self.texts[slot] = ""
        self.expires[slot] = -np.inf
        if self.hnsw is None:
            self.free.append(slot)
        else:
            self.hnsw.mark_deleted(slot)
            if len(self.keys) - len(self.slot_of) > max(1024, len(self.slot_of)):
                self._compact_hnsw()
        return True

    def live_keys(self) -> list[str]:
        return list(self.slot_of)

    def expired_keys(self, now: float) -> list[str]:
        count = len(self.keys)
        return [self.keys[s] for s in np.flatnonzero(self.expires[:count] <= now) if self.keys[s] is not None]

    def search(self, vector: np.ndarray, now: float, k: int = 1) -> list[IndexHit]:
        """The ``k`` most similar live entries, most similar first."""
        if not self.slot_of:
            return []
        count = len(self.keys)
        if self.hnsw is None:
            scores = self.matrix[:count] @ vector
            scores[self.expires[:count] <= now] = -np.inf
            k = min(k, count)
            top = np.argpartition(-scores, k - 1)[:k] if k < count else np.arange(count)
            top = top[np.argsort(-scores[top], kind="stable")]
            return [self._hit(int(slot), float(scores[slot]), self.matrix[slot]) for slot in top
                    if scores[slot] != -np.inf]
        wanted = min(max(HNSW_CANDIDATES, k), len(self.slot_of))
        labels, distances = self.hnsw.knn_query(vector[None, :], k=wanted, num_threads=1)
        live = [(int(slot), 1.0 - float(distance)) for slot, distance in zip(labels[0], distances[0])
                if self.expires[slot] > now][:k]
        stored = np.asarray(self.hnsw.get_items([slot for slot, _ in live]), dtype=np.float32) if live else []
        return [self._hit(slot, similarity, vec) for (slot, similarity), vec in zip(live, stored)]

    def _hit(self, slot: int, similarity: float, vector: np.ndarray) -> IndexHit:
        return IndexHit(self.keys[slot], similarity, self.created[slot], self.texts[slot], vector)  # type: ignore[arg-type]

    def _to_hnsw(self) -> None:
        self._rebuild_hnsw(self.matrix)
        self.matrix = np.empty((0, self.dim), dtype=np.float32)
        self.free = []

    def _compact_hnsw(self) -> None:
        assert self.hnsw is not None
        vectors = np.zeros((len(self.keys), self.dim), dtype=np.float32)
        live = sorted(self.slot_of.values())
        if live:
            vectors[live] = np.asarray(self.hnsw.get_items(live), dtype=np.float32)
        self._rebuild_hnsw(vectors)

    def _rebuild_hnsw(self, vectors: np.ndarray) -> None:
        """A fresh graph over the live entries, renumbered 0..n-1 (dead slots dropped)."""
        live = sorted(self.slot_of.values())
        self.keys = [self.keys[s] for s in live]
        self.texts = [self.texts[s] for s in live]
        self.created = [self.created[s] for s in live]
        self.expires = self.expires[live].copy()
        self.slot_of = {key: slot for slot, key in enumerate(self.keys)}  # type: ignore[misc]
        index = hnswlib.Index(space="ip", dim=self.dim)
        index.init_index(max_elements=max(2 * len(live), 1024), M=HNSW_M, ef_construction=HNSW_EF_CONSTRUCTION)
        index.set_ef(HNSW_EF_SEARCH)
        if live:
            index.add_items(vectors[live], np.arange(len(live)), num_threads=BUILD_THREADS)
        self.hnsw = index


def _grow(array: np.ndarray, size: int) -> np.ndarray:
    """``array`` with room for at least ``size`` rows (capacity doubles; rows beyond are garbage)."""
    if len(array) >= size:
        return array
    grown = np.empty((max(size, 2 * len(array), 16),) + array.shape[1:], dtype=array.dtype)
    grown[: len(array)] = array
    return grown


class VectorIndex:
    """Every live semantic entry of one cache, by partition."""

    def __init__(self, dim: int, *, hnsw_from: int = HNSW_FROM) -> None:
        self.dim = dim
        self.hnsw_from = hnsw_from
        self._partitions: dict[PartitionKey, _Partition] = {}
        self._partition_of: dict[str, PartitionKey] = {}

    def __len__(self) -> int:
        return len(self._partition_of)

    def __contains__(self, key: str) -> bool:
        return key in self._partition_of

    def add(self, entry: IndexEntry) -> None:
        partition = self._partitions.get(entry.partition)
        if partition is None:
            partition = self._partitions[entry.partition] = _Partition(self.dim, self.hnsw_from)
        partition.add(entry)
        self._partition_of[entry.key] = entry.partition

    def add_all(self, entries: Iterable[IndexEntry]) -> None:
        """Add many entries at once (bulk graph insertion: use it for loads, off the event loop)."""
        grouped: dict[PartitionKey, list[IndexEntry]] = {}
        for entry in entries:
            if entry.key in self._partition_of and self._partition_of[entry.key] != entry.partition:
                self.remove(entry.key)
            grouped.setdefault(entry.partition, []).append(entry)
        for where, group in grouped.items():
            partition = self._partitions.get(where)
            if partition is None:
                partition = self._partitions[where] = _Partition(self.dim, self.hnsw_from)
            partition.add_many(group)
            for entry in group:
                self._partition_of[entry.key] = where

    def remove(self, key: str) -> bool:
        where = self._partition_of.pop(key, None)
        if where is None:
            return False
        partition = self._partitions[where]
        partition.remove(key)
        if not partition:
            del self._partitions[where]
        return True

    def search(self, revision: str, tenant: str, scope: str, vector: np.ndarray, now: float) -> IndexHit | None:
        """The most similar live entry of the request's partition, whatever its similarity."""
        found = self.candidates(revision, tenant, scope, vector, now, 1)
        return found[0] if found else None

    def candidates(self, revision: str, tenant: str, scope: str, vector: np.ndarray, now: float,
                   k: int) -> list[IndexHit]:
        """The ``k`` most similar live entries of the request's partition, most similar first."""
        partition = self._partitions.get((revision, tenant, scope))
        return partition.search(vector, now, k) if partition is not None else []

    def keys_where(self, *, revision: str | None = None, tenant: str | None = None) -> list[str]:
        """Keys of the entries of one revision and/or tenant (both None: every key)."""
        return [key for (rev, ten, _), partition in self._partitions.items()
                if (revision is None or rev == revision) and (tenant is None or ten == tenant)
                for key in partition.live_keys()]

    def expired_keys(self, now: float) -> list[str]:
        return [key for partition in self._partitions.values() for key in partition.expired_keys(now)]

    def remove_all(self, keys: Iterable[str]) -> int:
        return sum(self.remove(key) for key in keys)

    def partitions(self) -> Iterator[PartitionKey]:
        return iter(self._partitions)
