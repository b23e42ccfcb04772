"""The real operator (real kopf, the entry code of ``llmcache-operator``) against kmock's emulator.

Reusable by other helpers' tests:

- ``emulator``: an :class:`ApiServerEmulator` (kmock's emulator plus the metadata bookkeeping
  of an API server: uid, resourceVersion, generation) serving the LLMCache CRD and every kind the
  operator touches (:data:`SERVED_RESOURCES`; pass more with ``@pytest.mark.kmock_resources(...)``
  or ``cluster.serve(...)``).
- ``cluster``: a :class:`Cluster` around it: ``create_cache``/``patch_cache``/``delete_cache``
  (through HTTP, so watchers see them, with the bookkeeping an API server does: uid, generation),
  ``obj(...)`` to read an object back, ``make_ready(...)`` to mark a workload ready,
  ``calls(...)`` for the requests the emulator received, ``wait_for(...)``.
- ``start_operator``: ``await start_operator(modules=(...), config=...)`` runs
  :func:`llmcache_operator.__main__.run_operator` in this event loop until the test ends.
- ``operator``: the default operator, already running.
"""

from __future__ import annotations

import asyncio
import copy
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import aiohttp.web
import kmock
import pytest
import yaml
from llmcache_operator import kube, names
from llmcache_operator.__main__ import Options, run_operator
from llmcache_operator.settings import OperatorConfig

REPO = Path(__file__).resolve().parents[2]
CRD_PATH = REPO / "crds" / "llmcache.dev_llmcaches.yaml"
NAMESPACE = "apps"
OTHER_NAMESPACE = "other"
WAIT_SECONDS = 15.0
#: The operator's own handlers; tests of other modules pass theirs (e.g. the webhook) explicitly.
CORE_MODULES: tuple[str, ...] = ("llmcache_operator.handlers",)

SERVED_RESOURCES: tuple[kube.Resource, ...] = (
    kube.LLMCACHES, kube.CRDS, kube.DEPLOYMENTS, kube.STATEFULSETS,
    kube.SERVICES, kube.CONFIGMAPS, kube.SECRETS, kube.EVENTS,
    kube.NAMESPACES,  # kopf waits for its discovery before it watches anything
)
CLUSTER_SCOPED = {kube.CRDS.plural, kube.NAMESPACES.plural}


