"""`ossfleet up` (the README's run command) brings the platform up, serves, and stops cleanly."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from e2e_platform import wait_for_writes

from ossfleet.control.apikeys import new_api_key
from ossfleet.control.keyspace import KeySpace

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listener(port: int) -> str | None:
    """The name of the process listening on TCP ``port`` (from /proc: the socket's inode, then its owner)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                f = line.split()
                if int(f[1].rsplit(":", 1)[1], 16) == port and f[3] == "0A":  # 0A: LISTEN
                    inodes.add(f"socket:[{f[9]}]")
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                    return (proc / "comm").read_text().strip()
    return None


def test_up_serves_a_chat_request_and_stops_on_ctrl_c(tmp_path, tiny_checkpoint, tiny_checkpoint_4l,
                                                     tiny_family_checkpoints):  # fmt: skip
    cfg = yaml.safe_load((ROOT / "config/local.yaml").read_text())
    port, grpc_port = free_port(), free_port()
    cfg["endpoints"]["http_port"] = port
    cfg["endpoints"]["grpc_port"] = grpc_port
    cfg["endpoints"]["grpc_health_port"] = free_port()
    cfg["endpoints"]["haproxy_stats_port"] = free_port()
    cfg["endpoints"]["haproxy_metrics_port"] = free_port()
    cfg["endpoints"]["metrics_port"] = metrics_port = free_port()
    cfg["redis"]["data_dir"] = str(tmp_path / "redis")
    cfg["models"][0]["path"] = str(tiny_checkpoint)
    cfg["models"][1]["path"] = str(tiny_checkpoint_4l)
    for m, family in zip(cfg["models"][2:], ("llama", "gemma2", "mixtral"), strict=True):
        m["path"] = str(tiny_family_checkpoints[family])
    cfg["batch"]["storage_url"] = str(tmp_path / "files")
    path = tmp_path / "local.yaml"
    path.write_text(yaml.safe_dump(cfg))
    key = new_api_key()
    # Without the tests' own Serve settings: `ossfleet up` sets the ingress's from the config.
    # Metrics exported every second (Ray's default is every 10 s), for the metrics check below.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_SERVE_")} | {
        "OSSFLEET_DEMO_KEY": key, "RAY_metrics_report_interval_ms": "1000"}  # fmt: skip
    log = (tmp_path / "up.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ossfleet.cli", "up", "--config", str(path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 240
        while "Ctrl-C stops it." not in (tmp_path / "up.log").read_text():
            assert proc.poll() is None, (tmp_path / "up.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "ossfleet up did not come up in time"
            time.sleep(1)
        text = (tmp_path / "up.log").read_text()
        assert f"http://127.0.0.1:{port}/v1" in text and "curl -s" in text
        assert f"Prometheus metrics: http://127.0.0.1:{metrics_port}/metrics" in text
        scrape, deadline = None, time.monotonic() + 60  # the metrics agent answers there
        while scrape is None or scrape.status_code != 200:
            assert time.monotonic() < deadline, "nothing serves the printed metrics endpoint"
            with contextlib.suppress(httpx.HTTPError):
                scrape = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
            if scrape is None or scrape.status_code != 200:
                time.sleep(1)
        assert key not in text  # a key from the environment is never echoed
        # Serve's high-throughput mode: HAProxy holds the HTTP port; the gateway answers gRPC itself.
        assert "Ingress: haproxy (HTTP), gateway (gRPC)" in text
        assert listener(port) == "haproxy"
        from ossfleet.client import OssfleetClient

        with OssfleetClient(f"127.0.0.1:{grpc_port}", key) as c:
            assert "gpt-oss-20b" in c.list_models()
        assert (listener(grpc_port) or "").startswith("ray::")  # a gateway replica's process
        resp = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            headers={"authorization": f"Bearer {key}"},
            json={
                "model": "gpt-oss-20b",
                "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": 8,
                "temperature": 0,
            },
            timeout=120,
        )
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["model"] == "gpt-oss-20b" and body["usage"]["completion_tokens"] == 8
        assert body["choices"][0]["message"]["content"]
        # gpt-oss-120b runs as a two-stage pipeline in local.yaml.
        resp = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            headers={"authorization": f"Bearer {key}"},
            json={"model": "gpt-oss-120b", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4,
                  "temperature": 0},
            timeout=120,
        )  # fmt: skip
        assert resp.status_code == 200, resp.text
        assert resp.json()["model"] == "gpt-oss-120b"
        # Llama 3.1, Gemma 2 and Mixtral beside gpt-oss, each prompted with its own chat template.
        for name in ("llama-3.1-8b", "gemma-2-9b", "mixtral-8x7b"):
            resp = httpx.post(
                f"http://127.0.0.1:{port}/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                json={"model": name, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}, timeout=120,
            )  # fmt: skip
            assert resp.status_code == 200 and resp.json()["model"] == name, resp.text
        # The demo tenant's models compared (config/local.yaml): its gpt-oss-20b requests so far, as served.
        admin = text.split("admin key for this run: ", 1)[1].split(")", 1)[0]
        url = f"http://127.0.0.1:{port}/admin/v1/tenants/demo/comparison"

        def counted() -> bool | None:  # counted just after each answer, off its path, written within a second
            got = httpx.get(url, headers={"authorization": f"Bearer {admin}"}, timeout=30).json()
            return any(m["model"] == "gpt-oss-20b" and m["role"] == "served" for m in got["models"]) or None

        redis_url = text.split("Redis: embedded, ", 1)[1].split()[0]  # `up` prints its embedded Redis
        wait_for_writes(redis_url, KeySpace(cfg["redis"]["namespace"]).tenant_pattern("demo"), counted,
                        "the demo tenant's first request counted")  # fmt: skip
        shown = subprocess.run([sys.executable, "-m", "ossfleet.cli", "compare", "--tenant", "demo", "--url",
                                f"http://127.0.0.1:{port}"], env={**env, "OSSFLEET_ADMIN_KEY": admin},
                               capture_output=True, text=True, timeout=120)  # fmt: skip
        rows = [line.split()[:2] for line in shown.stdout.splitlines()]
        assert shown.returncode == 0 and ["gpt-oss-20b", "served"] in rows, shown.stdout + shown.stderr
        assert "25% of gpt-oss-20b's requests also go to gemma-2-9b" in shown.stdout
        # Metrics reach Prometheus through Ray's metrics export (the chat requests above, and a refusal).
        bad = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=60,
                         headers={"authorization": f"Bearer {key}"},
                         json={"model": "nope", "messages": [{"role": "user", "content": "Hi"}]})  # fmt: skip
        assert bad.status_code == 404
        wanted = {
            "ray_ossfleet_requests_total{": 'outcome="admitted"',
            "ray_ossfleet_requests_total{ ": 'outcome="model_not_found"',
            "ray_ossfleet_finished_total{": 'model="gpt-oss-20b"',
            "ray_ossfleet_time_to_first_token_seconds_count{": 'model="gpt-oss-20b"',
            "ray_ossfleet_queue_depth{": 'model="gpt-oss-20b"',
            "ray_ossfleet_cost_usd_total{": 'tenant="demo"',
        }
        # Ray's agent exports on a period (1 s here) and signals nothing: polled, as Prometheus would scrape.
        for _ in range(300):
            lines = [ln for ln in httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text.splitlines()
                     if not ln.startswith("#")]  # fmt: skip
            found = {k: any(ln.startswith(k.strip()) and v in ln for ln in lines) for k, v in wanted.items()}
            if all(found.values()):
                break
            time.sleep(0.5)
        assert all(found.values()), found
        admitted = [ln for ln in lines if ln.startswith("ray_ossfleet_requests_total{") and 'outcome="admitted"' in ln
                    and 'model="llama-3.1-8b"' in ln]  # fmt: skip
        assert [float(ln.rsplit(" ", 1)[1]) for ln in admitted] == [1.0]  # its one request above
        assert key not in "\n".join(lines)
        # Both batch modes the README shows run on this config: dedicated mode's engine actor and
        # Ray Data's read task find their CPUs beside the Serve apps.
        src = tmp_path / "eval.jsonl"
        src.write_text("\n".join(
            json.dumps({"custom_id": f"e{i}", "method": "POST", "url": "/v1/chat/completions",
                        "body": {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": f"q{i}"}],
                                 "max_tokens": 4}})
            for i in range(20)
        ))  # fmt: skip
        for mode in ("dedicated", "queue"):
            sub = subprocess.run(
                [sys.executable, "-m", "ossfleet.cli", "batch", "submit", str(src), "--mode", mode, "--wait",
                 "--poll-s", "0.5", "--url", f"http://127.0.0.1:{port}"],
                env={**env, "OSSFLEET_API_KEY": key}, capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            assert sub.returncode == 0, sub.stderr[-3000:]
            assert "20 completed, 0 failed of 20" in sub.stdout and f"({mode})" in sub.stdout, sub.stdout[-2000:]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, (tmp_path / "up.log").read_text()[-3000:]
    # The embedded Redis kept its data on disk (AOF) and is stopped.
    assert (tmp_path / "redis" / "appendonly.aof").exists() or (tmp_path / "redis" / "appendonlydir").exists()
    # Hardening (#33 finding 7): the admin key this run made (and printed) was revoked when it ended.
    from ossfleet.control.apikeys import admin_keys
    from ossfleet.redisdb import EmbeddedRedis, connect

    again = EmbeddedRedis(tmp_path / "redis").start()
    try:
        r = connect(again.url)
        assert admin_keys(r, cfg["redis"]["namespace"]) == []
        assert not list(r.scan_iter(match="*adminkey:*"))
        r.close()
    finally:
        again.stop()


def test_hardening_up_that_cannot_join_its_cluster_says_so_and_stops_its_embedded_redis(tmp_path, tiny_checkpoint):
    cfg = yaml.safe_load((ROOT / "config/local.yaml").read_text())
    data_dir = tmp_path / "redis-left-behind"
    cfg["redis"]["data_dir"] = str(data_dir)
    for m in cfg["models"]:
        m["path"] = str(tiny_checkpoint)
    path = tmp_path / "local.yaml"
    path.write_text(yaml.safe_dump(cfg))
    # Ray's client tries 3 times, each attempt timing out after 5 s, then up to 30 s: shorter here.
    env = {**os.environ, "RAY_CLIENT_INITIAL_CONNECTION_TIMEOUT_S": "1", "RAY_CLIENT_MAX_CONNECTION_TIMEOUT_S": "2"}
    proc = subprocess.run(
        [sys.executable, "-m", "ossfleet.cli", "up", "--config", str(path), "--address", "ray://"],
        capture_output=True, text=True, timeout=240, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "cannot start or join the Ray cluster ray://" in proc.stderr
    assert (data_dir / "redis.log").exists()  # the embedded Redis had started
    left = subprocess.run(["pgrep", "-f", str(data_dir)], capture_output=True, text=True).stdout.split()
    assert left == [], "the embedded redis-server outlived `ossfleet up`"
