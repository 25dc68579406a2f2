"""What this machine can do: GPU, bf16, Unsloth, Colab. Used to pick the backend and defaults."""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

# Training precisions a user can ask for; "auto" is RuntimeReport.precision.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def check_precision(value: str, name: str = "precision") -> str:
    """`value` if it is one of PRECISIONS, else a SettingsError naming the setting `name`.

    >>> check_precision("fp32")
    'fp32'
    """
    from lorahelpers.errors import SettingsError

    if value not in PRECISIONS:
        raise SettingsError(f"{name} is {value!r}. Fix: use one of {', '.join(PRECISIONS)}")
    return value


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
    capability: tuple[int, int] | None = None  # CUDA compute capability, e.g. (7, 5) on a T4
    precision_reason: str = ""
    unsloth_error: str | None = None  # why `import unsloth` failed on a GPU, if it did

    @property
    def precision(self) -> str:
        """The training precision: "bf16", "fp16" (GPUs without native bf16) or "fp32"."""
        return "bf16" if self.bf16 else ("fp16" if self.cuda else "fp32")

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
        why = f" ({self.precision_reason})" if self.precision_reason else ""
        unsloth = "yes" if self.unsloth else "no"
        if self.unsloth_error:
            unsloth += f" (import failed: {self.unsloth_error})"
        return (
            f"{device}{where}, precision: {self.precision}{why}, "
            f"Unsloth: {unsloth}, backend: {self.backend}, "
            f"torch {self.torch_version or 'missing'}, Python {self.python_version}"
        )

    def as_dict(self) -> dict:
        return asdict(self) | {"backend": self.backend, "precision": self.precision}

    def _repr_html_(self) -> str:
        import html

        return f"<pre>{html.escape(self.summary())}</pre>"


def choose_precision(cuda: bool, capability: tuple[int, int] | None,
                     cpu_bf16: bool) -> tuple[bool, str]:
    """(train in bf16?, why) for a device. On CUDA bf16 needs compute capability 8.0 or more
    (Ampere and later); a T4 (7.5) trains in fp16, although torch.cuda.is_bf16_supported()
    answers True there (it counts emulated bf16, which is slow). On CPU bf16 autocast pays
    only with AVX-512 BF16 or AMX.

    >>> choose_precision(True, (7, 5), False)
    (False, 'compute capability 7.5 has no native bf16: fp16 mixed precision')
    """
    if cuda:
        major, minor = capability or (0, 0)
        if major >= 8:
            return True, f"compute capability {major}.{minor} has native bf16"
        return False, f"compute capability {major}.{minor} has no native bf16: fp16 mixed precision"
    if cpu_bf16:
        return True, "CPU has AVX-512 BF16/AMX: bf16 autocast"
    return False, "CPU without AVX-512 BF16/AMX: float32"


def in_colab() -> bool:
    return "google.colab" in sys.modules or importlib.util.find_spec("google.colab") is not None


def _unsloth_status(cuda: bool) -> tuple[bool, str | None]:
    """(importable, why not). Unsloth raises at import without a CUDA GPU, so only a GPU
    machine can answer yes; there a failed import is reported with its reason rather than
    silently falling back to the slower backend."""
    if not cuda or importlib.util.find_spec("unsloth") is None:
        return False, None
    try:
        import unsloth  # noqa: F401
    except Exception as err:  # noqa: BLE001 - any failure means the transformers backend
        return False, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return True, None


# Set to 0 to run as if the CPU had no fast bf16 (training then defaults to float32): how the
# suite is run for CPUs without AVX-512 BF16/AMX, and a way out for a user whose CPU misbehaves.
CPU_BF16_ENV = "LORAHELPERS_CPU_BF16"


def cpu_bf16_switched_off(env=None) -> bool:
    """Whether LORAHELPERS_CPU_BF16=0 (or false/no/off) asks to treat the CPU as without bf16.

    >>> cpu_bf16_switched_off({"LORAHELPERS_CPU_BF16": "0"})
    True
    """
    value = (os.environ if env is None else env).get(CPU_BF16_ENV, "")
    return value.strip().lower() in ("0", "false", "no", "off")


