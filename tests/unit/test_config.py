from pathlib import Path

import pytest
import yaml

from ossfleet.config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]


def minimal(**extra):
    return {"models": [{"name": "m", "spec": "gpt-oss-20b", "path": "/x"}], **extra}


def test_shipped_configs_load():
    local = load_config(ROOT / "config/local.yaml")
    prod = load_config(ROOT / "config/production.yaml")
    assert [m.name for m in local.models] == [
        "gpt-oss-20b",
        "gpt-oss-120b",
        "llama-3.1-8b",
        "gemma-2-9b",
        "mixtral-8x7b",
    ]
    assert local.redis.url is None and prod.redis.url.startswith("rediss://")
    # Production's 120B pipeline is planned from the catalog: 2 stages on 48 GB GPUs.
    assert prod.model("gpt-oss-120b").stages() == 2
    assert prod.model("gpt-oss-20b").stages() == 1


def test_production_config_plans_every_model_onto_its_gpus():
    """Every model in config/production.yaml fits its GPU as configured: weights, dtype, context."""
    from ossfleet.catalog import GIB, GPU_MEMORY_UTILIZATION, RUNTIME_OVERHEAD_GIB

    prod = load_config(ROOT / "config/production.yaml")
    for m in prod.models:
        plan = m.plan()
        usable = m.gpu_memory_gib * GPU_MEMORY_UTILIZATION * GIB - RUNTIME_OVERHEAD_GIB * GIB
        assert plan.weights == m.weights and plan.max_context == m.max_context
        assert all(w <= usable for w in plan.weight_bytes_per_stage), m.name
        assert plan.kv_cache_tokens >= m.max_context, m.name  # one whole-context request fits every stage
        assert plan.stages == m.stages()


def test_production_layout_that_does_not_fit_is_refused_with_the_numbers():
    raw = yaml.safe_load((ROOT / "config/production.yaml").read_text())
    raw["models"][0]["weights"] = "bf16"  # gpt-oss-20b's experts dequantized: 39 GiB on a 24 GB GPU
    with pytest.raises(ConfigError, match=r"models.0.*gpt-oss-20b \(bf16 weights\) does not fit.*39.0 GiB"):
        parse_config(raw, "<production, bf16>")


def test_relative_model_path_resolves_against_the_config_file():
    cfg = load_config(ROOT / "config/local.yaml")
    assert cfg.model_path(cfg.models[0]) == (ROOT / "var/checkpoints/tiny-gpt-oss-20b").resolve()


def test_error_names_the_file_and_each_bad_field(tmp_path):
    bad = minimal(redis={"lease_s": -1}, priorities={"bands": ["a"], "default": "zzz"})
    bad["models"][0]["max_batch_size"] = 0
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p.resolve()) in msg
    assert "redis.lease_s" in msg
    assert "models.0.max_batch_size" in msg
    assert "default band 'zzz'" in msg


def test_unknown_field_is_refused():
    with pytest.raises(ConfigError, match=r"models\.0\.gpus_per_replica"):
        parse_config({"models": [{"name": "m", "spec": "gpt-oss-20b", "path": "/x", "gpus_per_replica": 2}]})


def test_unknown_spec_lists_the_catalog():
    with pytest.raises(ConfigError, match="gpt-oss-120b"):
        parse_config({"models": [{"name": "m", "spec": "llama", "path": "/x"}]})


def test_tenant_may_only_name_configured_models_and_bands():
    with pytest.raises(ConfigError, match="allowed model 'x'"):
        parse_config(minimal(tenants=[{"name": "a", "allowed_models": ["x"]}]))
    with pytest.raises(ConfigError, match="band 'vip'"):
        parse_config(minimal(tenants=[{"name": "a", "max_band": "vip"}]))


def test_replica_bounds_are_ordered():
    with pytest.raises(ConfigError, match="min"):
        parse_config({"models": [{"name": "m", "spec": "gpt-oss-20b", "path": "/x", "replicas": {"min": 3, "max": 1}}]})


def test_invalid_yaml_and_missing_file(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("models: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_engine_vllm_runs_inside_one_node_and_asks_its_replica_for_every_gpu_it_uses():
    from deployments.app import replica_options
    from ossfleet.config import parse_config

    base = {"name": "m", "spec": "gpt-oss-20b", "path": "/x", "engine": "vllm"}
    with pytest.raises(ConfigError, match="inside one node"):
        parse_config({"models": [{**base, "pipeline_stages": 2}]}, "<t>")
    cfg = parse_config({"models": [{**base, "vllm": {"tensor_parallel_size": 2, "pipeline_parallel_size": 2}}]}, "<t>")
    m = cfg.models[0]
    assert m.enforces_grammars() and not m.own_engine()  # grammars and logprobs yes, adapters no
    assert replica_options(m)["ray_actor_options"]["num_gpus"] == 4


def test_the_cold_start_is_the_configured_figure_or_derived_from_the_weights_and_bandwidths():
    from ossfleet.catalog import CATALOG
    from ossfleet.config import parse_config

    def cfg(autoscaling: dict, device: str) -> object:
        model = {"name": "m", "spec": "gpt-oss-20b", "path": "/x", "device": device, "gpu_memory_gib": 80}
        return parse_config({"autoscaling": autoscaling, "models": [model]}, "<test>")

    c = cfg({"cold_start_s": 12}, "cuda")
    assert c.cold_start_s(c.models[0]) == 12
    ckpt = CATALOG["gpt-oss-20b"].checkpoint_bytes
    c = cfg({"startup_s": 10, "weights_read_gib_s": 1.0}, "cpu")  # no device copy on a CPU
    assert c.cold_start_s(c.models[0]) == 10 + ckpt / 2**30
    c = cfg({"startup_s": 10, "weights_read_gib_s": 1.0, "host_to_device_gib_s": 20.0}, "cuda")
    resident = max(c.models[0].plan().weight_bytes_per_stage)
    assert c.cold_start_s(c.models[0]) == 10 + ckpt / 2**30 + resident / (20 * 2**30)
