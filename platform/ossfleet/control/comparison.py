"""Comparing models on a tenant's own traffic, as plain data: what one request's end counts for, and the
summaries read back.

Every request a gateway relays from its start (a tenant's own, as ``served``; a shadow's, as ``shadow``)
ends as one :class:`Observation`: its model, how it finished, its output tokens and cost, and three
latencies: ``queue_s`` (admission to a replica's first lease), ``ttft_s`` (from that lease to the first
token: the engine's own time to first token, whatever the band waited) and ``itl_s`` (the request's mean gap
between tokens). :func:`increments` turns it into counters; latencies go into fixed log-spaced buckets, so
that any number of gateways add to the same Redis hash without coordinating, and :func:`summarize` reads a
percentile back to within one bucket (a factor of 1.25). Nothing here reads a clock or Redis.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

ROLES = ("served", "shadow")
LATENCIES = ("ttft", "queue", "itl")
QUANTILES = (0.5, 0.9, 0.99)
# Bucket i holds values up to BOUNDS[i] seconds (1 ms to about 2 minutes, each 1.25 times the last); the
# last one everything above.
BOUNDS = tuple(0.001 * 1.25**i for i in range(53))
CONTENT_CHARS = 2000  # of each answer kept in a side-by-side pair
SEP = "|"


def bucket(seconds: float) -> int:
    """The bucket a latency falls in."""
    if seconds <= BOUNDS[0]:
        return 0
    i = math.ceil(math.log(seconds / BOUNDS[0], 1.25) - 1e-9)
    return min(i, len(BOUNDS))


def sampled(request_id: str, fraction: float) -> bool:
    """Whether a request is among a ``fraction`` of requests (by a hash of its id: the same answer on every
    gateway, uniform over random ids)."""
    return int(hashlib.sha256(request_id.encode()).hexdigest()[:8], 16) / 2**32 < fraction


@dataclass(frozen=True)
class Observation:
    """How one request ended, as the comparison counts it."""

    tenant: str
    model: str
    role: str  # "served" (the tenant's own request) or "shadow"
    finish_reason: str | None = None  # None: it failed (error) or was refused
    output_tokens: int = 0
    cost_nusd: int = 0
    ttft_s: float | None = None
    queue_s: float | None = None
    itl_s: float | None = None
    refused: str | None = None  # a shadow not admitted: the refusal's code (budget_exhausted, ...)


def observed(
    tenant: str, model: str, role: str, end: Mapping[str, str], first_s: float | None, last_s: float | None
) -> Observation:
    """The observation of a request from its terminal event's fields (``end``: a ``done`` or an ``error``) and
    when its first and last tokens came, in seconds after it was admitted (None: no token came)."""
    if end.get("type") != "done":
        return Observation(tenant, model, role)
    out = int(end.get("output_tokens", 0))
    queue = float(end["queued_ms"]) / 1000 if "queued_ms" in end else None
    ttft = itl = None
    if first_s is not None:
        ttft = max(0.0, first_s - (queue or 0.0))
        if last_s is not None and out > 1:
            itl = max(0.0, (last_s - first_s) / (out - 1))
    return Observation(
        tenant, model, role, end.get("finish_reason", "stop"), out, int(end.get("cost_nusd", 0)), ttft, queue, itl
    )


def increments(obs: Observation) -> dict[str, int]:
    """The counters one observation adds to: fields ``<model>|<role>|<metric>`` of its tenant's day."""
    p = f"{obs.model}{SEP}{obs.role}{SEP}"
    if obs.refused is not None:
        return {p + f"refused:{obs.refused}": 1}
    out = {p + "requests": 1}
    if obs.finish_reason is None:
        out[p + "errors"] = 1
        return out
    out[p + f"finish:{obs.finish_reason}"] = 1
    out[p + "output_tokens"] = obs.output_tokens
    out[p + "cost_nusd"] = obs.cost_nusd
    for name, value in (("ttft", obs.ttft_s), ("queue", obs.queue_s), ("itl", obs.itl_s)):
        if value is not None:
            out[p + f"{name}:{bucket(value)}"] = 1
    return out


