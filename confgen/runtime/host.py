"""What this machine can run: an NVIDIA GPU? Docker?"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class HostInfo:
    gpu: bool
    gpu_reason: str
    docker: bool


def detect() -> HostInfo:
    gpu, reason = _nvidia_gpu()
    return HostInfo(gpu=gpu, gpu_reason=reason, docker=shutil.which("docker") is not None)


def _nvidia_gpu() -> tuple[bool, str]:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        if Path("/dev/nvidia0").exists():
            return True, "found /dev/nvidia0"
        return False, "no nvidia-smi and no /dev/nvidia0"
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"nvidia-smi failed: {exc}"
    if out.returncode == 0 and "GPU" in out.stdout:
        return True, out.stdout.strip().splitlines()[0]
    return False, "nvidia-smi lists no GPU"
