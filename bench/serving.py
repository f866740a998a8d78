"""Serving benchmark: what the platform path adds, with an engine that answers at once, under both ingresses.

Side by side in one run, on a local Ray (2 CPUs, one logical GPU) and the
embedded Redis, once with Serve's default Python proxy and once with its
high-throughput mode (``RAY_SERVE_ENABLE_HA_PROXY=1`` and
``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``: HAProxy, ossfleet's default
``endpoints.ingress``), each in a fresh Ray (the variables are read when Ray's
processes start):

- the stub engine called directly in-process (the baseline: the engine's own cost);
- the full path with the stub engine behind it: HTTP -> ingress ->
  Gateway -> Redis admit -> replica pull -> engine -> Redis stream -> Gateway -> client;
- a trivial Ray Serve HTTP deployment (the ingress's own floor on this machine);
- gRPC ``Generate`` two ways: through Serve's gRPC ingress (its proxy actor, or
  HAProxy to the replica's own gRPC port) and on the gateway's own gRPC server
  (``endpoints.grpc_server: gateway``, grpc_server.py).

It reports p50/p99 latency at concurrency 1 (what the full path adds over the
engine alone, and over the trivial Serve deployment: ``added_over_serve_floor_p50_ms``),
and the request rate each target sustains (``full_path_rate.max_sustained_rps``,
``serve_floor_rate.max_sustained_rps``): the highest open-loop rate, stepped up,
at which every request is answered with no error and p99 <= 100 ms (a Python
client on the same 2 cores). The default proxy's figures are the top-level keys;
HAProxy's are the same keys under ``haproxy``; gRPC's are under ``grpc`` in each.
Targets (#32): ``haproxy.full_path_rate.max_sustained_rps`` >= the default
proxy's ``serve_floor_rate.max_sustained_rps``, and
``haproxy.added_over_serve_floor_p50_ms`` <= 2. With `wrk` installed, a
closed-loop run at 32 connections is added (``wrk``). With ``--profile DIR``,
the CPU each process spends per request is measured and py-spy samples the
ingress, gateway and replica processes under a fixed open-loop rate after the
measurements. The last line printed is one JSON object.

    python bench/serving.py --quick
"""

from __future__ import annotations

import os
import sys

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)  # bench/autoscaling.py must not shadow the autoscaling package

import argparse
import asyncio
import json
import re
import socket
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.requests import Request  # module level: FastAPI resolves the handler's annotation here


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else 0.0


async def engine_direct(ckpt: Path, n: int) -> list[float]:
    from transformers import AutoTokenizer

    from ossfleet.engine.base import EngineRequest, SamplingParams
    from ossfleet.engine.stub import StubEngine
    from ossfleet.harmony import HarmonyRenderer, Message, SpecialIds

    tok = AutoTokenizer.from_pretrained(ckpt)
    ids = SpecialIds.of(tok)
    engine = StubEngine([ids.channel, *tok.encode("final", add_special_tokens=False), ids.message], ids.return_)
    prompt = HarmonyRenderer(tok).render([Message("user", "Hello!")])
    lat = []
    for i in range(n):
        t = time.perf_counter()
        async for _ in engine.generate(EngineRequest(f"d{i}", prompt, SamplingParams(max_tokens=32), ids.stop)):
            pass
        lat.append(time.perf_counter() - t)
    return lat


async def sequential(url: str, body: dict, headers: dict, n: int) -> list[float]:
    import aiohttp

    lat = []
    async with aiohttp.ClientSession() as s:
        for _ in range(n):
            t = time.perf_counter()
            async with s.post(url, json=body, headers=headers) as r:
                await r.read()
                assert r.status == 200, await r.text()
            lat.append(time.perf_counter() - t)
    return lat


async def paced(one: Callable[[], Awaitable[bool]], rate: float, seconds: float) -> dict[str, Any]:
    """Start ``one()`` ``rate`` times a second for ``seconds``, whatever the answers do; each returns whether
    it was answered in full. The answered ones' latencies and the achieved rate."""
    lat: list[float] = []
    errors = 0

    async def timed() -> None:
        nonlocal errors
        t = time.perf_counter()
        if await one():
            lat.append(time.perf_counter() - t)
        else:
            errors += 1

    tasks, start, n = [], time.perf_counter(), int(rate * seconds)
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(timed()))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    return {"offered": n, "ok": len(lat), "errors": errors, "achieved_rps": len(lat) / elapsed,
            "p50_ms": pct(lat, 50) * 1000, "p99_ms": pct(lat, 99) * 1000}  # fmt: skip


