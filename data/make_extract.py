"""Writes the second sample task on the review data: name the product a review is about.

    python data/make_extract.py

The inputs are exactly the reviews of alpaca_train.jsonl / alpaca_eval.jsonl, in the same
order; only the instruction and the answer differ. Two LoRA adapters trained on the two files
learn two skills over the same kind of input (see notebooks/two_adapters.ipynb).

- extract_train.jsonl / extract_eval.jsonl: instruction "Name the product.", input the review,
  output the product it names (held-out reviews include products the training file never
  names, so the skill to learn is copying, not remembering a list).
"""

from __future__ import annotations

import json
from pathlib import Path

from make_samples import EVAL_PRODUCTS, PRODUCTS, write_jsonl

HERE = Path(__file__).resolve().parent
INSTRUCTION = "Name the product."
SOURCES = {"extract_train.jsonl": "alpaca_train.jsonl", "extract_eval.jsonl": "alpaca_eval.jsonl"}


def product_of(review: str, products) -> str:
    """The one product named in `review` (the longest name, so 'desk lamp' beats 'lamp')."""
    found = sorted((p for p in products if p in review), key=len, reverse=True)
    if not found:
        raise ValueError(f"no known product in review {review!r}")
    return found[0]


def extract_rows(review_rows, products) -> list[dict]:
    return [{"instruction": INSTRUCTION, "input": r["input"],
             "output": product_of(r["input"], products)} for r in review_rows]


def main() -> None:
    products = PRODUCTS + EVAL_PRODUCTS
    for target, source in SOURCES.items():
        lines = (HERE / source).read_text(encoding="utf-8").splitlines()
        write_jsonl(HERE / target, extract_rows([json.loads(x) for x in lines], products))


if __name__ == "__main__":
    main()
