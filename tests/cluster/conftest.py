"""A real Redis Cluster: three ``redis-server --cluster-enabled yes`` on loopback, joined by
``redis-cli --cluster create`` (no replicas), one per test session, emptied before every test;
and fresh ones per test: ``replicated_cluster`` (a replica per primary, for failovers),
``password_cluster`` (``requirepass``), ``tls_cluster`` (TLS only, clients and bus, and a password).

``redis_cluster.stop(i)`` / ``start(i)`` kill and restart one node (same ports, same
``nodes.conf``: it rejoins with its slots, without its data, as a node without persistence does).
Skipped when ``redis-server`` or ``redis-cli`` is missing (``apt-get install -y redis-server``).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from redis.exceptions import RedisError

from tests.conftest import RedisServer, free_port

PRIMARIES = 3
START_TIMEOUT = 20.0
#: how long a node may be unreachable before the others mark it failed (ms); short for the tests
NODE_TIMEOUT_MS = 1000
PASSWORD = "cluster-s3cret"
CA_FILE = "ca.crt"


def write_tls_files(directory: Path) -> Path:
    """A CA, and a certificate for 127.0.0.1 signed by it that serves clients and, as nodes do on
    the cluster bus, authenticates as a client too."""
    now = datetime.datetime.now(datetime.UTC)

    def certificate(subject: str, key: Any, issuer: x509.Name, signer: Any, *, ca: bool) -> x509.Certificate:
        builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(issuer).public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            builder = (builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                             critical=False)
                       .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                             ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = certificate("llmcache-test-ca", ca_key, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "llmcache-test-ca")]),
                     ca_key, ca=True)
    node = certificate("127.0.0.1", key, ca.subject, ca_key, ca=False)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CA_FILE).write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "tls.crt").write_bytes(node.public_bytes(serialization.Encoding.PEM))
    (directory / "tls.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    return directory


def tls_args(tls: Path | None, port: int) -> tuple[str, ...]:
    """TLS only, clients and cluster bus (no plain port); clients need no certificate."""
    if tls is None:
        return ()
    return ("--port", "0", "--tls-port", str(port), "--tls-cluster", "yes", "--tls-replication", "yes",
            "--tls-cert-file", str(tls / "tls.crt"), "--tls-key-file", str(tls / "tls.key"),
            "--tls-ca-cert-file", str(tls / CA_FILE), "--tls-auth-clients", "no")


class ClusterNodeProcess(RedisServer):
    """One cluster node: a :class:`RedisServer` with cluster mode on, its own bus port, and
    ``password`` required from clients and replicas when given."""

    def __init__(self, binary: str, workdir: Path, password: str | None = None, tls: Path | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.bus_port = free_port()
        self.password = password
        self.tls = tls
        auth = ("--requirepass", password, "--masterauth", password) if password else ()
        super().__init__(binary, workdir, ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                           "--cluster-port", str(self.bus_port),
                                           "--cluster-node-timeout", str(NODE_TIMEOUT_MS), *auth))
        self.extra_args += tls_args(tls, self.port)  # the port is picked by RedisServer

    def client(self) -> Any:
        import redis

        tls = {"ssl": True, "ssl_ca_certs": str(self.tls / CA_FILE)} if self.tls else {}
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, password=self.password, **tls)

    def info(self) -> dict[str, str]:
        raw = self.client().execute_command("CLUSTER", "INFO")
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return dict(line.split(":", 1) for line in text.split() if ":" in line)

    def keys(self, pattern: str) -> list[str]:
        """The keys of this node only (:meth:`RedisServer.client` follows no redirection)."""
        return self.scan(pattern)


class RedisClusterServer:
    """``PRIMARIES`` primaries, each with ``replicas`` replicas; ``password`` on every node; TLS
    only, with the CA and certificate of :func:`write_tls_files`, when ``tls`` names their directory."""

    def __init__(self, redis_server: str, redis_cli: str, workdir: Path, replicas: int = 0,
                 password: str | None = None, tls: bool = False) -> None:
        self.redis_cli = redis_cli
        self.replicas = replicas
        self.password = password
        self.tls = write_tls_files(workdir / "tls") if tls else None
        self.nodes = [ClusterNodeProcess(redis_server, workdir / f"node-{i}", password, self.tls)
                      for i in range(PRIMARIES * (1 + replicas))]

    @property
    def url(self) -> str:
        """The URL a user gives: ``redis+cluster://`` (``rediss+cluster://`` and the CA with TLS)
        and one startup node."""
        if self.tls:
            return f"rediss+cluster://127.0.0.1:{self.nodes[0].port}?ssl_ca_certs={self.tls / CA_FILE}"
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    @property
    def all_nodes_url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def create(self) -> None:
        for node in self.nodes:
            node.start()
        subprocess.run(
            [self.redis_cli, *(("--tls", "--cacert", str(self.tls / CA_FILE)) if self.tls else ()),
             "--cluster", "create", *(f"127.0.0.1:{node.port}" for node in self.nodes),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            check=True, capture_output=True, timeout=60, env={**os.environ, **({"REDISCLI_AUTH": self.password} if self.password else {})},
        )
        self.wait_ok()

    def wait_ok(self) -> None:
        """Until every running node says ``cluster_state:ok`` and knows every other node."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                if all(info.get("cluster_state") == "ok" and info.get("cluster_known_nodes") == str(len(self.nodes))
                       for info in (node.info() for node in self.nodes if node.running)):
                    return
            except (RedisError, OSError):  # a node still loading: ask again
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.05)

    def wait_down(self) -> None:
        """Until the live nodes say ``cluster_state:fail`` (a primary without replica is gone)."""
        deadline = time.monotonic() + START_TIMEOUT
        while not all(node.info().get("cluster_state") == "fail" for node in self.nodes if node.running):
            if time.monotonic() > deadline:
                raise TimeoutError("the Redis Cluster never noticed the stopped node")
            time.sleep(0.05)

    def stop(self, index: int) -> None:
        self.nodes[index].stop()

    def start(self, index: int) -> None:
        self.nodes[index].start()
        self.wait_ok()

    def cluster_client(self) -> Any:
        """A synchronous ``redis.RedisCluster`` for looking into the cluster from a test."""
        import redis

        tls = {"ssl": True, "ssl_ca_certs": str(self.tls / CA_FILE)} if self.tls else {}
        return redis.RedisCluster(host="127.0.0.1", port=self.nodes[0].port, socket_timeout=5, password=self.password,
                                  **tls)

    def owner(self, key: str) -> int:
        """The index of the node serving ``key``'s slot (its primary)."""
        port = self.cluster_client().get_node_from_key(key).port
        return next(index for index, node in enumerate(self.nodes) if node.port == port)

    def keys(self, pattern: str = "*") -> list[str]:
        """The keys matching ``pattern`` on every node, sorted (without replicas: each key once)."""
        return sorted(key for node in self.nodes for key in node.keys(pattern))

    def keys_by_node(self, pattern: str = "*") -> list[list[str]]:
        return [node.keys(pattern) for node in self.nodes]

    def flush(self) -> None:
        for node in self.nodes:
            node.client().flushall()

    def shutdown(self) -> None:
        for node in self.nodes:
            node.stop()


