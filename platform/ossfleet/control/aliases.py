"""A/B aliases: which model a tenant's alias sends one request to (pure).

An alias (``TenantConfig.aliases``) names models with weights. Each request is placed at a point in
[0, 1) hashed from the tenant, the alias and the end user (the OpenAI ``user`` field, or the
``x-ossfleet-user`` header); the models own consecutive shares of [0, 1) in name order, sized by weight.
The same user always lands at the same point, so a conversation stays on one model while the weights
stand (a weight change moves only the users whose point changes hands). A request with no end user is
placed at a point of its own (its request id's): split by weight, sticky to nothing.
"""

from __future__ import annotations

import hashlib

from ossfleet.config import AliasConfig


def point(tenant: str, alias: str, user: str) -> float:
    """Where in [0, 1) a user's requests to an alias land (uniform over users, stable across processes)."""
    digest = hashlib.blake2b(f"{tenant}\x00{alias}\x00{user}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def choose(alias: AliasConfig, at: float) -> str:
    """The model whose share of [0, 1) holds ``at``."""
    total = sum(alias.models.values())
    edge = 0.0
    names = sorted(alias.models)
    for name in names:
        edge += alias.models[name] / total
        if at < edge:
            return name
    return names[-1]  # rounding at the top edge
