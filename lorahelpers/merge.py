"""Merge a LoRA adapter into its 16-bit base weights, streaming.

The base's safetensors shards are read a block of rows at a time and the merged rows written
straight into the output shard (its header is known up front: same names, dtypes and shapes),
so memory stays at one block plus the adapter, whatever the model size. The merge is
W' = W + scale * B @ A in float32, cast back to the base dtype, with scale = alpha / r
(alpha / sqrt(r) with rsLoRA).

Also here: the base checkpoint with the training chat template that adapter GGUFs share
(base_with_template), and the one tokenizer writer both checkpoints use. Reading checkpoints and
adapters is lorahelpers.checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from lorahelpers.atomic import atomic_dir
from lorahelpers.checkpoint import (
    AdapterFiles,
    MergeError,
    check_free_disk,
    check_output_dir,
    checkpoint_shards,
    read_adapter,
    read_header,
    resolve_base,
)
from lorahelpers.errors import SettingsError

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
          "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
          "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}
BLOCK_BYTES = 64 * 2**20  # float32 working set per block of rows
EMBED, LM_HEAD = "model.embed_tokens.weight", "lm_head.weight"
# What export_gguf reads from a checkpoint besides the weights and the tokenizer.
_MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors.index.json")


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


def merge_lora(adapter_dir, out_dir, base_dir=None, chat_format=None, *, progress=print,
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
    files = read_adapter(adapter_dir, base_dir)
    if files.config.get("peft_type", "LORA") != "LORA":
        raise MergeError(f"{adapter_dir / 'adapter_config.json'}: peft_type "
                         f"{files.config['peft_type']!r}; only LoRA adapters merge. Fix: train a "
                         "LoRA adapter (lorahelpers.models.add_lora).")
    base, requested, from_4bit = resolve_base(files.base, progress)
    shards = checkpoint_shards(base)
    adapter = loras, replaced, own_base = _load_adapter(files)
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
    need = sum(s.stat().st_size for s in shards) * (1.3 if untie else 1.0) + 2**28
    check_free_disk(out_dir, need, f"merging into {out_dir}")

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
        _write_tokenizer(tmp, [adapter_dir, base], chat_format)
    return MergeResult(out_dir, base, requested, from_4bit, len(touched), written, untie,
                       time.monotonic() - start)


def _load_adapter(files: AdapterFiles):
    """(LoRA updates, full replacement weights from modules_to_save, base weights the adapter
    carries itself), each keyed by the base checkpoint's tensor name."""
    config, path, tensors = files.config, files.weights, files.tensors()
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


def _write_tokenizer(out: Path, sources: list[Path], chat_format) -> None:
    """Save into `out` the tokenizer of the first of `sources` (adapter or checkpoint folders)
    that has one, with chat_format's template installed and its turn end in out's
    generation_config.json, keeping the vocabulary files llama.cpp's converter reads."""
    from transformers import AutoTokenizer

    source = next((d for d in sources if (d / "tokenizer_config.json").is_file()), sources[-1])
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
        found = [d / name for d in sources if (d / name).is_file()]
        if found and not (out / name).is_file() and not _is_tiktoken(found[0]):
            shutil.copyfile(found[0], out / name)


def _is_tiktoken(path: Path) -> bool:
    with open(path, "rb") as f:
        return re.match(rb"[A-Za-z0-9+/]+=* [0-9]+\r?\n", f.read(200)) is not None


def base_with_template(base, chat_format, out_dir, progress=print) -> Path:
    """A checkpoint directory holding the base model's weights (linked, not copied) and its
    tokenizer with chat_format's template, written as merge_lora writes a merged one. export_gguf
    of it gives the one base GGUF every adapter runs over, carrying the template the adapters
    were trained with (a base model's own template may differ, e.g. add a default system
    prompt); export_adapter_gguf can take it as the base too. `base` is a checkpoint directory
    or a Hub name (a 4-bit base is replaced by its 16-bit original, as merge_lora does).
    Written atomically.

    >>> base_with_template(embedded_base(), get_chat_format("chatml"), "out/base")  # doctest: +SKIP
    PosixPath('out/base')
    """
    local = Path(base).expanduser()
    if (local.is_absolute() or str(base).startswith(".")) and not local.is_dir():
        raise SettingsError(f"base model directory {local} does not exist. Fix: pass the "
                            "checkpoint the adapters were trained on (e.g. "
                            "params.resolved_model())")
    base_dir, _, _ = resolve_base(str(base), progress)
    out_dir = Path(out_dir)
    check_output_dir(out_dir)
    shards = checkpoint_shards(base_dir)
    with atomic_dir(out_dir) as tmp:
        for name in _MODEL_FILES:  # copies: the tokenizer writer adds to generation_config.json
            if (base_dir / name).is_file():
                shutil.copy2(base_dir / name, tmp / name)
        for shard in shards:
            _link_or_copy(shard.resolve(), tmp / shard.name)
        _write_tokenizer(tmp, [base_dir], chat_format)
    return out_dir


def _link_or_copy(src: Path, dst: Path) -> None:
    # A link keeps a multi-GB base from being copied; where links are not allowed, copy.
    try:
        os.symlink(src, dst)
    except OSError:
        shutil.copy2(src, dst)


