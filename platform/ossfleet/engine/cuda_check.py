"""Refuse to start a GPU replica whose NVIDIA driver is older than its torch's CUDA needs, saying so.

torch's default Linux wheels moved to CUDA 13, which needs driver 580 or newer (CUDA's minor-version
compatibility: any 13.x runs on a 580+ driver, any 12.x on 525.60.13+). On an older driver torch only finds
no GPU, and the replica would fail later with an error that names neither the driver nor the fix.
"""

from __future__ import annotations

# CUDA major -> the oldest Linux driver that runs every minor of it.
MIN_DRIVER = {12: (525, 60, 13), 13: (580, 65, 6)}


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.strip().split(".") if p.isdigit())


def driver_problem(torch_cuda: str | None, driver: str | None) -> str | None:
    """Why a driver cannot run a torch built for ``torch_cuda`` ("13.0"); None when it can or when either
    is unknown (a CPU build of torch, or no NVML to ask)."""
    if not torch_cuda or not driver:
        return None
    need = MIN_DRIVER.get(_version(torch_cuda)[0])
    if need is None or _version(driver) >= need:
        return None
    wanted = ".".join(map(str, need))
    return (
        f"NVIDIA driver {driver} is too old for this torch, built for CUDA {torch_cuda} (it needs {wanted} or "
        f"newer): use a node image with a newer driver, or install torch built for an older CUDA"
    )


def nvml_driver_version() -> str | None:
    """The driver's version through NVML (nvidia-ml-py, the `gpu` extra); None without it or a GPU."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return None
    return version.decode() if isinstance(version, bytes) else str(version)


def check_cuda_driver(device: str) -> None:
    """Raise, naming the driver and what it needs, before a GPU engine loads on a driver its torch cannot use."""
    if not device.startswith("cuda"):
        return
    import torch

    problem = driver_problem(torch.version.cuda, nvml_driver_version())
    if problem:
        raise RuntimeError(problem)
    if not torch.cuda.is_available():
        raise RuntimeError(
            f"device {device!r} asked for, but torch (CUDA {torch.version.cuda}) finds no GPU: check the node's "
            "NVIDIA driver (nvidia-smi) and that the pod was given a GPU"
        )
