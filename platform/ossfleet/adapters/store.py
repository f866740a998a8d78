"""Tenants' LoRA adapters: records in Redis, files in the platform's file storage.

An adapter belongs to one tenant and one base model. Requests name it as
``<model>:<adapter>`` (the form OpenAI uses for fine-tuned models); to any
other tenant it does not exist. Keys (under the namespace's hash tag)::

    adapter:<tenant>:<model>:<name>   hash: the adapter's record (digest, storage folder, rank, ...)
    adapters:<tenant>                 zset: "<model>:<name>" by upload time

The files (PEFT's ``adapter_config.json`` and ``adapter_model.safetensors``)
lie in ``<storage>/<tenant>/adapters/<model>/<name>/<digest>/``. An upload
under an existing name replaces the adapter: the new record points at the new
folder and the old folder is deleted. Replicas cache adapters by
:attr:`AdapterRecord.key`, which includes the digest, so a replaced adapter is
never served from a stale cache.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ossfleet.adapters.format import CONFIG_FILE, WEIGHTS_FILE, AdapterInfo
from ossfleet.control.keyspace import KeySpace
from ossfleet.errors import InvalidRequest, NotFound

if TYPE_CHECKING:
    import redis.asyncio

    from ossfleet.storage import FileStorage

NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")  # fullmatch: "$" would match before a trailing newline


def split_model(model: str) -> tuple[str, str | None]:
    """``"gpt-oss-20b:support-bot"`` -> ``("gpt-oss-20b", "support-bot")``; a plain name has no adapter."""
    base, sep, name = model.partition(":")
    return (base, name) if sep else (model, None)


def check_name(name: str) -> None:
    if not NAME.fullmatch(name):
        raise InvalidRequest(
            f"adapter name {name!r} must be 1-64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter "
            "or digit",
            param="name",
        )


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


@dataclass(frozen=True)
class AdapterRecord:
    tenant: str
    model: str
    name: str
    digest: str  # sha256 of the two files
    path: str  # the storage folder holding them
    rank: int
    alpha: float
    modules: tuple[str, ...]
    nbytes: int
    created_at: int

    @property
    def id(self) -> str:
        """What requests name as their ``model``."""
        return f"{self.model}:{self.name}"

    @property
    def key(self) -> str:
        """What replicas cache it by: tenant-qualified, and a new upload is a new key."""
        return f"{self.tenant}/{self.id}@{self.digest[:16]}"

    def public(self) -> dict[str, Any]:
        """The API's view (no storage path)."""
        return {
            "id": self.id, "object": "adapter", "model": self.model, "name": self.name, "rank": self.rank,
            "lora_alpha": self.alpha, "target_modules": list(self.modules), "bytes": self.nbytes,
            "sha256": self.digest, "created_at": self.created_at, "owned_by": self.tenant,
        }  # fmt: skip

    def fields(self) -> dict[str, str]:
        return {
            "tenant": self.tenant, "model": self.model, "name": self.name, "digest": self.digest, "path": self.path,
            "rank": str(self.rank), "alpha": repr(self.alpha), "modules": ",".join(self.modules),
            "bytes": str(self.nbytes), "created_at": str(self.created_at),
        }  # fmt: skip

    @classmethod
    def of(cls, h: dict[str, str]) -> AdapterRecord:
        return cls(
            tenant=h["tenant"], model=h["model"], name=h["name"], digest=h["digest"], path=h["path"],
            rank=int(h["rank"]), alpha=float(h["alpha"]), modules=tuple(m for m in h["modules"].split(",") if m),
            nbytes=int(h["bytes"]), created_at=int(h["created_at"]),
        )  # fmt: skip


class AdapterStore:
    def __init__(self, r: redis.asyncio.Redis, namespace: str, storage: FileStorage) -> None:
        self.r = r
        self.keys = KeySpace(namespace)
        self.storage = storage

    async def put(
        self, tenant: str, model: str, name: str, config: bytes, weights: bytes, info: AdapterInfo
    ) -> AdapterRecord:
        """Store a validated adapter (replacing one of the same name); the files first, then the record."""
        check_name(name)
        digest = hashlib.sha256(hashlib.sha256(config).digest() + hashlib.sha256(weights).digest()).hexdigest()
        folder = self.storage.path(tenant, f"adapters/{model}/{name}/{digest[:16]}")
        await asyncio.to_thread(self.storage.put, f"{folder}/{CONFIG_FILE}", config)
        await asyncio.to_thread(self.storage.put, f"{folder}/{WEIGHTS_FILE}", weights)
        rec = AdapterRecord(
            tenant=tenant, model=model, name=name, digest=digest, path=folder, rank=info.rank, alpha=info.alpha,
            modules=info.modules, nbytes=info.nbytes, created_at=int(time.time()),
        )  # fmt: skip
        key = self.keys.adapter(tenant, model, name)
        old = await self.r.hget(key, "path")
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(key)
        pipe.hset(key, mapping=dict(rec.fields()))  # type: ignore[arg-type]
        pipe.zadd(self.keys.adapters(tenant), {rec.id: rec.created_at})
        await pipe.execute()
        if old is not None and _s(old) != folder:
            await asyncio.to_thread(self.storage.delete_tree, _s(old))
        return rec

    async def get(self, tenant: str, model: str, name: str) -> AdapterRecord:
        h = await self.r.hgetall(self.keys.adapter(tenant, model, name))
        if not h:
            raise NotFound(f"no adapter {model}:{name} for this tenant; list yours with GET /v1/adapters")
        return AdapterRecord.of({_s(k): _s(v) for k, v in h.items()})

    async def list(self, tenant: str) -> list[AdapterRecord]:
        ids = [_s(i) for i in await self.r.zrange(self.keys.adapters(tenant), 0, -1)]
        out = []
        for i in ids:
            model, _, name = i.partition(":")
            h = await self.r.hgetall(self.keys.adapter(tenant, model, name))
            if h:
                out.append(AdapterRecord.of({_s(k): _s(v) for k, v in h.items()}))
        return out

    async def delete(self, tenant: str, model: str, name: str) -> AdapterRecord:
        rec = await self.get(tenant, model, name)
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(self.keys.adapter(tenant, model, name))
        pipe.zrem(self.keys.adapters(tenant), rec.id)
        await pipe.execute()
        await asyncio.to_thread(self.storage.delete_tree, rec.path)
        return rec


def read_adapter(storage: FileStorage, path: str) -> tuple[dict[str, Any], bytes]:
    """An adapter's config and weights from its storage folder (blocking: call it off the event loop)."""
    return json.loads(storage.get(f"{path}/{CONFIG_FILE}")), storage.get(f"{path}/{WEIGHTS_FILE}")
