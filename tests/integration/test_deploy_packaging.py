"""The package as it ships: the wheel pip builds from this tree, and that wheel installed (not editable) in a
fresh venv, the way the Dockerfile and users install it.

The editable install every other test runs from reads the source tree, so it cannot see a module, Lua
script, proto or page the wheel leaves out (an earlier hand-kept package list shipped without
ossfleet.protocol, and the gateway could not import).
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Source root -> where its files land in the wheel.
ROOTS = {ROOT / "platform" / "ossfleet": "ossfleet", ROOT / "deployments": "deployments",
         ROOT / "autoscaling": "autoscaling"}  # fmt: skip
SHIPPED = {".py", ".pyi", ".lua", ".proto", ".html", ".js", ".css", ".typed"}


def source_files() -> set[str]:
    """Every file under the package roots that belongs in the wheel, as its path in the wheel."""
    out = set()
    for root, prefix in ROOTS.items():
        for p in root.rglob("*"):
            if p.is_file() and p.suffix in SHIPPED and "__pycache__" not in p.parts:
                out.add(f"{prefix}/{p.relative_to(root).as_posix()}")
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel `pip wheel .` builds from a copy of the tree (the build must not write into the checkout)."""
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    (path,) = out.glob("ossfleet-*.whl")
    return path


def test_deploy_wheel_holds_every_module_script_proto_and_page(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = source_files()
    # The check itself sees what matters: the packages, the queue's Lua, the protos, the console.
    for must in ("ossfleet/protocol/__init__.py", "ossfleet/control/lua/pull.lua", "ossfleet/v1/ossfleet.proto",
                 "ossfleet/api/console/index.html", "deployments/app.py", "autoscaling/__init__.py"):  # fmt: skip
        assert must in expected, must
    missing = sorted(expected - names)
    assert not missing, f"the wheel leaves out {missing}"
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "ossfleet = ossfleet.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_deploy_wheel_installed_in_a_clean_venv_imports_every_module_and_runs_the_cli(wheel, tmp_path):
    """A fresh venv gets the wheel and nothing of the checkout. Its third-party dependencies are this venv's
    (a .pth line to its site-packages, the wheels already installed here) so that no download is needed; that
    directory holds only an editable *hook* for ossfleet, which a .pth-added path never runs, so every
    ossfleet module must come from the wheel."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    site = Path(
        subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                       capture_output=True, text=True, check=True).stdout.strip()
    )  # fmt: skip
    (site / "zz-ossfleet-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = subprocess.run(
        [str(py), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-3000:]

    modules = sorted(
        name.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        for name in source_files()
        if name.endswith(".py")
    )
    script = (
        "import importlib, sys\n"
        f"site = {str(site)!r}\n"
        f"for m in {modules!r}:\n"
        "    mod = importlib.import_module(m)\n"
        "    assert mod.__file__.startswith(site), (m, mod.__file__)\n"
        "print(len(sys.modules))\n"
    )
    # -I: no current directory, PYTHONPATH or user site on the path; cwd outside the checkout anyway.
    imported = subprocess.run([str(py), "-I", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                              timeout=600)  # fmt: skip
    assert imported.returncode == 0, imported.stderr[-3000:]

    cli = subprocess.run([str(venv / "bin" / "ossfleet"), "--help"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert "render-serve-config" in cli.stdout and "up" in cli.stdout
