"""What every handler shares, handed to kopf as the operator's ``memo``."""

from __future__ import annotations

from dataclasses import dataclass, field

from .kube import KubeApi
from .settings import OperatorConfig


@dataclass
class Runtime:
    """kopf gives each handler a shallow copy of it as ``memo``: the client itself is shared."""

    config: OperatorConfig
    api: KubeApi = field(default_factory=KubeApi)
