"""One pipeline stage of a model: a contiguous run of layers, and only their weights.

A :class:`PipelineStage` holds layers ``[start, end)`` of the model; the first
stage also holds the token embedding, the last the final norm and the LM
head. It reads exactly those tensors from the checkpoint's safetensors files
(through the index when the checkpoint is sharded), so a stage of
gpt-oss-120b on a 48 GB GPU never sees the other half of the weights.

The released checkpoints keep the experts in MXFP4 (``*_blocks`` /
``*_scales``). With ``weights="bf16"`` a stage dequantizes them to its dtype
as they load (transformers' ``convert_moe_packed_tensors``); with
``weights="mxfp4"`` it keeps them packed (``engine/mxfp4.py``) and
dequantizes only the experts each step routes to.

Each stage keeps the KV cache of its own layers in a paged pool
(``engine/kvcache.py``) addressed by the block tables of the engine's
scheduler, built from a config that lists only its layers (renumbered from
0), and applies its own rotary embeddings and attention masks, so that the
stages chained together compute exactly what the whole model does.

The same class runs in-process (tests, a one-stage executor) or as a Ray actor
placed in its bundle of the replica's placement group.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from ossfleet.engine.kvcache import ATTENTION_NAME, PagedKVCache, StepBatch, register
from ossfleet.engine.lora import StageAdapters

register()


def _weight_files(path: Path, names: Iterable[str]) -> dict[str, list[str]]:
    """Which safetensors file holds each wanted tensor."""
    index = path / "model.safetensors.index.json"
    wanted = list(names)
    if index.exists():
        weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
        out: dict[str, list[str]] = {}
        for n in wanted:
            if n in weight_map:
                out.setdefault(weight_map[n], []).append(n)
        return out
    return {"model.safetensors": wanted}


def load_tensors(path: Path, prefixes: tuple[str, ...], exact: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The checkpoint tensors whose names start with one of ``prefixes`` or equal one of ``exact``."""
    from safetensors import safe_open

    index = path / "model.safetensors.index.json"
    if index.exists():
        all_names = list(json.loads(index.read_text())["weight_map"])
    else:
        with safe_open(str(path / "model.safetensors"), framework="pt") as f:
            all_names = list(f.keys())
    names = [n for n in all_names if n in exact or n.startswith(prefixes)]
    out: dict[str, torch.Tensor] = {}
    for file, file_names in _weight_files(path, names).items():
        with safe_open(str(path / file), framework="pt") as f:
            for n in file_names:
                out[n] = f.get_tensor(n)
    return out


def _dequantize_mxfp4(
    tensors: dict[str, torch.Tensor], dtype: torch.dtype, device: torch.device
) -> dict[str, torch.Tensor]:
    """Replace ``*_blocks``/``*_scales`` MXFP4 pairs with dense weights, dequantized on ``device`` (so a
    GPU stage never holds the dense experts in host memory)."""
    blocks = [n for n in tensors if n.endswith("_blocks")]
    if not blocks:
        return tensors
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    out = {n: t for n, t in tensors.items() if not n.endswith(("_blocks", "_scales"))}
    for b in blocks:
        base = b[: -len("_blocks")]
        packed, scales = tensors[b].to(device), tensors[base + "_scales"].to(device)
        out[base] = convert_moe_packed_tensors(packed, scales, dtype=dtype)
    return out