async def open_loop(url: str, body: dict, headers: dict, rate: float, seconds: float) -> dict[str, Any]:
    """POST `rate` requests per second for `seconds`, whatever the answers do."""
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=2000)) as s:

        async def one() -> bool:
            try:
                async with s.post(url, json=body, headers=headers, timeout=aiohttp.ClientTimeout(total=10)) as r:
                    await r.read()
                    return r.status == 200
            except Exception:
                return False

        return await paced(one, rate, seconds)


async def max_rate(label: str, run: Callable[[float], Awaitable[dict[str, Any]]], rates: list[float]) -> dict[str, Any]:
    """Step the open-loop rate up (``run(rate)``) until a step is not sustained; the last one that was."""
    best, runs = 0.0, []
    for rate in rates:
        r = await run(rate)
        r["rate"] = rate
        runs.append({k: round(v, 1) if isinstance(v, float) else v for k, v in r.items()})
        ok = r["errors"] == 0 and r["ok"] == r["offered"] and r["p99_ms"] <= P99_LIMIT_MS
        print(f"  {label} rate={rate}: {r['achieved_rps']:.0f} rps, errors={r['errors']}, "
              f"p99={r['p99_ms']:.0f} ms", flush=True)  # fmt: skip
        if not ok:
            break
        best = rate
    return {"max_sustained_rps": best, "runs": runs}


P99_LIMIT_MS = 100.0  # a rate counts as sustained when every request is answered and p99 stays under this

WRK_LUA = """
wrk.method = "POST"
wrk.body = os.getenv("WRK_BODY")
wrk.headers["Content-Type"] = "application/json"
local auth = os.getenv("WRK_AUTH")
if auth ~= nil and auth ~= "" then wrk.headers["Authorization"] = auth end
"""


