"""What a checkpoint, an adapter and the base model are on disk, read before anything is
written: a safetensors file's header (checked complete), a checkpoint's shards, a JSON file, a
saved adapter folder (read_adapter), the base model an adapter names (a 4-bit one replaced by
its 16-bit original), and the checks before writing one (free disk, output folder)."""

from __future__ import annotations

import json
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from lorahelpers.errors import ExportError

FOUR_BIT_SUFFIXES = ("-unsloth-bnb-4bit", "-bnb-4bit")


class MergeError(ExportError):
    pass


def read_header(path: Path) -> dict:
    """The safetensors header of `path`, after checking the file is complete."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        n = struct.unpack("<Q", raw)[0] if len(raw) == 8 else -1
        if n <= 0 or n > size - 8:
            raise MergeError(f"{path} is not a safetensors file (bad header length). Fix: "
                             "re-copy or re-download it.")
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise MergeError(f"{path}: unreadable safetensors header ({e}). Fix: re-copy or "
                             "re-download it.") from None
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"),
              default=0)
    if 8 + n + end != size:
        raise MergeError(f"{path} is truncated or damaged: its header describes "
                         f"{8 + n + end} bytes, the file has {size}. Fix: re-copy or "
                         "re-download it.")
    return header


def checkpoint_shards(model_dir: Path) -> list[Path]:
    """The safetensors files of a Hugging Face checkpoint, in order, each checked complete."""
    model_dir = Path(model_dir)
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (model_dir / "model.safetensors").is_file():
        names = ["model.safetensors"]
    else:
        raise MergeError(f"{model_dir} holds no model.safetensors (or index): streaming needs "
                         "safetensors weights. Fix: save the model again with "
                         "save_pretrained().")
    shards = [model_dir / n for n in names]
    for shard in shards:
        if not shard.is_file():
            raise MergeError(f"{index} lists {shard.name}, which is missing from {model_dir}. "
                             "Fix: copy the whole checkpoint again.")
        read_header(shard)
    return shards


def read_json(path: Path, error: type, fix_missing: str, fix_invalid: str) -> dict:
    """The JSON in `path` (a checkpoint's config.json, an adapter's adapter_config.json), or
    `error` saying that it is missing or not JSON, with the fix for each.

    >>> read_json(Path("m/config.json"), ExportError, "pass a checkpoint.", "save it again.")
    Traceback (most recent call last):
    ...
    lorahelpers.errors.ExportError: m has no config.json. Fix: pass a checkpoint.
    """
    if not path.is_file():
        raise error(f"{path.parent} has no {path.name}. Fix: {fix_missing}")
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise error(f"{path} is not valid JSON ({e}). Fix: {fix_invalid}") from None


@dataclass(frozen=True)
class AdapterFiles:
    """A saved PEFT LoRA adapter (what save_adapter writes): its folder, adapter_config.json,
    the weights file and the base model (as given, else as the config names it)."""

    dir: Path
    config: dict
    weights: Path           # adapter_model.safetensors, or an older adapter_model.bin
    base: str

    def tensor_names(self) -> list[str]:
        if self.weights.suffix == ".safetensors":
            return [k for k in read_header(self.weights) if k != "__metadata__"]
        return list(self.tensors())

    def tensors(self) -> dict[str, torch.Tensor]:
        if self.weights.suffix == ".safetensors":
            read_header(self.weights)  # a truncated file is named, not a cryptic load error
            return load_file(self.weights)
        return torch.load(self.weights, map_location="cpu", weights_only=True)


def read_adapter(adapter_dir, base=None, error: type = MergeError) -> AdapterFiles:
    """The adapter saved in `adapter_dir`, its base `base` (default: the one its config names);
    `error` (a LorahelpersError class) when a file is missing or no base is named.

    >>> read_adapter("outputs/adapter").base  # doctest: +SKIP
    'HuggingFaceTB/SmolLM2-135M-Instruct'
    """
    adapter_dir = Path(adapter_dir)
    path = adapter_dir / "adapter_config.json"
    config = read_json(path, error, "pass the directory that train() or save_adapter() wrote "
                       "(a PEFT model's save_pretrained()).",
                       "save the adapter again (lorahelpers.models.save_adapter).")
    weights = next((adapter_dir / n for n in ("adapter_model.safetensors", "adapter_model.bin")
                    if (adapter_dir / n).is_file()), None)
    if weights is None:
        raise error(f"{adapter_dir} has no adapter_model.safetensors. Fix: save the adapter "
                    "again (lorahelpers.models.save_adapter).")
    named = str(base) if base is not None else config.get("base_model_name_or_path")
    if not named:
        raise error(f"{path} names no base model. Fix: pass the base model's directory or Hub "
                    "name (base_dir= to merge_lora, base= to load_adapter).")
    return AdapterFiles(adapter_dir, config, weights, named)


def check_free_disk(path, needed_bytes: float, what: str, free: int | None = None,
                    *, details: str = "") -> None:
    """Raise ExportError when the disk under `path` (or its nearest existing parent) has less
    than `needed_bytes` free for `what`; `details` (e.g. a table of sizes) joins the message.
    `free` replaces the measured free bytes.

    >>> check_free_disk(".", 2 * 10**9, "merging into out/merged", free=10**9)
    Traceback (most recent call last):
    ...
    lorahelpers.errors.ExportError: Not enough disk space in .: 1.0 GB free, but merging into out/merged needs about 2.0 GB there. Fix: ...
    """
    path = Path(path)
    probe = next(p for p in [path, *path.parents] if p.exists())
    free = shutil.disk_usage(probe).free if free is None else free
    if free < needed_bytes:
        raise ExportError(
            f"Not enough disk space in {probe}: {_size(free)} free, but {what} needs about "
            f"{_size(needed_bytes)} there" + (f":\n{details}\n" if details else ". ")
            + "Fix: free disk space, write to another disk, or export fewer GGUF types "
            "(q4_k_m alone is the smallest).")


def _size(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def check_output_dir(out_dir: Path) -> None:
    """Refuse an `out_dir` that holds something other than an earlier checkpoint, which
    writing there would replace.

    >>> check_output_dir(Path("outputs/merged"))  # doctest: +SKIP
    """
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / "config.json").is_file():
        raise MergeError(f"{out_dir} exists and is not a model checkpoint; refusing to "
                         "replace it. Fix: choose another output directory.")


def original_16bit_name(name: str) -> str | None:
    """The 16-bit repository Unsloth publishes next to a 4-bit one, e.g.
    'unsloth/llama-3-8b-bnb-4bit' -> 'unsloth/llama-3-8b'; None if `name` is not 4-bit."""
    for suffix in FOUR_BIT_SUFFIXES:
        if name.rstrip("/").endswith(suffix):
            return name.rstrip("/")[: -len(suffix)]
    return None


def _is_4bit(path: Path) -> bool:
    q = json.loads((path / "config.json").read_text()).get("quantization_config") or {}
    return bool(q.get("load_in_4bit")) or q.get("quant_method") in ("bitsandbytes_4bit",)


def fetch_base(name: str) -> Path | None:
    """A local directory, or a Hub repository from the local cache or a download of its
    config, tokenizer and safetensors; None when it cannot be had."""
    if Path(name).expanduser().is_dir():
        return Path(name).expanduser()
    if name.count("/") != 1:
        return None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, allow_patterns=[
            "*.json", "*.safetensors", "*.jinja", "tokenizer*", "*.model", "*.txt"]))
    except Exception:
        return None


def resolve_base(requested: str, progress=print) -> tuple[Path, str, bool]:
    """(16-bit base directory, `requested` (a directory or Hub name), whether that was a 4-bit
    base, replaced by its 16-bit original).

    >>> resolve_base("outputs/base")  # doctest: +SKIP
    (PosixPath('outputs/base'), 'outputs/base', False)
    """
    path = None if original_16bit_name(requested) else fetch_base(requested)
    if path is None and not original_16bit_name(requested):
        raise MergeError(f"Cannot find the base model {requested}: it is neither a local "
                         "directory nor downloadable here. Fix: pass its directory as "
                         "base_dir.")
    if path is not None and not (path / "config.json").is_file():
        raise MergeError(f"{path} has no config.json. Fix: pass the base model's checkpoint "
                         "directory as base_dir.")
    if path is not None and not _is_4bit(path):
        return path, requested, False
    if path is not None:
        named = json.loads((path / "config.json").read_text()).get("_name_or_path", "")
        original = original_16bit_name(named) or original_16bit_name(requested)
    else:
        original = original_16bit_name(requested)
    if original is None:
        raise MergeError(f"{requested} is 4-bit quantized; merging needs the 16-bit weights "
                         "it was made from. Fix: pass them as base_dir.")
    path16 = fetch_base(original)
    if path16 is None or _is_4bit(path16):
        raise MergeError(
            f"The adapter was trained on the 4-bit {requested}; merging needs its 16-bit "
            f"original {original}, which is neither local nor downloadable here. Fix: download it "
            f"where the Hugging Face Hub is reachable (huggingface-cli download {original}) "
            "and pass its directory as base_dir.")
    progress(f"{requested} is 4-bit; using its 16-bit original {path16}.")
    return path16, requested, True
