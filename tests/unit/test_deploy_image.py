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
