"""Several sidecar processes on one port, to use more than one core (``--workers N``).

Each worker is a whole sidecar (API and metrics listeners, its own Redis and upstream
connections) that binds its ports with ``SO_REUSEPORT``: the kernel spreads incoming connections
over the workers.  They share everything that matters through Redis (entries, revision events,
fleet counters), which is why more than one worker needs ``redis_url``; the semantic tier's
in-process index follows other writers only with a Milvus *server* (refreshed like another
replica's), so embedded Milvus Lite (a single-owner file) is refused.

Metrics: the workers run prometheus_client's multiprocess mode (one directory for all, made and
removed by the supervisor), so ``/metrics`` on whichever worker answers reports the sum over
every worker.  ``/admin/stats`` shows that worker's own ``requests`` and everyone's ``fleet``.

The supervisor (the process started by the command) only starts the workers and waits: SIGTERM
or SIGINT is passed on to every worker, which drains and stops; if a worker exits on its own, the
others are stopped too and the command fails, so the container is restarted whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import tempfile
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any

from llmcache_sidecar.config import ConfigError, Settings, parse_host_port

log = logging.getLogger(__name__)

WORKERS_ENV = "LLMCACHE_WORKERS"
#: prometheus_client reads it when first imported: set before a worker starts
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: how long the supervisor waits for a stopping worker before killing it
STOP_TIMEOUT_SECONDS = 30.0
#: how often a worker checks that its supervisor is still there
ORPHAN_CHECK_SECONDS = 1.0

Serve = Callable[[Settings], Coroutine[Any, Any, None]]


def check_workers(settings: Settings, count: int) -> None:
    """Raise :class:`ConfigError` when ``count`` workers cannot share this configuration."""
    if count < 1:
        raise ConfigError(f"{WORKERS_ENV} / --workers must be at least 1, not {count}")
    if count == 1:
        return
    if not settings.redis_url:
        raise ConfigError(f"{count} workers need LLMCACHE_REDIS_URL: each worker's in-process exact tier would "
                          "hold only its own entries")
    if settings.semantic_enabled and "://" not in settings.milvus_uri:
        raise ConfigError(f"{count} workers need a Milvus server (LLMCACHE_MILVUS_URI=http://...) or "
                          "LLMCACHE_SEMANTIC_ENABLED=false: embedded Milvus Lite has a single owner")
    for name in ("listen", "metrics_listen"):
        if parse_host_port(getattr(settings, name))[1] == 0:
            raise ConfigError(f"{count} workers share their ports: LLMCACHE_{name.upper()} needs a fixed port, not 0")


def run_workers(settings: Settings, count: int, serve: Serve, loop_factory: Callable[[], Any] | None) -> int:
    """Run ``count`` workers (a configuration :func:`check_workers` accepted) until SIGTERM/SIGINT
    (exit code 0) or until one fails (1)."""
    context = multiprocessing.get_context("spawn")  # fresh interpreters: multiprocess metrics from the start
    with tempfile.TemporaryDirectory(prefix="llmcache-metrics-") as metrics_dir:
        os.environ[MULTIPROC_ENV] = metrics_dir
        workers = [context.Process(target=worker_main, args=(settings, serve, loop_factory, os.getpid()),
                                   name=f"llmcache-worker-{index}") for index in range(count)]
        stopping = False

        def stop(signum: int, frame: FrameType | None) -> None:
            nonlocal stopping
            stopping = True
            for worker in workers:
                if worker.is_alive():
                    worker.terminate()  # SIGTERM: the worker stops its listeners and exits

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for worker in workers:
                worker.start()
            log.info("llmcache sidecar: %d workers (pids %s) on %s", count,
                     ", ".join(str(worker.pid) for worker in workers), settings.listen)
            multiprocessing.connection.wait([worker.sentinel for worker in workers])
            failed = not stopping
            if failed:
                gone = next(worker for worker in workers if not worker.is_alive())
                log.error("worker %s exited (code %s): stopping the others", gone.name, gone.exitcode)
        finally:
            stop(signal.SIGTERM, None)
            for worker in workers:
                if worker.pid is None:
                    continue  # never started
                worker.join(STOP_TIMEOUT_SECONDS)
                if worker.is_alive():
                    log.warning("worker %s did not stop in %.0fs: killed", worker.name, STOP_TIMEOUT_SECONDS)
                    worker.kill()
                    worker.join()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.environ.pop(MULTIPROC_ENV, None)
    return 1 if failed else 0


def worker_main(settings: Settings, serve: Serve, loop_factory: Callable[[], Any] | None, supervisor: int) -> None:
    """A worker process: serve until SIGTERM, or until the supervisor is gone."""
    logging.basicConfig(level=settings.log_level.upper(),
                        format=f"%(asctime)s %(levelname)s %(name)s[{os.getpid()}]: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the supervisor decides

    async def serve_while_supervised() -> None:
        serving = asyncio.ensure_future(serve(settings))
        while not serving.done():
            if os.getppid() != supervisor:
                log.warning("the supervisor (pid %d) is gone: stopping", supervisor)
                serving.cancel()
            await asyncio.wait([serving], timeout=ORPHAN_CHECK_SECONDS)
        with contextlib.suppress(asyncio.CancelledError):
            await serving

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve_while_supervised())
