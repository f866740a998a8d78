"""The whole path against the peers a platform team would pick instead, on one checkpoint, machine and run.

Three servers of the same tiny gpt-oss checkpoint (head_dim 64, bf16), the same vLLM engine settings
(16 sequences, 1,024-token context, eager, prefix caching, 1 GiB of KV), started one after the other so
none competes with another for the 2 cores:

- ``ossfleet``: ``ossfleet up`` with gpt-oss-20b on ``engine: vllm`` (HTTP -> Serve proxy -> gateway ->
  Redis admission -> replica pull -> vLLM -> Redis stream -> gateway -> client), two tenants;
- ``vllm_serve``: vLLM's own OpenAI server (``python -m vllm.entrypoints.openai.api_server``);
- ``ray_serve_llm``: Ray Serve LLM (Ray 2.60's ``ray.serve.llm``) on the same vLLM build.

All three are driven through ``/v1/completions`` with token-id prompts (vLLM's chat endpoint renders
gpt-oss with the real vocabulary's harmony ids, which a tiny checkpoint lacks), streamed, greedy,
``ignore_eos``. Figures:

- goodput: open-loop Poisson arrivals at a rising ladder of rates; a rate is sustained when every
  request completes with no error and TTFT p99 <= ``TTFT_BOUND_S``; goodput is the highest sustained
  rate (requests/s, 32 new tokens each). ``goodput_ratio`` = ossfleet / vllm_serve (goal >= 0.9);
- quiet tenant: tenant B sends one short request at a time (8 prompt tokens, 8 new), first alone, then
  while tenant A keeps 32 long requests in flight (64 prompt tokens, 256 new). The ratio is B's TTFT
  p99 under the flood over idle (goal for ossfleet <= 3). vLLM and Ray Serve LLM have no tenants: the
  same two clients.

The last line printed is one JSON object.

    .venv-vllm/bin/python bench/platform_vs_vllm.py --quick
"""

from __future__ import annotations

import os
import sys

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)  # bench/autoscaling.py must not shadow the autoscaling package

import argparse
import asyncio
import contextlib
import json
import random
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
TTFT_BOUND_S = 1.0
MODEL = "gpt-oss-20b"
SLOTS = 16
CONTEXT = 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


# -- clients ---------------------------------------------------------------------------------------


async def completion(client: httpx.AsyncClient, url: str, key: str, prompt: list[int], max_tokens: int) -> float:
    """One streamed completion; its TTFT in seconds. Raises on any error or a short answer."""
    body = {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
            "stream": True}  # fmt: skip
    t = time.perf_counter()
    ttft = None
    async with client.stream("POST", url + "/v1/completions", json=body,
                             headers={"authorization": f"Bearer {key}"}) as r:  # fmt: skip
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread())[:300]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(str(chunk["error"])[:300])
            # The first chunk that carries a choice: a token came back (its text may be empty where it is a
            # special token, which a raw completion drops).
            if ttft is None and chunk.get("choices"):
                ttft = time.perf_counter() - t
    if ttft is None:
        raise RuntimeError("no token came back")
    return ttft


def prompts(n: int, seed: int, lo: int = 8, hi: int = 71) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(10, 600) for _ in range(rng.randint(lo, hi))] for _ in range(n)]


async def open_loop(url: str, key: str, rate: float, seconds: float, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    ps = prompts(int(rate * seconds) + 1, seed)
    ttfts: list[float] = []
    errors: list[str] = []
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=1000)) as client:

        async def one(p: list[int]) -> None:
            try:
                ttfts.append(await completion(client, url, key, p, 32))
            except Exception as e:
                errors.append(f"{type(e).__name__}: {e}"[:200])

        tasks, start, at = [], time.perf_counter(), 0.0
        for p in ps[: int(rate * seconds)]:
            at += rng.expovariate(rate)
            delay = start + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(p)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return {"rate": rate, "offered": len(tasks), "ok": len(ttfts), "errors": len(errors),
            "first_error": errors[0] if errors else None, "completed_rps": round(len(ttfts) / elapsed, 2),
            "ttft_p50_ms": round(pct(ttfts, 50) * 1e3, 1), "ttft_p99_ms": round(pct(ttfts, 99) * 1e3, 1)}  # fmt: skip