def percentile(counts: list[int], q: float) -> float | None:
    """The ``q`` quantile of the values counted in ``counts`` (per bucket), interpolated within its bucket on
    a log scale; None with no values."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, c in enumerate(counts):
        if c and seen + c >= rank:
            lo = BOUNDS[i - 1] if i > 0 else BOUNDS[0] / 1.25
            hi = BOUNDS[i] if i < len(BOUNDS) else BOUNDS[-1] * 1.25
            frac = (rank - seen) / c
            return lo * (hi / lo) ** frac
        seen += c
    return BOUNDS[-1]


@dataclass
class ModelSummary:
    """One model's requests in one role, over the days read."""

    model: str
    role: str
    requests: int = 0
    errors: int = 0
    output_tokens: int = 0
    cost_nusd: int = 0
    finish_reasons: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    histograms: dict[str, list[int]] = field(default_factory=lambda: {k: [0] * (len(BOUNDS) + 1) for k in LATENCIES})

    def as_dict(self) -> dict[str, Any]:
        done = self.requests - self.errors
        out: dict[str, Any] = {
            "model": self.model,
            "role": self.role,
            "requests": self.requests,
            "errors": self.errors,
            "refused": self.refused,
            "finish_reasons": self.finish_reasons,
            "output_tokens": self.output_tokens,
            "mean_output_tokens": round(self.output_tokens / done, 2) if done else None,
            "cost_usd": self.cost_nusd / 1e9,
            # What 1,000 such requests cost at this mix of prompts and answers (errors are not charged).
            "cost_per_1k_requests_usd": round(self.cost_nusd / self.requests / 1e6, 9) if self.requests else None,
        }
        for name in LATENCIES:
            counts = self.histograms[name]
            out[f"{name}_s"] = {f"p{round(q * 100)}": _round(percentile(counts, q)) for q in QUANTILES}
            out[f"{name}_s"]["count"] = sum(counts)
        out["histograms"] = dict(self.histograms)
        return out


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


def summarize(raw: Mapping[str, int]) -> list[ModelSummary]:
    """The summaries of the counters in ``raw`` (the fields :func:`increments` wrote, summed over days), one
    per model and role, served before shadow, by model name."""
    out: dict[tuple[str, str], ModelSummary] = {}
    for key, value in raw.items():
        parts = key.rsplit(SEP, 2)
        if len(parts) != 3 or parts[1] not in ROLES:
            continue
        model, role, metric = parts
        s = out.setdefault((model, role), ModelSummary(model, role))
        name, _, arg = metric.partition(":")
        if name in ("requests", "errors", "output_tokens", "cost_nusd"):
            setattr(s, name, getattr(s, name) + value)
        elif name == "finish":
            s.finish_reasons[arg] = s.finish_reasons.get(arg, 0) + value
        elif name == "refused":
            s.refused[arg] = s.refused.get(arg, 0) + value
        elif name in LATENCIES and arg.isdigit() and int(arg) <= len(BOUNDS):
            s.histograms[name][int(arg)] += value
    return [out[k] for k in sorted(out, key=lambda k: (ROLES.index(k[1]), k[0]))]


@dataclass(frozen=True)
class Answer:
    """One side of a side-by-side pair: what a model answered (its first choice's text, cut short)."""

    model: str
    request_id: str = ""
    content: str = ""
    finish_reason: str | None = None
    output_tokens: int = 0
    cost_usd: float = 0.0
    error: str | None = None  # why there is no answer (the shadow was refused, or failed)


@dataclass(frozen=True)
class Pair:
    """A request's answer and its shadow's, side by side."""

    request_id: str
    at: float  # when the pair was complete (Unix seconds)
    primary: Answer
    shadow: Answer

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, d: Mapping[str, Any]) -> Pair:
        return cls(d["request_id"], float(d["at"]), Answer(**d["primary"]), Answer(**d["shadow"]))


def answer(model: str, request_id: str, content: str, finish_reason: str | None, output_tokens: int,
           cost_nusd: int, error: str | None = None) -> Answer:  # fmt: skip
    """An answer as a pair keeps it: at most ``CONTENT_CHARS`` of its text."""
    return Answer(model, request_id, content[:CONTENT_CHARS], finish_reason, output_tokens, cost_nusd / 1e9, error)