def _fuse_mixtral_experts(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Mixtral's released layout (``block_sparse_moe.experts.{e}.w1/w2/w3``, one matrix per expert) as
    transformers' modules hold it (``mlp.experts.gate_up_proj`` ``[E, 2I, H]``: each expert's w1 then w3;
    ``down_proj`` ``[E, H, I]``), the conversion its loader makes. Other layouts pass through."""
    if not any(".block_sparse_moe." in n for n in sd):
        return sd
    out: dict[str, torch.Tensor] = {}
    experts: dict[tuple[str, str], dict[int, torch.Tensor]] = {}
    for name, t in sd.items():
        name = name.replace(".block_sparse_moe.", ".mlp.")
        prefix, sep, rest = name.partition(".mlp.experts.")
        if not sep:
            out[name] = t
            continue
        e, w, _ = rest.split(".")
        experts.setdefault((prefix, w), {})[int(e)] = t
    for prefix in sorted({p for p, _ in experts}):
        w1, w2, w3 = (experts[(prefix, w)] for w in ("w1", "w2", "w3"))
        n = len(w1)
        out[f"{prefix}.mlp.experts.gate_up_proj"] = torch.stack([torch.cat([w1[e], w3[e]]) for e in range(n)])
        out[f"{prefix}.mlp.experts.down_proj"] = torch.stack([w2[e] for e in range(n)])
    return out


def _restore_buffers(module: torch.nn.Module, device: torch.device) -> None:
    """Give the non-persistent buffers a meta-built module holds their values (Gemma 2's embedding scale:
    the checkpoint does not carry it)."""
    scale = getattr(module, "scalar_embed_scale", None)
    if scale is not None:
        module.embed_scale = torch.tensor(scale, device=device)


def is_mxfp4(path: Path) -> bool:
    """Whether a checkpoint stores its experts in MXFP4 (as released)."""
    cfg = json.loads((path / "config.json").read_text())
    return (cfg.get("quantization_config") or {}).get("quant_method") == "mxfp4"


def causal_lm_class(cfg: Any) -> Any:
    """transformers' ``...ForCausalLM`` class of a config (what ``AutoModelForCausalLM`` would build)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    return MODEL_FOR_CAUSAL_LM_MAPPING[type(cfg)]


