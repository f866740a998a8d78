"""The DeepSpeed-MII backend (extra ``mii``): where it can run, and a clear refusal where it cannot.

MII's FastGen engine supports a fixed set of architectures and needs CUDA with
NCCL. gpt-oss (``model_type: gpt_oss``) is not among them today, so for every
model ossfleet serves this backend refuses at start, naming each reason and
what to use instead, rather than failing later inside MII.
"""

from __future__ import annotations

import json
from pathlib import Path

from ossfleet.engine.base import EngineError

# FastGen's architectures (DeepSpeed-MII 0.3.3 / DeepSpeed 0.19.8).
FASTGEN_ARCHITECTURES = frozenset(
    {"llama", "mistral", "mixtral", "opt", "phi", "phi3", "qwen", "qwen2", "qwen2_moe", "falcon", "exaone4"}
)


def mii_blockers(path: str | Path, cuda_available: bool | None = None) -> list[str]:
    """Every reason MII cannot serve the checkpoint at ``path`` here (empty: it can)."""
    reasons = []
    try:
        import mii  # noqa: F401
    except ImportError as e:
        reasons.append(f"DeepSpeed-MII is not importable ({e}); install the extra: pip install 'ossfleet[mii]'")
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    if not cuda_available:
        reasons.append("no CUDA device is available, and MII runs only on CUDA GPUs with NCCL")
    cfg = Path(path) / "config.json"
    model_type = json.loads(cfg.read_text()).get("model_type") if cfg.exists() else None
    if model_type not in FASTGEN_ARCHITECTURES:
        reasons.append(
            f"MII's FastGen has no {model_type!r} architecture (it supports {sorted(FASTGEN_ARCHITECTURES)})"
        )
    return reasons


def check_mii(path: str | Path, cuda_available: bool | None = None) -> None:
    """Raise EngineError listing why MII cannot serve this model, and what to use instead."""
    reasons = mii_blockers(path, cuda_available)
    if reasons:
        raise EngineError(
            "engine 'mii' cannot serve this model: "
            + "; ".join(reasons)
            + ". Use engine: batched (any GPU or CPU, pipelines) or engine: transformers."
        )
