"""What every cache tier sees of a request, and the interfaces the proxy calls.

The proxy builds one :class:`CacheRequest` per cacheable call (see ``keys.py``); the exact tier
stores the answer under ``exact_key``; the semantic tier stores ``(query vector, exact_key)`` and
answers a lookup with the ``exact_key`` of the nearest acceptable entry, whose answer the proxy
then reads from the exact tier.  Keeping the answer in one place means an invalidation of the
exact tier can never leave a semantic hit pointing at a stale answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class CacheRequest:
    cache_name: str
    #: the model revision captured when the request started; the answer is stored under it only
    #: if it is still the active revision when the answer is complete.
    revision: str
    #: tenant id, "" when the cache has no tenant header or the request sent none.
    tenant: str
    #: sha256 hex of every key part except the query: model, system prompt, earlier turns,
    #: every answer-changing parameter.  Semantic matches are searched only within one scope.
    scope: str
    #: text compared by the semantic tier: the last user message (chat) or the prompt
    #: (completions); None when the request has nothing to compare (e.g. a token-id prompt).
    query: str | None
    #: ``llmcache:<cache>:<revision>:<tenant>:e:<sha256>`` (the contract's Redis key layout)
    exact_key: str


@dataclass(frozen=True, slots=True)
class SemanticMatch:
    #: the exact-tier key of the matched entry
    key: str
    similarity: float


class SemanticTier(Protocol):
    """The semantic tier as the proxy uses it.  Every method may raise on backend trouble; the
    proxy then passes the request through (``X-LLMCache: bypass``) and counts the error under
    ``llmcache_backend_errors_total{backend=exc.backend}`` (an exception without a ``backend``
    attribute counts as ``"milvus"``; the embedder's should say ``"embedder"``)."""

    async def lookup(self, request: CacheRequest) -> SemanticMatch | None: ...

    async def store(self, request: CacheRequest) -> None: ...

    async def invalidate(self, *, revision: str | None = None, tenant: str | None = None) -> int:
        """Delete the entries of one revision, or one tenant, or (both None) all; return count."""
        ...

    async def count(self) -> int: ...
