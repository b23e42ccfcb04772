"""Managed vLLM: one Deployment per model revision, and one Service selecting the active revision.

A revision change can therefore run the new Deployment beside the old one and switch traffic by
changing only the Service selector (the rollout, issue 5, builds on this).

The pod runs as a non-root user with a read-only root filesystem.  The image has no user of its
own and its libraries write caches under ``$HOME`` (torch inductor, triton, outlines, flashinfer,
vLLM's own, CUDA's JIT cache), so every one of them is pointed into a scratch emptyDir; the
weights go to ``HF_HOME`` on the model-cache volume.  ``USER`` is set because torch calls
``getpass.getuser()``, which fails for a uid missing from ``/etc/passwd`` unless it is.
See docs/security.md for the sources.
"""

from __future__ import annotations

from typing import Any

from . import names
from .context import CacheContext, locked_down_container

COMPONENT = "vllm"
PORT = 8000
GPU_RESOURCE = "nvidia.com/gpu"
WEIGHTS_PATH = "/var/lib/vllm/huggingface"
#: Writable scratch (an emptyDir): HOME and every library cache.
SCRATCH_PATH = "/tmp"
#: Any non-root uid works: nothing in the image belongs to a user of its own.
VLLM_UID = 1000
SCRATCH_ENV = {
    "HOME": SCRATCH_PATH,
    "USER": "vllm",
    "XDG_CACHE_HOME": f"{SCRATCH_PATH}/.cache",
    "XDG_CONFIG_HOME": f"{SCRATCH_PATH}/.config",
    "VLLM_CACHE_ROOT": f"{SCRATCH_PATH}/.cache/vllm",
    "VLLM_CONFIG_ROOT": f"{SCRATCH_PATH}/.config/vllm",
    "TRITON_CACHE_DIR": f"{SCRATCH_PATH}/.triton",
    "TORCHINDUCTOR_CACHE_DIR": f"{SCRATCH_PATH}/torchinductor",
    "NUMBA_CACHE_DIR": f"{SCRATCH_PATH}/numba",
    "OUTLINES_CACHE_DIR": f"{SCRATCH_PATH}/.cache/outlines",
    "CUDA_CACHE_PATH": f"{SCRATCH_PATH}/.nv/ComputeCache",
    "VLLM_NO_USAGE_STATS": "1",
}
#: Beyond the startup probe's 30 minutes of weight loading: a revision whose pods make no progress
#: for this long gets ``ProgressDeadlineExceeded``, which fails its rollout (the old one serves on).
PROGRESS_DEADLINE_SECONDS = 2400


def vllm_args(ctx: CacheContext) -> list[str]:
    spec = ctx.spec
    args = [
        "--model", spec.model.name,
        "--served-model-name", spec.model.served_name,
        "--max-model-len", str(spec.vllm.max_model_len),
        "--port", str(PORT),
    ]
    if spec.vllm.enable_prefix_caching:
        args.append("--enable-prefix-caching")
    if spec.vllm.gpus > 1:
        args += ["--tensor-parallel-size", str(spec.vllm.gpus)]
    return args + list(spec.vllm.extra_args)


def vllm_resources(ctx: CacheContext) -> dict[str, Any]:
    """The spec's (or the operator's default) resources, with the GPU limit (and request) of ``spec.vllm.gpus`` merged in."""
    resources = ctx.vllm_resources
    gpus = ctx.spec.vllm.gpus
    if gpus > 0:
        resources["limits"] = {**resources.get("limits", {}), GPU_RESOURCE: gpus}
        if GPU_RESOURCE in resources.get("requests", {}):
            resources["requests"] = {**resources["requests"], GPU_RESOURCE: gpus}
    return resources


def _volumes(ctx: CacheContext) -> list[dict[str, Any]]:
    claim = ctx.spec.vllm.model_cache_claim
    weights: dict[str, Any] = (
        {"persistentVolumeClaim": {"claimName": claim}} if claim else {"emptyDir": {}}
    )
    return [
        {"name": "dshm", "emptyDir": {"medium": "Memory"}},
        {"name": "model-cache", **weights},
        {"name": "scratch", "emptyDir": {}},
    ]


def vllm_deployment(ctx: CacheContext, revision: str) -> dict[str, Any]:
    slug = names.revslug(revision)
    revision_label = {names.REVISION_LABEL: slug}
    health = {"httpGet": {"path": "/health", "port": "http"}}
    env: list[dict[str, Any]] = [{"name": "HF_HOME", "value": WEIGHTS_PATH}]
    env += [{"name": name, "value": value} for name, value in SCRATCH_ENV.items()]
    token = ctx.spec.vllm.hf_token_secret
    if token is not None:
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": token.name, "key": token.key}}})
    container: dict[str, Any] = {
        "name": "vllm",
        "image": ctx.vllm_image,
        "args": vllm_args(ctx),
        "env": env,
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        # Loading weights takes minutes: the startup probe allows 30 of them.
        "startupProbe": {**health, "periodSeconds": 10, "failureThreshold": 180},
        "readinessProbe": {**health, "periodSeconds": 5, "timeoutSeconds": 3},
        "livenessProbe": {**health, "periodSeconds": 15, "timeoutSeconds": 5, "failureThreshold": 4},
        "volumeMounts": [
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "model-cache", "mountPath": WEIGHTS_PATH},
            {"name": "scratch", "mountPath": SCRATCH_PATH},
        ],
        "securityContext": locked_down_container(run_as_non_root=True),
    }
    resources = vllm_resources(ctx)
    if resources:
        container["resources"] = resources
    metadata = ctx.metadata(names.vllm_deployment_name(ctx.name, revision), COMPONENT, revision_label)
    metadata["annotations"] = {names.MODEL_REVISION_ANNOTATION: revision}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": ctx.spec.vllm.replicas,
            "progressDeadlineSeconds": PROGRESS_DEADLINE_SECONDS,
            "selector": {"matchLabels": {**names.selector(ctx.name, COMPONENT), **revision_label}},
            # GPUs are scarce: replace pods one by one instead of surging onto extra GPUs.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "template": {
                "metadata": {
                    "labels": {**names.labels(ctx.name, COMPONENT), **revision_label},
                    "annotations": {names.MODEL_REVISION_ANNOTATION: revision},
                },
                "spec": {
                    "containers": [container],
                    "volumes": _volumes(ctx),
                    # fsGroup: the weights volume (a claim written by an earlier root pod too) is writable;
                    # relabelled only when its root is not ours yet, not file by file at every start.
                    "securityContext": {"runAsUser": VLLM_UID, "runAsGroup": VLLM_UID, "fsGroup": VLLM_UID,
                                        "fsGroupChangePolicy": "OnRootMismatch"},
                    "automountServiceAccountToken": False,
                },
            },
        },
    }


def vllm_service(ctx: CacheContext, active_revision: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": ctx.metadata(names.vllm_service_name(ctx.name), COMPONENT),
        "spec": {
            "selector": {
                **names.selector(ctx.name, COMPONENT),
                names.REVISION_LABEL: names.revslug(active_revision),
            },
            "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }
