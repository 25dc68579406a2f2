"""`python -m lorahelpers train CONFIG`: the notebooks' steps as one script, on one process or
several (`accelerate launch` / `torchrun`). Every process reads the same data (seeded, so each
sees the same rows) and loads the model; the Trainer shards the batches and averages the
gradients; only the main process scores the held-out rows (before and after training, of the
GGUF files, through Ollama), prints progress and writes the adapter, history, plot, summary and
exports."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from lorahelpers.distributed import is_main, world_size
from lorahelpers.params import Params


@dataclass
class TrainRun:
    """What the train command did (in the main process; other processes get adapter=None)."""

    params: Params
    adapter_dir: Path | None
    steps: int
    final_loss: float | None
    interrupted: bool
    processes: int
    train_seconds: float
    export: object | None = None  # pipeline.ExportBundle
    modelfile: Path | None = None
    ollama: str | None = None
    before: object | None = None  # inference.EvalReport of the held-out rows, before training
    after: object | None = None
    gguf_reports: dict = field(default_factory=dict)  # {quant: EvalReport}, with --export
    ollama_scores: object | None = None  # heldout.OllamaScores, with --register

    def comparison(self):
        """The held-out comparison table (heldout.Comparison) of every stage scored."""
        from lorahelpers.heldout import compare

        return compare(self.before, self.after, self.gguf_reports, self.ollama_scores)

    def as_dict(self) -> dict:
        out = {"adapter": str(self.adapter_dir), "steps": self.steps,
               "final_loss": self.final_loss, "interrupted": self.interrupted,
               "processes": self.processes, "train_seconds": self.train_seconds}
        if self.before is not None or self.after is not None:
            out |= {"before": getattr(self.before, "score", None),
                    "after": getattr(self.after, "score", None),
                    "held_out_rows": getattr(self.after or self.before, "n", None)}
        if self.export is not None:
            out["ggufs"] = {q: str(p) for q, p in self.export.ggufs.items()}
            out["verified"] = {q: r.passed for q, r in self.export.reports.items()}
            out["modelfile"] = str(self.modelfile)
            out["gguf_scores"] = {q: r.score for q, r in self.gguf_reports.items()}
            out["ollama"] = self.ollama
        if self.ollama_scores is not None:
            out["ollama_scores"] = self.ollama_scores.as_dict()
        if self.before is not None or self.after is not None:
            out["comparison"] = self.comparison().as_dict()
        return out


def run_training(params: Params, export: bool = False, register: bool = False,
                 resume: bool = False, progress=print) -> TrainRun:
    """Prepare data, load the model, score the held-out rows, add LoRA, train, save the adapter
    and score again; with `export`, also merge, write, verify and score the GGUF files and
    write the Modelfile (and with `register`, when a server answers, register with Ollama and
    score through it). Ends with the comparison table (heldout.Comparison), also in
    summary.json, and an OllamaCheckError if Ollama's greedy answers lose more than one row
    against the GGUF. Progress goes to `progress` in the main process only.

    >>> run_training(load_config("train.toml"), export=True)  # doctest: +SKIP
    """
    from lorahelpers.models import add_lora
    from lorahelpers.pipeline import (
        load,
        lora_settings,
        prepare_data,
        preview_training,
        train_settings,
    )
    from lorahelpers.plots import plot_history, save_figure, stepper
    from lorahelpers.runtime import runtime_report
    from lorahelpers.training import train

    say = progress if is_main() else (lambda *a, **k: None)
    processes = world_size()
    step = stepper(say, 5 + (2 if export else 0) + (1 if export and register else 0))
    runtime = runtime_report()
    say(runtime.summary() + (f", {processes} processes" if processes > 1 else ""))
    precision = runtime.precision if params.precision == "auto" else params.precision
    step("Reading data")
    data = prepare_data(params)
    say(str(data.report))
    step(f"Loading {params.model}")
    model, tokenizer, fmt = load(params)
    say(preview_training(params, data, tokenizer, fmt, rows=0).summary())
    step(f"Scoring the held-out rows before training ({params.scorer})")
    before = _score(model, tokenizer, fmt, data, params, say, "before")
    per_step = params.examples_per_step * processes
    step(f"Training LoRA r={params.lora_r} for {params.max_steps} steps, {per_step} "
         f"conversations per step" + (f" ({processes} processes)" if processes > 1 else "")
         + f", {precision}")
    model = add_lora(model, lora_settings(params))
    result = train(model, tokenizer, data.train, data.eval, fmt,
                   train_settings(params, progress="auto", resume=resume))
    out = Path(params.output_dir)
    run = TrainRun(params, result.adapter_dir if is_main() else None, result.steps,
                   result.final_loss, result.interrupted, processes, result.elapsed_s,
                   before=before)
    if not is_main():
        return run
    say(f"Adapter: {result.adapter_dir} (step {result.steps}, loss {result.final_loss})")
    if result.history.records:
        save_figure(plot_history(result.history), out / "loss.png")
    step("Scoring the held-out rows after training")
    if result.interrupted:  # Ctrl-C: the adapter trained so far is saved, nothing more runs
        say("  skipped: training was interrupted")
    else:
        run.after = _score(model, tokenizer, fmt, data, params, say, "after")
    if export and not result.interrupted:
        step(f"Exporting GGUF ({', '.join(params.quants)}) and verifying against PyTorch")
        _export(run, model, tokenizer, fmt, data, say)
        del model  # its GPU memory goes to llama.cpp and Ollama
        step("Scoring the GGUF files with llama.cpp")
        _score_ggufs(run, tokenizer, fmt, data, say)
        if register:
            step("Registering with Ollama and scoring the held-out rows through it")
            _register(run, tokenizer, fmt, data, say)
    return _finish(run, out, say)


def _finish(run: TrainRun, out: Path, say) -> TrainRun:
    """Print the comparison table, write summary.json, then fail if Ollama's check did."""
    from lorahelpers.atomic import write_atomic

    if run.before is not None or run.after is not None:
        say(f"\n{run.comparison()}")
    write_atomic(out / "summary.json", json.dumps(run.as_dict(), indent=2))
    check = getattr(run.ollama_scores, "check", None)
    if check is not None:
        check.raise_if_failed()
    return run


