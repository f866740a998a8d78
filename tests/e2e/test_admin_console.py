"""Operating tenants on a live platform: the admin API, the CLI over it, and the console in a real browser."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time

import httpx
import openai
import pytest
from e2e_platform import headless_chromium

from ossfleet.control.apikeys import new_api_key, register_admin_key
from ossfleet.redisdb import connect

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def admin_key(platform):
    key = new_api_key()
    r = connect(platform.redis_url)
    register_admin_key(r, platform.cfg.redis.namespace, "ops", key)
    r.close()
    return key


def h(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def audit(platform) -> list[dict[str, str]]:
    r = connect(platform.redis_url)
    entries = r.xrange("{" + platform.cfg.redis.namespace + "}:audit")
    r.close()
    return [{k.decode(): v.decode() for k, v in f.items()} for _, f in entries]


ROUTES = [
    ("GET", "/admin/v1/tenants", None), ("POST", "/admin/v1/tenants", {"name": "x"}),
    ("GET", "/admin/v1/tenants/acme", None), ("PATCH", "/admin/v1/tenants/acme", {"weight": 2}),
    ("DELETE", "/admin/v1/tenants/acme", None), ("POST", "/admin/v1/tenants/acme/keys", None),
    ("GET", "/admin/v1/tenants/acme/keys", None), ("DELETE", "/admin/v1/tenants/acme/keys/0123456789ab", None),
    ("GET", "/admin/v1/usage", None), ("GET", "/admin/v1/queues", None), ("GET", "/admin/v1/batches", None),
    ("GET", "/admin/v1/audit", None), ("GET", "/admin/v1/nothing-here", None),
]  # fmt: skip


def test_admin_api_refuses_tenant_keys_everywhere_and_changes_nothing(platform):
    before = len(audit(platform))
    for method, path, body in ROUTES:
        r = httpx.request(method, platform.base_url + path, json=body, headers=h(platform.keys["acme"]), timeout=30)
        assert r.status_code == 403 and r.json()["error"]["code"] == "permission_denied", (method, path, r.text)
        r = httpx.request(method, platform.base_url + path, json=body, timeout=30)
        assert r.status_code == 401, (method, path)
        r = httpx.request(method, platform.base_url + path, json=body, headers=h("osf-not-a-key"), timeout=30)
        assert r.status_code == 401, (method, path)
    assert len(audit(platform)) == before
    assert httpx.get(platform.base_url + "/admin/v1/tenants/acme", headers=h(platform.keys["acme"])).status_code == 403


def test_admin_tenants_lifecycle_keys_usage_and_audit(platform, admin_key):
    base = platform.base_url + "/admin/v1"
    r = httpx.post(base + "/tenants", headers=h(admin_key), timeout=30,
                   json={"name": "initech", "budget": {"limit_usd": 2}, "allowed_models": ["gpt-oss-20b"]})  # fmt: skip
    assert r.status_code == 201 and r.json()["usage"]["spent_usd"] == 0
    for bad in ({"name": "initech"}, {"name": "Bad Name"}, {"name": "z", "allowed_models": ["gpt-5"]}, [1, 2]):
        r = httpx.post(base + "/tenants", headers=h(admin_key), json=bad, timeout=30)
        assert r.status_code in (400, 409) and r.json()["error"]["message"], bad
    key = httpx.post(base + "/tenants/initech/keys", headers=h(admin_key), timeout=30).json()["key"]
    # The new tenant serves at once, with no redeploy (any gateway within about a second).
    client = openai.OpenAI(base_url=platform.base_url + "/v1", api_key=key, max_retries=0)
    resp = client.chat.completions.create(model="gpt-oss-20b", messages=[{"role": "user", "content": "hi"}],
                                          max_tokens=4)  # fmt: skip
    assert resp.usage.completion_tokens > 0
    with pytest.raises(openai.NotFoundError, match="not available to tenant"):  # only its allowed model
        client.chat.completions.create(model="gpt-oss-120b", messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=4)  # fmt: skip
    # What deleting the tenant must not hand to a new tenant of the same name: a file, a stored response.
    uploaded = client.files.create(file=("in.jsonl", b'{"custom_id": "a"}\n'), purpose="batch")
    stored = client.responses.create(model="gpt-oss-20b", input="hi", max_output_tokens=4, store=True)
    t = httpx.get(base + "/tenants/initech", headers=h(admin_key), timeout=30).json()
    assert t["usage"]["spent_usd"] > 0 and t["usage"]["models"]["gpt-oss-20b"]["requests"] == 2
    usage = {u["name"]: u for u in httpx.get(base + "/usage", headers=h(admin_key), timeout=30).json()["data"]}
    assert usage["initech"]["spent_usd"] == t["usage"]["spent_usd"]
    keys = httpx.get(base + "/tenants/initech/keys", headers=h(admin_key)).json()["data"]
    prefixes = [k["digest_prefix"] for k in keys]
    assert len(prefixes) == 1 and len(prefixes[0]) == 12 and prefixes[0] not in key  # digests only, never keys
    assert httpx.patch(base + "/tenants/initech", headers=h(admin_key), json={"limits": {"rpm": 5}}).json()[
        "limits"]["rpm"] == 5  # fmt: skip
    assert httpx.delete(base + f"/tenants/initech/keys/{prefixes[0]}", headers=h(admin_key)).status_code == 200
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="gpt-oss-20b", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    deleted = httpx.delete(base + "/tenants/initech", headers=h(admin_key)).json()
    assert deleted["deleted"] is True and deleted["removed"]["files"] == 1 and deleted["removed"]["responses"] == 1
    assert httpx.get(base + "/tenants/initech", headers=h(admin_key)).status_code == 404
    mine = [(e["action"], e["actor"]) for e in audit(platform) if e.get("tenant") == "initech"]
    assert mine == [("tenant_created", "ops"), ("key_issued", "ops"), ("tenant_updated", "ops"),
                    ("key_revoked", "ops"), ("tenant_deleted", "ops"), ("tenant_purged", "ops")]  # fmt: skip
    # hardening: a new tenant of the same name starts empty (no spend, files or stored responses).
    assert httpx.post(base + "/tenants", headers=h(admin_key), json={"name": "initech"}).status_code == 201
    again = httpx.get(base + "/tenants/initech", headers=h(admin_key), timeout=30).json()["usage"]
    assert again["spent_usd"] == 0 and not again.get("models")
    key2 = httpx.post(base + "/tenants/initech/keys", headers=h(admin_key), timeout=30).json()["key"]
    client2 = openai.OpenAI(base_url=platform.base_url + "/v1", api_key=key2, max_retries=0)
    assert list(client2.files.list()) == []
    with pytest.raises(openai.NotFoundError):
        client2.files.retrieve(uploaded.id)
    with pytest.raises(openai.NotFoundError):
        client2.responses.retrieve(stored.id)
    assert httpx.delete(base + "/tenants/initech", headers=h(admin_key)).json()["removed"]["files"] == 0
    assert not any(key in json.dumps(e) for e in audit(platform))  # no secret in the audit stream


def test_admin_budget_lowered_below_what_is_reserved_lets_running_requests_finish_and_refuses_new(platform, admin_key):
    base = platform.base_url + "/admin/v1"
    assert httpx.post(base + "/tenants", headers=h(admin_key), json={"name": "umbrella"}).status_code == 201
    key = httpx.post(base + "/tenants/umbrella/keys", headers=h(admin_key)).json()["key"]
    client = openai.OpenAI(base_url=platform.base_url + "/v1", api_key=key, max_retries=0)
    stream = client.chat.completions.create(
        model="gpt-oss-20b", messages=[{"role": "user", "content": "go"}], max_tokens=200, stream=True,
        extra_body={"ignore_eos": True}, stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = [next(stream), next(stream)]  # it runs: its reservation is held
    reserved = httpx.get(base + "/tenants/umbrella", headers=h(admin_key)).json()["usage"]["reserved_usd"]
    assert reserved > 0
    # hardening: a tenant with a request running is not deleted (its settlement would land in a new
    # tenant's ledger of the same name); the answer says what to do, and nothing changes.
    r = httpx.delete(base + "/tenants/umbrella", headers=h(admin_key))
    assert r.status_code == 409 and r.json()["error"]["code"] == "still_in_use", r.text
    assert "reserved" in r.json()["error"]["message"] and "Revoke its keys" in r.json()["error"]["message"]
    assert httpx.get(base + "/tenants/umbrella", headers=h(admin_key)).status_code == 200
    r = httpx.patch(base + "/tenants/umbrella", headers=h(admin_key), json={"budget": {"limit_usd": reserved / 10}})
    assert r.status_code == 200
    with pytest.raises(openai.RateLimitError, match=r"has \$0\.0 of budget left") as e:
        client.chat.completions.create(model="gpt-oss-20b", messages=[{"role": "user", "content": "x"}], max_tokens=4)
    assert e.value.body["code"] == "budget_exhausted"
    chunks += list(stream)
    assert chunks[-1].usage.completion_tokens == 200  # the running request finished, charged in full


def test_admin_queues_and_batches_views(platform, admin_key):
    # A replica shows once its engine is up and it has sent a heartbeat: wait for that (the 120B pipeline
    # loads its stage actors after Serve reports the deployment running).
    for _ in range(600):
        q = httpx.get(platform.base_url + "/admin/v1/queues", headers=h(admin_key)).json()
        if all(m["replicas"] for m in q["models"]):
            break
        time.sleep(0.2)
    assert q["bands"] == platform.cfg.priorities.bands
    models = {m["model"]: m for m in q["models"]}
    assert set(models) == {"gpt-oss-20b", "gpt-oss-120b"}
    assert all(m["replicas"] and {"running", "max_slots"} <= set(m["replicas"][0]) for m in models.values()), q
    assert set(models["gpt-oss-20b"]["waiting"]) == set(q["bands"])
    assert httpx.get(platform.base_url + "/admin/v1/batches", headers=h(admin_key)).json()["data"] == []
    assert httpx.get(platform.base_url + "/admin/v1/audit?count=0", headers=h(admin_key)).status_code == 400


def test_tenants_and_keys_cli_over_the_admin_api(platform, admin_key):
    env = {**os.environ, "OSSFLEET_ADMIN_KEY": admin_key}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ossfleet.cli", *args, "--url", platform.base_url],
                              env=env, capture_output=True, text=True, timeout=120)  # fmt: skip

    out = cli("tenants", "create", "wayne", "--budget", "3", "--rpm", "30", "--models", "gpt-oss-20b")
    assert out.returncode == 0 and "created wayne" in out.stdout and "rpm 30" in out.stdout, out.stderr
    shown = json.loads(cli("tenants", "show", "wayne", "--json").stdout)
    assert shown["budget"]["limit_usd"] == 3 and shown["allowed_models"] == ["gpt-oss-20b"]
    assert cli("tenants", "update", "wayne", "--streams", "2").stdout.count("streams 2") == 1
    key = cli("keys", "create", "--tenant", "wayne").stdout.strip()
    assert key.startswith("osf-")
    listed = cli("keys", "list", "--tenant", "wayne").stdout.split()
    assert len(listed) == 1
    assert "wayne" in cli("tenants", "list").stdout
    bad = cli("tenants", "create", "wayne")
    assert bad.returncode == 2 and "409" in bad.stderr and "already exists" in bad.stderr
    assert cli("keys", "revoke", "--tenant", "wayne", listed[0]).returncode == 0
    assert cli("tenants", "delete", "wayne").returncode == 0
    tenant_env = {**env, "OSSFLEET_ADMIN_KEY": platform.keys["acme"]}
    unauth = subprocess.run([sys.executable, "-m", "ossfleet.cli", "tenants", "list", "--url", platform.base_url],
                            env=tenant_env, capture_output=True, text=True)  # fmt: skip
    assert unauth.returncode == 2 and "403" in unauth.stderr


def test_admin_over_grpc_same_operations_and_roles(platform, admin_key):
    import grpc

    from ossfleet.v1 import admin_pb2 as apb
    from ossfleet.v1 import admin_pb2_grpc

    channel = grpc.insecure_channel(platform.grpc_target)
    stub = admin_pb2_grpc.AdminStub(channel)
    md = [("application", "gateway"), ("authorization", f"Bearer {admin_key}")]
    try:
        t = stub.CreateTenant(apb.TenantChange(name="cyberdyne", fields_json='{"budget": {"limit_usd": 4}}'),
                              metadata=md, timeout=30)  # fmt: skip
        assert t.name == "cyberdyne" and json.loads(t.config_json)["budget"]["limit_usd"] == 4
        assert t.usage.spent_usd == 0 and t.usage.budget_usd == 4
        t = stub.UpdateTenant(apb.TenantChange(name="cyberdyne", fields_json='{"limits": {"rpm": 9}}'), metadata=md)
        assert json.loads(t.config_json)["limits"]["rpm"] == 9
        key = stub.CreateKey(apb.TenantRequest(name="cyberdyne"), metadata=md)
        assert key.key.startswith("osf-") and len(key.digest_prefix) == 12
        assert [k.digest_prefix for k in stub.ListKeys(apb.TenantRequest(name="cyberdyne"), metadata=md).keys] == [
            key.digest_prefix]  # fmt: skip
        names = [x.name for x in stub.ListTenants(apb.ListTenantsRequest(), metadata=md).tenants]
        assert "cyberdyne" in names and "acme" in names
        assert "cyberdyne" in [x.name for x in stub.GetSpend(apb.SpendRequest(), metadata=md).tenants]
        q = stub.GetQueues(apb.QueuesRequest(), metadata=md)
        assert list(q.bands) == platform.cfg.priorities.bands and {m.model for m in q.models} >= {"gpt-oss-20b"}
        stub.RevokeKey(apb.RevokeKeyRequest(name="cyberdyne", digest_prefix=key.digest_prefix), metadata=md)
        deleted = stub.DeleteTenant(apb.TenantRequest(name="cyberdyne"), metadata=md)
        assert deleted.keys_revoked == 0  # revoked above
        assert set(deleted.removed) == {"files", "responses", "adapters", "batches", "ledger_keys"}  # as HTTP's
        actions = [(dict(e.fields)["action"], dict(e.fields)["actor"]) for e in
                   stub.ReadAudit(apb.AuditRequest(count=6), metadata=md).entries][::-1]  # fmt: skip
        assert actions == [("tenant_created", "ops"), ("tenant_updated", "ops"), ("key_issued", "ops"),
                           ("key_revoked", "ops"), ("tenant_deleted", "ops"), ("tenant_purged", "ops")]  # fmt: skip
        for call, req in ((stub.GetTenant, apb.TenantRequest(name="cyberdyne")),
                          (stub.CreateTenant, apb.TenantChange(name="x", fields_json="[1"))):  # fmt: skip
            with pytest.raises(grpc.RpcError) as e:
                call(req, metadata=md)
            assert e.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)
        tenant_md = [("application", "gateway"), ("authorization", f"Bearer {platform.keys['acme']}")]
        with pytest.raises(grpc.RpcError) as e:
            stub.ListTenants(apb.ListTenantsRequest(), metadata=tenant_md)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        channel.close()


def test_console_in_headless_chromium_creates_a_tenant_and_shows_its_first_spend(platform, admin_key, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with headless_chromium() as driver:
        wait = WebDriverWait(driver, 60)

        def text(selector: str) -> str | None:
            # Read in the page in one step: the page redraws its tables every 2 s, so an element found by one
            # WebDriver call may be gone by the next.
            return driver.execute_script("const e = document.querySelector(arguments[0]); return e && e.textContent",
                                         selector)  # fmt: skip

        # Hardening (#33 finding 10): the console is served with a CSP and frame headers, and runs under them.
        page = httpx.get(platform.base_url + "/console")
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
        assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
        driver.get(platform.base_url + "/console")
        driver.execute_script("window.cspViolations = []; document.addEventListener('securitypolicyviolation', "
                              "e => window.cspViolations.push(e.violatedDirective))")  # fmt: skip
        driver.find_element(By.ID, "key").send_keys(admin_key)
        driver.find_element(By.ID, "connect").click()
        wait.until(lambda d: text("#tenants tr[data-tenant='acme']"))
        driver.find_element(By.ID, "new-name").send_keys("stark")
        driver.find_element(By.ID, "create-tenant").click()
        wait.until(lambda d: text("#tenants tr[data-tenant='stark']"))
        driver.find_element(By.ID, "create-key").click()  # the form holds the tenant just created
        wait.until(lambda d: (text("#new-key") or "").startswith("osf-"))
        key = text("#new-key")
        spent = "#tenants tr[data-tenant='stark'] .spent"
        assert text(spent) == "$0.000000"
        # The new tenant's first request, in the background, while the page keeps refreshing.
        client = openai.OpenAI(base_url=platform.base_url + "/v1", api_key=key, max_retries=0)
        done = threading.Event()

        def first_request() -> None:
            client.chat.completions.create(model="gpt-oss-20b", messages=[{"role": "user", "content": "hello"}],
                                           max_tokens=8)  # fmt: skip
            done.set()

        threading.Thread(target=first_request, daemon=True).start()
        assert done.wait(120)
        wait.until(lambda d: text(spent) not in (None, "$0.000000"))
        assert float((text(spent) or "").lstrip("$")) > 0
        assert text("#replicas tr[data-model='gpt-oss-20b']")
        assert driver.execute_script("return document.querySelectorAll('#queue-chart polyline').length") > 0
        assert driver.execute_script("return [...document.querySelectorAll('#legend span')].every(e => e.style.color)")
        assert driver.execute_script("return window.cspViolations") == []  # the page works under its own CSP
        shot = tmp_path / "console.png"
        driver.execute_script("document.getElementById('new-key').textContent = 'osf-...'")  # no key in an image
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        if os.environ.get("OSSFLEET_CONSOLE_SCREENSHOT"):  # how docs/console.png was made
            shutil.copy(shot, os.environ["OSSFLEET_CONSOLE_SCREENSHOT"])
