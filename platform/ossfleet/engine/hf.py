"""The single-model engine (gpt-oss-20b role): continuous batching on transformers.

It wraps transformers' own ``ContinuousBatchingManager`` (paged KV cache,
a background generation thread, per-token streaming), which produces exactly
``generate``'s greedy tokens for gpt-oss on CPU in transformers 5.x. Its
config is sized from the model and the batch size here, never left at the
defaults (which run slower than sequential generation on CPU).

The checkpoint is loaded with ``from_pretrained`` from a local directory: the
real gpt-oss checkpoints and the tiny test ones take the same path.

Sampling: this engine decodes greedily for now. Per-request temperature,
top-p/top-k and seeds are validated by the API but not yet applied here
(the engine issue adds them); ``stats`` and the module say so rather than
pretending otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ossfleet.engine.base import EngineError, EngineRequest, EngineStats, ThroughputMeter, TokenOutput

log = logging.getLogger(__name__)

_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


class TransformersEngine:
    def __init__(
        self,
        path: str | Path,
        *,
        device: str = "cpu",
        dtype: str = "auto",
        max_batch_size: int = 8,
        max_context: int = 4096,
        torch_threads: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.device = device
        self.dtype = dtype
        self.max_slots = max_batch_size
        self.max_context = max_context
        self.torch_threads = torch_threads
        self.model: Any = None
        self._manager: Any = None
        self._queues: dict[str, asyncio.Queue[TokenOutput | None]] = {}
        self._meter = ThroughputMeter()

    def _resolve_dtype(self) -> Any:
        import torch

        if self.dtype != "auto":
            return getattr(torch, _DTYPES[self.dtype])
        return torch.bfloat16 if self.device.startswith("cuda") else torch.float32

    async def start(self) -> None:
        await asyncio.to_thread(self._load)

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, GenerationConfig
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        if not (self.path / "config.json").exists():
            raise EngineError(f"no checkpoint at {self.path} (config.json missing); point the model's path at one")
        if self.torch_threads:
            torch.set_num_threads(self.torch_threads)
        # .to(device) rather than device_map: device_map needs `accelerate`. An MXFP4 checkpoint (the
        # released format) is dequantized as it loads, as transformers does without its Triton kernels
        # (asked for explicitly: otherwise transformers wants `accelerate` first).
        from ossfleet.engine.stages import is_mxfp4

        kw: dict[str, Any] = {}
        if is_mxfp4(Path(self.path)):
            from transformers.utils.quantization_config import Mxfp4Config

            kw["quantization_config"] = Mxfp4Config(dequantize=True)
        model: Any = AutoModelForCausalLM.from_pretrained(self.path, dtype=self._resolve_dtype(), **kw)
        self.model = model.to(self.device).eval()
        gen = self.model.generation_config
        eos = gen.eos_token_id
        gc = GenerationConfig(
            do_sample=False,
            max_new_tokens=256,
            eos_token_id=eos,
            pad_token_id=gen.pad_token_id
            if gen.pad_token_id is not None
            else (eos[0] if isinstance(eos, list) else eos),
        )
        page = 32
        # Enough pages for every slot to hold a request of up to 2k tokens
        # (longer ones share the pool); one step packs at most 512 tokens, which
        # keeps a long prefill from stalling the decodes beside it.
        blocks = math.ceil(self.max_slots * min(self.max_context, 2048) / page)
        cbc = ContinuousBatchingConfig(
            page_size=page,
            num_blocks=blocks,
            max_batch_tokens=512,
            max_requests_per_batch=self.max_slots,
            use_async_batching=False,
        )
        self._manager = self.model.init_continuous_batching(generation_config=gc, continuous_batching_config=cbc)
        self._manager.start()

    async def stop(self) -> None:
        if self._manager is not None:
            await asyncio.to_thread(self._manager.stop, True)
            self._manager = None

    def healthy(self) -> bool:
        return self._manager is not None and self._manager.is_running()

    def free_slots(self) -> int:
        return self.max_slots - len(self._queues)

    def stats(self) -> EngineStats:
        return EngineStats(len(self._queues), 0, self.max_slots, None, self._meter.rate(time.monotonic()))

    def abort(self, request_id: str) -> None:
        q = self._queues.get(request_id)
        if q is None:
            return
        self._manager.cancel_request(request_id)
        q.put_nowait(TokenOutput([], True, "abort"))

    def _check(self, request: EngineRequest) -> None:
        s = request.sampling
        n = len(request.prompt_ids)
        if n == 0:
            raise EngineError("the prompt is empty")
        if n + s.max_tokens > self.max_context:
            raise EngineError(
                f"prompt ({n} tokens) + max_tokens ({s.max_tokens}) exceed the model's context ({self.max_context})"
            )

    async def generate(self, request: EngineRequest) -> AsyncIterator[TokenOutput]:
        if self._manager is None:
            raise EngineError("the engine is not started")
        self._check(request)
        rid = request.request_id
        q: asyncio.Queue[TokenOutput | None] = asyncio.Queue()
        self._queues[rid] = q
        seen = 0
        stops = set(request.stop_token_ids)

        def on_output(out: Any) -> None:
            nonlocal seen
            new = list(out.generated_tokens[seen:])
            seen = len(out.generated_tokens)
            if out.error:
                q.put_nowait(TokenOutput(new, True, None, str(out.error)))
            elif out.is_finished():
                reason = "stop" if new and new[-1] in stops else "length"
                q.put_nowait(TokenOutput(new, True, reason))
            elif new:
                q.put_nowait(TokenOutput(new))

        # The handler goes in before the request, or early tokens are missed.
        self._manager.register_result_handler(rid, on_output)
        try:
            self._manager.add_request(
                list(request.prompt_ids),
                request_id=rid,
                max_new_tokens=request.sampling.max_tokens,
                streaming=True,
                # No stop tokens means none: not the checkpoint's defaults ([-1] never matches).
                eos_token_id=list(stops) or [-1],
            )
            while True:
                item = await q.get()
                if item is None:
                    return
                if item.token_ids:
                    self._meter.add(time.monotonic(), len(item.token_ids))
                yield item
                if item.finished:
                    return
        finally:
            self._queues.pop(rid, None)