class PipelineStage:
    """Layers ``[start, end)`` of a checkpoint (gpt-oss, Llama, Gemma 2, Mixtral), their weights, and their
    KV caches.

    The stage's modules are transformers' own for the family (built on the meta device from the
    checkpoint's config cut to the stage's layers, then given only the stage's tensors), so what differs
    between families (sinks, soft-capping, the sliding-window layers, scaled embeddings, the experts) is
    the library's code; the paged attention reads each layer's sinks, window and soft-cap from it.
    """

    def __init__(
        self,
        path: str | Path,
        start: int,
        end: int,
        *,
        dtype: str = "float32",
        device: str = "cpu",
        weights: str = "bf16",
    ) -> None:
        from transformers import AutoConfig

        from ossfleet.engine.mxfp4 import PackedExperts

        self.path = Path(path)
        if weights not in ("bf16", "mxfp4"):
            raise ValueError(f"weights must be 'bf16' or 'mxfp4', got {weights!r}")
        packed = weights == "mxfp4"
        if packed and not is_mxfp4(self.path):
            raise ValueError(
                f"weights: mxfp4 keeps the experts as the checkpoint stores them, but {self.path} is not in MXFP4 "
                f"(no quantization_config with quant_method mxfp4): use weights: bf16 for a dense checkpoint"
            )
        self.weights = weights
        full = AutoConfig.from_pretrained(self.path)
        if not 0 <= start < end <= full.num_hidden_layers:
            raise ValueError(f"stage layers [{start}, {end}) outside the model's {full.num_hidden_layers} layers")
        self.start, self.end = start, end
        self.first = start == 0
        self.last = end == full.num_hidden_layers
        self.device = torch.device(device)
        self.dtype = getattr(torch, dtype)
        cfg = copy.deepcopy(full)
        cfg.num_hidden_layers = end - start
        if getattr(full, "layer_types", None) is not None:
            cfg.layer_types = list(full.layer_types[start:end])
        cfg._attn_implementation = ATTENTION_NAME
        self.config = cfg
        cls = causal_lm_class(cfg)
        self._fp32 = tuple(getattr(cls, "_keep_in_fp32_modules", None) or ())  # gpt-oss: its norms

        with torch.device("meta"):
            lm = cls(cfg)  # its __init__ picks the experts kernel as from_pretrained does
        self.layers = lm.model.layers
        self.embed = lm.model.embed_tokens if self.first else None
        self.norm = lm.model.norm if self.last else None
        self.lm_head = lm.lm_head if self.last else None
        if packed:
            for layer in self.layers:
                layer.mlp.experts = PackedExperts(cfg, self.dtype)
        self.rotary = type(lm.model.rotary_emb)(config=cfg).to(self.device)
        self.logit_softcap: float | None = getattr(cfg, "final_logit_softcapping", None)

        prefixes = tuple(f"model.layers.{i}." for i in range(start, end))
        tied = bool(getattr(full, "tie_word_embeddings", False))
        exact: tuple[str, ...] = ("model.embed_tokens.weight",) if self.first or (self.last and tied) else ()
        if self.last:
            exact += ("model.norm.weight", "lm_head.weight")
        tensors = load_tensors(self.path, prefixes, exact)
        if not packed:
            tensors = _dequantize_mxfp4(tensors, self.dtype, self.device)
        layer_sd: dict[str, torch.Tensor] = {}
        for name, t in tensors.items():
            if name.startswith("model.layers."):
                idx, rest = name[len("model.layers.") :].split(".", 1)
                layer_sd[f"{int(idx) - start}.{rest}"] = t
        self._load(self.layers, _fuse_mixtral_experts(layer_sd))
        if self.embed is not None:
            self._load(self.embed, {"weight": tensors["model.embed_tokens.weight"]})
            _restore_buffers(self.embed, self.device)
        if self.norm is not None and self.lm_head is not None:
            self._load(self.norm, {"weight": tensors["model.norm.weight"]}, fp32="norm" in self._fp32)
            if self.embed is not None and "lm_head.weight" not in tensors:
                self.lm_head.weight = self.embed.weight  # tied, one stage: one matrix, as transformers ties it
            else:
                head = "lm_head.weight" if "lm_head.weight" in tensors else "model.embed_tokens.weight"
                self._load(self.lm_head, {"weight": tensors[head]})
        self.cache: PagedKVCache | None = None
        self.adapters = StageAdapters(self.layers, start, end, self.dtype, self.device)

    @classmethod
    def whole_model(cls, model: Any, weights: str = "bf16") -> PipelineStage:
        """A single stage over an already-built ``GptOssForCausalLM`` (no copy, no loading).

        For benchmarks on randomly initialised full-size models, which have no
        checkpoint on disk to load from. ``weights="mxfp4"`` quantizes the
        model's experts in place into packed ones (the dense ones are freed).
        """
        self = cls.__new__(cls)
        cfg = copy.deepcopy(model.config)
        cfg._attn_implementation = ATTENTION_NAME
        self.path = Path(".")
        self.start, self.end = 0, cfg.num_hidden_layers
        self.first = self.last = True
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.config = cfg
        self.layers = model.model.layers
        self.embed = model.model.embed_tokens
        self.norm = model.model.norm
        self.lm_head = model.lm_head
        self.rotary = type(model.model.rotary_emb)(config=cfg).to(self.device)
        self.logit_softcap = getattr(cfg, "final_logit_softcapping", None)
        self._fp32 = tuple(getattr(type(model), "_keep_in_fp32_modules", None) or ())
        self.cache = None
        self.adapters = StageAdapters(self.layers, 0, self.end, self.dtype, self.device)
        for layer in self.layers:  # the model's layers now read the paged cache
            layer.self_attn.config = cfg
        self.weights = weights
        if weights == "mxfp4":
            from ossfleet.engine.mxfp4 import PackedExperts

            for layer in self.layers:
                layer.mlp.experts = PackedExperts.from_dense(layer.mlp.experts, cfg, self.dtype)
        return self

    def _load(self, module: torch.nn.Module, sd: dict[str, torch.Tensor], fp32: bool = False) -> None:
        # The modules the family keeps in float32 stay so (gpt-oss: its norms, as transformers keeps them);
        # packed MXFP4 bytes stay bytes.
        def dtype(n: str, t: torch.Tensor) -> torch.dtype:
            if t.dtype == torch.uint8:
                return torch.uint8
            keep = fp32 or any(k in n.split(".") for k in self._fp32)
            return torch.float32 if keep else self.dtype

        cast = {n: t.to(self.device, dtype(n, t)) for n, t in sd.items()}
        module.load_state_dict(cast, strict=True, assign=True)
        module.eval()

    # -- what a stage reports -----------------------------------------------------------

    def param_bytes(self) -> int:
        """Bytes of the weights this stage holds (parameters, and packed experts' buffers)."""
        mods = [m for m in (self.layers, self.embed, self.norm, self.lm_head) if m is not None]
        # What the checkpoint gives the stage (parameters, persistent buffers), a tied matrix once.
        tensors = {t.data_ptr(): t for m in mods for t in m.state_dict().values()}
        return sum(t.numel() * t.element_size() for t in tensors.values())

    def node_id(self) -> str:
        import ray

        return str(ray.get_runtime_context().get_node_id())

    def layer_range(self) -> tuple[int, int]:
        return self.start, self.end

    # -- KV cache ------------------------------------------------------------------------

    def init_cache(self, num_blocks: int, block_size: int) -> int:
        """Allocate this stage's paged KV cache (every stage of an engine gets the same block count);
        returns its bytes."""
        cfg = self.config
        self.cache = PagedKVCache(
            len(self.layers), num_blocks, block_size, cfg.num_key_value_heads, cfg.head_dim,
            dtype=self.dtype, device=self.device,
        )  # fmt: skip
        return self.cache.nbytes()

    # -- LoRA adapters (engine/lora.py) ----------------------------------------------------------

    def add_adapter(self, key: str, config: dict[str, Any], data: bytes) -> int:
        """Load an adapter's weights for this stage's layers (the engine's LRU decides which stay)."""
        return self.adapters.add(key, config, data)

    def remove_adapter(self, key: str) -> None:
        self.adapters.remove(key)

    # -- compute --------------------------------------------------------------------------

    @torch.no_grad()
    def forward(self, step: StepBatch, x: torch.Tensor | None = None) -> torch.Tensor:
        """Run this stage's layers over one packed step.

        The first stage embeds ``step.token_ids``; the others take the previous
        stage's hidden states ``x`` (``[1, T, H]``). Returns hidden states, or
        on the last stage the float32 logits of the positions in
        ``step.sample_index`` (``[len(sample_index), V]``).
        """
        if self.cache is None:
            raise RuntimeError("init_cache() was not called on this stage")
        ids = torch.tensor(step.token_ids, dtype=torch.long, device=self.device)[None]
        position_ids = torch.tensor(step.positions, dtype=torch.long, device=self.device)[None]
        h = self.embed(ids) if self.embed is not None else x.to(self.device, self.dtype)  # type: ignore[union-attr]
        meta = self.cache.meta(step, getattr(self.config, "sliding_window", None), self.dtype)
        self.adapters.bind(step.adapters or [], step.chunks)
        pe = self.rotary(h, position_ids)
        for layer in self.layers:
            h = layer(
                h, attention_mask=None, position_embeddings=pe, position_ids=position_ids,
                ossfleet_meta=meta, ossfleet_cache=self.cache,
            )  # fmt: skip
        if self.norm is None or self.lm_head is None:
            return h
        rows = torch.tensor(step.sample_index, dtype=torch.long, device=self.device)
        logits = self.lm_head(self.norm(h[0, rows]))
        if self.logit_softcap is not None:  # Gemma 2, as its ForCausalLM does
            logits = torch.tanh(logits / self.logit_softcap) * self.logit_softcap
        return logits.float()
