"""A request's limits, defined once for every API: ``max_tokens`` (its default and its ceiling), the number of
choices, stop sequences. The ceiling itself is config (``limits.max_tokens``); the APIs call these checks with
the name their callers know the field by."""

from __future__ import annotations

from collections.abc import Sequence

from ossfleet.errors import InvalidRequest

DEFAULT_MAX_TOKENS = 1024  # chat, Responses and gRPC, when the caller gives none (and the ceiling allows)
COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's legacy completions default
MAX_STOP_SEQUENCES = 4
MAX_CHOICES = 128


def resolve_max_tokens(
    asked: int | None, ceiling: int, param: str = "max_tokens", default: int = DEFAULT_MAX_TOKENS
) -> int:
    """The output tokens a request may produce: what it asked for, else the default (never above the ceiling)."""
    n = asked or min(default, ceiling)
    if n < 1:
        raise InvalidRequest(f"{param} must be at least 1, not {n}", param=param)
    if n > ceiling:
        raise InvalidRequest(f"{param} {n} is above the limit of {ceiling}", param=param)
    return n


def stop_sequences(stop: Sequence[str], param: str = "stop") -> tuple[str, ...]:
    if len(stop) > MAX_STOP_SEQUENCES:
        raise InvalidRequest(f"at most {MAX_STOP_SEQUENCES} stop sequences, not {len(stop)}", param=param)
    return tuple(stop)
