"""Which process this is when a launcher (`accelerate launch`, `torchrun`) runs several: read
from the environment the launchers set, so no torch import and no process group needed."""

from __future__ import annotations

import os


def rank() -> int:
    """This process's number among all of them (0 alone, or the main process).

    >>> rank()
    0
    """
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """How many processes train together (1 without a launcher).

    >>> world_size()
    1
    """
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    """This process's number on its own machine: the GPU it trains on.

    >>> local_rank()
    0
    """
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """True in the one process that writes files and prints progress.

    >>> is_main()
    True
    """
    return rank() == 0


def main_print(*args, **kwargs) -> None:
    """print() in the main process, nothing in the others.

    >>> main_print("Training...")
    Training...
    """
    if is_main():
        print(*args, **kwargs)
