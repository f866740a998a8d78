"""Every Redis key ossfleet uses, named in one place.

Keys fall in three kinds of Redis Cluster hash slot (the braces are the hash tag):

- a **model's** queue state, its requests and their streams: ``{<ns>:m:<model>}:...``;
- a **tenant's** money and limits (budget, usage, reservations, rate and in-flight counters):
  ``{<ns>:t:<tenant>}:...``;
- everything else (tenants and keys, audit, alerts, batch jobs, files, responses, adapters): ``{<ns>}:...``.

On a single Redis the tags mean nothing and one script may touch all three; on a cluster each script
touches one slot (``model_slot``, ``tenant_slot`` or ``slot`` is the key a call names to be routed there),
so the load of different models and tenants spreads over the shards. Python builds keys only through
:class:`KeySpace`; the Lua scripts build the same names with ``km``/``kt``/``kg`` in ``lua/common.lua``,
and ``tests/integration/test_keyspace.py`` runs both and requires them equal. docs/architecture.md says
what each key holds.
"""

from __future__ import annotations

import functools


class KeySpace:
    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.prefix = "{" + namespace + "}:"

    def _k(self, *parts: object) -> str:
        return self.prefix + ":".join(str(p) for p in parts)

    def _m(self, model: str, *parts: object) -> str:
        return "{" + self.namespace + ":m:" + model + "}:" + ":".join(str(p) for p in parts)

    def _t(self, tenant: str, *parts: object) -> str:
        return "{" + self.namespace + ":t:" + tenant + "}:" + ":".join(str(p) for p in parts)

    def patterns(self) -> tuple[str, ...]:
        """SCAN match patterns that together cover every key of the namespace (and no other namespace's)."""
        ns = self.namespace.replace("[", "\\[").replace("*", "\\*").replace("?", "\\?")
        return ("{" + ns + "}:*", "{" + ns + ":m:*", "{" + ns + ":t:*")

    def slot(self) -> str:
        """The key a script call names so that a cluster routes it to the namespace's shared slot."""
        return self._k("slot")

    def model_slot(self, model: str) -> str:
        """The key a script call names to run in ``model``'s slot."""
        return self._m(model, "slot")

    def tenant_slot(self, tenant: str) -> str:
        """The key a script call names to run in ``tenant``'s slot."""
        return self._t(tenant, "slot")

    # -- a request (in its model's slot) --------------------------------------------------------------

    def req(self, model: str, request_id: str) -> str:
        return self._m(model, "req", request_id)

    def stream(self, model: str, request_id: str) -> str:
        return self._m(model, "stream", request_id)

    # -- a model's queue ------------------------------------------------------------------------------

    def lane(self, model: str, band: int, tenant: str) -> str:
        return self._m(model, "lane", band, tenant)

    def ready(self, model: str, band: int) -> str:
        return self._m(model, "ready", band)

    def wait(self, model: str, band: int) -> str:
        return self._m(model, "wait", band)

    def vtc(self, model: str) -> str:
        return self._m(model, "vtc")

    def leases(self, model: str) -> str:
        return self._m(model, "leases")

    def delayed(self, model: str) -> str:
        return self._m(model, "delayed")

    def dead(self, model: str) -> str:
        return self._m(model, "dead")

    def owed(self, model: str) -> str:
        """Ended requests whose settlement in their tenant's slot is still to be done (cluster only)."""
        return self._m(model, "owed")

    def bell(self, model: str) -> str:
        return self._m(model, "bell")

    def cancel(self, model: str) -> str:
        """The pub/sub channel that tells a model's replicas a running request was cancelled."""
        return self._m(model, "cancel")

    def arrivals(self, model: str) -> str:
        return self._m(model, "arrivals")

    def alive(self, model: str) -> str:
        return self._m(model, "alive")

    def replica(self, model: str) -> str:
        return self._m(model, "replica")

    # -- a tenant's money and limits (in the tenant's slot) -------------------------------------------

    def budget(self, tenant: str, period: str) -> str:
        return self._t(tenant, "budget", period)

    def usage(self, tenant: str, period: str) -> str:
        return self._t(tenant, "usage", period)

    def inflight(self, tenant: str) -> str:
        return self._t(tenant, "inflight")

    def idem(self, tenant: str, key: str) -> str:
        return self._t(tenant, "idem", key)

    def rate(self, what: str, tenant: str, minute: int) -> str:
        """A sliding-window counter: ``what`` is ``req`` or ``tok``."""
        return self._t(tenant, "rl", what, minute)

    def alerted(self, tenant: str, period: str) -> str:
        return self._t(tenant, "alerted", period)

    def resv(self, tenant: str, request_id: str) -> str:
        """A request's reservation (model, period, amount) until settled, then a settled marker: settlement
        is idempotent by it, and it tells which model a tenant's request id belongs to."""
        return self._t(tenant, "resv", request_id)

    def batch_charged(self, tenant: str, job_id: str) -> str:
        """The dedicated-mode lines of a job already charged (cluster only: the charge precedes the record)."""
        return self._t(tenant, "bcharged", job_id)

    def batch_reserved(self, tenant: str, job_id: str) -> str:
        """What a dedicated-mode job's lines have reserved (index -> "period amount") until each is recorded."""
        return self._t(tenant, "bresv", job_id)

    def pending(self, tenant: str) -> str:
        """Reservations whose enqueue in the model's slot is not yet confirmed (cluster only)."""
        return self._t(tenant, "pending")

    def alerts(self) -> str:
        return self._k("alerts")

    # -- tenants, keys, audit -------------------------------------------------------------------------

    def tenant(self, name: str) -> str:
        return self._k("tenant", name)

    def tenants(self) -> str:
        return self._k("tenants")

    def tenants_version(self) -> str:
        return self._k("tenants", "version")

    def tenant_seed(self) -> str:
        return self._k("tenantseed")

    def tenant_config(self) -> str:
        return self._k("tenantcfg")

    def api_key(self, digest: str) -> str:
        return self._k("apikey", digest)

    def tenant_keys(self, tenant: str) -> str:
        return self._k("tenantkeys", tenant)

    def admin_key(self, digest: str) -> str:
        return self._k("adminkey", digest)

    def admin_keys(self) -> str:
        """Every admin key's record (digest -> name, creation time, who made it), for listing and revoking."""
        return self._k("adminkeys")

    def audit(self) -> str:
        return self._k("audit")

    # -- batch jobs and files -------------------------------------------------------------------------

    def batch(self, job_id: str) -> str:
        return self._k("batch", job_id)

    def batches(self, tenant: str) -> str:
        return self._k("batches", tenant)

    def batches_active(self) -> str:
        """Jobs that need a driver (not ``batches:active``, which a tenant named "active" would share)."""
        return self._k("activebatches")

    def batch_results(self, job_id: str) -> str:
        return self._k("bres", job_id)

    def file(self, file_id: str) -> str:
        return self._k("file", file_id)

    def files(self, tenant: str) -> str:
        return self._k("files", tenant)

    def comparison(self, tenant: str, day: str) -> str:
        """A tenant's comparison counters for one UTC day (``control/comparison``: per model and role)."""
        return self._t(tenant, "cmp", day)

    def pairs(self, tenant: str) -> str:
        """A tenant's latest side-by-side pairs of answers and their shadows' (newest first)."""
        return self._t(tenant, "pairs")

    # -- stored responses, adapters -------------------------------------------------------------------

    def response(self, response_id: str) -> str:
        return self._k("response", response_id)

    def responses(self, tenant: str) -> str:
        """A tenant's stored responses (id -> when it expires), so that deleting the tenant finds them."""
        return self._k("responses", tenant)

    def tenant_pattern(self, tenant: str) -> str:
        """A SCAN pattern matching every key in ``tenant``'s slot (its money, limits, reservations)."""
        esc = "".join("\\" + c if c in "[]*?\\" else c for c in f"{self.namespace}:t:{tenant}")
        return "{" + esc + "}:*"

    def adapter(self, tenant: str, model: str, name: str) -> str:
        return self._k("adapter", tenant, model, name)

    def adapters(self, tenant: str) -> str:
        return self._k("adapters", tenant)


@functools.cache
def keyspace(namespace: str) -> KeySpace:
    """The namespace's key space, built once (for functions that are given a namespace, not a store)."""
    return KeySpace(namespace)