def _cpu_bf16() -> bool:
    # AVX-512 BF16 or AMX make bf16 matmuls several times faster than fp32 on CPU; without them
    # bf16 autocast is emulated and slower, so report it as unsupported.
    if cpu_bf16_switched_off():
        return False
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
    'CPU only (2 threads), precision: bf16 (CPU has AVX-512 BF16/AMX: bf16 autocast), ...'
    """
    torch_version = gpu_name = gpu_mem = capability = None
    cuda = False
    try:
        import torch

        torch_version = torch.__version__
        cuda = torch.cuda.is_available()
        if cuda:
            props = torch.cuda.get_device_properties(0)
            gpu_name, gpu_mem = props.name, props.total_memory / 1024**3
            capability = (props.major, props.minor)
        threads = torch.get_num_threads()
    except ImportError:
        threads = os.cpu_count() or 1
    bf16, reason = choose_precision(cuda, capability, not cuda and _cpu_bf16())
    if not cuda and cpu_bf16_switched_off():
        reason = f"{CPU_BF16_ENV}=0: float32"
    unsloth, unsloth_error = _unsloth_status(cuda)
    return RuntimeReport(
        cuda=cuda,
        gpu_name=gpu_name,
        gpu_memory_gb=gpu_mem,
        bf16=bf16,
        unsloth=unsloth,
        colab=in_colab(),
        cpu_threads=threads,
        torch_version=torch_version,
        python_version=sys.version.split()[0],
        capability=capability,
        precision_reason=reason,
        unsloth_error=unsloth_error,
    )


EMBEDDED = "embedded"  # stands for lorahelpers.models.embedded_base()
GPU_MODEL = "unsloth/Llama-3.2-3B-Instruct-bnb-4bit"


def machine_defaults(cuda: bool) -> dict:
    """The defaults that depend on the machine alone, decided here and nowhere else (the
    notebooks' lorahelpers.params.device_defaults adds each notebook's data to them; training
    and model loading read them directly).

    On a CUDA GPU: an Unsloth 4-bit Llama-3.2 Instruct model with Unsloth's notebook settings
    (2 conversations per micro-batch x 4 accumulated = 8 per step, 60 steps, 2e-4). On CPU
    (measured on the embedded 135M model): the embedded SmolLM2-135M, 8 per step without
    accumulation, 40 steps at 5e-4, 256 tokens per example.

    >>> d = machine_defaults(cuda=False); (d["batch_size"], d["grad_accum"], d["max_seq_length"])
    (8, 1, 256)
    """
    gpu = cuda
    return {"model": GPU_MODEL if gpu else EMBEDDED, "chat_format": "llama3" if gpu else "chatml",
            "load_in_4bit": gpu, "scorer": "exact",
            "quants": ("q4_k_m", "q8_0") if gpu else ("q8_0",),
            "batch_size": 2 if gpu else 8, "grad_accum": 4 if gpu else 1,
            "learning_rate": 2e-4 if gpu else 5e-4, "max_steps": 60 if gpu else 40,
            "max_seq_length": 2048 if gpu else 256}


def cache_dir() -> Path:
    """Where lorahelpers keeps what it builds once per user: $LORAHELPERS_CACHE, else
    $XDG_CACHE_HOME/lorahelpers, else ~/.cache/lorahelpers."""
    if os.environ.get("LORAHELPERS_CACHE"):
        return Path(os.environ["LORAHELPERS_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "lorahelpers"


def free_torch_memory() -> str:
    """Return the GPU memory PyTorch no longer uses to the driver, so that llama.cpp and Ollama
    can have it; call it after `del model`. A one-line report; nothing to do on CPU.

    >>> del model; print(free_torch_memory())  # doctest: +SKIP
    GPU memory held by PyTorch: 9.8 GB -> 0.1 GB
    """
    import gc

    import torch

    gc.collect()
    if not torch.cuda.is_available():
        return "CPU runtime: nothing to free on a GPU"
    before = torch.cuda.memory_reserved() / 1e9
    torch.cuda.empty_cache()
    return f"GPU memory held by PyTorch: {before:.1f} GB -> {torch.cuda.memory_reserved() / 1e9:.1f} GB"