def wrk_rate(url: str, body: dict, headers: dict, seconds: float, connections: int = 32) -> dict[str, Any]:
    """Closed-loop throughput with wrk: requests/s, latency, and every non-2xx or socket error."""
    import shutil
    import subprocess

    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_LUA)
    env = {**os.environ, "WRK_BODY": json.dumps(body), "WRK_AUTH": headers.get("authorization", "")}
    cmd = [
        shutil.which("wrk") or "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{int(seconds)}s",
        "--latency",
        "-s",
        f.name,
        url,
    ]
    text = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 60).stdout
    os.unlink(f.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", text)) else 0
    sock = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
    lat = {k: v for k, v in re.findall(r"\s+(50|99)%\s+([\d.]+\w+)", text)}
    return {"connections": connections, "rps": rps, "requests": total, "errors": non2xx + sock,
            "p50": lat.get("50"), "p99": lat.get("99")}  # fmt: skip


SETTLED_MS = 50.0  # after an overload, the backlog is gone once ten answers in a row take less than this


def settle(one: Any, limit_s: float = 60.0) -> None:
    """Wait (by answers, not by the clock) until an overload's backlog has drained: ``one()`` returns one
    request's latency list; ten in a row under SETTLED_MS, or ``limit_s`` at most."""
    streak, end = 0, time.monotonic() + limit_s
    while streak < 10 and time.monotonic() < end:
        streak = streak + 1 if asyncio.run(one())[0] * 1000 < SETTLED_MS else 0


GRPC_MD = (("application", "gateway"),)  # what Serve's gRPC ingress routes by; the gateway's own server ignores it


def grpc_request() -> Any:
    from ossfleet.v1 import ossfleet_pb2 as pb

    return pb.GenerateRequest(model="gpt-oss-20b", messages=[pb.Message(role="user", content="Hello!")], max_tokens=32)


async def grpc_sequential(target: str, key: str, n: int) -> list[float]:
    """Unary Generate calls one after another on one channel: each call's latency."""
    import grpc

    from ossfleet.v1 import ossfleet_pb2_grpc

    md, req, lat = (("authorization", f"Bearer {key}"), *GRPC_MD), grpc_request(), []
    async with grpc.aio.insecure_channel(target) as ch:
        stub = ossfleet_pb2_grpc.OssfleetStub(ch)
        for _ in range(n):
            t = time.perf_counter()
            await stub.Generate(req, metadata=md, timeout=10)
            lat.append(time.perf_counter() - t)
    return lat


async def grpc_open_loop(target: str, key: str, rate: float, seconds: float) -> dict[str, Any]:
    """Unary Generate at ``rate`` per second for ``seconds`` over one HTTP/2 channel, whatever the answers do."""
    import grpc

    from ossfleet.v1 import ossfleet_pb2_grpc

    md, req = (("authorization", f"Bearer {key}"), *GRPC_MD), grpc_request()
    async with grpc.aio.insecure_channel(target) as ch:
        stub = ossfleet_pb2_grpc.OssfleetStub(ch)

        async def one() -> bool:
            try:
                await stub.Generate(req, metadata=md, timeout=10)
                return True
            except grpc.aio.AioRpcError:
                return False

        return await paced(one, rate, seconds)


def serve_pids() -> dict[str, int]:
    """The processes of Serve's proxy and of ossfleet's gateway and replica actors (by process title)."""
    import subprocess

    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    pids: dict[str, int] = {}
    for line in out.splitlines()[1:]:
        pid, _, title = line.strip().partition(" ")
        if "redis-server" in title and "redis" not in pids:
            pids["redis"] = int(pid)
        if "haproxy" not in pids and Path(title.split(" ", 1)[0]).name == "haproxy":
            pids["haproxy"] = int(pid)  # Serve's HAProxy ingress (a child of the proxy actor)
        for name, marker in (("proxy", "ProxyActor"), ("gateway", "Gateway"), ("replica", "gpt-oss-20b-replica"),
                             ("floor", "ServeReplica:floor:"), ("fastapi", "ServeReplica:fastapi-floor")):  # fmt: skip
            if marker in title and name not in pids and "ray::" in title:
                pids[name] = int(pid)
    return pids


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def profile(
    url: str, floor_url: str, body: dict, headers: dict, rate: float, seconds: float, out_dir: Path
) -> dict[str, Any]:
    """While an open loop offers ``rate`` req/s: the CPU milliseconds each process (Serve's proxy, the
    gateway, the model replica, Redis, this client) spends per request, from /proc, in a first run; then,
    in a second, py-spy samples of the proxy, gateway and replica, with each one's busiest functions
    (own time, as a share of its samples; idle threads are left out by py-spy, uvloop's wait is not)."""
    import collections
    import subprocess

    pids = {**serve_pids(), "client": os.getpid()}
    before = {k: cpu_s(p) for k, p in pids.items()}
    first = asyncio.run(open_loop(url, body, headers, rate, seconds))
    per_request = {k: round((cpu_s(p) - before[k]) * 1000 / max(1, first["ok"]), 3) for k, p in pids.items()}
    before = {k: cpu_s(p) for k, p in pids.items()}
    floor = asyncio.run(open_loop(floor_url, body, {}, rate, seconds))
    per_floor_request = {k: round((cpu_s(p) - before[k]) * 1000 / max(1, floor["ok"]), 3) for k, p in pids.items()}
    before = {k: cpu_s(p) for k, p in pids.items()}
    fast = asyncio.run(open_loop(floor_url.replace("/floor", "/fastapi-floor/"), body, {}, rate, seconds))
    per_fastapi_request = {k: round((cpu_s(p) - before[k]) * 1000 / max(1, fast["ok"]), 3) for k, p in pids.items()}
    spy = str(Path(sys.executable).with_name("py-spy"))
    out_dir.mkdir(parents=True, exist_ok=True)
    procs = {}
    for name, pid in serve_pids().items():
        if name in ("redis", "haproxy"):  # not Python: py-spy cannot sample them
            continue
        path = out_dir / f"{name}.txt"
        cmd = [spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200", "--format", "raw",
               "--output", str(path), "--nonblocking"]  # fmt: skip
        procs[name] = (subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), path)
    load = asyncio.run(open_loop(url, body, headers, rate, seconds))
    report: dict[str, Any] = {
        "cpu_ms_per_request": per_request,
        "cpu_ms_per_floor_request": per_floor_request,
        "cpu_ms_per_fastapi_floor_request": per_fastapi_request,
        "load": {k: round(v, 1) if isinstance(v, float) else v for k, v in load.items()},
    }
    for name, (proc, path) in procs.items():
        proc.wait(timeout=seconds + 60)
        own: collections.Counter[str] = collections.Counter()
        total = 0
        for line in path.read_text().splitlines() if path.exists() else []:
            stack, _, count = line.rpartition(" ")
            frames = stack.split(";")
            n = int(count)
            total += n
            own[frames[-1]] += n
        report[name] = {"samples": total, "top_own": [(f, round(n / total, 3)) for f, n in own.most_common(25)]}
    return report


