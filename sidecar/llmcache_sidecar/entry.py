"""A stored answer: a small metadata line, then the completion object exactly as it is served.

Layout of the value: ``<meta JSON>\\n<answer JSON>``.  A non-streamed hit slices the answer out
and sends it without decoding it; only a streamed hit decodes it to replay it as events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from llmcache_sidecar.sse import replay

FORMAT_VERSION = 1


class CorruptEntry(ValueError):
    """A stored value that is not an entry of this format (treated as a miss)."""


@dataclass(frozen=True, slots=True)
class Entry:
    created: float
    kind: str
    model: str
    #: tokens the upstream did not have to process when this entry answers (usage.total_tokens)
    tokens: int
    body: bytes

    @classmethod
    def from_answer(cls, kind: str, answer: dict[str, Any], created: float, body: bytes | None = None) -> Entry:
        """``body``: the answer's JSON as the upstream sent it, if available (saves a dump)."""
        usage = answer.get("usage")
        tokens = usage.get("total_tokens", 0) if isinstance(usage, dict) else 0
        model = answer.get("model")
        return cls(created=created, kind=kind, model=model if isinstance(model, str) else "",
                   tokens=tokens if isinstance(tokens, int) else 0,
                   body=body if body is not None else orjson.dumps(answer))

    def encode(self) -> bytes:
        meta = {"v": FORMAT_VERSION, "created": self.created, "kind": self.kind, "model": self.model,
                "tokens": self.tokens}
        return orjson.dumps(meta) + b"\n" + self.body

    @classmethod
    def decode(cls, value: bytes) -> Entry:
        head, sep, body = value.partition(b"\n")
        try:
            meta = orjson.loads(head)
            if not sep or meta.get("v") != FORMAT_VERSION:
                raise CorruptEntry("unknown entry format")
            return cls(created=float(meta["created"]), kind=meta["kind"], model=meta.get("model", ""),
                       tokens=int(meta.get("tokens", 0)), body=body)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CorruptEntry(str(exc)) from None

    def age(self, now: float) -> float:
        return max(0.0, now - self.created)

    def as_stream(self, include_usage: bool) -> bytes:
        return replay(self.kind, orjson.loads(self.body), include_usage)
