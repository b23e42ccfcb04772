"""Bring the children in line with a :class:`DesiredState`: plan first (reads only), then write.

Each applied object remembers what the operator last applied (annotation
``llmcache.dev/last-applied``); the next apply sends only the JSON merge patch from that to the
new desired state (with ``null`` for fields that went away), and nothing at all when nothing
changed.  That keeps re-runs and restarts free of writes, like ``kubectl apply``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from . import names
from .children import DesiredState
from .context import CacheContext
from .credentials import new_secret_value, secret_manifest
from .kube import BY_KIND, DEPLOYMENTS, SECRETS, STATEFULSETS, KubeApi, KubeError, Resource
from .spec import SpecError

LAST_APPLIED_ANNOTATION = "llmcache.dev/last-applied"

#: StatefulSet fields the API server refuses to change after creation.
STATEFULSET_IMMUTABLE = ("volumeClaimTemplates", "selector", "serviceName", "podManagementPolicy")


def merge_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch turning ``old`` into ``new`` (empty when they are equal)."""
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            nested = merge_diff(before, value)
            if nested:
                patch[key] = nested
        elif key not in old or before != value:
            patch[key] = copy.deepcopy(value)
    return patch


def last_applied(live: Mapping[str, Any]) -> dict[str, Any]:
    raw = (live.get("metadata", {}).get("annotations") or {}).get(LAST_APPLIED_ANNOTATION)
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        value = {}
    return value if isinstance(value, dict) else {}


def with_last_applied(manifest: Mapping[str, Any], applied: Mapping[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(dict(manifest))
    annotations = body.setdefault("metadata", {}).setdefault("annotations", {})
    annotations[LAST_APPLIED_ANNOTATION] = json.dumps(applied, sort_keys=True, separators=(",", ":"))
    return body


@dataclass(frozen=True)
class Write:
    verb: str  # "create" | "patch" | "delete"
    resource: Resource
    name: str
    body: dict[str, Any] = field(default_factory=dict)


async def plan(api: KubeApi, ctx: CacheContext, desired: DesiredState, owner: kopf.Body) -> list[Write]:
    """The writes that bring the cluster to ``desired``; raise :class:`SpecError` if one cannot work.

    ``desired.manifests`` must already be adopted; the Secrets generated here get adopted by ``owner``.
    """
    writes: list[Write] = []
    for manifest in desired.manifests:
        res = BY_KIND[manifest["kind"]]
        name = manifest["metadata"]["name"]
        live = await api.get(res, ctx.namespace, name)
        if live is None:
            writes.append(Write("create", res, name, with_last_applied(manifest, manifest)))
            continue
        patch = merge_diff(last_applied(live), manifest)
        if not patch:
            continue
        if res is STATEFULSETS:
            _refuse_immutable(name, patch)
        writes.append(Write("patch", res, name, with_last_applied(patch, manifest)))
    for wanted in desired.secrets:
        if await api.get(SECRETS, ctx.namespace, wanted.name) is None:
            secret = secret_manifest(ctx, wanted, new_secret_value())
            kopf.adopt(secret, owner=owner)
            writes.append(Write("create", SECRETS, wanted.name, secret))
    writes += await _prune_revisions(api, ctx, desired)
    return writes


def _refuse_immutable(name: str, patch: Mapping[str, Any]) -> None:
    changed = [key for key in STATEFULSET_IMMUTABLE if key in patch.get("spec", {})]
    if changed:
        raise SpecError(
            f"StatefulSet {name}: {', '.join(changed)} cannot change once created (storage or persistence "
            f"was edited); restore the previous value, or delete the StatefulSet {name} to recreate it"
        )


async def _prune_revisions(api: KubeApi, ctx: CacheContext, desired: DesiredState) -> list[Write]:
    """Deletes for vLLM Deployments of this cache serving a revision no longer wanted (all of
    them once vLLM is external)."""
    keep = {names.vllm_deployment_name(ctx.name, revision) for revision in desired.serving_revisions}
    live = await api.list(DEPLOYMENTS, ctx.namespace, names.selector(ctx.name, "vllm"))
    return [
        Write("delete", DEPLOYMENTS, obj["metadata"]["name"])
        for obj in live
        if obj["metadata"]["name"] not in keep
    ]


async def execute(api: KubeApi, namespace: str, writes: list[Write]) -> None:
    """Run the writes; a child created meanwhile by a concurrent converge is not an error."""
    for write in writes:
        if write.verb == "create":
            try:
                await api.create(write.resource, namespace, write.body)
            except KubeError as exc:
                if exc.status != 409:
                    raise
        elif write.verb == "patch":
            await api.patch(write.resource, namespace, write.name, write.body)
        else:
            await api.delete(write.resource, namespace, write.name)
