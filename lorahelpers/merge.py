"""Merge a LoRA adapter into its 16-bit base weights, streaming.

The base's safetensors shards are read a block of rows at a time and the merged rows written
straight into the output shard (its header is known up front: same names, dtypes and shapes),
so memory stays at one block plus the adapter, whatever the model size. The merge is
W' = W + scale * B @ A in float32, cast back to the base dtype, with scale = alpha / r
(alpha / sqrt(r) with rsLoRA).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from lorahelpers.atomic import atomic_dir
from lorahelpers.errors import ExportError

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
          "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
          "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}
BLOCK_BYTES = 64 * 2**20  # float32 working set per block of rows
FOUR_BIT_SUFFIXES = ("-unsloth-bnb-4bit", "-bnb-4bit")
EMBED, LM_HEAD = "model.embed_tokens.weight", "lm_head.weight"


class MergeError(ExportError):
    pass


@dataclass(frozen=True)
class MergeResult:
    """What merge_lora wrote and which weights it merged into."""

    out_dir: Path
    base_dir: Path          # the 16-bit weights the adapter was merged into
    base_requested: str     # the base the adapter names (or base_dir as passed)
    from_4bit: bool         # trained on a 4-bit base; merged into its 16-bit original
    merged: int             # tensors the adapter changed
    tensors: int            # tensors written
    untied: bool            # lm_head written apart from the embeddings (the adapter changed one)
    seconds: float

    def summary(self) -> str:
        base = (f"{self.base_dir} (16-bit original of the 4-bit {self.base_requested} the "
                "adapter was trained on)" if self.from_4bit else str(self.base_dir))
        untied = "; lm_head untied from the embeddings" if self.untied else ""
        return (f"Merged {self.merged} of {self.tensors} tensors into {base}{untied}: "
                f"{self.out_dir} ({self.seconds:.1f} s)")


@dataclass
class _Lora:
    left: torch.Tensor | None = None   # rows of the update: delta[rows] = left[rows] @ right
    right: torch.Tensor | None = None
    scale: float = 1.0
    magnitude: torch.Tensor | None = None  # DoRA


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


def merge_lora(adapter_dir, out_dir, base_dir=None, chat_format=None, progress=print,
               ) -> MergeResult:
    """Merge the PEFT LoRA adapter in `adapter_dir` into its base and write an ordinary
    Hugging Face checkpoint (safetensors, config, tokenizer) to `out_dir`, atomically.
    `base_dir` defaults to the adapter's base_model_name_or_path; a 4-bit (bnb) base is
    replaced by its 16-bit original. `chat_format` installs that template in the tokenizer.

    >>> merge_lora("outputs/adapter", "outputs/merged").summary()  # doctest: +SKIP
    'Merged 210 of 272 tensors into ...'
    """
    start = time.monotonic()
    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    config = _adapter_config(adapter_dir)
    base, requested, from_4bit = resolve_base(config, base_dir)
    if from_4bit:
        progress(f"The adapter was trained on the 4-bit {requested}; merging into its 16-bit "
                 f"original {base}.")
    shards = checkpoint_shards(base)
    adapter = loras, replaced, own_base = _load_adapter(adapter_dir, config)
    headers = [read_header(s) for s in shards]
    base_keys = {k for h in headers for k in h if k != "__metadata__"}
    for key in [*loras, *replaced, *own_base]:
        if key not in base_keys and not (key == LM_HEAD and EMBED in base_keys):
            raise MergeError(f"{adapter_dir}: the adapter changes {key}, which {base} does not "
                             "have. Fix: pass the base the adapter was trained on.")
    touched = set(loras) | set(replaced)
    # Tied embeddings that the adapter changes on one side only must be written apart;
    # transformers would otherwise tie them again on load.
    tied = json.loads((base / "config.json").read_text()).get("tie_word_embeddings",
                                                             LM_HEAD not in base_keys)
    untie = bool(tied) and EMBED in base_keys and bool({EMBED, LM_HEAD} & touched)
    check_output_dir(out_dir)
    _check_disk(out_dir, sum(s.stat().st_size for s in shards) * (1.3 if untie else 1.0))

    with atomic_dir(out_dir) as tmp:
        weight_map, written, total = {}, 0, 0
        for i, (shard, header) in enumerate(zip(shards, headers, strict=True)):
            keys = [k for k in header if k != "__metadata__"]
            if untie and EMBED in keys and LM_HEAD not in base_keys:
                keys.insert(keys.index(EMBED) + 1, LM_HEAD)
            sources = {k: _Source(k, shard, header, adapter) for k in keys}
            total += _write_shard(tmp / shard.name, sources)
            weight_map.update(dict.fromkeys(keys, shard.name))
            written += len(keys)
            progress(f"Merged {shard.name} ({i + 1}/{len(shards)}): "
                     f"{sum(k in touched for k in keys)} of {len(keys)} tensors changed")
        if len(shards) > 1:
            (tmp / "model.safetensors.index.json").write_text(json.dumps(
                {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
        embed = replaced.get(EMBED, own_base.get(EMBED))
        _write_config(base, tmp, untie, None if embed is None else embed.shape[0])
        _write_tokenizer(adapter_dir, base, tmp, chat_format)
    return MergeResult(out_dir, base, requested, from_4bit, len(touched), written, untie,
                       time.monotonic() - start)


def _adapter_config(adapter_dir: Path) -> dict:
    path = adapter_dir / "adapter_config.json"
    if not path.is_file():
        raise MergeError(f"{adapter_dir} has no adapter_config.json. Fix: pass the directory "
                         "model.save_pretrained() wrote for the PEFT adapter.")
    config = json.loads(path.read_text())
    if config.get("peft_type", "LORA") != "LORA":
        raise MergeError(f"{path}: peft_type {config['peft_type']!r}; only LoRA adapters merge. "
                         "Fix: train a LoRA adapter (lorahelpers.models.add_lora).")
    return config


def _load_adapter(adapter_dir: Path, config: dict):
    """(LoRA updates, full replacement weights from modules_to_save, base weights the adapter
    carries itself), each keyed by the base checkpoint's tensor name."""
    path = adapter_dir / "adapter_model.safetensors"
    if path.is_file():
        read_header(path)
        tensors = load_file(path)
    elif (adapter_dir / "adapter_model.bin").is_file():
        tensors = torch.load(adapter_dir / "adapter_model.bin", map_location="cpu",
                             weights_only=True)
    else:
        raise MergeError(f"{adapter_dir} has no adapter_model.safetensors. Fix: save the "
                         "adapter again (lorahelpers.models.save_adapter).")
    loras: dict[str, _Lora] = {}
    replaced: dict[str, torch.Tensor] = {}
    own_base: dict[str, torch.Tensor] = {}
    flip = bool(config.get("fan_in_fan_out"))
    for name, t in tensors.items():
        key = name.removeprefix("base_model.model.")
        m = re.fullmatch(r"(.+)\.(lora_A|lora_B|lora_embedding_A|lora_embedding_B|"
                         r"lora_magnitude_vector)(\.weight)?", key)
        if m:
            lora = loras.setdefault(m.group(1) + ".weight", _Lora())
            kind, t = m.group(2), t.float()
            if kind == "lora_magnitude_vector":
                lora.magnitude = t
            elif kind == "lora_embedding_A" or (kind == "lora_A" and flip):
                lora.left = t.T            # delta = (B @ A).T
            elif kind == "lora_embedding_B" or (kind == "lora_B" and flip):
                lora.right = t.T
            elif kind == "lora_A":
                lora.right = t
            else:
                lora.left = t
        elif key.endswith(".base_layer.weight"):
            # embeddings saved with the adapter (PEFT does so when they may have been resized)
            own_base[key.replace(".base_layer.", ".")] = t
        elif key.endswith((".weight", ".bias")) and "lora_" not in key:
            replaced[key] = t  # modules_to_save: a fully trained copy of the module
        else:
            raise MergeError(f"{path}: tensor {name!r} is not a LoRA A/B, DoRA magnitude or "
                             "full weight; lorahelpers cannot merge it. Fix: train the adapter "
                             "with lorahelpers.models.add_lora.")
    use_rslora = bool(config.get("use_rslora"))
    for key, lora in loras.items():
        if lora.left is None or lora.right is None:
            raise MergeError(f"{path}: {key} has only one of lora_A/lora_B; the file is damaged. "
                             "Fix: save the adapter again.")
        r = lora.right.shape[0]
        alpha = _pattern_value(config.get("alpha_pattern") or {}, key.removesuffix(".weight"),
                               config.get("lora_alpha", r))
        lora.scale = alpha / math.sqrt(r) if use_rslora else alpha / r
    return loras, replaced, own_base


