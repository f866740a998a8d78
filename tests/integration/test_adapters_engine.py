"""LoRA adapters in the engine: per-row deltas, many adapters in one step, equal to PEFT's merged model."""

from __future__ import annotations

import asyncio
import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from ossfleet.adapters.format import CONFIG_FILE, WEIGHTS_FILE
from ossfleet.engine.base import EngineError, EngineRequest, SamplingParams
from ossfleet.engine.batched import local_engine

PROMPTS = [list(range(3, 9)), list(range(20, 33)), [7, 8, 9, 10, 11, 12, 13, 14, 15, 16]]
GREEDY = SamplingParams(max_tokens=10, temperature=0)


@pytest.fixture(scope="module")
def adapters(tiny_checkpoint_sw8, tmp_path_factory):
    from ossfleet.tinymodel import make_tiny_adapter

    root = tmp_path_factory.mktemp("adapters")
    return {
        "a1": make_tiny_adapter(tiny_checkpoint_sw8, root / "a1", seed=1, alpha=2),
        # rank 8, only two projections, rsLoRA scaling: another shape of adapter in the same step.
        "a2": _rslora(
            make_tiny_adapter(tiny_checkpoint_sw8, root / "a2", seed=2, rank=8, alpha=4, modules=("q_proj", "v_proj"))
        ),
    }


def _rslora(path):
    cfg = json.loads((path / CONFIG_FILE).read_text())
    cfg["use_rslora"] = True
    (path / CONFIG_FILE).write_text(json.dumps(cfg))
    return path


@pytest.fixture(scope="module")
def reference(tiny_checkpoint_sw8, adapters):
    """Greedy tokens of ``generate`` on the base model and on each adapter merged into it by PEFT."""
    from peft import PeftModel

    def tokens(model):
        return [model.generate(torch.tensor([p]), max_new_tokens=10, do_sample=False)[0, len(p) :].tolist()
                for p in PROMPTS]  # fmt: skip

    out = {None: tokens(AutoModelForCausalLM.from_pretrained(tiny_checkpoint_sw8))}
    for name, path in adapters.items():
        base = AutoModelForCausalLM.from_pretrained(tiny_checkpoint_sw8)
        out[name] = tokens(PeftModel.from_pretrained(base, str(path)).merge_and_unload())
    return out


async def _load(engine, adapters):
    for name, path in adapters.items():
        config = json.loads((path / CONFIG_FILE).read_text())
        await engine.load_adapter(name, config, (path / WEIGHTS_FILE).read_bytes())


@pytest.mark.parametrize(
    ("ranges", "micro_batches"), [([(0, 4)], 1), ([(0, 2), (2, 4)], 2)], ids=["whole", "2-stages-2-microbatches"]
)
async def test_adapter_rows_in_one_batch_each_get_the_tokens_of_their_peft_merged_model(
    tiny_checkpoint_sw8, adapters, reference, ranges, micro_batches
):
    assert reference["a1"] != reference[None] and reference["a2"] != reference[None]
    assert reference["a1"] != reference["a2"]
    # Nine requests on six slots: base rows and both adapters' rows share steps, join and leave.
    engine = local_engine(str(tiny_checkpoint_sw8), ranges, max_batch_size=6, micro_batches=micro_batches)
    await engine.start()
    try:
        await _load(engine, adapters)

        async def one(name, i):
            toks = []
            async for out in engine.generate(EngineRequest(f"{name}-{i}", PROMPTS[i], GREEDY, adapter=name)):
                toks += out.token_ids
            return toks

        jobs = [(name, i) for i in range(len(PROMPTS)) for name in (None, "a1", "a2")]
        got = await asyncio.gather(*[one(n, i) for n, i in jobs])
    finally:
        await engine.stop()
    for (name, i), toks in zip(jobs, got, strict=True):
        assert toks == reference[name][i], (name, i)


async def test_an_adapter_not_loaded_or_unloaded_is_refused(tiny_checkpoint_sw8, adapters, reference):
    engine = local_engine(str(tiny_checkpoint_sw8), [(0, 4)], max_batch_size=2)
    await engine.start()
    try:
        with pytest.raises(EngineError, match="adapter 'a1' is not loaded"):
            async for _ in engine.generate(EngineRequest("r", PROMPTS[0], GREEDY, adapter="a1")):
                pass
        await _load(engine, adapters)
        assert set(engine.adapters) == {"a1", "a2"}
        await engine.unload_adapter("a1")
        assert set(engine.adapters) == {"a2"}
        with pytest.raises(EngineError, match="adapter 'a1' is not loaded"):
            async for _ in engine.generate(EngineRequest("r", PROMPTS[0], GREEDY, adapter="a1")):
                pass
        # The base model is untouched by loading and unloading adapters.
        toks = []
        async for out in engine.generate(EngineRequest("b", PROMPTS[1], GREEDY)):
            toks += out.token_ids
        assert toks == reference[None][1]
    finally:
        await engine.stop()
