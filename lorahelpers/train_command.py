"""`python -m lorahelpers train CONFIG`: the whole pipeline (lorahelpers.runner) from a config
file, on one process or several (`accelerate launch` / `torchrun`)."""

from __future__ import annotations

import time

from lorahelpers.distributed import is_main


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
    from lorahelpers.runner import run_pipeline

    t0 = time.perf_counter()
    run = run_pipeline(params, export=args.export or args.register, register=args.register,
                       resume=args.resume)
    if is_main():
        print(f"\nDone in {time.perf_counter() - t0:.0f} s; summary in "
              f"{params.output_dir}/summary.json")
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