def _pattern_value(patterns: dict, module: str, default):
    # How PEFT picks a per-module value (peft.utils.other.get_pattern_key).
    for pattern, value in patterns.items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            return value
    return default


class _Source:
    """Where the rows of one output tensor come from, and how to merge them."""

    def __init__(self, key, shard, header, adapter):
        loras, replaced, own_base = adapter
        # An untied lm_head starts from the embeddings it shared.
        base_key = key if key in header else EMBED
        self.key, self.shard, self.base_key = key, shard, base_key
        self.lora = loras.get(key)
        self.full = replaced.get(key, own_base.get(key, own_base.get(base_key)))
        self.dtype_name = header[base_key]["dtype"]
        self.dtype = DTYPES[self.dtype_name]
        self.shape = list(self.full.shape) if self.full is not None else \
            header[base_key]["shape"]

    def blocks(self, f):
        rows = self.shape[0] if self.shape else 1
        step = max(1, BLOCK_BYTES // (4 * max(1, math.prod(self.shape[1:]))))
        base = self.full if self.full is not None else f.get_slice(self.base_key)
        for start in range(0, rows, step):
            stop = min(rows, start + step)
            w = base[start:stop] if self.shape else base[:]
            if self.lora is not None:
                w = self._merge(w.float(), start, stop)
            yield w.to(self.dtype)

    def _merge(self, w, start, stop):
        lora = self.lora
        merged = w + lora.scale * (lora.left[start:stop] @ lora.right)
        if lora.magnitude is not None:  # DoRA: rescale each output row to its learned norm
            merged = merged * (lora.magnitude[start:stop] / merged.norm(dim=1)).unsqueeze(1)
        if not torch.isfinite(merged).all():
            where = "already in the base weights" if not torch.isfinite(w).all() else \
                "from the adapter (did training diverge?)"
            raise MergeError(f"{self.shard}: merging {self.key} rows {start}-{stop} gives "
                             f"NaN/Inf, {where}. Fix: check the adapter's training loss; "
                             "retrain with a lower learning rate.")
        return merged


def _write_shard(path: Path, sources: dict[str, _Source]) -> int:
    """Write one safetensors file block by block; returns the bytes of tensor data."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for key, s in sources.items():
        size = math.prod(s.shape) * torch.empty(0, dtype=s.dtype).element_size()
        header[key] = {"dtype": s.dtype_name, "shape": s.shape,
                       "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors aligns the data to 8 bytes
    shard = next(iter(sources.values())).shard
    with safe_open(shard, framework="pt") as f, open(path, "wb") as out:
        out.write(struct.pack("<Q", len(raw)) + raw)
        for s in sources.values():
            for block in s.blocks(f):
                if s.dtype.is_floating_point and not torch.isfinite(block).all():
                    raise MergeError(f"{s.shard}: tensor {s.key} holds NaN/Inf (after casting "
                                     f"to {s.dtype_name}, or already in the base). Fix: "
                                     "check the base model's weights and the adapter's loss.")
                out.write(block.contiguous().reshape(-1).view(torch.uint8).numpy().data)
    if path.stat().st_size != 8 + len(raw) + offset:
        raise MergeError(f"{path}: wrote {path.stat().st_size} bytes, expected "
                         f"{8 + len(raw) + offset}; a tensor changed shape while merging. "
                         "Fix: merge again, with nothing else writing to the base.")
    return offset


def _write_config(base: Path, out: Path, untie: bool, vocab_size: int | None) -> None:
    config = json.loads((base / "config.json").read_text())
    config.pop("quantization_config", None)
    if vocab_size is not None and "vocab_size" in config:
        config["vocab_size"] = vocab_size  # embeddings resized for added tokens
    if untie:
        config["tie_word_embeddings"] = False
        if isinstance(config.get("text_config"), dict):
            config["text_config"]["tie_word_embeddings"] = False
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if (base / "generation_config.json").is_file():
        shutil.copy2(base / "generation_config.json", out / "generation_config.json")


def _write_tokenizer(adapter_dir: Path, base: Path, out: Path, chat_format) -> None:
    from transformers import AutoTokenizer

    source = adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else base
    tokenizer = AutoTokenizer.from_pretrained(source)
    if chat_format is not None:
        from lorahelpers.chat import install_chat_template
        from lorahelpers.stops import add_turn_end_to_generation_config

        install_chat_template(tokenizer, chat_format)
        # The model was trained to end answers with the turn end: generate() must stop there.
        add_turn_end_to_generation_config(out, tokenizer, chat_format)
    tokenizer.save_pretrained(out)
    # llama.cpp's converter reads a SentencePiece vocabulary (Gemma, Llama 2, Mistral) from
    # tokenizer.model, and its user-defined pieces from added_tokens.json: keep them. Llama 3's
    # tokenizer.model is its tiktoken vocabulary (base64 piece, space, rank per line), which the
    # converter fails to parse as SentencePiece ("could not parse ModelProto") when present;
    # without it, it reads Llama 3's vocabulary from tokenizer.json.
    for name in ("tokenizer.model", "added_tokens.json"):
        found = [d / name for d in (adapter_dir, base) if (d / name).is_file()]
        if found and not (out / name).is_file() and not _is_tiktoken(found[0]):
            shutil.copyfile(found[0], out / name)


def _is_tiktoken(path: Path) -> bool:
    with open(path, "rb") as f:
        return re.match(rb"[A-Za-z0-9+/]+=* [0-9]+\r?\n", f.read(200)) is not None


def _check_disk(out_dir: Path, need: float) -> None:
    probe = next(p for p in [out_dir, *out_dir.parents] if p.exists())
    free = shutil.disk_usage(probe).free
    if free < need + 2**28:
        raise ExportError(f"{probe}: {free / 1e9:.1f} GB free, but writing to {out_dir} needs "
                          f"about {need / 1e9:.1f} GB. Fix: free some space or write "
                          "elsewhere.")


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


def resolve_base(config: dict, base_dir=None) -> tuple[Path, str, bool]:
    """(16-bit base directory, the base as named, whether that name was a 4-bit base)."""
    requested = str(base_dir) if base_dir is not None else config.get("base_model_name_or_path")
    if not requested:
        raise MergeError("adapter_config.json names no base model. Fix: pass base_dir=.")
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
    return path16, requested, True