def measure(ingress: str, quick: bool, profile_dir: Path | None, profile_rate: float) -> dict[str, Any]:
    """Every figure for one ingress, in a Ray started here (the process's environment chose the ingress)."""
    seconds = 3.0 if quick else 10.0
    n_lat = 100 if quick else 400
    rates = list(range(25, 625, 25)) if quick else list(range(25, 825, 25))

    import ray
    from ray import serve
    from ray.serve.config import gRPCOptions

    from deployments.app import build_applications, deploy
    from ossfleet.api.grpc_inference import SERVICER_FUNCTIONS
    from ossfleet.config import parse_config
    from ossfleet.control.apikeys import new_api_key, register_key
    from ossfleet.redisdb import EmbeddedRedis, connect
    from ossfleet.serveconfig import ray_env, serve_start_options
    from ossfleet.tinymodel import make_tiny_checkpoint

    out: dict[str, Any] = {"ingress": ingress}
    with tempfile.TemporaryDirectory() as d, EmbeddedRedis(Path(d) / "redis") as redis_server:
        ckpt = make_tiny_checkpoint(Path(d) / "tiny")
        direct = asyncio.run(engine_direct(ckpt, n_lat))
        port, gateway_grpc, serve_grpc = free_port(), free_port(), free_port()
        cfg = parse_config({
            "endpoints": {"http_port": port, "ingress": ingress, "grpc_server": "gateway", "grpc_port": gateway_grpc},
            "models": [{"name": "gpt-oss-20b", "spec": "gpt-oss-20b", "path": str(ckpt), "engine": "stub",
                        "max_batch_size": 512, "num_gpus": 1, "num_cpus": 0.25}],
            "tenants": [{"name": "bench", "limits": {"rpm": 10**7, "tpm": 10**9}, "budget": {"limit_usd": 10**6}}],
        }, "<bench>")  # fmt: skip
        key = new_api_key()
        register_key(connect(redis_server.url), cfg.redis.namespace, "bench", key)
        # Access logs off, as in FACTS.md's floor measurement (read when Serve's actors start).
        os.environ["RAY_SERVE_ENABLE_ACCESS_LOG"] = "0"
        os.environ.update(ray_env(cfg))
        ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
        try:
            # The gateway serves gRPC on its own port; Serve's gRPC ingress runs beside it on another, to compare.
            opts = serve_start_options(cfg, local=True, host="127.0.0.1")
            opts["grpc_options"] = gRPCOptions(port=serve_grpc, grpc_servicer_functions=SERVICER_FUNCTIONS)
            serve.start(**opts)
            assert deploy(build_applications(cfg, redis_server.url), timeout_s=120)

            # The same max_ongoing_requests as the gateway, so both face 32 clients alike.
            @serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=1024)
            class Floor:
                async def __call__(self, request: Request) -> dict:
                    await request.body()
                    return {"ok": True}

            serve.run(Floor.bind(), name="floor", route_prefix="/floor")

            # A trivial FastAPI ingress (the gateway's kind of deployment): what the framework costs alone.
            from fastapi import FastAPI

            api = FastAPI()

            @api.post("/")
            async def answer(request: Request) -> dict:
                await request.body()
                return {"ok": True}

            @serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=1024)
            @serve.ingress(api)
            class FastAPIFloor:
                pass

            serve.run(FastAPIFloor.bind(), name="fastapi-floor", route_prefix="/fastapi-floor")
            base = f"http://127.0.0.1:{port}"
            body = {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 32}
            headers = {"authorization": f"Bearer {key}"}
            asyncio.run(sequential(base + "/v1/chat/completions", body, headers, 20))  # warm-up
            full = asyncio.run(sequential(base + "/v1/chat/completions", body, headers, n_lat))
            floor = asyncio.run(sequential(base + "/floor", body, {}, n_lat))
            fastapi_floor = asyncio.run(sequential(base + "/fastapi-floor/", body, {}, n_lat))
            grpc_targets = {"serve": f"127.0.0.1:{serve_grpc}", "gateway": f"127.0.0.1:{gateway_grpc}"}
            grpc_lat = {}
            for name, target in grpc_targets.items():
                asyncio.run(grpc_sequential(target, key, 20))  # warm-up
                grpc_lat[name] = asyncio.run(grpc_sequential(target, key, n_lat))
            import shutil

            print(f"[{ingress}] max sustained rate (open loop, p99 <= {P99_LIMIT_MS:.0f} ms):", flush=True)
            # Each measurement ends in an overload; the next starts once its backlog has drained.
            chat = base + "/v1/chat/completions"
            full_rate = asyncio.run(max_rate("chat", lambda r: open_loop(chat, body, headers, r, seconds), rates))
            settle(lambda: sequential(chat, body, headers, 1))
            floor_rate = asyncio.run(
                max_rate("floor", lambda r: open_loop(base + "/floor", body, {}, r, seconds), rates)
            )
            settle(lambda: sequential(base + "/floor", body, {}, 1))
            grpc_rates = {}
            for name, target in grpc_targets.items():

                def run(r: float, t: str = target) -> Awaitable[dict[str, Any]]:
                    return grpc_open_loop(t, key, r, seconds)

                grpc_rates[name] = asyncio.run(max_rate(f"grpc {name}", run, rates))
                settle(lambda t=target: grpc_sequential(t, key, 1))
            if profile_dir is not None:  # last: an overload leaves a backlog that would skew what follows
                out["profile"] = profile(
                    base + "/v1/chat/completions", base + "/floor", body, headers, profile_rate, seconds * 3,
                    profile_dir / ingress,
                )  # fmt: skip
                print(json.dumps(out["profile"], indent=1), flush=True)
            if shutil.which("wrk"):
                out["wrk"] = {
                    "full_path": wrk_rate(base + "/v1/chat/completions", body, headers, seconds * 3),
                    "serve_floor": wrk_rate(base + "/floor", body, {}, seconds * 3),
                }
        finally:
            serve.shutdown()
            ray.shutdown()

    def stats(xs: list[float]) -> dict[str, float]:
        return {"p50_ms": round(statistics.median(xs) * 1000, 3), "p99_ms": round(pct(xs, 99) * 1000, 3)}

    out["engine_direct"] = stats(direct)
    out["full_path"] = stats(full)
    out["serve_floor_trivial_http"] = stats(floor)
    out["serve_floor_fastapi_ingress"] = stats(fastapi_floor)
    out["added_by_platform_ms"] = {
        "p50": round((statistics.median(full) - statistics.median(direct)) * 1000, 3),
        "p99": round((pct(full, 99) - pct(direct, 99)) * 1000, 3),
    }
    out["added_over_serve_floor_p50_ms"] = round((statistics.median(full) - statistics.median(floor)) * 1000, 3)
    out["full_path_rate"] = full_rate
    out["serve_floor_rate"] = floor_rate
    floor_max = floor_rate["max_sustained_rps"]
    out["full_over_floor_rate"] = round(full_rate["max_sustained_rps"] / floor_max, 3) if floor_max else None
    out["grpc"] = {
        name: {**stats(grpc_lat[name]), "rate": grpc_rates[name]} for name in grpc_targets
    }  # serve: Serve's gRPC ingress; gateway: the gateway's own server
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--profile", type=Path, default=None,
                    help="sample the ingress, gateway and replica with py-spy under load; stacks go here")  # fmt: skip
    ap.add_argument("--profile-rate", type=float, default=40.0)
    ap.add_argument("--only", choices=["proxy", "haproxy"], default=None,
                    help="measure one ingress in this process (how the full run measures each)")  # fmt: skip
    args = ap.parse_args()
    if args.only:
        print(json.dumps(measure(args.only, args.quick, args.profile, args.profile_rate)))
        return
    import subprocess

    runs: dict[str, dict[str, Any]] = {}
    for ingress in ("proxy", "haproxy"):  # each in a process of its own: Ray reads the ingress when it starts
        cmd = [sys.executable, os.path.abspath(__file__), "--only", ingress, "--profile-rate", str(args.profile_rate)]
        cmd += ["--quick"] if args.quick else []
        cmd += ["--profile", str(args.profile)] if args.profile else []
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
        lines = proc.stdout.strip().splitlines()
        print("\n".join(lines[:-1]), flush=True)
        runs[ingress] = json.loads(lines[-1])
    out = runs["proxy"]
    out["haproxy"] = runs["haproxy"]
    out["targets"] = {"full_over_floor_rate": 0.7, "added_over_serve_floor_p50_ms": 3,
                      "haproxy.full_path_rate.max_sustained_rps": ">= serve_floor_rate.max_sustained_rps",
                      "haproxy.added_over_serve_floor_p50_ms": 2}  # fmt: skip
    out["targets_met"] = {
        "full_over_floor_rate": (out["full_over_floor_rate"] or 0) >= 0.7,
        "added_over_serve_floor_p50_ms": out["added_over_serve_floor_p50_ms"] <= 3,
        "haproxy.full_path_rate.max_sustained_rps": out["haproxy"]["full_path_rate"]["max_sustained_rps"]
        >= out["serve_floor_rate"]["max_sustained_rps"],
        "haproxy.added_over_serve_floor_p50_ms": out["haproxy"]["added_over_serve_floor_p50_ms"] <= 2,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
