"""Writes the sample datasets in data/ (deterministic: same seed, same rows).

    python data/make_samples.py

- alpaca_train.jsonl / alpaca_eval.jsonl: short product reviews tagged POS or NEG.
- table.csv / table_eval.csv / table.xlsx (sheets "orders" and "held_out"): shop orders whose
  shipping cost follows from the delivery zone and express flag.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import random
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 3407
INSTRUCTION = "Tag the review."

PRODUCTS = ["headphones", "kettle", "backpack", "desk lamp", "phone case", "blender",
            "running shoes", "umbrella", "keyboard", "coffee grinder", "water bottle", "tent",
            "board game", "vacuum cleaner", "toaster", "office chair", "rain jacket", "mouse",
            "frying pan", "alarm clock", "yoga mat", "suitcase", "charger", "bike helmet",
            "wall clock", "teapot", "sleeping bag", "monitor stand"]
EVAL_PRODUCTS = ["hair dryer", "garden hose", "camera bag", "bread knife", "baby monitor",
                 "picture frame"]
GOOD = ["works perfectly", "exceeded my expectations", "is sturdy and well made",
        "arrived early and looks great", "is worth every penny", "does exactly what it promises",
        "feels solid and premium", "is the best purchase I made this year",
        "still works flawlessly after months", "is comfortable and easy to use",
        "was a wonderful gift", "is quiet and reliable", "beats the expensive brands",
        "made my mornings so much easier", "is beautifully designed", "was simple to set up",
        "keeps working like new", "is great value", "impressed the whole family",
        "fits perfectly", "is fantastic", "has excellent build quality"]
BAD = ["broke after two days", "stopped working within a week", "is flimsy and cheap",
       "arrived damaged", "was a waste of money", "feels poorly made",
       "is much smaller than pictured", "leaks everywhere", "fell apart on first use",
       "is noisy and unreliable", "never worked at all", "is uncomfortable and awkward",
       "smells terrible", "cracked the first time I used it", "is a total disappointment",
       "overheats constantly", "is useless", "came with missing parts",
       "is the worst purchase I have made", "started rattling after an hour",
       "ripped after one trip", "is overpriced junk"]
EVAL_GOOD = ["works like a dream", "is excellent in every way", "made me very happy",
             "is perfect for daily use"]
EVAL_BAD = ["died after one use", "is badly made and fragile", "was a huge letdown",
            "does not work properly"]
GOOD_EXTRA = ["Highly recommend.", "Five stars.", "Would buy again.", "Love it!",
              "Very happy with it.", "", "", ""]
BAD_EXTRA = ["Returning it.", "Do not buy.", "One star.", "Very disappointed.",
             "Avoid this one.", "", "", ""]
PATTERNS = ["The {p} {o}. {x}", "This {p} {o}. {x}", "My new {p} {o}. {x}",
            "Bought a {p} last month and it {o}. {x}", "{x} The {p} {o}.",
            "Honestly, the {p} {o}. {x}", "Got this {p} as a gift and it {o}. {x}"]


def review(rng: random.Random, products, good, bad, positive: bool) -> str:
    opinion = rng.choice(good if positive else bad)
    extra = rng.choice(GOOD_EXTRA if positive else BAD_EXTRA)
    text = rng.choice(PATTERNS).format(p=rng.choice(products), o=opinion, x=extra)
    return " ".join(text.split())


def alpaca_rows(rng, count, products, good, bad, taken):
    rows = []
    while len(rows) < count:
        positive = len(rows) % 2 == 0  # exactly balanced
        text = review(rng, products, good, bad, positive)
        if text in taken:
            continue
        taken.add(text)
        rows.append({"instruction": INSTRUCTION, "input": text,
                     "output": "POS" if positive else "NEG"})
    rng.shuffle(rows)
    return rows


ZONE_FEE = {"A": 4, "B": 6, "C": 9, "D": 12}
EXPRESS_FEE = 5
ITEMS = [("tea towel", "kitchen", 0.2), ("cast iron pan", "kitchen", 2.8),
         ("desk lamp", "home", 1.4), ("wool blanket", "home", 1.9), ("notebook", "office", 0.3),
         ("monitor", "office", 5.5), ("rain boots", "clothing", 1.6), ("scarf", "clothing", 0.2),
         ("plant pot", "garden", 3.1), ("garden shears", "garden", 0.9),
         ("board game", "toys", 1.1), ("puzzle", "toys", 0.7)]
NOTES = ["Happy birthday!", "Congratulations", "For you, with love", "Get well soon"]


def order_rows(rng, count, start_id, first_day, keep_outputs=True):
    rows = []
    for n in range(count):
        item, category, weight = rng.choice(ITEMS)
        zone = rng.choice("ABCD")
        express = rng.random() < 0.35
        rows.append({
            "order_id": start_id + n,
            "order_date": first_day + dt.timedelta(days=rng.randrange(120)),
            "item": item,
            "category": category,
            "weight_kg": None if rng.random() < 0.08 else round(weight * rng.uniform(0.9, 1.1), 2),
            "zone": zone,
            "express": express,
            "gift_note": rng.choice(NOTES) if rng.random() < 0.2 else None,
            "shipping_eur": ZONE_FEE[zone] + (EXPRESS_FEE if express else 0),
        })
    if not keep_outputs:
        return rows
    for row in rng.sample(rows, 3):  # a few unpriced orders: dropped and counted on load
        row["shipping_eur"] = None
    return sorted(rows, key=lambda r: r["order_id"])


def atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_jsonl(path: Path, rows) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    atomic_write(path, write)


def csv_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"  # as Excel shows a boolean cell and saves it as CSV
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # as a person writes it, and as the workbook shows it
    return str(value)


def write_csv(path: Path, rows) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            out = csv.writer(f)
            out.writerow(rows[0])
            out.writerows([[csv_cell(v) for v in r.values()] for r in rows])
    atomic_write(path, write)


def write_xlsx(path: Path, sheets: dict) -> None:
    import openpyxl

    book = openpyxl.Workbook()
    book.remove(book.active)
    for name, rows in sheets.items():
        sheet = book.create_sheet(name)
        sheet.append(list(rows[0]))
        for r in rows:
            sheet.append(list(r.values()))
        for cell in sheet["B"][1:]:
            cell.number_format = "yyyy-mm-dd"
    stamp = dt.datetime(2025, 1, 1)
    book.properties.created = book.properties.modified = stamp
    atomic_write(path, book.save)


def main() -> None:
    rng = random.Random(SEED)
    taken: set[str] = set()
    train = alpaca_rows(rng, 240, PRODUCTS, GOOD, BAD, taken)
    held = alpaca_rows(rng, 50, EVAL_PRODUCTS + PRODUCTS, GOOD + EVAL_GOOD, BAD + EVAL_BAD, taken)
    write_jsonl(HERE / "alpaca_train.jsonl", train)
    write_jsonl(HERE / "alpaca_eval.jsonl", held)

    orders = order_rows(rng, 130, 1001, dt.date(2025, 3, 1))
    held_orders = order_rows(rng, 30, 2001, dt.date(2025, 7, 1), keep_outputs=False)
    write_csv(HERE / "table.csv", orders)
    write_csv(HERE / "table_eval.csv", held_orders)
    write_xlsx(HERE / "table.xlsx", {"orders": orders, "held_out": held_orders})


if __name__ == "__main__":
    main()
