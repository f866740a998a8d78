"""``ossfleet tenants ...`` and ``ossfleet keys ...``: operating tenants over the admin API.

Every command calls a running gateway's ``/admin/v1`` (``--url``, default the local one) with the admin
key in ``OSSFLEET_ADMIN_KEY``; output is human-readable, or the API's JSON with ``--json``. A refusal
prints the API's message and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"


class AdminError(Exception):
    pass


def call(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    key = os.environ.get("OSSFLEET_ADMIN_KEY")
    if not key:
        raise AdminError(
            "set OSSFLEET_ADMIN_KEY to an admin key (ossfleet up prints one; or ossfleet admin-keys create)"
        )
    try:
        r = httpx.request(
            method, args.url.rstrip("/") + path, json=body, headers={"authorization": f"Bearer {key}"}, timeout=30
        )
    except httpx.HTTPError as e:
        raise AdminError(f"cannot reach {args.url}: {e}") from None
    try:
        data = r.json()
    except ValueError:
        data = {}
    if r.status_code >= 400:
        msg = (data.get("error") or {}).get("message") if isinstance(data, dict) else None
        raise AdminError(f"{r.status_code}: {msg or r.text[:200]}")
    return data


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    """The tenant fields given on the command line (only those given)."""
    out: dict[str, Any] = {}
    if args.budget is not None:
        out.setdefault("budget", {})["limit_usd"] = args.budget
    if args.period is not None:
        out.setdefault("budget", {})["period"] = args.period
    if args.soft_alert is not None:
        out.setdefault("budget", {})["soft_alert_fraction"] = args.soft_alert
    for name, field in (("rpm", "rpm"), ("tpm", "tpm"), ("streams", "max_concurrent_streams")):
        v = getattr(args, name)
        if v is not None:
            out.setdefault("limits", {})[field] = v
    if args.models is not None:
        out["allowed_models"] = [m for m in args.models.split(",") if m]
    for name in ("max_band", "default_band", "weight"):
        v = getattr(args, name)
        if v is not None:
            out[name] = v
    if args.fallback is not None:
        out["allow_fallback"] = args.fallback == "on"
    aliases: dict[str, Any] = {name: None for name in args.remove_alias or ()}
    for spec in args.alias or ():  # NAME=MODEL:WEIGHT,MODEL:WEIGHT (a weight of 1 when left out)
        name, _, split = spec.partition("=")
        models = dict(m.rpartition(":")[::2] if ":" in m else (m, "1") for m in split.split(",") if m)
        try:
            aliases[name] = {"models": {m: float(w) for m, w in models.items()}}
        except ValueError:
            raise SystemExit(f"ossfleet: --alias {spec!r}: weights are numbers (NAME=MODEL:WEIGHT,...)") from None
    if aliases:
        out["aliases"] = aliases
    shadows: dict[str, Any] = {name: None for name in args.remove_shadow or ()}
    for spec in args.shadow or ():  # MODEL=SHADOW:FRACTION
        model, _, rest = spec.partition("=")
        shadow, _, fraction = rest.partition(":")
        try:
            shadows[model] = {"model": shadow, "fraction": float(fraction)}
        except ValueError:
            raise SystemExit(f"ossfleet: --shadow {spec!r}: give MODEL=SHADOW_MODEL:FRACTION (0-1]") from None
    if shadows:
        out["shadows"] = shadows
    return out


def _show(t: dict[str, Any]) -> str:
    u = t.get("usage") or {}
    lim = t["limits"]
    return (
        f"{t['name']}: spent ${u.get('spent_usd', 0):.6f} of ${t['budget']['limit_usd']:g} ({t['budget']['period']}), "
        f"reserved ${u.get('reserved_usd', 0):.6f}; rpm {lim['rpm']}, tpm {lim['tpm']}, "
        f"streams {lim['max_concurrent_streams']}; models {','.join(t['allowed_models'])}; "
        f"bands {t.get('default_band') or '-'}..{t.get('max_band') or '-'}; weight {t['weight']:g}"
        + "".join(f"; alias {n} -> " + ", ".join(f"{m} {w:g}" for m, w in a["models"].items())
                  for n, a in sorted((t.get("aliases") or {}).items()))
        + "".join(f"; shadow {m} -> {x['model']} {x['fraction']:.0%}"
                  for m, x in sorted((t.get("shadows") or {}).items()))
    )  # fmt: skip


def _tenants(args: argparse.Namespace) -> tuple[Any, list[str]]:
    if args.tenants_cmd == "list":
        data = call(args, "GET", "/admin/v1/tenants")
        return data, [_show(t) for t in data["data"]] or ["(no tenants)"]
    if args.tenants_cmd == "show":
        data = call(args, "GET", f"/admin/v1/tenants/{args.name}")
        return data, [_show(data)]
    if args.tenants_cmd == "create":
        data = call(args, "POST", "/admin/v1/tenants", {"name": args.name, **_fields(args)})
        return data, ["created " + _show(data)]
    if args.tenants_cmd == "update":
        fields = _fields(args)
        if not fields:
            raise AdminError("nothing to change: give at least one of the options (see --help)")
        data = call(args, "PATCH", f"/admin/v1/tenants/{args.name}", fields)
        return data, ["updated " + _show(data)]
    data = call(args, "DELETE", f"/admin/v1/tenants/{args.name}")
    return data, [f"deleted {args.name} ({data['keys_revoked']} keys revoked)"]


def _keys(args: argparse.Namespace) -> tuple[Any, list[str]]:
    if args.keys_cmd == "create":
        data = call(args, "POST", f"/admin/v1/tenants/{args.tenant}/keys")
        return data, [data["key"]]
    if args.keys_cmd == "list":
        data = call(args, "GET", f"/admin/v1/tenants/{args.tenant}/keys")
        return data, [k["digest_prefix"] for k in data["data"]] or ["(no keys)"]
    data = call(args, "DELETE", f"/admin/v1/tenants/{args.tenant}/keys/{args.digest_prefix}")
    return data, [f"revoked {data['digest_prefix']}"]


def _print(args: argparse.Namespace, run: Any) -> int:
    """Run a command; print the API's JSON (--json) or its lines; a refusal goes to stderr, exit 2."""
    try:
        data, lines = run(args)
    except AdminError as e:
        print(f"ossfleet: {e}", file=sys.stderr)
        return 2
    print(json.dumps(data, indent=2) if args.json else "\n".join(lines))
    return 0


