"""What every handler shares, handed to kopf as the operator's ``memo``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from .kube import KubeApi
from .settings import OperatorConfig


@dataclass
class Runtime:
    """kopf gives each handler a shallow copy of it as ``memo``: the client itself is shared."""

    config: OperatorConfig
    api: KubeApi = field(default_factory=KubeApi)
    #: one lock per LLMCache (namespace, name): its handlers converge (and switch revisions) one at a time
    locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)

    def lock_for(self, namespace: str, name: str) -> asyncio.Lock:
        return self.locks.setdefault((namespace, name), asyncio.Lock())
