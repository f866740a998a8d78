"""What e2e tests share besides fixtures: a running platform's handles, free ports.

(A module of its own: test modules importing from ``conftest`` would get
whichever conftest.py was imported first under that name.)
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import grpc
import redis

from ossfleet.config import PlatformConfig, parse_config
from ossfleet.control.apikeys import new_api_key, register_key
from ossfleet.redisdb import connect


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Platform:
    cfg: PlatformConfig
    base_url: str
    redis_url: str
    keys: dict[str, str]
    grpc_target: str


def wait_for_batch(
    client, batch_id: str, timeout_s: float = 240, until=("completed", "failed", "expired", "cancelled")
):
    """Poll the batch (the Batch API pushes nothing) until it reaches one of ``until``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        b = client.batches.retrieve(batch_id)
        if b.status in until:
            return b
        time.sleep(0.5)
    raise AssertionError(f"batch {batch_id} still {b.status} after {timeout_s} s: {b.request_counts}")


def start_platform(raw: dict, ray_cluster, redis_server, tmp_path_factory) -> Platform:
    """Deploy a platform config on the module's Ray cluster; keys registered for its tenants."""
    from ray import serve

    from deployments.app import build_applications, deploy
    from ossfleet.serveconfig import serve_start_options

    port, grpc_port = raw["endpoints"]["http_port"], free_port()
    raw["batch"] = {"storage_url": str(tmp_path_factory.mktemp("files"))}  # batch files and LoRA adapters
    raw["endpoints"].update(grpc_port=grpc_port, grpc_health_port=free_port())
    cfg = parse_config(raw, "<e2e>")
    for attempt in range(2):
        try:
            serve.start(**serve_start_options(cfg, local=True))
            break
        except ray_cluster.exceptions.ActorDiedError:
            # On a CPU-starved machine Serve's controller can replace a proxy that is slow to start
            # while serve.start still waits on the first one; start again once.
            serve.shutdown()
            if attempt:
                raise
    assert deploy(build_applications(cfg, redis_server.url), timeout_s=300)
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as ch:
        grpc.channel_ready_future(ch).result(timeout=120)  # the gateway's gRPC server listens
    client = connect(redis_server.url)
    keys = {}
    for t in cfg.tenants:
        keys[t.name] = new_api_key()
        register_key(client, cfg.redis.namespace, t.name, keys[t.name])
    client.close()
    return Platform(cfg, f"http://127.0.0.1:{port}", redis_server.url, keys, f"127.0.0.1:{grpc_port}")


def chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@contextlib.contextmanager
def headless_chromium() -> Iterator[object]:
    """A headless Chromium under WebDriver (skips the test where there is none)."""
    import pytest

    found = chromium()
    if found is None:
        pytest.skip("no Chromium here: `make test` installs chromium and chromium-driver where apt-get exists")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = found[0]
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(found[1]), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


T = TypeVar("T")


def wait_for_writes(
    redis_url: str, pattern: str, until: Callable[[], T | None], what: str, timeout_s: float = 120
) -> T:
    """``until()``'s first value that is not None, checked at once and again after each write to a key matching
    ``pattern`` (Redis keyspace notifications): the writes the caller waits for wake it, with no polling."""
    r = redis.Redis.from_url(redis_url)
    before = r.config_get("notify-keyspace-events")["notify-keyspace-events"]
    r.config_set("notify-keyspace-events", "KA")
    sub = r.pubsub()
    sub.psubscribe(f"__keyspace@*__:{pattern}")  # before the first check: no write falls between the two
    deadline = time.monotonic() + timeout_s
    try:
        while (got := until()) is None:
            left = deadline - time.monotonic()
            assert left > 0, f"{what}: not within {timeout_s} s"
            sub.get_message(timeout=left)  # returns at the next write (or its subscription's confirmation)
        return got
    finally:
        sub.close()
        r.config_set("notify-keyspace-events", before)
        r.close()