class ApiServerEmulator(kmock.KubernetesEmulator):
    """kmock's emulator plus what every API server does to metadata on writes.

    Creation sets ``uid``, ``creationTimestamp``, ``generation: 1``, a ``resourceVersion``, and a
    name from ``generateName`` (kmock 0.8 does not: every kopf Event after the first got a 409);
    every write sets a new ``resourceVersion``; a JSON patch whose ``test`` of it fails gets
    422 (kopf then re-reads and retries, as against a real cluster); a write touching ``spec``
    (not through the status subresource) increments ``generation``.

    Lists and watches follow the API's resourceVersion contract, which kmock 0.8 does not: a
    list answers with the version it saw, and a watch from that version sends only what changed
    after it (kmock re-sent every object as ADDED, and lost events written between its snapshot
    and its subscription: kopf then processed stale copies and waited forever for its patches).
    """

    #: Namespaces that exist besides those holding objects (kopf lists them with ``--namespace``).
    KNOWN_NAMESPACES = frozenset({"default", NAMESPACE, OTHER_NAMESPACE})

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # kmock 0.8 cannot parse /api/v1/namespaces (it takes "namespaces" for a namespace prefix).
        if raw_request.method == "GET" and raw_request.path.rstrip("/") == "/api/v1/namespaces":
            return await self._serve_namespaces(raw_request)
        return await super().__call__(raw_request)

    async def _serve_namespaces(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if raw_request.query.get("watch") != "true":
            present = {namespace for _, namespace, _ in self.objects if namespace} | self.KNOWN_NAMESPACES
            return aiohttp.web.json_response({
                "apiVersion": "v1", "kind": "NamespaceList", "metadata": {"resourceVersion": str(time.monotonic_ns())},
                "items": [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
                          for name in sorted(present)],
            })
        # Nothing ever changes among namespaces here: a quiet watch that ends like a server timeout.
        response = aiohttp.web.StreamResponse()
        await response.prepare(raw_request)
        for _ in range(50):
            if raw_request.transport is None or raw_request.transport.is_closing():
                break
            await asyncio.sleep(0.1)
        return response

    async def _serve_list(self, request: kmock.Request) -> Any:
        seen = str(time.monotonic_ns())
        result = await super()._serve_list(request)
        result["metadata"]["resourceVersion"] = seen
        return result

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        yield b""  # send the headers now: a watch may stay silent for long
        since = request.params.get("resourceVersion", "")
        since_version = int(since) if since.isdigit() else -1
        bus = self._buses[request.resource]
        async with self._lock:  # writers publish under this lock: snapshot + mark are atomic
            mark = await bus.mark()
            snapshot = [
                {"type": "ADDED" if since_version < 0 else "MODIFIED", "object": stored.raw}
                for (resource, namespace, name), stored in self.objects.items()
                if resource == request.resource and not stored.deleted and _selected(request, namespace, name)
                and _version(stored.raw) > since_version
            ]
        try:
            for event in snapshot:
                yield event
            async for event in bus.stream(since=mark):
                meta = event.get("object", {}).get("metadata", {})
                if _selected(request, meta.get("namespace"), meta.get("name")):
                    yield event
        finally:
            await bus.unmark(mark)

    async def _handle(self, request: kmock.Request) -> Any:
        if request.resource is not None and isinstance(request.data, (dict, list)):
            self._bookkeep(request)
        return await super()._handle(request)

    def _bookkeep(self, request: kmock.Request) -> None:
        version = str(time.monotonic_ns())
        if request.action == kmock.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):  # kopf's Events are named so
                meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:8]}"
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            meta.update({"generation": 1, "resourceVersion": version})
        elif request.action == kmock.action.UPDATE:
            key = (request.resource, request.namespace, request.name)
            if key not in self.objects or self.objects[key].deleted:
                return
            current = self.objects[key].raw
            if isinstance(request.data, list):
                _check_tests(request.data, current)
            generation = current.get("metadata", {}).get("generation", 1)
            if request.subresource is None and _touches_spec(request.data):
                generation += 1
            if isinstance(request.data, dict):
                meta = request.data.get("metadata") or {}
                request.data["metadata"] = {**meta, "resourceVersion": version, "generation": generation}
            else:
                request.data.append({"op": "add", "path": "/metadata/resourceVersion", "value": version})
                request.data.append({"op": "add", "path": "/metadata/generation", "value": generation})


def _version(obj: dict[str, Any]) -> int:
    raw = str(obj.get("metadata", {}).get("resourceVersion") or "")
    return int(raw) if raw.isdigit() else 0


def _selected(request: kmock.Request, namespace: str | None, name: str | None) -> bool:
    return (request.namespace is None or namespace == request.namespace) and (request.name is None or name == request.name)


def _check_tests(patch: list[dict[str, Any]], current: dict[str, Any]) -> None:
    version = current.get("metadata", {}).get("resourceVersion")
    for op in patch:
        tests_version = op.get("op") == "test" and op.get("path") == "/metadata/resourceVersion"
        if tests_version and op.get("value") != version:
            raise kmock.KubernetesError(status=422, reason="Invalid", message="resourceVersion test failed")


def _touches_spec(patch: dict[str, Any] | list[dict[str, Any]]) -> bool:
    if isinstance(patch, dict):
        return "spec" in patch
    return any(op.get("path", "").startswith("/spec") for op in patch)


def resource_key(res: kube.Resource) -> str:
    return f"{res.group}/{res.version}/{res.plural}" if res.group else f"{res.version}/{res.plural}"


