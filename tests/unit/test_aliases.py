"""A/B aliases: the split by weight, its stickiness per end user, and the config's checks."""

from __future__ import annotations

import pytest

from ossfleet.config import AliasConfig, TenantConfig, parse_config
from ossfleet.control.aliases import choose, point


def shares(alias: AliasConfig, users: int, tenant: str = "acme", name: str = "assistant") -> dict[str, float]:
    counts = dict.fromkeys(alias.models, 0)
    for u in range(users):
        counts[choose(alias, point(tenant, name, f"user-{u}"))] += 1
    return {m: c / users for m, c in counts.items()}


@pytest.mark.parametrize(
    "weights", [{"a": 1, "b": 1}, {"a": 3, "b": 1}, {"a": 1, "b": 1, "c": 2}, {"a": 0.1, "b": 9.9}]
)
def test_a_thousand_users_split_within_three_points_of_the_weights(weights):
    alias = AliasConfig(models=weights)
    got = shares(alias, 1000)
    total = sum(weights.values())
    assert max(abs(got[m] - w / total) for m, w in weights.items()) <= 0.03, got


def test_a_user_stays_on_one_model_and_other_tenants_or_aliases_split_independently():
    alias = AliasConfig(models={"a": 1, "b": 1})
    for u in range(200):
        first = choose(alias, point("acme", "assistant", f"u{u}"))
        assert all(choose(alias, point("acme", "assistant", f"u{u}")) == first for _ in range(3))
    here = [choose(alias, point("acme", "assistant", f"u{u}")) for u in range(200)]
    there = [choose(alias, point("globex", "assistant", f"u{u}")) for u in range(200)]
    assert here != there  # the hash covers the tenant: one tenant's users are not another's split


def test_a_weight_change_moves_only_the_users_whose_share_changed_hands():
    before = AliasConfig(models={"a": 1, "b": 1})
    after = AliasConfig(models={"a": 3, "b": 1})  # a grows from half to three quarters
    moved = [
        u for u in range(1000) if choose(before, point("t", "x", str(u))) != choose(after, point("t", "x", str(u)))
    ]
    assert all(choose(after, point("t", "x", str(u))) == "a" for u in moved)  # only towards the grown model
    assert 0.2 <= len(moved) / 1000 <= 0.3


def test_the_config_checks_alias_names_and_targets():
    models = [{"name": "gpt-oss-20b", "spec": "gpt-oss-20b", "path": "/x"},
              {"name": "llama-3.1-8b", "spec": "llama-3.1-8b", "path": "/y"}]  # fmt: skip
    ok = {"name": "acme", "aliases": {"assistant": {"models": {"gpt-oss-20b": 1, "llama-3.1-8b": 1}}}}
    cfg = parse_config({"models": models, "tenants": [ok]}, "<t>")
    assert cfg.tenants[0].aliases["assistant"].models == {"gpt-oss-20b": 1, "llama-3.1-8b": 1}
    for bad, why in (
        ({"gpt-oss-20b": {"models": {"llama-3.1-8b": 1}}}, "is the name of a model"),
        ({"assistant": {"models": {"nope": 1}}}, "'nope', not a configured model"),
    ):
        with pytest.raises(Exception, match=why):
            parse_config({"models": models, "tenants": [{"name": "acme", "aliases": bad}]}, "<t>")
    limited = {"name": "acme", "allowed_models": ["gpt-oss-20b"], "aliases": ok["aliases"]}
    with pytest.raises(Exception, match="which the tenant may not use"):
        parse_config({"models": models, "tenants": [limited]}, "<t>")
    with pytest.raises(Exception, match="greater than 0"):
        AliasConfig(models={"a": 0})
    # A PATCH that sets an alias to null removes it.
    assert TenantConfig(name="acme", aliases={"assistant": None, "b": {"models": {"m": 1}}}).aliases.keys() == {"b"}


def test_the_cli_turns_alias_options_into_the_tenant_fields_the_api_validates():
    import argparse

    from ossfleet.admin_cli import _fields, _tenant_options

    p = argparse.ArgumentParser()
    _tenant_options(p)
    args = p.parse_args(["--alias", "assistant=gpt-oss-20b:3,llama-3.1-8b", "--remove-alias", "old"])
    want = {"old": None, "assistant": {"models": {"gpt-oss-20b": 3.0, "llama-3.1-8b": 1.0}}}
    assert _fields(args) == {"aliases": want}
    with pytest.raises(SystemExit, match="weights are numbers"):
        _fields(p.parse_args(["--alias", "a=m:x"]))
    assert "aliases" not in _fields(p.parse_args([]))
