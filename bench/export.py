"""Wall time and peak memory of merge + convert + quantize, lorahelpers against the naive path,
for the embedded model (SmolLM2-135M, float32, one shard) and a synthetic Llama of about 1.2B
parameters with random bf16 weights in five shards (written once to the cache, ~2.4 GB),
each with a random LoRA (r=16 on all seven projections).

  ours:  merge_lora (streamed)                                   -> export_gguf(q4_k_m)
  naive: from_pretrained + PeftModel + merge_and_unload + save_pretrained -> export_gguf(q4_k_m)

Each phase runs in a fresh process. Peak RSS is the kernel's ru_maxrss of the phase process
and of its children (the converter runs as one); "anon" is the sampled peak of anonymous
memory (RSS less file-backed pages, which the kernel can drop and which an out-of-memory
kill does not count first). Target: our merge's peak RSS at most half of the naive one's on
the larger model.

    python bench/export.py [--skip-large] [--quant q4_k_m]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lorahelpers.models import embedded_base  # noqa: E402
from lorahelpers.runtime import cache_dir  # noqa: E402

PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LARGE = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
             num_attention_heads=32, num_key_value_heads=4, vocab_size=49152)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def synthetic_llama(path: Path, shard_bytes: int = 500_000_000) -> Path:
    """A Llama checkpoint with random bf16 weights, written once (shard by shard)."""
    import torch

    if (path / "config.json").is_file():
        return path
    tmp = Path(tempfile.mkdtemp(prefix=".synthetic-", dir=path.parent))
    c = LARGE
    h, kv = c["hidden_size"], c["hidden_size"] // c["num_attention_heads"] * c[
        "num_key_value_heads"]
    shapes = {"model.embed_tokens.weight": (c["vocab_size"], h)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes |= {p + "self_attn.q_proj.weight": (h, h), p + "self_attn.k_proj.weight": (kv, h),
                   p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, h),
                   p + "mlp.gate_proj.weight": (c["intermediate_size"], h),
                   p + "mlp.up_proj.weight": (c["intermediate_size"], h),
                   p + "mlp.down_proj.weight": (h, c["intermediate_size"]),
                   p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,)}
    shapes |= {"model.norm.weight": (h,), "lm_head.weight": (c["vocab_size"], h)}
    groups, group, size = [], {}, 0
    for name, shape in shapes.items():
        group[name] = shape
        size += 2 * torch.Size(shape).numel()
        if size >= shard_bytes:
            groups, group, size = groups + [group], {}, 0
    groups += [group] if group else []
    try:
        _write_synthetic(tmp, groups)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    tmp.rename(path)
    return path


def _write_synthetic(tmp: Path, groups: list[dict]) -> None:
    import torch
    from safetensors.torch import save_file

    c = LARGE
    weight_map, gen = {}, torch.Generator().manual_seed(0)
    for n, group in enumerate(groups):
        name = f"model-{n + 1:05d}-of-{len(groups):05d}.safetensors"
        tensors = {k: (torch.ones(s) if len(s) == 1 else torch.randn(s, generator=gen) * 0.02)
                   .to(torch.bfloat16) for k, s in group.items()}
        save_file(tensors, str(tmp / name), metadata={"format": "pt"})
        weight_map |= dict.fromkeys(group, name)
    total = sum(2 * torch.Size(s).numel() for group in groups for s in group.values())
    (tmp / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}))
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "dtype": "bfloat16",
              "hidden_act": "silu", "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
              "rope_theta": 10000.0, "tie_word_embeddings": False, "bos_token_id": 1,
              "eos_token_id": 2} | c
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    for name in TOKENIZER_FILES:
        shutil.copy(embedded_base() / name, tmp / name)


def random_adapter(base: Path, out: Path, r: int = 16) -> Path:
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    index = base / "model.safetensors.index.json"
    shards = sorted(set(json.loads(index.read_text())["weight_map"].values())) \
        if index.is_file() else ["model.safetensors"]
    gen, tensors = torch.Generator().manual_seed(1), {}
    for shard in shards:
        with safe_open(base / shard, "pt") as f:
            for key in f.keys():
                if key.split(".")[-2] in PROJECTIONS:
                    rows, cols = f.get_slice(key).get_shape()
                    prefix = "base_model.model." + key.removesuffix(".weight")
                    tensors[prefix + ".lora_A.weight"] = torch.randn(r, cols, generator=gen) / cols ** 0.5
                    tensors[prefix + ".lora_B.weight"] = torch.randn(rows, r, generator=gen) * 0.01
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "adapter_model.safetensors"))
    (out / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": 2 * r,
        "target_modules": PROJECTIONS, "base_model_name_or_path": str(base),
        "lora_dropout": 0.0, "bias": "none"}))
    return out


def phase(name: str, base: Path, adapter: Path, work: Path, quant: str) -> None:
    """One measured step, run in its own process; prints its figures as JSON."""
    quiet = {"progress": lambda s: None}
    started = time.perf_counter()
    if name == "merge-ours":
        from lorahelpers.merge import merge_lora

        merge_lora(adapter, work / "merged", base_dir=base, **quiet)
    elif name == "merge-naive":
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(base, dtype="auto")
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        model.save_pretrained(work / "merged")
        AutoTokenizer.from_pretrained(base).save_pretrained(work / "merged")
    elif name == "export":
        from lorahelpers.export import export_gguf

        export_gguf(work / "merged", work / "gguf", "m", (quant,), **quiet)
    seconds = time.perf_counter() - started
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(json.dumps({"seconds": seconds, "rss": max(own, kids), "rss_self": own,
                      "rss_children": kids}))


def measure(name: str, base: Path, adapter: Path, work: Path, quant: str) -> dict:
    import psutil

    cmd = [sys.executable, __file__, "--phase", name, "--base", str(base), "--adapter",
           str(adapter), "--work", str(work), "--quant", quant]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    anon, root = [0], psutil.Process(proc.pid)

    def sample():
        while proc.poll() is None:
            total = 0
            try:
                for p in [root, *root.children(recursive=True)]:
                    info = p.memory_info()
                    total += info.rss - info.shared
            except psutil.Error:
                pass
            anon.append(total)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    out, _ = proc.communicate()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"phase {name} failed (exit {proc.returncode})")
    return json.loads(out.strip().splitlines()[-1]) | {"anon": max(anon)}


def run_case(label: str, base: Path, adapter: Path, quant: str) -> None:
    rows = {}
    for path in ("ours", "naive"):
        work = Path(tempfile.mkdtemp(prefix=f"bench-{path}-", dir=cache_dir()))
        try:
            rows[path] = {"merge": measure(f"merge-{path}", base, adapter, work, quant),
                          "export": measure("export", base, adapter, work, quant)}
        finally:
            shutil.rmtree(work, ignore_errors=True)
    gb = 1e9
    print(f"\n{label}: merge + convert + quantize to {quant}")
    print(f"  {'path':<7}{'phase':<8}{'wall s':>8}{'peak RSS GB':>13}{'anon GB':>9}")
    for path, phases in rows.items():
        for ph, m in phases.items():
            print(f"  {path:<7}{ph:<8}{m['seconds']:>8.1f}{m['rss'] / gb:>13.2f}"
                  f"{m['anon'] / gb:>9.2f}")
        total = sum(m["seconds"] for m in phases.values())
        peak = max(m["rss"] for m in phases.values())
        print(f"  {path:<7}{'total':<8}{total:>8.1f}{peak / gb:>13.2f}")
    ours, naive = rows["ours"], rows["naive"]
    ratio = ours["merge"]["rss"] / naive["merge"]["rss"]
    print(f"  merge peak RSS ours/naive {ratio:.2f} (target <= 0.5), anon "
          f"{ours['merge']['anon'] / naive['merge']['anon']:.2f}, wall "
          f"{ours['merge']['seconds'] / naive['merge']['seconds']:.2f}")
    whole = max(m["rss"] for m in ours.values()) / max(m["rss"] for m in naive.values())
    print(f"  whole path peak RSS ours/naive {whole:.2f}, wall "
          f"{sum(m['seconds'] for m in ours.values()) / sum(m['seconds'] for m in naive.values()):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-large", action="store_true", help="only the embedded model")
    parser.add_argument("--quant", default="q4_k_m", help="quant type to export")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    parser.add_argument("--adapter", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        return phase(args.phase, Path(args.base), Path(args.adapter), Path(args.work),
                     args.quant)
    bench = cache_dir() / "bench"
    bench.mkdir(parents=True, exist_ok=True)
    small = embedded_base()
    run_case("SmolLM2-135M (float32, 1 shard)", small,
             random_adapter(small, bench / "adapter-smollm2"), args.quant)
    if not args.skip_large:
        large = synthetic_llama(bench / "synthetic-llama-1.2b")
        run_case("synthetic Llama 1.2B (bf16, 5 shards)", large,
                 random_adapter(large, bench / "adapter-synthetic-1.2b"), args.quant)


if __name__ == "__main__":
    main()