def binaries() -> tuple[str, str]:
    """redis-server and redis-cli, or the test is skipped."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        pytest.skip("redis-server / redis-cli not installed (apt-get install -y redis-server)")
    return server, cli


@pytest.fixture(scope="session")
def _cluster_processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServer]:
    yield from fresh_cluster(tmp_path_factory.mktemp("redis-cluster"))


@pytest.fixture
def redis_cluster(_cluster_processes: RedisClusterServer) -> Iterator[RedisClusterServer]:
    """The session's Redis Cluster, every node up and empty at the start of the test."""
    for node in _cluster_processes.nodes:
        node.start()
    _cluster_processes.wait_ok()
    _cluster_processes.flush()
    yield _cluster_processes


@pytest.fixture
def replicated_cluster(tmp_path: Path) -> Iterator[RedisClusterServer]:
    """A fresh Redis Cluster of three primaries with one replica each (a test may fail one over)."""
    yield from fresh_cluster(tmp_path / "replicated-cluster", replicas=1)


@pytest.fixture
def password_cluster(tmp_path: Path) -> Iterator[RedisClusterServer]:
    """A fresh Redis Cluster (three primaries) whose nodes require :data:`PASSWORD`."""
    yield from fresh_cluster(tmp_path / "password-cluster", password=PASSWORD)


@pytest.fixture
def tls_cluster(tmp_path: Path) -> Iterator[RedisClusterServer]:
    """A fresh Redis Cluster (three primaries) reached over TLS only, and requiring :data:`PASSWORD`."""
    yield from fresh_cluster(tmp_path / "tls-cluster", password=PASSWORD, tls=True)


def fresh_cluster(workdir: Path, **options: Any) -> Iterator[RedisClusterServer]:
    cluster = RedisClusterServer(*binaries(), workdir, **options)
    try:
        cluster.create()
        yield cluster
    finally:
        cluster.shutdown()


#: the cache backend timeout of these tests' sidecars: they check what a cluster shares and how it
#: recovers, not the production 0.5 s budget, which a loaded CI machine can miss (a bypass then)
PATIENT_BACKEND_TIMEOUT = 5.0


@pytest.fixture
def sidecar_factory(sidecar_factory: Any) -> Any:
    """The shared ``sidecar_factory``, with :data:`PATIENT_BACKEND_TIMEOUT` unless a test says otherwise."""

    async def make(**overrides: Any) -> Any:
        overrides.setdefault("backend_timeout_seconds", PATIENT_BACKEND_TIMEOUT)
        return await sidecar_factory(**overrides)

    return make
