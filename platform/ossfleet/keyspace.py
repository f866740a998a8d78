"""Every Redis key ossfleet uses, named in one place.

Each key of a namespace starts with ``{namespace}:``; the braces are a Redis
Cluster hash tag, so all of a namespace's keys share one slot and every
script is atomic on a cluster too (``slot()`` is the key a script call names
to be routed there). Python builds keys only through :class:`KeySpace`; the
Lua scripts build the same names with ``k(...)`` in ``lua/common.lua``, and
``tests/integration/test_keyspace.py`` runs both and requires them equal.
docs/architecture.md says what each key holds.
"""

from __future__ import annotations

import functools


class KeySpace:
    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.prefix = "{" + namespace + "}:"

    def _k(self, *parts: object) -> str:
        return self.prefix + ":".join(str(p) for p in parts)

    def slot(self) -> str:
        """The key a script call names so that a cluster routes it to the namespace's slot."""
        return self._k("slot")

    # -- a request ----------------------------------------------------------------------------------

    def req(self, request_id: str) -> str:
        return self._k("req", request_id)

    def stream(self, request_id: str) -> str:
        return self._k("stream", request_id)

    # -- a model's queue ------------------------------------------------------------------------------

    def lane(self, model: str, band: int, tenant: str) -> str:
        return self._k("lane", model, band, tenant)

    def ready(self, model: str, band: int) -> str:
        return self._k("ready", model, band)

    def wait(self, model: str, band: int) -> str:
        return self._k("wait", model, band)

    def vtc(self, model: str) -> str:
        return self._k("vtc", model)

    def leases(self, model: str) -> str:
        return self._k("leases", model)

    def delayed(self, model: str) -> str:
        return self._k("delayed", model)

    def dead(self, model: str) -> str:
        return self._k("dead", model)

    def bell(self, model: str) -> str:
        return self._k("bell", model)

    def cancel(self, model: str) -> str:
        """The pub/sub channel that tells a model's replicas a running request was cancelled."""
        return self._k("cancel", model)

    def arrivals(self, model: str) -> str:
        return self._k("arrivals", model)

    def alive(self, model: str) -> str:
        return self._k("alive", model)

    def replica(self, model: str) -> str:
        return self._k("replica", model)

    # -- a tenant's money and limits ------------------------------------------------------------------

    def budget(self, tenant: str, period: str) -> str:
        return self._k("budget", tenant, period)

    def usage(self, tenant: str, period: str) -> str:
        return self._k("usage", tenant, period)

    def inflight(self, tenant: str) -> str:
        return self._k("inflight", tenant)

    def idem(self, tenant: str, key: str) -> str:
        return self._k("idem", tenant, key)

    def rate(self, what: str, tenant: str, minute: int) -> str:
        """A sliding-window counter: ``what`` is ``req`` or ``tok``."""
        return self._k("rl", what, tenant, minute)

    def alerted(self, tenant: str, period: str) -> str:
        return self._k("alerted", tenant, period)

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

    # -- stored responses, adapters -------------------------------------------------------------------

    def response(self, response_id: str) -> str:
        return self._k("response", response_id)

    def adapter(self, tenant: str, model: str, name: str) -> str:
        return self._k("adapter", tenant, model, name)

    def adapters(self, tenant: str) -> str:
        return self._k("adapters", tenant)


@functools.cache
def keyspace(namespace: str) -> KeySpace:
    """The namespace's key space, built once (for functions that are given a namespace, not a store)."""
    return KeySpace(namespace)
