from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListTenantsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TenantRequest(_message.Message):
    __slots__ = ("name", "period")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    name: str
    period: str
    def __init__(self, name: _Optional[str] = ..., period: _Optional[str] = ...) -> None: ...

class TenantChange(_message.Message):
    __slots__ = ("name", "fields_json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FIELDS_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    fields_json: str
    def __init__(self, name: _Optional[str] = ..., fields_json: _Optional[str] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("period", "budget_usd", "spent_usd", "reserved_usd", "left_usd", "models_json")
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    BUDGET_USD_FIELD_NUMBER: _ClassVar[int]
    SPENT_USD_FIELD_NUMBER: _ClassVar[int]
    RESERVED_USD_FIELD_NUMBER: _ClassVar[int]
    LEFT_USD_FIELD_NUMBER: _ClassVar[int]
    MODELS_JSON_FIELD_NUMBER: _ClassVar[int]
    period: str
    budget_usd: float
    spent_usd: float
    reserved_usd: float
    left_usd: float
    models_json: str
    def __init__(self, period: _Optional[str] = ..., budget_usd: _Optional[float] = ..., spent_usd: _Optional[float] = ..., reserved_usd: _Optional[float] = ..., left_usd: _Optional[float] = ..., models_json: _Optional[str] = ...) -> None: ...

class Tenant(_message.Message):
    __slots__ = ("name", "config_json", "usage")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    name: str
    config_json: str
    usage: Usage
    def __init__(self, name: _Optional[str] = ..., config_json: _Optional[str] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ...) -> None: ...

class TenantList(_message.Message):
    __slots__ = ("tenants",)
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    tenants: _containers.RepeatedCompositeFieldContainer[Tenant]
    def __init__(self, tenants: _Optional[_Iterable[_Union[Tenant, _Mapping]]] = ...) -> None: ...

class DeleteTenantResponse(_message.Message):
    __slots__ = ("name", "keys_revoked", "removed")
    class RemovedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    KEYS_REVOKED_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    name: str
    keys_revoked: int
    removed: _containers.ScalarMap[str, int]
    def __init__(self, name: _Optional[str] = ..., keys_revoked: _Optional[int] = ..., removed: _Optional[_Mapping[str, int]] = ...) -> None: ...

class NewKey(_message.Message):
    __slots__ = ("tenant", "key", "digest_prefix")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    DIGEST_PREFIX_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    key: str
    digest_prefix: str
    def __init__(self, tenant: _Optional[str] = ..., key: _Optional[str] = ..., digest_prefix: _Optional[str] = ...) -> None: ...

class KeyRef(_message.Message):
    __slots__ = ("tenant", "digest_prefix")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DIGEST_PREFIX_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    digest_prefix: str
    def __init__(self, tenant: _Optional[str] = ..., digest_prefix: _Optional[str] = ...) -> None: ...

class KeyList(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[KeyRef]
    def __init__(self, keys: _Optional[_Iterable[_Union[KeyRef, _Mapping]]] = ...) -> None: ...

class RevokeKeyRequest(_message.Message):
    __slots__ = ("name", "digest_prefix")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIGEST_PREFIX_FIELD_NUMBER: _ClassVar[int]
    name: str
    digest_prefix: str
    def __init__(self, name: _Optional[str] = ..., digest_prefix: _Optional[str] = ...) -> None: ...

class SpendRequest(_message.Message):
    __slots__ = ("period",)
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    period: str
    def __init__(self, period: _Optional[str] = ...) -> None: ...

class TenantSpend(_message.Message):
    __slots__ = ("name", "usage")
    NAME_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    name: str
    usage: Usage
    def __init__(self, name: _Optional[str] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ...) -> None: ...

class Spend(_message.Message):
    __slots__ = ("tenants",)
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    tenants: _containers.RepeatedCompositeFieldContainer[TenantSpend]
    def __init__(self, tenants: _Optional[_Iterable[_Union[TenantSpend, _Mapping]]] = ...) -> None: ...

class QueuesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Replica(_message.Message):
    __slots__ = ("id", "load_json")
    ID_FIELD_NUMBER: _ClassVar[int]
    LOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    id: str
    load_json: str
    def __init__(self, id: _Optional[str] = ..., load_json: _Optional[str] = ...) -> None: ...

class ModelQueue(_message.Message):
    __slots__ = ("model", "waiting", "oldest_wait_s", "running", "replicas")
    class WaitingEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    OLDEST_WAIT_S_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    model: str
    waiting: _containers.ScalarMap[str, int]
    oldest_wait_s: float
    running: int
    replicas: _containers.RepeatedCompositeFieldContainer[Replica]
    def __init__(self, model: _Optional[str] = ..., waiting: _Optional[_Mapping[str, int]] = ..., oldest_wait_s: _Optional[float] = ..., running: _Optional[int] = ..., replicas: _Optional[_Iterable[_Union[Replica, _Mapping]]] = ...) -> None: ...

class Queues(_message.Message):
    __slots__ = ("bands", "models")
    BANDS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    bands: _containers.RepeatedScalarFieldContainer[str]
    models: _containers.RepeatedCompositeFieldContainer[ModelQueue]
    def __init__(self, bands: _Optional[_Iterable[str]] = ..., models: _Optional[_Iterable[_Union[ModelQueue, _Mapping]]] = ...) -> None: ...

class AuditRequest(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class AuditEntry(_message.Message):
    __slots__ = ("id", "fields")
    class FieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    id: str
    fields: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[str] = ..., fields: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Audit(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[AuditEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[AuditEntry, _Mapping]]] = ...) -> None: ...

class ComparisonRequest(_message.Message):
    __slots__ = ("name", "days", "pairs")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DAYS_FIELD_NUMBER: _ClassVar[int]
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    name: str
    days: int
    pairs: int
    def __init__(self, name: _Optional[str] = ..., days: _Optional[int] = ..., pairs: _Optional[int] = ...) -> None: ...

class Percentiles(_message.Message):
    __slots__ = ("p50", "p90", "p99", "count")
    P50_FIELD_NUMBER: _ClassVar[int]
    P90_FIELD_NUMBER: _ClassVar[int]
    P99_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    p50: float
    p90: float
    p99: float
    count: int
    def __init__(self, p50: _Optional[float] = ..., p90: _Optional[float] = ..., p99: _Optional[float] = ..., count: _Optional[int] = ...) -> None: ...

class ModelComparison(_message.Message):
    __slots__ = ("model", "role", "requests", "errors", "refused", "finish_reasons", "output_tokens", "cost_usd", "cost_per_1k_requests_usd", "ttft_s", "itl_s", "queue_s", "ttft_hist", "itl_hist", "queue_hist")
    class RefusedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class FinishReasonsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASONS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    COST_PER_1K_REQUESTS_USD_FIELD_NUMBER: _ClassVar[int]
    TTFT_S_FIELD_NUMBER: _ClassVar[int]
    ITL_S_FIELD_NUMBER: _ClassVar[int]
    QUEUE_S_FIELD_NUMBER: _ClassVar[int]
    TTFT_HIST_FIELD_NUMBER: _ClassVar[int]
    ITL_HIST_FIELD_NUMBER: _ClassVar[int]
    QUEUE_HIST_FIELD_NUMBER: _ClassVar[int]
    model: str
    role: str
    requests: int
    errors: int
    refused: _containers.ScalarMap[str, int]
    finish_reasons: _containers.ScalarMap[str, int]
    output_tokens: int
    cost_usd: float
    cost_per_1k_requests_usd: float
    ttft_s: Percentiles
    itl_s: Percentiles
    queue_s: Percentiles
    ttft_hist: _containers.RepeatedScalarFieldContainer[int]
    itl_hist: _containers.RepeatedScalarFieldContainer[int]
    queue_hist: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, model: _Optional[str] = ..., role: _Optional[str] = ..., requests: _Optional[int] = ..., errors: _Optional[int] = ..., refused: _Optional[_Mapping[str, int]] = ..., finish_reasons: _Optional[_Mapping[str, int]] = ..., output_tokens: _Optional[int] = ..., cost_usd: _Optional[float] = ..., cost_per_1k_requests_usd: _Optional[float] = ..., ttft_s: _Optional[_Union[Percentiles, _Mapping]] = ..., itl_s: _Optional[_Union[Percentiles, _Mapping]] = ..., queue_s: _Optional[_Union[Percentiles, _Mapping]] = ..., ttft_hist: _Optional[_Iterable[int]] = ..., itl_hist: _Optional[_Iterable[int]] = ..., queue_hist: _Optional[_Iterable[int]] = ...) -> None: ...

class Answer(_message.Message):
    __slots__ = ("model", "request_id", "content", "finish_reason", "output_tokens", "cost_usd", "error")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    model: str
    request_id: str
    content: str
    finish_reason: str
    output_tokens: int
    cost_usd: float
    error: str
    def __init__(self, model: _Optional[str] = ..., request_id: _Optional[str] = ..., content: _Optional[str] = ..., finish_reason: _Optional[str] = ..., output_tokens: _Optional[int] = ..., cost_usd: _Optional[float] = ..., error: _Optional[str] = ...) -> None: ...

class Pair(_message.Message):
    __slots__ = ("request_id", "at", "primary", "shadow")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    at: float
    primary: Answer
    shadow: Answer
    def __init__(self, request_id: _Optional[str] = ..., at: _Optional[float] = ..., primary: _Optional[_Union[Answer, _Mapping]] = ..., shadow: _Optional[_Union[Answer, _Mapping]] = ...) -> None: ...

class Comparison(_message.Message):
    __slots__ = ("tenant", "days", "bounds_s", "models", "pairs", "shadows_json", "aliases_json")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DAYS_FIELD_NUMBER: _ClassVar[int]
    BOUNDS_S_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    SHADOWS_JSON_FIELD_NUMBER: _ClassVar[int]
    ALIASES_JSON_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    days: _containers.RepeatedScalarFieldContainer[str]
    bounds_s: _containers.RepeatedScalarFieldContainer[float]
    models: _containers.RepeatedCompositeFieldContainer[ModelComparison]
    pairs: _containers.RepeatedCompositeFieldContainer[Pair]
    shadows_json: str
    aliases_json: str
    def __init__(self, tenant: _Optional[str] = ..., days: _Optional[_Iterable[str]] = ..., bounds_s: _Optional[_Iterable[float]] = ..., models: _Optional[_Iterable[_Union[ModelComparison, _Mapping]]] = ..., pairs: _Optional[_Iterable[_Union[Pair, _Mapping]]] = ..., shadows_json: _Optional[str] = ..., aliases_json: _Optional[str] = ...) -> None: ...
