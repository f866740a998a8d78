"""``ossfleet batch``: submit a JSONL file, watch it, fetch its results, cancel it.

Talks to a running platform over its OpenAI-compatible HTTP API (``--url``,
the key from ``--api-key-env``). Input and output paths may be local files or
any fsspec URL (``s3://bucket/in.jsonl``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import fsspec
import httpx

DONE = ("completed", "failed", "expired", "cancelled")


class CliError(Exception):
    pass


def _client(args: argparse.Namespace) -> httpx.Client:
    key = os.environ.get(args.api_key_env)
    if not key:
        raise CliError(f"set {args.api_key_env} to your API key (or name another variable with --api-key-env)")
    return httpx.Client(base_url=args.url.rstrip("/"), headers={"authorization": f"Bearer {key}"}, timeout=120)


def _check(r: httpx.Response) -> Any:
    if r.status_code >= 400:
        try:
            msg = r.json()["error"]["message"]
        except Exception:
            msg = r.text[:500]
        raise CliError(f"{r.status_code}: {msg}")
    json_body = r.headers.get("content-type", "").split(";")[0].strip() == "application/json"
    return r.json() if json_body else r.content


def _summary(b: dict[str, Any]) -> str:
    c = b["request_counts"]
    line = f"{b['id']}  {b['status']}  {c['completed']} completed, {c['failed']} failed of {c['total']} ({b['mode']})"
    return f"{line}\n  {b['status_message']}" if b.get("status_message") else line


def _report_failed(b: dict[str, Any]) -> None:
    errors = (b.get("errors") or {}).get("data") or []
    for e in errors[:50]:
        print(f"  line {e.get('line')}: {e.get('message')}", file=sys.stderr)
    if len(errors) > 50:
        print(f"  ... and {len(errors) - 50} more bad lines", file=sys.stderr)


def cmd_submit(args: argparse.Namespace) -> int:
    with fsspec.open(args.file, "rb") as f:
        data = f.read()
    with _client(args) as c:
        up = _check(c.post("/v1/files", files={"file": (os.path.basename(args.file), data)}, data={"purpose": "batch"}))
        body = {"input_file_id": up["id"], "endpoint": args.endpoint, "completion_window": args.completion_window,
                "mode": args.mode, "skip_invalid_lines": args.skip_invalid_lines}  # fmt: skip
        b = _check(c.post("/v1/batches", json=body))
        print(_summary(b))
        if b["status"] == "failed":
            _report_failed(b)
            return 1
        if args.wait:
            b = _watch(c, b["id"], args.poll_s)
            print(_summary(b))
            return 0 if b["status"] == "completed" else 1
    return 0


def _watch(c: httpx.Client, batch_id: str, poll_s: float) -> dict[str, Any]:
    """Poll the batch with a live progress bar until it ends."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=False
    ) as bar:
        task = bar.add_task(batch_id, total=None)
        while True:
            b = _check(c.get(f"/v1/batches/{batch_id}"))
            n = b["request_counts"]
            waiting = " (waiting for resources)" if b.get("status_message") else ""
            bar.update(
                task, total=n["total"] or None, completed=n["completed"] + n["failed"],
                description=f"{batch_id} {b['status']}{waiting}",
            )  # fmt: skip
            if b["status"] in DONE:
                return dict(b)
            time.sleep(poll_s)


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as c:
        b = _check(c.get(f"/v1/batches/{args.batch_id}"))
        if args.wait and b["status"] not in DONE:
            b = _watch(c, args.batch_id, args.poll_s)
    print(json.dumps(b, indent=2) if args.json else _summary(b))
    if b["status"] == "failed":
        _report_failed(b)
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    with _client(args) as c:
        b = _check(c.get(f"/v1/batches/{args.batch_id}"))
        file_id = b["error_file_id"] if args.errors else b["output_file_id"]
        if not file_id:
            what = "error" if args.errors else "output"
            raise CliError(f"batch {args.batch_id} has no {what} file (status {b['status']})")
        data = _check(c.get(f"/v1/files/{file_id}/content"))
    if args.output in (None, "-"):
        sys.stdout.buffer.write(data)
    else:
        with fsspec.open(args.output, "wb") as f:
            f.write(data)
        print(f"wrote {len(data)} bytes to {args.output}", file=sys.stderr)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    with _client(args) as c:
        print(_summary(_check(c.post(f"/v1/batches/{args.batch_id}/cancel"))))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with _client(args) as c:
        for b in _check(c.get("/v1/batches", params={"limit": args.limit}))["data"]:
            print(_summary(b))
    return 0


def _run(fn: Any) -> Any:
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return int(fn(args))
        except CliError as e:
            print(f"ossfleet batch: {e}", file=sys.stderr)
            return 1
        except (httpx.HTTPError, OSError) as e:
            print(f"ossfleet batch: {type(e).__name__}: {e}", file=sys.stderr)
            return 1

    return wrapped


def add_batch_parser(sub: Any) -> None:
    batch = sub.add_parser("batch", help="batch jobs: submit, status, results, cancel, list")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=os.environ.get("OSSFLEET_URL", "http://127.0.0.1:8000"))
    common.add_argument("--api-key-env", default="OSSFLEET_API_KEY", help="the variable holding your API key")
    bsub = batch.add_subparsers(dest="batch_cmd", required=True)

    s = bsub.add_parser("submit", parents=[common], help="upload a JSONL file and start a batch")
    s.add_argument("file", help="a local path or an fsspec URL (s3://...)")
    s.add_argument("--mode", choices=["queue", "dedicated"], default="queue")
    s.add_argument("--endpoint", default="/v1/chat/completions")
    s.add_argument("--completion-window", default="24h")
    s.add_argument("--skip-invalid-lines", action="store_true", help="run the good lines; bad ones go to errors")
    s.add_argument("--wait", action="store_true", help="show a progress bar until the batch ends")
    s.add_argument("--poll-s", type=float, default=1.0)
    s.set_defaults(fn=_run(cmd_submit))

    st = bsub.add_parser("status", parents=[common], help="a batch's status and counts")
    st.add_argument("batch_id")
    st.add_argument("--wait", action="store_true")
    st.add_argument("--json", action="store_true")
    st.add_argument("--poll-s", type=float, default=1.0)
    st.set_defaults(fn=_run(cmd_status))

    r = bsub.add_parser("results", parents=[common], help="download a batch's output (or error) file")
    r.add_argument("batch_id")
    r.add_argument("-o", "--output", default=None, help="a local path or fsspec URL; default: stdout")
    r.add_argument("--errors", action="store_true", help="the error file instead")
    r.set_defaults(fn=_run(cmd_results))

    c = bsub.add_parser("cancel", parents=[common], help="cancel a batch")
    c.add_argument("batch_id")
    c.set_defaults(fn=_run(cmd_cancel))

    ls = bsub.add_parser("list", parents=[common], help="your batches, newest first")
    ls.add_argument("--limit", type=int, default=20)
    ls.set_defaults(fn=_run(cmd_list))
