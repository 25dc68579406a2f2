"""What this machine can do: GPU, bf16, Unsloth, Colab. Used to pick the backend and defaults."""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class RuntimeReport:
    cuda: bool
    gpu_name: str | None
    gpu_memory_gb: float | None
    bf16: bool
    unsloth: bool
    colab: bool
    cpu_threads: int
    torch_version: str | None
    python_version: str

    @property
    def backend(self) -> str:
        """The training backend `auto` resolves to: "unsloth" or "transformers"."""
        return "unsloth" if self.cuda and self.unsloth else "transformers"

    def summary(self) -> str:
        """One line for people, e.g. 'CPU only (2 threads), bf16: yes, backend: transformers'."""
        if self.cuda:
            device = f"GPU {self.gpu_name} ({self.gpu_memory_gb:.1f} GB)"
        else:
            device = f"CPU only ({self.cpu_threads} threads)"
        where = ", Colab" if self.colab else ""
        return (
            f"{device}{where}, bf16: {'yes' if self.bf16 else 'no'}, "
            f"Unsloth: {'yes' if self.unsloth else 'no'}, backend: {self.backend}, "
            f"torch {self.torch_version or 'missing'}, Python {self.python_version}"
        )

    def as_dict(self) -> dict:
        return asdict(self) | {"backend": self.backend}


def in_colab() -> bool:
    return "google.colab" in sys.modules or importlib.util.find_spec("google.colab") is not None


def _unsloth_importable(cuda: bool) -> bool:
    # Unsloth raises at import without a CUDA GPU, so only a GPU machine can answer yes.
    if not cuda or importlib.util.find_spec("unsloth") is None:
        return False
    try:
        import unsloth  # noqa: F401
    except Exception:
        return False
    return True


def _cpu_bf16() -> bool:
    # AVX-512 BF16 or AMX make bf16 matmuls several times faster than fp32 on CPU; without them
    # bf16 autocast is emulated and slower, so report it as unsupported.
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def runtime_report() -> RuntimeReport:
    """Inspect the machine.

    On a CUDA machine with Unsloth installed this imports unsloth to learn whether it works.
    That import patches transformers, which Unsloth needs to happen before transformers is
    used, so the notebooks call runtime_report() in their first cells.

    >>> runtime_report().summary()  # doctest: +SKIP
    'CPU only (2 threads), bf16: yes, Unsloth: no, backend: transformers, torch 2.13.0+cpu, ...'
    """
    torch_version = gpu_name = gpu_mem = None
    cuda = bf16 = False
    try:
        import torch

        torch_version = torch.__version__
        cuda = torch.cuda.is_available()
        if cuda:
            props = torch.cuda.get_device_properties(0)
            gpu_name, gpu_mem = props.name, props.total_memory / 1024**3
            bf16 = torch.cuda.is_bf16_supported()
        else:
            bf16 = _cpu_bf16()
        threads = torch.get_num_threads()
    except ImportError:
        threads = os.cpu_count() or 1
    return RuntimeReport(
        cuda=cuda,
        gpu_name=gpu_name,
        gpu_memory_gb=gpu_mem,
        bf16=bf16,
        unsloth=_unsloth_importable(cuda),
        colab=in_colab(),
        cpu_threads=threads,
        torch_version=torch_version,
        python_version=sys.version.split()[0],
    )
