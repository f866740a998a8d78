"""Metrics reach Prometheus through Ray's metrics export."""

from __future__ import annotations

import socket
import time
import urllib.request

import httpx
import pytest

from ossfleet.config import parse_config
from ossfleet.control.apikeys import new_api_key, register_key
from ossfleet.redisdb import connect

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_request_queue_and_latency_metrics_are_exported(tiny_checkpoint, redis_server):
    import ray
    from ray import serve

    from deployments.app import build_applications, deploy
    from ossfleet.serveconfig import serve_start_options

    metrics_port, http_port = free_port(), free_port()
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False,
             _metrics_export_port=metrics_port)  # fmt: skip
    try:
        cfg = parse_config(
            {
                "redis": {"namespace": "metrics"},
                "endpoints": {"http_port": http_port, "grpc_port": free_port()},
                "models": [{"name": "gpt-oss-20b", "spec": "gpt-oss-20b", "path": str(tiny_checkpoint),
                            "engine": "stub", "num_gpus": 1, "num_cpus": 0.25,
                            "price": {"input_per_1k": 0.001, "output_per_1k": 0.002}}],
                "tenants": [{"name": "acme"}],
            },
            "<metrics>",
        )  # fmt: skip
        serve.start(**serve_start_options(cfg, local=True, host="127.0.0.1"))
        assert deploy(build_applications(cfg, redis_server.url), timeout_s=120)
        key = new_api_key()
        register_key(connect(redis_server.url), "metrics", "acme", key)
        url = f"http://127.0.0.1:{http_port}/v1/chat/completions"
        h = {"authorization": f"Bearer {key}"}
        for _ in range(3):
            ok = httpx.post(url, headers=h, timeout=60,
                            json={"model": "gpt-oss-20b", "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
            assert ok.status_code == 200
        bad = httpx.post(url, headers=h, timeout=60,
                         json={"model": "nope", "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
        assert bad.status_code == 404
        wanted = {
            "ray_ossfleet_requests_total{": 'outcome="admitted"',
            "ray_ossfleet_requests_total{ ": 'outcome="model_not_found"',
            "ray_ossfleet_finished_total{": 'outcome="stop"',
            "ray_ossfleet_time_to_first_token_seconds_count{": 'model="gpt-oss-20b"',
            "ray_ossfleet_queue_depth{": 'model="gpt-oss-20b"',
            "ray_ossfleet_cost_usd_total{": 'tenant="acme"',
        }
        text, deadline = "", time.monotonic() + 60
        while time.monotonic() < deadline:
            text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
            lines = [ln for ln in text.splitlines() if not ln.startswith("#")]
            found = {k: any(ln.startswith(k.strip()) and v in ln for ln in lines) for k, v in wanted.items()}
            if all(found.values()):
                break
            time.sleep(2)
        assert all(found.values()), found
        admitted = [ln for ln in lines if ln.startswith("ray_ossfleet_requests_total{") and 'outcome="admitted"' in ln]
        assert float(admitted[0].rsplit(" ", 1)[1]) == 3
        assert key not in text
    finally:
        serve.shutdown()
        ray.shutdown()