class Cluster:
    """A test's view of the emulated API server."""

    def __init__(self, emulator: kmock.KubernetesEmulator, namespace: str = NAMESPACE) -> None:
        self.emulator = emulator
        self.namespace = namespace

    def serve(self, res: kube.Resource, *, namespaced: bool = True, subresources: Iterable[str] = ()) -> None:
        self.emulator.resources[resource_key(res)] = kmock.ResourceInfo(
            kind=res.kind, singular=res.kind.lower(), namespaced=namespaced,
            verbs={"get", "list", "watch", "create", "patch", "delete"}, subresources=set(subresources),
        )

    # --- reading back -------------------------------------------------------------------------
    def scope(self, res: kube.Resource, namespace: str | None = None) -> str | None:
        """Where objects of ``res`` live: ``None`` for a kind served cluster-scoped, else
        ``namespace`` (default: the test's)."""
        key = resource_key(res)
        if key in self.emulator.resources and self.emulator.resources[key].namespaced is False:
            return None
        return namespace or self.namespace

    def obj(self, res: kube.Resource, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The object's current state (a plain dict), or None if absent or deleted.

        ``namespace`` defaults to the test's; a cluster-scoped kind is read without one.
        """
        try:
            stored = self.emulator.objects[resource_key(res), self.scope(res, namespace), name]
        except KeyError:
            return None
        return None if stored.deleted else copy.deepcopy(stored.raw)

    def names(self, res: kube.Resource, namespace: str | None = None) -> set[str]:
        wanted = self.scope(res, namespace)
        found = set()
        for (resource, ns, name), stored in self.emulator.objects.items():
            if resource == resource_key(res) and ns == wanted and not stored.deleted:
                found.add(name)
        return found

    def cache(self, name: str) -> dict[str, Any]:
        body = self.obj(kube.LLMCACHES, name)
        assert body is not None, f"LLMCache {name} does not exist"
        return body

    def calls(self, verb: str | None = None, res: kube.Resource | None = None) -> list[kmock.Request]:
        """Requests the emulator received (verb: get/list/watch/create/patch/delete)."""
        actions = {"get": "FETCH", "list": "LIST", "watch": "WATCH", "create": "CREATE",
                   "patch": "UPDATE", "delete": "DELETE"}
        found = []
        for request in list(self.emulator):
            if request.resource is None or request.action is None or request.resource.plural is None:
                continue
            if verb is not None and request.action.value != actions[verb]:
                continue
            if res is not None and request.resource != resource_key(res):
                continue
            found.append(request)
        return found

    def api_calls(self) -> set[tuple[str, str, str]]:
        """Every (verb, group, resource[/subresource]) the operator made, as RBAC spells them
        (the test's own requests, sent with kmock's client, are left out)."""
        verbs = {"FETCH": "get", "LIST": "list", "WATCH": "watch", "CREATE": "create",
                 "UPDATE": "patch", "DELETE": "delete"}
        seen = set()
        for request in self.calls():
            if request.resource.plural is None or request.headers.get("User-Agent", "").startswith("kmock/"):
                continue  # discovery, or the test itself
            plural = request.resource.plural + (f"/{request.subresource}" if request.subresource else "")
            seen.add((verbs[request.action.value], request.resource.group, plural))
        return seen

    def events(self, reason: str | None = None) -> list[dict[str, Any]]:
        bodies = [self.obj(kube.EVENTS, name) for name in self.names(kube.EVENTS)]
        return [body for body in bodies if body and (reason is None or body.get("reason") == reason)]

    # --- writing, as a user or a controller would ----------------------------------------------
    async def _send(self, method: str, path: str, body: Any) -> dict[str, Any]:
        headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else {}
        async with self.emulator.request(method, path, json=body, headers=headers) as response:
            assert response.status < 400, f"{method} {path}: {response.status} {await response.text()}"
            return await response.json()

    async def create_cache(self, name: str, spec: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
        body = {
            "apiVersion": names.API_VERSION, "kind": names.KIND,
            "metadata": {"name": name, "namespace": self.namespace, "labels": labels or {}},
            "spec": spec,
        }
        return await self._send("POST", kube.LLMCACHES.path(self.namespace), body)

    async def patch_cache(self, name: str, spec_patch: dict[str, Any]) -> dict[str, Any]:
        """A spec change as ``kubectl patch --type merge`` sends it."""
        return await self._send("PATCH", kube.LLMCACHES.path(self.namespace, name), {"spec": spec_patch})

    async def delete_cache(self, name: str) -> None:
        async with self.emulator.delete(kube.LLMCACHES.path(self.namespace, name)) as response:
            assert response.status < 400, await response.text()

    async def create_object(self, res: kube.Resource, body: dict[str, Any]) -> dict[str, Any]:
        """Any object in the test's namespace, as a user would ``kubectl create`` it."""
        body = {"apiVersion": res.api_version, "kind": res.kind, **body}
        body["metadata"] = {"namespace": self.namespace, **body.get("metadata", {})}
        return await self._send("POST", res.path(self.namespace), body)

    async def patch_object(self, res: kube.Resource, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return await self._send("PATCH", res.path(self.namespace, name), patch)

    async def make_ready(self, res: kube.Resource, name: str) -> None:
        """What the workload controllers would report once every replica is ready."""
        live = self.obj(res, name) or {}
        replicas = live.get("spec", {}).get("replicas", 1)
        await self._send("PATCH", res.path(self.namespace, name, "status"), {"status": {
            "observedGeneration": live.get("metadata", {}).get("generation", 1),
            "replicas": replicas, "readyReplicas": replicas, "updatedReplicas": replicas,
            "availableReplicas": replicas,
        }})

    async def wait_for(
        self, check: Callable[[], Any], timeout: float = WAIT_SECONDS, what: str = "condition",
    ) -> Any:
        """Poll ``check`` until it returns something truthy (and return that)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            result = check()
            if result:
                return result
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            await asyncio.sleep(0.05)

    async def settle(self, quiet_seconds: float = 1.5, timeout: float = WAIT_SECONDS) -> None:
        """Wait until no request arrived for ``quiet_seconds`` (watch streams aside)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last = -1
        quiet_since = loop.time()
        while loop.time() < deadline:
            count = len([call for call in self.calls() if call.action.value != "WATCH"])
            if count != last:
                last, quiet_since = count, loop.time()
            elif loop.time() - quiet_since >= quiet_seconds:
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the operator never went quiet")


@pytest.fixture()
def kmock_options(kmock_options: dict[str, Any]) -> dict[str, Any]:
    return {**kmock_options, "cls": ApiServerEmulator}


@pytest.fixture()
async def emulator(kmock: ApiServerEmulator) -> ApiServerEmulator:
    return kmock


@pytest.fixture()
def cluster(emulator: kmock.KubernetesEmulator) -> Cluster:
    cluster = Cluster(emulator)
    for res in SERVED_RESOURCES:
        cluster.serve(
            res, namespaced=res.plural not in CLUSTER_SCOPED,
            subresources={"status"} if res in (kube.LLMCACHES, kube.DEPLOYMENTS, kube.STATEFULSETS) else (),
        )
    crd = yaml.safe_load(CRD_PATH.read_text())
    emulator.objects[resource_key(kube.CRDS), None, crd["metadata"]["name"]] = crd
    return cluster


StartOperator = Callable[..., Awaitable[None]]


class OperatorThread:
    """The operator in its own thread and event loop.

    kopf cancels every task of its loop that it did not find at startup when it stops (its own
    TODO admits the loop may not be fully its own); in a loop of its own it cannot hit the test's
    tasks, and the emulator keeps serving from the test's loop.
    """

    def __init__(self, options: Options, config: OperatorConfig, modules: Sequence[str]) -> None:
        self.stop_flag = threading.Event()
        self.ready_flag = threading.Event()
        self.error: BaseException | None = None
        self._args = (options, config, modules)
        self._thread = threading.Thread(target=self._run, name="llmcache-operator", daemon=True)

    def _run(self) -> None:
        options, config, modules = self._args
        try:
            asyncio.run(run_operator(
                options, config=config, modules=modules, stop_flag=self.stop_flag, ready_flag=self.ready_flag,
            ))
        except BaseException as exc:  # noqa: BLE001  (reported to the test by start() and stop())
            self.error = exc

    async def start(self) -> None:
        self._thread.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_SECONDS
        while not self.ready_flag.is_set():
            if not self._thread.is_alive():
                raise AssertionError(f"the operator exited during startup: {self.error!r}")
            if loop.time() > deadline:
                raise AssertionError("the operator did not get ready")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        self.stop_flag.set()
        await asyncio.to_thread(self._thread.join, WAIT_SECONDS)
        if self._thread.is_alive():
            raise AssertionError("the operator did not stop")
        if self.error is not None:
            raise AssertionError(f"the operator failed: {self.error!r}")


@pytest.fixture()
async def start_operator(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[StartOperator]:
    """``await start_operator(modules=..., config=..., namespaces=..., liveness=...)``; stopped at teardown.

    The operator logs in the way it does in production without a service account: through
    ``KUBECONFIG``, here a file pointing at the emulator.
    """
    kubeconfig = tmp_path / "kubeconfig"
    server = str(cluster.emulator.url).rstrip("/")
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
        "clusters": [{"name": "kmock", "cluster": {"server": server}}],
        "users": [{"name": "kmock", "user": {"token": "test-token"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock"}}],
    }))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    running: list[OperatorThread] = []

    async def start(
        modules: Sequence[str] = CORE_MODULES,
        config: OperatorConfig | None = None,
        namespaces: Sequence[str] = (),
        liveness: str | None = None,
    ) -> None:
        options = Options(namespaces=tuple(namespaces), liveness=liveness)
        operator = OperatorThread(options, config or OperatorConfig(), modules)
        running.append(operator)
        await operator.start()

    yield start
    for operator in running:
        await operator.stop()


@pytest.fixture()
async def operator(start_operator: StartOperator) -> None:
    await start_operator()
