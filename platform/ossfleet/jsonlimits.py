"""JSON from callers, parsed with limits: a bad document is an :class:`InvalidRequest`, never a 500.

``json.loads`` raises more than ``JSONDecodeError``: ``RecursionError`` for a
document nested past Python's recursion limit and ``ValueError`` for an
integer of more than 4,300 digits. Both become a clear refusal here, and
nesting is capped well below the recursion limit, so nothing downstream
(pydantic, the JSON Schema check, rendering) recurses that deep either.
"""

from __future__ import annotations

import json
from typing import Any

from ossfleet.errors import InvalidRequest

MAX_DEPTH = 64


def depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0), without recursion."""
    deepest = 0
    stack = [(value, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            v = list(v.values())
        if isinstance(v, list):
            deepest = max(deepest, d + 1)
            stack.extend((x, d + 1) for x in v)
    return deepest


def loads(text: str | bytes, what: str = "request body", param: str | None = None) -> Any:
    """Parse ``text``; raises :class:`InvalidRequest` saying what is wrong and where (naming ``param``)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidRequest(
            f"{what} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}", param=param
        ) from None
    except RecursionError:
        raise InvalidRequest(f"{what} is nested too deeply (the limit is {MAX_DEPTH} levels)", param=param) from None
    except ValueError as e:  # an integer past Python's digit limit
        raise InvalidRequest(f"{what} has a number too large to read ({e})", param=param) from None
    if depth(value) > MAX_DEPTH:
        raise InvalidRequest(f"{what} is nested too deeply (the limit is {MAX_DEPTH} levels)", param=param)
    return value
