"""The in-process index: partitions, expiry on read, removal, and the exact -> HNSW switch."""

from __future__ import annotations

import numpy as np
import pytest

from llmcache_sidecar.tiers.vector_index import IndexEntry, VectorIndex

DIM = 32


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def entry(key: str, vector: np.ndarray, *, revision: str = "r1", tenant: str = "", scope: str = "s",
          expires_at: float = 1e12) -> IndexEntry:
    return IndexEntry(key, vector, revision, tenant, scope, 0.0, expires_at)


def test_search_stays_in_its_partition() -> None:
    rng = np.random.default_rng(1)
    v = unit(rng, 1)[0]
    index = VectorIndex(DIM)
    index.add(entry("rev2", v, revision="r2"))
    index.add(entry("tenant-b", v, tenant="b"))
    index.add(entry("scope-x", v, scope="x"))
    assert index.search("r1", "", "s", v, 1.0) is None
    index.add(entry("mine", v))
    hit = index.search("r1", "", "s", v, 1.0)
    assert hit is not None and hit.key == "mine" and hit.similarity == pytest.approx(1.0, abs=1e-5)


def test_expired_entries_are_not_found_and_are_listed_for_purging() -> None:
    rng = np.random.default_rng(2)
    near, far = unit(rng, 2)
    index = VectorIndex(DIM)
    index.add(entry("old", near, expires_at=10.0))
    index.add(entry("live", far, expires_at=100.0))
    hit = index.search("r1", "", "s", near, now=5.0)
    assert hit is not None and hit.key == "old"
    hit = index.search("r1", "", "s", near, now=20.0)
    assert hit is not None and hit.key == "live"
    assert index.expired_keys(20.0) == ["old"]


@pytest.mark.parametrize("hnsw_from", [10_000, 16], ids=["exact", "hnsw"])
def test_nearest_neighbour_after_adds_and_removals(hnsw_from: int) -> None:
    rng = np.random.default_rng(3)
    vectors = unit(rng, 300)
    index = VectorIndex(DIM, hnsw_from=hnsw_from)
    for i in range(200):
        index.add(entry(f"k{i}", vectors[i]))
    index.add_all(entry(f"k{i}", vectors[i]) for i in range(200, 300))
    assert len(index) == 300
    assert index.remove_all(f"k{i}" for i in range(0, 300, 2)) == 150
    for i in range(1, 300, 2):
        query = vectors[i] + 0.05 * unit(rng, 1)[0]
        hit = index.search("r1", "", "s", query / np.linalg.norm(query), 1.0)
        assert hit is not None and hit.key == f"k{i}"
    for i in range(0, 300, 2):  # removed: the nearest is now some other entry
        hit = index.search("r1", "", "s", vectors[i], 1.0)
        assert hit is not None and hit.key != f"k{i}"


def test_hnsw_partition_survives_removing_most_entries() -> None:
    rng = np.random.default_rng(4)
    vectors = unit(rng, 3000)
    index = VectorIndex(DIM, hnsw_from=16)
    index.add_all(entry(f"k{i}", vectors[i]) for i in range(3000))
    index.remove_all(f"k{i}" for i in range(2990))  # compacts the graph on the way
    assert len(index) == 10
    for i in range(2990, 3000):
        hit = index.search("r1", "", "s", vectors[i], 1.0)
        assert hit is not None and hit.key == f"k{i}"
    index.add(entry("again", vectors[0]))
    hit = index.search("r1", "", "s", vectors[0], 1.0)
    assert hit is not None and hit.key == "again"


def test_keys_where_selects_by_revision_and_tenant() -> None:
    rng = np.random.default_rng(5)
    v = unit(rng, 1)[0]
    index = VectorIndex(DIM)
    index.add(entry("a", v, revision="r1", tenant="t1"))
    index.add(entry("b", v, revision="r1", tenant="t2"))
    index.add(entry("c", v, revision="r2", tenant="t1"))
    assert sorted(index.keys_where(revision="r1")) == ["a", "b"]
    assert sorted(index.keys_where(tenant="t1")) == ["a", "c"]
    assert sorted(index.keys_where()) == ["a", "b", "c"]
    assert index.remove_all(index.keys_where(revision="r1", tenant="t2")) == 1 and "b" not in index
