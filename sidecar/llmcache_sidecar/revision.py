"""The model revision answers are stored under, switchable at run time.

A request captures ``active`` when it starts (``CacheRequest.revision``); its answer is stored
only if that is still the active revision when the answer is complete, so a request that
started under the old revision never writes under (or into) the new one.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class RevisionState:
    def __init__(self, active: str) -> None:
        self.active = active

    def switch(self, revision: str) -> bool:
        """Make ``revision`` the active one; True if it changed."""
        if revision == self.active:
            return False
        log.info("model revision switched from %s to %s", self.active, revision)
        self.active = revision
        return True

    def is_active(self, revision: str) -> bool:
        return revision == self.active
