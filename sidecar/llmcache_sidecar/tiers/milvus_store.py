"""The durable, shared half of the semantic tier: one Milvus collection per cache.

``pymilvus.MilvusClient`` is synchronous, so every call runs on one dedicated worker thread (calls
are serialised, never on the event loop).  A URI that is a path opens embedded Milvus Lite (one
process owns the data directory); anything with a scheme (``http://``, ``https://``, ``tcp://``)
is a Milvus server shared by every sidecar replica.

Collection ``llmcache_<cache>``: primary key ``key`` (the exact-tier key), ``vector``, the
scalars ``revision``, ``tenant``, ``scope``, ``created_at``, ``expires_at`` (unix seconds), and
``query`` (the embedded question, nullable, at most :data:`QUERY_MAX` characters; the match
verifier compares texts).

Migration: a collection created before ``query`` existed is extended in place where Milvus can
add a field (Milvus 2.6+ servers); where it cannot (Milvus Lite, older servers) the store works
without the field (``has_text`` is False): rows are written and read without text, and the
semantic tier then decides those entries by the plain cosine threshold.  Dropping such a
collection (a new cache, or deleting it) gives verified hits from then on.  New collections make
``query`` nullable, so an older sidecar writing rows without it keeps working during an upgrade.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from ..invalidation import milvus_filter as filter_for  # noqa: F401 - re-exported for the tier
from .vector_index import IndexEntry

log = logging.getLogger(__name__)

T = TypeVar("T")

FIELDS = ["key", "vector", "revision", "tenant", "scope", "created_at", "expires_at"]
TEXT_FIELD = "query"
KEY_MAX = 2048
SCALAR_MAX = 512
#: characters of the question kept (the embedder reads at most 256 tokens, about 1,000 characters)
QUERY_MAX = 4096
#: the field's size in bytes (UTF-8: up to 4 bytes a character)
QUERY_MAX_BYTES = 4 * QUERY_MAX
#: rows per page when reading the collection back (Milvus caps a query at 16,384 rows)
PAGE_ROWS = 4000
#: per call; generous because embedded Milvus Lite (pure Python, in this process) can take
#: seconds for one write when it flushes, and a timeout counts as an outage
CALL_TIMEOUT_SECONDS = 60.0
PING_TIMEOUT_SECONDS = 5.0
#: gRPC channel options.  While a server is away, gRPC backs off its reconnects (up to two
#: minutes) in subchannels shared by every channel to that address, and pymilvus keeps one
#: connection per address: a reconnect after the server returned inherited the back-off and
#: failed at once.  A channel of its own per connection, and a back-off of at most a second.
GRPC_OPTIONS = {"grpc.use_local_subchannel_pool": 1, "grpc.initial_reconnect_backoff_ms": 250,
                "grpc.max_reconnect_backoff_ms": 1000}


class MilvusError(RuntimeError):
    """Milvus cannot be reached or refused a call; the proxy counts it as ``backend="milvus"``."""

    backend = "milvus"


#: the collection property naming the embedding model (sha256 of its model.onnx) that filled it
MODEL_PROPERTY = "llmcache.embedding_model_sha256"


def collection_name(cache_name: str) -> str:
    """``llmcache_<cache>``, with what Milvus does not allow in a name (``-``, ``.``) made ``_``."""
    return "llmcache_" + re.sub(r"[^A-Za-z0-9_]", "_", cache_name)


def is_local(uri: str) -> bool:
    return "://" not in uri


def fits(entry: IndexEntry) -> bool:
    """Whether the entry's strings fit the collection's fields (a tenant id can be anything)."""
    return len(entry.key) <= KEY_MAX and max(len(entry.revision), len(entry.tenant), len(entry.scope)) <= SCALAR_MAX


def row_of(entry: IndexEntry, *, with_text: bool = True) -> dict[str, Any]:
    row = {"key": entry.key, "vector": entry.vector.tolist(), "revision": entry.revision, "tenant": entry.tenant,
           "scope": entry.scope, "created_at": entry.created_at, "expires_at": entry.expires_at}
    if with_text:
        row[TEXT_FIELD] = entry.text[:QUERY_MAX]
    return row


def entry_of(row: dict[str, Any]) -> IndexEntry:
    return IndexEntry(key=row["key"], vector=np.asarray(row["vector"], dtype=np.float32), revision=row["revision"],
                      tenant=row["tenant"], scope=row["scope"], created_at=float(row["created_at"]),
                      expires_at=float(row["expires_at"]), text=row.get(TEXT_FIELD) or "")


class MilvusStore:
    """Async wrapper of one collection.  Every failure raises :class:`MilvusError`."""

    def __init__(self, uri: str, cache_name: str, dim: int, *, token: str | None = None, model: str = "") -> None:
        """``model``: what identifies the embedding model (its sha256), recorded as a collection
        property; a collection filled by another model (or of another dimension) is refused."""
        self.uri = uri
        self.collection = collection_name(cache_name)
        self.dim = dim
        self.token = token
        self.model = model
        #: whether the collection has the ``query`` field (False: an old collection Milvus could
        #: not extend; entries are then stored and read without their text)
        self.has_text = True
        self._client: Any = None
        # short calls (writes, deletes, pings) never queue behind a long read of the collection
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmcache-milvus")
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmcache-milvus-read")

    @property
    def local(self) -> bool:
        return is_local(self.uri)

    async def _call(self, work: Callable[[], T], *, reading: bool = False) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._reader if reading else self._executor, work)
        except MilvusError:
            raise
        except Exception as exc:
            raise MilvusError(f"milvus at {self.uri}: {type(exc).__name__}: {exc}") from exc

    async def connect(self) -> None:
        """(Re)connect and make sure the collection exists and is loaded."""
        await self._call(self._connect)

    def _connect(self) -> None:
        from pymilvus import DataType, MilvusClient

        if self._client is not None:
            self._close_client()
        uri = self.uri
        if self.local:
            from milvus_lite.server_manager import server_manager_instance

            uri = server_manager_instance.start_and_get_uri(self.uri)
            if uri is None:
                raise MilvusError(f"cannot open Milvus Lite at {self.uri}")
        client = MilvusClient(uri=uri, token=self.token or "", timeout=PING_TIMEOUT_SECONDS, grpc_options=GRPC_OPTIONS)
        if not client.has_collection(self.collection, timeout=PING_TIMEOUT_SECONDS):
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=KEY_MAX)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
            for name in ("revision", "tenant", "scope"):
                schema.add_field(name, DataType.VARCHAR, max_length=SCALAR_MAX)
            schema.add_field("created_at", DataType.DOUBLE)
            schema.add_field("expires_at", DataType.DOUBLE)
            schema.add_field(TEXT_FIELD, DataType.VARCHAR, max_length=QUERY_MAX_BYTES, nullable=True)
            index = client.prepare_index_params()
            index.add_index(field_name="vector", index_type="AUTOINDEX", metric_type="IP")
            client.create_collection(self.collection, schema=schema, index_params=index, timeout=CALL_TIMEOUT_SECONDS,
                                     properties={MODEL_PROPERTY: self.model} if self.model else {})
            log.info("created Milvus collection %s at %s", self.collection, self.uri)
            self.has_text = True
        else:
            self._check_model(client.describe_collection(self.collection, timeout=CALL_TIMEOUT_SECONDS))
            client.load_collection(self.collection, timeout=CALL_TIMEOUT_SECONDS)
            self.has_text = self._text_field(client)
        self._client = client

    def _check_model(self, described: dict[str, Any]) -> None:
        """Refuse a collection whose vectors another embedding model made: compared with this
        model's they would match unrelated questions (same dimension) or fail every call."""
        dims = [int(f.get("params", {}).get("dim", 0)) for f in described["fields"] if f["name"] == "vector"]
        other = str((described.get("properties") or {}).get(MODEL_PROPERTY, ""))
        if dims != [self.dim] or (self.model and other and other != self.model):
            raise MilvusError(
                f"Milvus collection {self.collection} holds vectors of another embedding model "
                f"({dims[0] if dims else '?'} dimensions, model {other[:12] or 'unrecorded'}; this sidecar's: "
                f"{self.dim}, {self.model[:12] or 'unrecorded'}): the semantic tier stays off; drop the collection "
                f"or use another cache name")

    def _text_field(self, client: Any) -> bool:
        """Whether the existing collection has ``query``, adding it when Milvus can."""
        fields = {f["name"] for f in client.describe_collection(self.collection, timeout=CALL_TIMEOUT_SECONDS)["fields"]}
        if TEXT_FIELD in fields:
            return True
        from pymilvus import DataType

        try:
            client.add_collection_field(self.collection, field_name=TEXT_FIELD, data_type=DataType.VARCHAR,
                                        max_length=QUERY_MAX_BYTES, nullable=True, timeout=CALL_TIMEOUT_SECONDS)
        except Exception as exc:  # noqa: BLE001 - Milvus Lite and servers before 2.6 cannot add a field
            log.warning("Milvus collection %s has no %r field and Milvus cannot add one (%s): its entries are "
                        "matched by the cosine threshold only, without the verifier; drop the collection to "
                        "get verified hits", self.collection, TEXT_FIELD, type(exc).__name__)
            return False
        log.info("Milvus collection %s: added the %r field", self.collection, TEXT_FIELD)
        return True

    def _require(self) -> Any:
        if self._client is None:
            raise MilvusError(f"not connected to milvus at {self.uri}")
        return self._client

    async def ping(self) -> None:
        await self._call(lambda: self._require().has_collection(self.collection, timeout=PING_TIMEOUT_SECONDS))

    async def upsert(self, entries: list[IndexEntry]) -> None:
        rows = [row_of(entry, with_text=self.has_text) for entry in entries]
        await self._call(lambda: self._require().upsert(self.collection, rows, timeout=CALL_TIMEOUT_SECONDS))

    async def delete(self, expression: str) -> int:
        result = await self._call(lambda: self._require().delete(self.collection, filter=expression,
                                                                  timeout=CALL_TIMEOUT_SECONDS))
        if isinstance(result, dict):
            return int(result.get("delete_count", 0))
        return len(result)

    async def count(self) -> int:
        rows = await self._call(lambda: self._require().query(self.collection, filter="", output_fields=["count(*)"],
                                                               timeout=CALL_TIMEOUT_SECONDS))
        return int(rows[0]["count(*)"])

    async def read(self, expression: str) -> list[IndexEntry]:
        """Every row matching ``expression`` (paged; it may take seconds on a large Milvus Lite)."""
        return await self._call(lambda: list(self._pages(expression)), reading=True)

    def _pages(self, expression: str) -> Iterator[IndexEntry]:
        client = self._require()
        offset = 0
        while True:
            fields = FIELDS + [TEXT_FIELD] if self.has_text else FIELDS
            rows = client.query(self.collection, filter=expression, output_fields=fields, limit=PAGE_ROWS,
                                offset=offset, timeout=CALL_TIMEOUT_SECONDS)
            yield from (entry_of(row) for row in rows)
            if len(rows) < PAGE_ROWS:
                return
            offset += len(rows)

    def _close_client(self) -> None:
        try:
            self._client.close()
        except Exception:  # noqa: BLE001 - closing a broken connection may fail; it is dropped anyway
            pass
        self._client = None

    async def aclose(self) -> None:
        if self._client is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._close_client)
        self._executor.shutdown(wait=False)
        self._reader.shutdown(wait=False)
