"""Export: a merged checkpoint to GGUF files (f16, bf16, q8_0, k-quants) and a LoRA adapter to
an adapter-only GGUF, with llama.cpp's own converter (see llamacpp.py) and quantizer.

Merging an adapter into its base is merge.py; reading checkpoints and adapters, checkpoint.py.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from lorahelpers.atomic import atomic_path
from lorahelpers.errors import SettingsError
from lorahelpers.llamacpp import (  # noqa: F401  (re-exported for callers and the set-up)
    ExportError,
    LlamaCppMissingError,
    TokenizerNotRecognizedError,
    UnsupportedArchitectureError,
    check_architecture,
    converter_dir,
    converter_is_cached,
    gguf_metadata,
    llama_cpp_version,
    quantize,
    run_script,
)

# The one table of GGUF types: made by the converter, or by llama.cpp's C quantizer from a
# 16-bit GGUF (the k-quants); bits per weight for the disk-space estimate.
from lorahelpers.quants import BITS, CONVERTER_TYPES, KQUANT_TYPES, QUANTS


class AdapterNotConvertibleError(ExportError):
    pass


def export_gguf(model_dir, out_dir, name: str, quants=("q8_0",), *, progress=print,
                ) -> dict[str, Path]:
    """Convert a Hugging Face checkpoint (e.g. merge_lora's output) to `<name>-<quant>.gguf`
    files in `out_dir`, one per quant type, each written atomically and checked to carry the
    tokenizer's chat template. k-quants share one 16-bit intermediate.

    >>> export_gguf("outputs/merged", "outputs/gguf", "mymodel", ("q8_0", "q4_k_m"))  # doctest: +SKIP
    {'q8_0': PosixPath('outputs/gguf/mymodel-q8_0.gguf'), 'q4_k_m': ...}
    """
    from lorahelpers.checkpoint import check_free_disk, checkpoint_shards, read_header

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    quants = _check_quants(quants)
    if not name or "/" in name or name.startswith("."):
        raise SettingsError(f"name {name!r} is not a plain file-name stem. Fix: give one such "
                            "as 'mymodel'")
    arch = _check_architecture(model_dir, progress)
    shards = checkpoint_shards(model_dir)
    params = sum(_numel(v) for s in shards for k, v in read_header(s).items()
                 if k != "__metadata__")
    kquants = [q for q in quants if q in KQUANT_TYPES]
    direct = [q for q in quants if q not in KQUANT_TYPES]
    # The 16-bit file the k-quants start from (the model's own 16-bit type first): one the
    # caller asked for, else a temporary one.
    preferred = ("bf16", "f16") if _config_dtype(model_dir) == "bfloat16" else ("f16", "bf16")
    inter = next((q for q in preferred if q in direct), preferred[0])
    need = params * sum(BITS[q] for q in quants) / 8
    if kquants and inter not in direct:
        need += params * 2
    out_dir.mkdir(parents=True, exist_ok=True)
    check_free_disk(out_dir, need * 1.05 + 2**26,
                    f"exporting {model_dir} to {', '.join(quants)}")
    expected = _expected_template(model_dir)
    progress(f"Exporting {model_dir} ({arch}, {params / 1e6:.0f}M parameters) to "
             f"{', '.join(quants)} with llama.cpp {llama_cpp_version()}")

    paths: dict[str, Path] = {}
    temporary = out_dir / f".{name}-{inter}.intermediate.gguf"
    try:
        for q in direct:
            paths[q] = _convert(model_dir, q, out_dir / f"{name}-{q}.gguf", expected, progress)
        if kquants:
            source = paths.get(inter) or _convert(model_dir, inter, temporary, expected,
                                                  progress)
        for q in kquants:
            final = out_dir / f"{name}-{q}.gguf"
            with atomic_path(final) as tmp:
                started = time.monotonic()
                progress(f"Quantizing {source.name} to {q}...")
                quantize(source, tmp, q)
                _check_template(tmp, expected)
                progress(f"Wrote {final.name} ({tmp.stat().st_size / 1e6:.0f} MB, "
                         f"{time.monotonic() - started:.0f} s)")
            paths[q] = final
    finally:
        temporary.unlink(missing_ok=True)
    return {q: paths[q] for q in quants}


def _convert(model_dir: Path, quant: str, final: Path, expected, progress) -> Path:
    with atomic_path(final) as tmp:
        started = time.monotonic()
        run_script("convert_hf_to_gguf.py", [str(model_dir), "--outtype", quant,
                                             "--outfile", str(tmp)], progress)
        _check_template(tmp, expected)
        progress(f"Wrote {final.name} ({tmp.stat().st_size / 1e6:.0f} MB, "
                 f"{time.monotonic() - started:.0f} s)")
    return final


def export_adapter_gguf(adapter_dir, base_dir, out_path, progress=print, *, outtype: str = "f16",
                        ) -> Path:
    """Convert a PEFT LoRA adapter to a GGUF that llama.cpp (and Ollama's ADAPTER) applies over
    the base model's GGUF. Configurations llama.cpp would apply wrongly are refused first.

    >>> export_adapter_gguf("outputs/adapter", base_dir, "outputs/gguf/adapter.gguf")  # doctest: +SKIP
    """
    from lorahelpers.checkpoint import check_free_disk, read_adapter

    adapter_dir, base_dir, out_path = Path(adapter_dir), Path(base_dir), Path(out_path)
    if outtype not in CONVERTER_TYPES:
        raise SettingsError(f"outtype {outtype!r} is unknown. Fix: use "
                            f"{', '.join(CONVERTER_TYPES)}")
    adapter = read_adapter(adapter_dir, base_dir, ExportError)
    problems = adapter_gguf_problems(adapter.config, adapter.tensor_names())
    if problems:
        raise AdapterNotConvertibleError(
            f"{adapter_dir} cannot become an adapter-only GGUF:\n- " + "\n- ".join(problems)
            + "\nFix: merge it instead: merge_lora(adapter_dir, merged_dir) then "
            "export_gguf(merged_dir, ...), which handles all of these.")
    _check_architecture(base_dir, progress)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    check_free_disk(out_path.parent, 2 * _dir_bytes(adapter_dir) + 2**24,
                    f"converting {adapter_dir} to {out_path.name}")
    with atomic_path(out_path) as tmp:
        run_script("convert_lora_to_gguf.py", [str(adapter_dir), "--base", str(base_dir),
                                               "--outtype", outtype, "--outfile", str(tmp)],
                   progress)
    progress(f"Wrote {out_path}")
    return out_path


def adapter_gguf_problems(config: dict, tensor_names: list[str]) -> list[str]:
    """Why llama.cpp would apply this adapter wrongly, one reason per item (empty: fine).

    >>> adapter_gguf_problems({"use_dora": True}, [])[0][:4]
    'DoRA'
    """
    problems = []
    if config.get("peft_type", "LORA") != "LORA":
        problems.append(f"peft_type is {config['peft_type']}; llama.cpp applies only LoRA.")
    if config.get("use_dora"):
        problems.append("DoRA (use_dora): llama.cpp has no magnitude vectors, so the update "
                        "would be applied without DoRA's per-row rescaling.")
    if config.get("use_rslora"):
        problems.append("rsLoRA (use_rslora): PEFT scales by alpha/sqrt(r), llama.cpp by "
                        "alpha/r, so the update would be applied at the wrong strength.")
    if config.get("alpha_pattern"):
        problems.append("alpha_pattern: the GGUF holds one alpha for all layers, so the "
                        "layers with their own alpha would get the wrong scale.")
    # rank_pattern alone is fine: llama.cpp reads each layer's rank from its tensors.
    if config.get("modules_to_save"):
        problems.append(f"modules_to_save {config['modules_to_save']}: fully trained modules "
                        "are not LoRA updates and cannot be stored in an adapter GGUF.")
    if config.get("trainable_token_indices"):
        problems.append("trainable_token_indices: trained token embeddings cannot be stored "
                        "in an adapter GGUF.")
    targets = config.get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else targets
    trained = [n for n in tensor_names if ("embed_tokens" in n or "lm_head" in n
                                           or "lora_embedding" in n) and "lora_" in n]
    if trained or any(t in ("embed_tokens", "lm_head", "wte") for t in targets):
        problems.append("the embeddings or lm_head were trained (target_modules "
                        f"{sorted(targets)}): llama.cpp cannot apply LoRA to them, and when "
                        "they are tied it would change both.")
    if any(n.endswith(".bias") and "lora_" in n for n in tensor_names):
        problems.append("lora_bias: llama.cpp's LoRA has no bias term.")
    return problems


def _check_quants(quants) -> list[str]:
    quants = [quants] if isinstance(quants, str) else list(quants)
    out = []
    for q in quants:
        key = str(q).lower()
        if key not in QUANTS:
            raise SettingsError(f"quant type {q!r} is unknown. Fix: choose from "
                                f"{', '.join(QUANTS)}")
        if key not in out:
            out.append(key)
    if not out:
        raise SettingsError("quants is empty. Fix: ask for at least one, e.g. ('q8_0',)")
    return out


def _check_architecture(model_dir: Path, progress) -> str:
    from lorahelpers.checkpoint import read_json

    path = Path(model_dir) / "config.json"
    config = read_json(path, ExportError, "pass a Hugging Face checkpoint directory (e.g. what "
                       "merge_lora wrote).", "save the model again with save_pretrained().")
    arch = check_architecture(config, path, converter_dir(progress))
    if arch is None:
        raise ExportError(f"{path} names no architectures (e.g. \"LlamaForCausalLM\"); the "
                          "converter needs one. Fix: save the model again with "
                          "save_pretrained().")
    return arch


def _config_dtype(model_dir: Path) -> str | None:
    config = json.loads((model_dir / "config.json").read_text())
    return config.get("dtype") or config.get("torch_dtype")


def _numel(info: dict) -> int:
    n = 1
    for d in info["shape"]:
        n *= d
    return n


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _expected_template(model_dir: Path) -> str | None:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_dir).chat_template
    except Exception as e:
        raise ExportError(f"{model_dir}: the tokenizer does not load ({type(e).__name__}: {e}). "
                          "Save it again with tokenizer.save_pretrained().") from None


def _check_template(gguf: Path, expected: str | None) -> None:
    if expected is None:
        return
    found = gguf_metadata(gguf).get("tokenizer.chat_template")
    if found != expected:
        raise ExportError(
            f"{gguf}: the GGUF's chat template differs from the tokenizer's (the one the model "
            f"was trained with), so llama.cpp and Ollama would format chats differently.\n"
            f"tokenizer: {expected!r}\nGGUF:      {found!r}\nFix: if tokenizer_config.json and "
            "chat_template.jinja disagree, keep one (the converter prefers "
            "tokenizer_config.json's).")


# ---- preflight: what a merge + export needs, checked before anything is written ----------------


@dataclass(frozen=True)
class ExportNeeds:
    """Disk and memory a merge + GGUF export of a model of `params` parameters needs."""

    params: int
    merged_bytes: int                 # the merged 16-bit checkpoint
    gguf_bytes: dict[str, int]        # each GGUF file
    intermediate_bytes: int           # the 16-bit GGUF k-quants are made from (then deleted)
    download_bytes: int               # the 16-bit original of a 4-bit base, fetched for the merge
    peak_ram_bytes: int               # the streamed merge and the lazy converter at their peak

    @property
    def disk_bytes(self) -> int:
        return (self.merged_bytes + sum(self.gguf_bytes.values()) + self.intermediate_bytes
                + self.download_bytes)

    def rows(self) -> list[tuple[str, str]]:
        gb = lambda n: f"{n / 1e9:.1f} GB"  # noqa: E731
        rows = [("16-bit original of the 4-bit base (Hub cache)", gb(self.download_bytes))] \
            if self.download_bytes else []
        rows += [("merged 16-bit checkpoint", gb(self.merged_bytes))]
        rows += [(f"GGUF {q}", gb(n)) for q, n in self.gguf_bytes.items()]
        if self.intermediate_bytes:
            rows.append(("16-bit GGUF for the k-quants (deleted after)",
                         gb(self.intermediate_bytes)))
        return rows + [("disk in all", gb(self.disk_bytes)),
                       ("memory (RAM) at the peak", gb(self.peak_ram_bytes))]

    def __str__(self) -> str:
        width = max(len(k) for k, _ in self.rows())
        return "\n".join(f"{k:<{width}}  {v:>8}" for k, v in self.rows())


def export_needs(params: int, quants, largest_tensor: int = 0,
                 download_base: bool = False) -> ExportNeeds:
    """The sizes a merge + export of `quants` writes, for a model of `params` parameters whose
    largest tensor has `largest_tensor` elements (the embedding, usually). download_base: the
    model was trained over 4-bit weights, so the merge first fetches their 16-bit original.

    >>> print(export_needs(3_210_000_000, ("q4_k_m", "q8_0")).rows()[0])
    ('merged 16-bit checkpoint', '6.4 GB')
    """
    quants = _check_quants(quants)
    merged = params * 2
    ggufs = {q: int(params * BITS[q] / 8) for q in quants}
    intermediate = merged if any(q in KQUANT_TYPES for q in quants) and "f16" not in quants \
        and "bf16" not in quants else 0
    # Measured on the 1.2B bench model (bench/export.py): the merge peaks at one shard in
    # float32 blocks plus the adapter, well under 2 GB; the converter holds one tensor at a time.
    peak = max(2 * 10**9, largest_tensor * 4 * 2)
    return ExportNeeds(params, merged, ggufs, intermediate, merged if download_base else 0, peak)


def base_parameter_count(model) -> tuple[int, int]:
    """(parameters of the base model, elements of its largest tensor), LoRA matrices left out;
    4-bit (bitsandbytes) weights are counted by their original shape."""
    import math

    total = largest = 0
    for name, p in model.named_parameters():
        if "lora_" in name:
            continue
        shape = getattr(getattr(p, "quant_state", None), "shape", None)
        n = math.prod(shape) if shape is not None else p.numel()
        total, largest = total + n, max(largest, n)
    return total, largest


def available_ram() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def preflight_export(needs: ExportNeeds, out_dir, free_disk: int | None = None,
                     free_ram: int | None = None) -> ExportNeeds:
    """Raise ExportError before a merge + export starts when the disk under `out_dir` or the
    memory cannot hold what `needs` says; return `needs` otherwise.

    >>> preflight_export(export_needs(135_000_000, ["q8_0"]), "outputs")  # doctest: +SKIP
    """
    from lorahelpers.checkpoint import check_free_disk

    check_free_disk(out_dir, needs.disk_bytes, f"merging and exporting a "
                    f"{needs.params / 1e9:.1f}B-parameter model to {', '.join(needs.gguf_bytes)}",
                    free=free_disk, details=str(needs))
    free_ram = available_ram() if free_ram is None else free_ram
    if free_ram is not None and free_ram < needs.peak_ram_bytes:
        raise ExportError(
            f"{free_ram / 1e9:.1f} GB of memory is available, but the merge and export need "
            f"about {needs.peak_ram_bytes / 1e9:.1f} GB at their peak. Fix: free memory first "
            "(del the model and call lorahelpers.pipeline.free_torch_memory()), or restart "
            "the runtime and export from the saved adapter.")
    return needs