def _score(model, tokenizer, fmt, data, params: Params, say, when: str):
    """evaluate on the held-out rows in the main process (None elsewhere, or without rows)."""
    from lorahelpers.inference import evaluate

    if not is_main():
        return None
    if not data.eval:
        say("  no held-out rows (eval_size 0 and no eval_data): nothing to score")
        return None
    report = evaluate(model, tokenizer, data.eval, params.scorer, fmt)
    say(f"  {when}: {report}")
    return report


def _export(run: TrainRun, model, tokenizer, fmt, data, say) -> None:
    from lorahelpers.modelfile import write_modelfile
    from lorahelpers.pipeline import export_and_verify

    params = run.params
    prompts = [list(row[:-1]) for row in (data.eval or data.train)[:4]]
    run.export = export_and_verify(model, tokenizer, run.adapter_dir, fmt, params.output_dir,
                                   params.ollama_name, params.quants, prompts, say)
    say(str(run.export))
    first = run.export.ggufs[params.quants[0]]
    run.modelfile = write_modelfile(first, fmt, system=params.system,
                                    max_seq_length=params.max_seq_length)
    say(f"Modelfile: {run.modelfile} (ollama create {params.ollama_name} -f {run.modelfile})")


def _score_ggufs(run: TrainRun, tokenizer, fmt, data, say) -> None:
    from lorahelpers.pipeline import free_torch_memory, score_ggufs

    say(f"  {free_torch_memory()}")
    if data.eval:
        run.gguf_reports = score_ggufs(run.export.ggufs, data.eval, fmt, tokenizer,
                                       run.params.scorer, progress=say)
        say("".join(f"  {q}: {r}\n" for q, r in run.gguf_reports.items()).rstrip())


def _register(run: TrainRun, tokenizer, fmt, data, say) -> None:
    from lorahelpers.heldout import OllamaScores, score_ollama
    from lorahelpers.pipeline import register_or_skip

    params, quant = run.params, run.params.quants[0]
    first = run.export.ggufs[quant]
    info, run.ollama = register_or_skip(params.ollama_name, first, fmt, params.system,
                                        progress=say, max_seq_length=params.max_seq_length)
    say(f"  {run.ollama}")
    if info is None or not data.eval:
        run.ollama_scores = OllamaScores(run.ollama if info is None else "no held-out rows")
        return
    run.ollama_scores = score_ollama(params.ollama_name, data.eval, fmt, tokenizer,
                                     params.scorer, gguf=first,
                                     gguf_report=run.gguf_reports.get(quant), quant=quant,
                                     seed=params.seed, progress=say)


def cmd_train(args) -> int:
    """The `train` subcommand of `python -m lorahelpers`: print a starter config, or train.

    >>> cmd_train(build_parser().parse_args(["train", "train.toml"]))  # doctest: +SKIP
    0
    """
    import sys

    from lorahelpers.config import ConfigError, load_config, starter_config

    if args.config is None and not args.set and not args.print_config:
        print("train: give a config file (write one with `python -m lorahelpers train "
              "--print-config > train.toml`), or --set field=value.", file=sys.stderr)
        return 2
    try:
        params = load_config(None if args.print_config else args.config, args.set)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    if args.print_config:
        sys.stdout.write(starter_config(params))
        return 0
    t0 = time.perf_counter()
    run = run_training(params, export=args.export or args.register, register=args.register,
                       resume=args.resume)
    if is_main():
        done = {k: v for k, v in run.as_dict().items() if k != "comparison"}  # printed above
        print(f"\nDone in {time.perf_counter() - t0:.0f} s: {json.dumps(done)}")
    return 130 if run.interrupted else 0


def add_train_parser(sub) -> None:
    """The `train` subcommand's arguments, added to the CLI's subparsers.

    >>> add_train_parser(argparse.ArgumentParser().add_subparsers())  # doctest: +SKIP
    """
    train = sub.add_parser(
        "train", help="train from a config file (TOML/YAML); runs under accelerate launch and "
                      "torchrun too")
    train.add_argument("config", nargs="?", default=None, help="TOML or YAML file of Params fields")
    train.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                       help="override one field (repeatable), e.g. --set max_steps=20")
    train.add_argument("--export", action="store_true",
                       help="also merge, export GGUF, verify it and write the Modelfile")
    train.add_argument("--register", action="store_true",
                       help="also register with Ollama when a server answers (implies --export)")
    train.add_argument("--resume", action="store_true",
                       help="continue from the last checkpoint in output_dir/checkpoints")
    train.add_argument("--print-config", action="store_true",
                       help="print a commented starter config (with any --set applied) and exit")
