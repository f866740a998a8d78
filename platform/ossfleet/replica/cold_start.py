"""When each step of a replica's start happened: its cold start, measured on the real path.

A replica marks each step (wall-clock seconds, comparable across processes on one host) and reports them
in its ``stats()``; ``bench/autoscaling.py`` turns them into the phases of its ``cold_start`` key, from the
autoscaling decision (which the bench takes) to the first token the new replica serves.
"""

from __future__ import annotations

import time

# The steps, in order: the replica's __init__ entered (its process started and imported what it needs
# before), the tokenizer loaded, the engine built (ossfleet's engine: the weights read), the engine started
# (its KV cache; vLLM: weights, KV cache and warm-up), the first request leased, its first token out.
STEPS = ("init", "tokenizer", "engine_built", "engine_started", "first_pull", "first_token")


def process_start() -> float:
    """When this process started (wall clock)."""
    import psutil

    return float(psutil.Process().create_time())


class ColdStart:
    """The steps of one replica's start, each marked once, at the time it first happened."""

    def __init__(self) -> None:
        self.marks: dict[str, float] = {"process": process_start()}

    def mark(self, step: str) -> None:
        assert step in STEPS, step
        self.marks.setdefault(step, time.time())

    def as_dict(self) -> dict[str, float]:
        return dict(self.marks)


def phases(marks: dict[str, float], decided_at: float) -> dict[str, float]:
    """Seconds per phase from the autoscaling decision (``decided_at``) to the first token: ``placement_s``
    (Ray placing the replica and starting its process; 0 where an idle process was already there),
    ``imports_s`` (process start, or the decision if later, to ``__init__``), then one phase per step."""
    start = max(marks["process"], decided_at)
    out = {"placement_s": max(0.0, marks["process"] - decided_at), "imports_s": marks["init"] - start}
    names = {"tokenizer": "tokenizer_s", "engine_built": "weights_s", "engine_started": "engine_start_s",
             "first_pull": "first_pull_s", "first_token": "first_token_s"}  # fmt: skip
    prev = marks["init"]
    for step in STEPS[1:]:
        out[names[step]] = marks[step] - prev
        prev = marks[step]
    out["total_s"] = marks["first_token"] - decided_at
    return {k: round(v, 3) for k, v in out.items()}