def _ms(p: dict[str, Any]) -> str:
    if not p["count"]:
        return "-"
    return f"{p['p50'] * 1e3:.0f}/{p['p99'] * 1e3:.0f}"


def _compare(args: argparse.Namespace) -> tuple[Any, list[str]]:
    data = call(args, "GET", f"/admin/v1/tenants/{args.tenant}/comparison?days={args.days}&pairs={args.pairs}")
    days = data["days"]
    lines = [f"{data['tenant']}: {days[0]} to {days[-1]} (UTC)"]
    head = ("model", "role", "requests", "errors", "refused", "tokens/req", "$/1k req", "TTFT ms p50/p99",
            "ITL ms p50/p99", "queue ms p50/p99", "finish")  # fmt: skip
    rows = [head]
    for m in data["models"]:
        refused = sum(m["refused"].values())
        cost = m["cost_per_1k_requests_usd"]
        rows.append((
            m["model"], m["role"], str(m["requests"]), str(m["errors"]), str(refused) if refused else "-",
            f"{m['mean_output_tokens']:g}" if m["mean_output_tokens"] is not None else "-",
            f"{cost:.6f}" if cost is not None else "-", _ms(m["ttft_s"]), _ms(m["itl_s"]), _ms(m["queue_s"]),
            ",".join(f"{k} {v}" for k, v in sorted(m["finish_reasons"].items())) or "-",
        ))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    if len(rows) == 1:
        lines.append("(nothing served yet in these days)")
    for model, sh in sorted(data["shadows"].items()):
        lines.append(f"shadow: {sh['fraction']:.0%} of {model}'s requests also go to {sh['model']}")
    for p in data["pairs"]:
        a, b = p["primary"], p["shadow"]
        lines.append(f"pair {p['request_id']}:")
        for x in (a, b):
            said = repr(x["content"][:80]) if x["error"] is None else f"(no answer: {x['error'][:120]})"
            lines.append(f"  {x['model']}: {said}")
    return data, lines


def cmd_compare(args: argparse.Namespace) -> int:
    return _print(args, _compare)


def cmd_tenants(args: argparse.Namespace) -> int:
    return _print(args, _tenants)


def cmd_keys(args: argparse.Namespace) -> int:
    return _print(args, _keys)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--url", default=os.environ.get("OSSFLEET_URL", DEFAULT_URL), help="a gateway (default: %(default)s)"
    )
    p.add_argument("--json", action="store_true", help="print the API's JSON")


def _tenant_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--budget", type=float, help="budget limit, USD per period")
    p.add_argument("--period", choices=["monthly", "daily"])
    p.add_argument("--soft-alert", type=float, help="fraction of the budget that raises a soft alert")
    p.add_argument("--rpm", type=int)
    p.add_argument("--tpm", type=int)
    p.add_argument("--streams", type=int, help="concurrent requests")
    p.add_argument("--models", help="allowed models, comma-separated ('*': all)")
    p.add_argument("--max-band")
    p.add_argument("--default-band")
    p.add_argument("--weight", type=float, help="fair-share weight")
    p.add_argument("--fallback", choices=["on", "off"], help="may a request fall back to another model")
    p.add_argument(
        "--alias",
        action="append",
        metavar="NAME=MODEL:WEIGHT,...",
        help="an A/B alias splitting requests between models by weight, sticky per end user",
    )
    p.add_argument("--remove-alias", action="append", metavar="NAME")
    p.add_argument(
        "--shadow",
        action="append",
        metavar="MODEL=SHADOW:FRACTION",
        help="also send this fraction of MODEL's requests to SHADOW (batch band, batch discount) to compare them",
    )
    p.add_argument("--remove-shadow", action="append", metavar="MODEL")


def add_admin_parsers(sub: Any) -> None:
    """``tenants`` and the admin-API form of ``keys`` (``keys create --config`` stays the Redis bootstrap)."""
    tenants = sub.add_parser("tenants", help="tenants, over a gateway's admin API (OSSFLEET_ADMIN_KEY)")
    tsub = tenants.add_subparsers(dest="tenants_cmd", required=True)
    for name, help_ in (("list", "every tenant with its spend"), ("show", "one tenant"), ("create", "a new tenant"),
                        ("update", "change a tenant"), ("delete", "delete a tenant and revoke its keys")):  # fmt: skip
        p = tsub.add_parser(name, help=help_)
        _common(p)
        if name != "list":
            p.add_argument("name")
        if name in ("create", "update"):
            _tenant_options(p)
        p.set_defaults(fn=cmd_tenants)
    p = sub.add_parser("compare", help="a tenant's models compared on its own traffic (A/B aliases, shadows)")
    _common(p)
    p.add_argument("--tenant", required=True)
    p.add_argument("--days", type=int, default=7, help="the last this many UTC days (default: %(default)s)")
    p.add_argument("--pairs", type=int, default=5, help="side-by-side answers to show (default: %(default)s)")
    p.set_defaults(fn=cmd_compare)
