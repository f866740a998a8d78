"""The OpenAI Batch JSONL format: validate input lines, build output and error lines.

Pure functions over bytes and dicts. Validation reads every line and reports
every bad one with its 1-based line number; whether the body itself is valid
for its endpoint is asked of ``check_body`` (the gateway's own request
parsing, so a line is refused for exactly the reasons an HTTP request would be).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ossfleet import jsonlimits
from ossfleet.errors import InvalidRequest

ENDPOINTS = ("/v1/chat/completions", "/v1/completions")
MAX_CUSTOM_ID = 512
_LINE_FIELDS = {"custom_id", "method", "url", "body"}


@dataclass(frozen=True)
class BatchLine:
    index: int  # 0-based position in the input file
    custom_id: str
    body: dict[str, Any]

    @property
    def line(self) -> int:
        return self.index + 1

    def prepared(self) -> str:
        """The line as the job's drivers read it back (one JSON object per line)."""
        return json.dumps({"i": self.index, "custom_id": self.custom_id, "body": self.body}, separators=(",", ":"))


@dataclass(frozen=True)
class LineError:
    line: int  # 1-based
    message: str
    custom_id: str | None = None

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass(frozen=True)
class Validated:
    lines: list[BatchLine]
    errors: list[LineError]


def parse_prepared(text: str) -> BatchLine:
    d = json.loads(text)
    return BatchLine(int(d["i"]), str(d["custom_id"]), d["body"])


def validate(
    raw_lines: Iterable[bytes],
    endpoint: str,
    check_body: Callable[[dict[str, Any]], str | None],
    *,
    max_lines: int,
) -> Validated:
    """Every line of an input file, checked; ``errors`` lists each bad one (all of them).

    ``check_body`` returns None for a good body, or a message saying what to fix.
    """
    lines: list[BatchLine] = []
    errors: list[LineError] = []
    seen: dict[str, int] = {}
    count = 0
    for i, raw in enumerate(raw_lines):
        if not raw.strip():
            continue  # blank lines (a trailing newline) are not requests
        count += 1
        if count > max_lines:
            errors.append(LineError(i + 1, f"the file has more than {max_lines} requests, the limit per batch"))
            break
        line, err = _one(i, raw, endpoint, check_body)
        if err is not None:
            errors.append(err)
            continue
        assert line is not None
        if line.custom_id in seen:
            errors.append(
                LineError(i + 1, f"custom_id {line.custom_id!r} repeats line {seen[line.custom_id]}", line.custom_id)
            )
            continue
        seen[line.custom_id] = i + 1
        lines.append(line)
    if count == 0:
        errors.append(LineError(1, "the file holds no requests"))
    return Validated(lines, errors)


def _one(
    i: int, raw: bytes, endpoint: str, check_body: Callable[[dict[str, Any]], str | None]
) -> tuple[BatchLine | None, LineError | None]:
    n = i + 1
    try:
        d = jsonlimits.loads(raw.decode("utf-8"), "the line")
    except UnicodeDecodeError as e:
        return None, LineError(n, f"not valid UTF-8 (byte {e.start})")
    except InvalidRequest as e:
        return None, LineError(n, e.message.removeprefix("the line is ").removeprefix("the line "))
    if not isinstance(d, dict):
        return None, LineError(n, "a line must be a JSON object")
    cid = d.get("custom_id")
    cid_s = cid if isinstance(cid, str) else None
    unknown = sorted(set(d) - _LINE_FIELDS)
    if unknown:
        return None, LineError(n, f"unknown field(s) {unknown}; a line has custom_id, method, url, body", cid_s)
    if not isinstance(cid, str) or not cid or len(cid) > MAX_CUSTOM_ID:
        return None, LineError(n, f"custom_id must be a non-empty string of at most {MAX_CUSTOM_ID} characters")
    if d.get("method") != "POST":
        return None, LineError(n, f"method must be 'POST', got {d.get('method')!r}", cid)
    if d.get("url") != endpoint:
        return None, LineError(n, f"url must be the batch's endpoint {endpoint!r}, got {d.get('url')!r}", cid)
    body = d.get("body")
    if not isinstance(body, dict):
        return None, LineError(n, "body must be a JSON object", cid)
    if body.get("stream"):
        return None, LineError(n, "body.stream must be false in a batch", cid)
    problem = check_body(body)
    if problem is not None:
        return None, LineError(n, f"body: {problem}", cid)
    return BatchLine(i, cid, body), None


def iter_lines(data: bytes) -> Iterator[bytes]:
    """The lines of a JSONL file (\\n or \\r\\n endings)."""
    for raw in data.split(b"\n"):
        yield raw.rstrip(b"\r")


def output_line(custom_id: str, request_id: str, body: dict[str, Any]) -> str:
    """A successful request, as a line of the output file."""
    return _dumps(
        {
            "id": f"batch_req_{uuid.uuid4().hex}",
            "custom_id": custom_id,
            "response": {"status_code": 200, "request_id": request_id, "body": body},
            "error": None,
        }
    )


def error_line(
    custom_id: str | None, code: str, message: str, *, status_code: int | None = None, request_id: str = ""
) -> str:
    """A failed (or never run) request, as a line of the error file.

    A request that ran and failed carries its response (status and an OpenAI
    error body); one that never ran (expired, cancelled, invalid) has none.
    """
    response = None
    if status_code is not None:
        error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
        response = {"status_code": status_code, "request_id": request_id, "body": {"error": error}}
    return _dumps(
        {
            "id": f"batch_req_{uuid.uuid4().hex}",
            "custom_id": custom_id,
            "response": response,
            "error": {"code": code, "message": message},
        }
    )


def _dumps(d: dict[str, Any]) -> str:
    return json.dumps(d, separators=(",", ":"), ensure_ascii=False)
