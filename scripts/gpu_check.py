"""The checks a CUDA machine should run, printed as one table (see scripts/gpu_check.sh).

1-2. The same short LoRA job with Unsloth and with plain transformers + PEFT, each in its own
     process (importing Unsloth patches transformers for the whole process): tokens/s and peak
     GPU memory, and their ratios.
3.   Export of the Unsloth (4-bit) model to q8_0, verified against the merged 16-bit model it was
     made from, with the 4-bit model's own distance from that model beside it.
4.   The same q8_0 file verified directly against the 4-bit model, to show why the reference
     matters.
5.   Time to score held-out rows with the GGUF through llama.cpp, with GPU offload and without.

    python scripts/gpu_check.py            on a CUDA machine (STEPS=30 MODEL=<dir or Hub id>)
    python scripts/gpu_check.py --dry-run  the same code path on CPU with tiny settings
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

DRY = "--dry-run" in sys.argv
STEPS = 2 if DRY else int(os.environ.get("STEPS", "30"))
# The model the GPU notebooks use; on CPU the embedded one.
GPU_MODEL = "unsloth/Llama-3.2-3B-Instruct-bnb-4bit"


def run(backend: str, out: str) -> dict:
    """One backend's training (and, for the first backend, export) in this process."""
    if backend == "unsloth":
        import unsloth  # noqa: F401  (first: it patches transformers, trl and peft)
    else:
        sys.modules["unsloth"] = None  # keep Unsloth's patches out of the plain PEFT run
    import torch

    from lorahelpers.data import to_conversations
    from lorahelpers.models import LoraSettings, add_lora, embedded_base, load_model
    from lorahelpers.training import TrainSettings, train

    cuda = torch.cuda.is_available()
    source = os.environ.get("MODEL") or (GPU_MODEL if cuda else str(embedded_base()))
    rows, _ = to_conversations("data/alpaca_train.jsonl")
    held_out, _ = to_conversations("data/alpaca_eval.jsonl")
    model, tokenizer = load_model(source, max_seq_length=512, backend=backend,
                                  chat_format="chatml")
    model = add_lora(model, LoraSettings())
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    extra = {"batch_size": 2, "grad_accum": 1} if DRY else {}
    result = train(model, tokenizer, rows, None, chat_format="chatml",
                   settings=TrainSettings(output_dir=out, max_steps=STEPS, save_steps=10_000,
                                 progress="none", reraise_interrupt=False, **extra))
    rates = [r for r in result.history.column("tokens_per_s")[1:] if r] or \
        [r for r in result.history.column("tokens_per_s") if r]
    s = result.settings
    figures = {
        "backend": backend, "steps": result.steps,
        "tokens_per_s": sorted(rates)[len(rates) // 2] if rates else float("nan"),
        "peak_gb": torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan"),
        "final_loss": result.final_loss,
        "settings": f"batch {s.batch_size}x{s.grad_accum}, {s.optim}, precision={s.precision}, "
                    f"checkpointing={s.gradient_checkpointing}"}
    if os.environ.get("GPU_CHECK_EXPORT") == "1":
        figures |= export_checks(model, tokenizer, result.adapter_dir, held_out, out)
    return figures


def export_checks(model, tokenizer, adapter_dir, held_out, out) -> dict:
    from lorahelpers.chat import get_chat_format
    from lorahelpers.heldout import gguf_scoring_plan
    from lorahelpers.inference import evaluate_gguf
    from lorahelpers.pipeline import export_and_verify
    from lorahelpers.runtime import free_torch_memory
    from lorahelpers.verify import verify

    fmt = get_chat_format("chatml", eos=tokenizer.eos_token)
    prompts = [row[:-1] for row in held_out[:4]]
    bundle = export_and_verify(model, tokenizer, adapter_dir, fmt, out_dir=out, name="check",
                               quants=["q8_0"], prompts=prompts, progress=lambda s: None)
    q8 = bundle.reports["q8_0"]
    direct = verify(bundle.ggufs["q8_0"], model, tokenizer, prompts, quant="q8_0")
    gap = bundle.quantized_gap
    del model
    freed = free_torch_memory()
    rows = held_out[: 2 if DRY else 8]
    timings = {}
    from lorahelpers.llamacpp import import_llama_cpp

    offload = bool(import_llama_cpp().llama_supports_gpu_offload())
    for layers in ((-1, 0) if offload else (0,)):
        t0 = time.perf_counter()
        evaluate_gguf(bundle.ggufs["q8_0"], rows, fmt, tokenizer, scorer="contains",
                      n_gpu_layers=layers)
        timings["gpu" if layers else "cpu"] = (time.perf_counter() - t0) / len(rows)
    import torch

    plan = gguf_scoring_plan(torch.cuda.is_available(), offload, 40)
    return {"q8_0_vs_reference": _figures(q8), "reference": bundle.reference,
            "q8_0_vs_model_in_memory": _figures(direct),
            "gap_4bit_vs_merged": _figures(gap) if gap else None, "freed": freed,
            "gguf_seconds_per_row": timings, "scoring_plan": plan.note}


def _figures(report) -> dict:
    return {"status": report.status(), "top1": report.top1, "mean_kl": report.mean_kl,
            "nmse": report.nmse, "greedy": report.greedy_match}


def main() -> int:
    from lorahelpers.runtime import runtime_report

    report = runtime_report()
    print(report.summary())
    if not DRY and not report.cuda:
        print("gpu_check: no CUDA GPU here; use --dry-run to exercise the code path on CPU")
        return 1
    backends = ["unsloth", "transformers"] if report.unsloth else ["transformers"]
    if not report.unsloth:
        print("Unsloth not importable here: measuring transformers + PEFT only."
              + (f" ({report.unsloth_error})" if report.unsloth_error else ""))
    rows = []
    for i, backend in enumerate(backends):
        print(f"== {backend} ==", flush=True)
        with tempfile.TemporaryDirectory() as out:
            env = os.environ | {"GPU_CHECK_EXPORT": "1" if i == 0 else "0"}
            proc = subprocess.run([sys.executable, __file__, "--child", backend, out]
                                  + (["--dry-run"] if DRY else []), env=env,
                                  capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode or not lines:
            print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
            print(f"gpu_check: the {backend} run failed (exit {proc.returncode})")
            return 1
        rows.append(json.loads(lines[-1].removeprefix("RESULT ")))
    print(f"\n{'backend':14} {'steps':>5} {'tokens/s':>9} {'peak GB':>8} {'loss':>7}  settings")
    for r in rows:
        print(f"{r['backend']:14} {r['steps']:5d} {r['tokens_per_s']:9.0f} {r['peak_gb']:8.2f} "
              f"{r['final_loss']:7.3f}  {r['settings']}")
    if len(rows) == 2:
        fast, plain = rows
        print(f"unsloth / transformers: {fast['tokens_per_s'] / plain['tokens_per_s']:.2f}x "
              f"tokens/s, {fast['peak_gb'] / plain['peak_gb']:.2f}x peak GPU memory")
    first = rows[0]
    print(f"\nq8_0 against {first['reference']}: {json.dumps(first['q8_0_vs_reference'])}")
    print(f"q8_0 against the model in memory: {json.dumps(first['q8_0_vs_model_in_memory'])}")
    print(f"4-bit model against the merged 16-bit one: {json.dumps(first['gap_4bit_vs_merged'])}")
    print(f"{first['freed']}")
    print(f"GGUF scoring, seconds per held-out row: {json.dumps(first['gguf_seconds_per_row'])}"
          f" (plan for 40 rows: {first['scoring_plan']})")
    print("\nRESULTS " + json.dumps(rows))
    return 0


if __name__ == "__main__":
    if "--child" in sys.argv:
        i = sys.argv.index("--child")
        print("RESULT " + json.dumps(run(sys.argv[i + 1], sys.argv[i + 2])))
    else:
        sys.exit(main())
