"""What every manifest builder needs to know about one LLMCache, and the small pieces they share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import names
from .settings import OperatorConfig
from .spec import LLMCacheSpec


@dataclass(frozen=True)
class CacheContext:
    """One LLMCache as the builders see it: identity, validated spec, operator defaults."""

    name: str
    namespace: str
    spec: LLMCacheSpec
    config: OperatorConfig

    @property
    def redis_url(self) -> str:
        if self.spec.redis.mode == "external":
            return self.spec.redis.url
        return names.redis_url(self.name, self.namespace)

    @property
    def redis_password_secret(self) -> tuple[str, str] | None:
        """(Secret, key) holding the Redis password: the generated one of a managed Redis, the
        ``redis.passwordSecret`` of an external one, or None (an external Redis without a password)."""
        if self.spec.redis.mode == "managed":
            return names.redis_secret_name(self.name), "password"
        ref = self.spec.redis.password_secret
        return (ref.name, ref.key) if ref is not None else None

    @property
    def milvus_uri(self) -> str:
        if self.spec.milvus.mode == "external":
            return self.spec.milvus.uri
        return names.milvus_uri(self.name, self.namespace)

    @property
    def vllm_url(self) -> str:
        if self.spec.vllm.is_external:
            return self.spec.vllm.external.url.rstrip("/")
        return names.vllm_url(self.name, self.namespace)

    @property
    def redis_image(self) -> str:
        return self.spec.redis.image or self.config.redis_image

    @property
    def milvus_image(self) -> str:
        return self.spec.milvus.image or self.config.milvus_image

    @property
    def vllm_image(self) -> str:
        return self.spec.vllm.image or self.config.vllm_image

    @property
    def sidecar_image(self) -> str:
        """The spec's image, else the operator's GPU build for ``embedding.device: cuda``, else its CPU build."""
        if self.spec.sidecar.image:
            return self.spec.sidecar.image
        return self.config.sidecar_gpu_image if self.spec.embedding.device == "cuda" else self.config.sidecar_image

    # Resources: the spec's when it sets any, else the operator's default (LLMCACHE_<COMPONENT>_RESOURCES).
    @property
    def redis_resources(self) -> dict[str, Any]:
        return self.spec.redis.resources.as_dict() or self.config.redis_resources.as_dict()

    @property
    def milvus_resources(self) -> dict[str, Any]:
        return self.spec.milvus.resources.as_dict() or self.config.milvus_resources.as_dict()

    @property
    def vllm_resources(self) -> dict[str, Any]:
        return self.spec.vllm.resources.as_dict() or self.config.vllm_resources.as_dict()

    @property
    def sidecar_resources(self) -> dict[str, Any]:
        return self.spec.sidecar.resources.as_dict() or self.config.sidecar_resources.as_dict()

    def metadata(self, name: str, component: str, extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
        return {
            "name": name,
            "namespace": self.namespace,
            "labels": {**names.labels(self.name, component), **(extra_labels or {})},
        }


def locked_down_container(run_as_non_root: bool) -> dict[str, Any]:
    """A container securityContext: no privilege escalation, no capabilities, default seccomp."""
    context: dict[str, Any] = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if run_as_non_root:
        context["runAsNonRoot"] = True
        context["readOnlyRootFilesystem"] = True
    return context


def pvc_template(name: str, storage: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": storage}}},
    }


def single_pod_statefulset(
    ctx: CacheContext, name: str, component: str, pod_spec: dict[str, Any], data_volume: str, storage: str | None,
) -> dict[str, Any]:
    """A one-replica StatefulSet whose ``data_volume`` is a PVC of ``storage``, or an emptyDir if None."""
    statefulset: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": ctx.metadata(name, component),
        "spec": {
            "serviceName": name,
            "replicas": 1,
            "selector": {"matchLabels": names.selector(ctx.name, component)},
            "template": {"metadata": {"labels": names.labels(ctx.name, component)}, "spec": pod_spec},
        },
    }
    if storage is not None:
        statefulset["spec"]["volumeClaimTemplates"] = [pvc_template(data_volume, storage)]
    else:
        pod_spec["volumes"] = [*pod_spec.get("volumes", []), {"name": data_volume, "emptyDir": {}}]
    return statefulset