async def goodput(url: str, key: str, rates: list[float], seconds: float) -> dict[str, Any]:
    best: dict[str, Any] | None = None
    runs = []
    for i, rate in enumerate(rates):
        r = await open_loop(url, key, rate, seconds, seed=100 + i)
        runs.append(r)
        print(f"    rate {rate}/s: {r}", flush=True)
        if r["errors"] or r["ok"] < r["offered"] or r["ttft_p99_ms"] > TTFT_BOUND_S * 1e3:
            break
        best = r
    # Goodput: the highest offered rate (requests/s) every request of which completed with TTFT p99 in bound.
    return {"goodput_rps": best["rate"] if best else 0.0, "runs": runs}


async def quiet_tenant(url: str, key_a: str, key_b: str, probes: int) -> dict[str, Any]:
    short = prompts(probes * 2, 7, 8, 8)  # 8 prompt tokens, 8 new
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=1000)) as client:
        idle = [await completion(client, url, key_b, p, 8) for p in short[:probes]]
        stop = asyncio.Event()
        flood_errors: list[str] = []

        async def flooder(i: int) -> None:
            j = 0
            while not stop.is_set():
                try:
                    await completion(client, url, key_a, prompts(1, 1000 * i + j, 64, 64)[0], 256)
                except Exception as e:
                    flood_errors.append(str(e)[:200])
                    await asyncio.sleep(0.5)
                j += 1

        flood = [asyncio.create_task(flooder(i)) for i in range(32)]
        await asyncio.sleep(3.0)  # the flood fills every slot and the queue behind them
        loaded = [await completion(client, url, key_b, p, 8) for p in short[probes:]]
        stop.set()
        for t in flood:
            t.cancel()
        await asyncio.gather(*flood, return_exceptions=True)
    i99, l99 = pct(idle, 99), pct(loaded, 99)
    return {"idle_ttft_p99_ms": round(i99 * 1e3, 1), "flood_ttft_p99_ms": round(l99 * 1e3, 1),
            "ratio": round(l99 / i99, 2), "flood_errors": len(flood_errors)}  # fmt: skip


# -- servers -------------------------------------------------------------------------------------


