"""Imports a model replica needs, done before the replica is asked for.

Named as Ray's ``worker_process_setup_hook`` (``deployments.preload.preload``), it runs in every
worker process Ray starts, including the idle ones it starts ahead of demand; a replica placed on such a
process finds torch, transformers and ossfleet's engine and replica code imported (bench/cold_start.py
``--preload`` measures what that saves). It loads no model: that is the replica's own work.
"""

from __future__ import annotations

import importlib

MODULES = ("torch", "transformers", "safetensors.torch", "ossfleet.engine.batched", "ossfleet.engine.stages",
           "ossfleet.replica.worker", "deployments.replica")  # fmt: skip


def preload() -> None:
    for name in MODULES:
        importlib.import_module(name)