def wait_ready(url: str, proc: subprocess.Popen, log: Path, key: str, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode}): {log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            r = httpx.post(url + "/v1/completions", timeout=30, headers={"authorization": f"Bearer {key}"},
                           json={"model": MODEL, "prompt": list(range(10, 40)), "max_tokens": 2})  # fmt: skip
            if r.status_code == 200:
                return
        time.sleep(2)
    raise RuntimeError(f"the server was not ready in {timeout_s} s: {log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # Whatever Ray the server started (ossfleet up, Ray Serve LLM) goes with it.
    subprocess.run([str(Path(sys.executable).with_name("ray")), "stop", "--force"], capture_output=True)


def start(cmd: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, cwd=cwd,
                            start_new_session=True)  # fmt: skip


def ossfleet_server(ckpt: Path, d: Path, port: int) -> tuple[list[str], dict[str, str], dict[str, str]]:
    cfg = yaml.safe_load((ROOT / "config/local-vllm.yaml").read_text())
    cfg["redis"] = {"url": None, "namespace": "bench", "lease_s": 30, "data_dir": str(d / "redis")}
    cfg["endpoints"].update(http_port=port, grpc_port=free_port(), metrics_port=free_port())
    model = cfg["models"][0]
    model.update(path=str(ckpt), dtype="bfloat16", max_context=CONTEXT, max_batch_size=SLOTS)
    model["vllm"] = {"kv_cache_gib": 1, "prefix_caching": True}
    cfg["models"] = [model]
    cfg["cluster"] = {"address": None, "local_gpus": 1, "local_cpus": 4}
    cfg["batch"]["storage_url"] = str(d / "files")
    limits = {"rpm": 1_000_000, "tpm": 1_000_000_000, "max_concurrent_streams": 1000}
    cfg["tenants"] = [
        {"name": n, "api_key_env": f"BENCH_KEY_{n.upper()}", "budget": {"limit_usd": 1e6}, "limits": limits}
        for n in ("a", "b")
    ]
    path = d / "ossfleet.yaml"
    path.write_text(yaml.safe_dump(cfg))
    from ossfleet.control.apikeys import new_api_key

    keys = {"a": new_api_key(), "b": new_api_key()}
    env = {**os.environ, "BENCH_KEY_A": keys["a"], "BENCH_KEY_B": keys["b"]}
    return [sys.executable, "-m", "ossfleet.cli", "up", "--config", str(path)], env, keys


def vllm_server(ckpt: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(ckpt),
            "--served-model-name", MODEL, "--host", "127.0.0.1", "--port", str(port), "--dtype", "bfloat16",
            "--enforce-eager", "--max-model-len", str(CONTEXT), "--max-num-seqs", str(SLOTS),
            "--enable-prefix-caching"]  # fmt: skip


RAY_SERVE_LLM = """
import sys, time
import ray
from ray import serve
from ray.serve.llm import LLMConfig, build_openai_app

ckpt, port = sys.argv[1], int(sys.argv[2])
ray.init(num_cpus=2, include_dashboard=False)
cfg = LLMConfig(
    model_loading_config={"model_id": "gpt-oss-20b", "model_source": ckpt},
    engine_kwargs={"enforce_eager": True, "max_model_len": %(context)d, "dtype": "bfloat16",
                   "max_num_seqs": %(slots)d, "enable_prefix_caching": True},
    runtime_env={"env_vars": {"VLLM_CPU_KVCACHE_SPACE": "1"}},
    accelerator_config={"kind": "cpu"},
)
serve.start(http_options={"host": "127.0.0.1", "port": port})
serve.run(build_openai_app({"llm_configs": [cfg],
                            "ingress_deployment_config": {"ray_actor_options": {"num_cpus": 0}}}))
print("ray serve llm is up", flush=True)
while True:
    time.sleep(3600)
"""


# -- the run ---------------------------------------------------------------------------------------


def measure(name: str, url: str, keys: dict[str, str], quick: bool) -> dict[str, Any]:
    rates = [2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 20.0, 24.0, 32.0]
    seconds = 8.0 if quick else 20.0
    print(f"{name}: goodput", flush=True)
    g = asyncio.run(goodput(url, keys["a"], rates, seconds))
    print(f"{name}: quiet tenant", flush=True)
    q = asyncio.run(quiet_tenant(url, keys["a"], keys["b"], 10 if quick else 30))
    print(f"{name}: {q}", flush=True)
    return {**g, "quiet_tenant": q}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=["ossfleet", "vllm_serve", "ray_serve_llm"], action="append")
    args = ap.parse_args()
    only = set(args.only or ["ossfleet", "vllm_serve", "ray_serve_llm"])
    out: dict[str, Any] = {"ttft_bound_s": TTFT_BOUND_S, "slots": SLOTS, "context": CONTEXT}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        from ossfleet.tinymodel import TinySpec, make_tiny_checkpoint

        spec = TinySpec(layers=4, hidden_size=256, heads=8, kv_heads=4, head_dim=64, experts=8, experts_per_token=2)
        ckpt = make_tiny_checkpoint(d / "ckpt", spec)
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
        for name in ("ossfleet", "vllm_serve", "ray_serve_llm"):
            if name not in only:
                continue
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            keys = {"a": "none", "b": "none"}
            if name == "ossfleet":
                cmd, run_env, keys = ossfleet_server(ckpt, d, port)
            elif name == "vllm_serve":
                cmd, run_env = vllm_server(ckpt, port), env
            else:
                script = d / "ray_serve_llm.py"
                script.write_text(RAY_SERVE_LLM % {"context": CONTEXT, "slots": SLOTS})
                cmd, run_env = [sys.executable, str(script), str(ckpt), str(port)], env
            log = d / f"{name}.log"
            proc = start(cmd, run_env, log, d)
            try:
                t = time.monotonic()
                wait_ready(url, proc, log, keys["a"])
                print(f"{name} ready in {time.monotonic() - t:.0f} s", flush=True)
                out[name] = measure(name, url, keys, args.quick)
            except Exception as e:
                out[name] = {"error": f"{type(e).__name__}: {e}"[-2000:]}
                print(f"{name} failed: {out[name]['error']}", flush=True)
            finally:
                stop(proc)
    base = out.get("vllm_serve", {}).get("goodput_rps")
    if base:
        for name in ("ossfleet", "ray_serve_llm"):
            if "goodput_rps" in out.get(name, {}):
                out[name]["goodput_over_vllm_serve"] = round(out[name]["goodput_rps"] / base, 3)
        if "goodput_rps" in out.get("ossfleet", {}):
            out["goodput_ratio"] = out["ossfleet"]["goodput_over_vllm_serve"]
    out["quiet_tenant_ttft_p99_over_idle"] = {
        n: out[n]["quiet_tenant"]["ratio"] for n in ("ossfleet", "vllm_serve", "ray_serve_llm")
        if "quiet_tenant" in out.get(n, {})
    }  # fmt: skip
    out["goals"] = {"goodput_ratio": ">= 0.9", "quiet_tenant_ttft_p99_over_idle.ossfleet": "<= 3"}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
