"""Speed and memory of the data layer at scale, as ratios against pandas reading the same file
in the same run. Each measurement runs in a fresh process (imports done before the clock
starts), the best of --repeat runs is kept:

  csv:  a 200,000-row CSV (about 67 MB: orders with a free-text note, some quoted fields with
        commas and line breaks) read by pandas.read_csv, by lorahelpers' load_table, and turned
        into conversations by to_conversations (a column-merge template);
  xlsx: a 50,000-row workbook of the same orders (some cells empty) read by pandas.read_excel
        and by load_table.

Memory is what the call adds: the process's peak RSS (ru_maxrss) less its RSS before the call.
CPU time is printed beside the wall time: on a machine shared with other work it varies less.
Targets (issue 19): load_table <= 3x pandas' read time, to_conversations <= 6x, the memory a
CSV load adds <= 4x the file size, the xlsx load within 1.5x of pandas.

    python bench/data_speed.py [--repeat 3] [--rows 200000] [--xlsx-rows 50000]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TEMPLATE = ("Zone {zone}, express: {express}. Order of {item} ({category})[[, {weight_kg} kg]]"
            "[[, note: {note}]], ordered {order_date}. Shipping in EUR?")
ITEMS = ["scarf", "desk lamp", "tea towel", "garden hose", "mug", "notebook", "kettle", "rug"]
WORDS = ("please leave the parcel at the back door, ring twice, fragile glass inside, gift "
         "wrap with a card saying happy birthday, deliver after five").split()


def order(rng: random.Random, i: int) -> list:
    zone, express = rng.choice("ABCD"), rng.random() < 0.35
    note = " ".join(rng.choices(WORDS, k=rng.randint(38, 62)))
    if i % 50 == 0:
        note = f'"{note}",\nsecond line'  # quoted, with a comma and a line break
    weight = "" if i % 7 == 0 else f"{rng.uniform(0.1, 9.9):.2f}"
    cost = {"A": 4, "B": 6, "C": 9, "D": 12}[zone] + (5 if express else 0)
    return [1000 + i, f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            rng.choice(ITEMS), "home", weight, zone, "yes" if express else "no", note, cost]


HEADER = ["order_id", "order_date", "item", "category", "weight_kg", "zone", "express", "note",
          "shipping_eur"]


def write_csv(path: Path, rows: int) -> None:
    rng = random.Random(19)
    with open(path, "w", encoding="utf-8", newline="") as f:
        out = csv.writer(f)
        out.writerow(HEADER)
        out.writerows(order(rng, i) for i in range(rows))


def write_xlsx(path: Path, rows: int) -> None:
    import datetime as dt

    import openpyxl

    rng = random.Random(19)
    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet("orders")
    sheet.append(HEADER)
    for i in range(rows):
        row = order(rng, i)
        row[1] = dt.datetime.fromisoformat(row[1])
        row[4] = float(row[4]) if row[4] else None
        row[6] = row[6] == "yes"
        sheet.append(row)
    book.save(path)


def phase(name: str, path: str) -> None:
    """One measurement, in this (fresh) process: prints {"seconds", "added_bytes"}."""
    import pandas as pd

    from lorahelpers.data import load_table, to_conversations

    calls = {
        "pandas_csv": lambda: pd.read_csv(path),
        "pandas_xlsx": lambda: pd.read_excel(path),
        "load_table": lambda: load_table(path),
        "to_conversations": lambda: to_conversations(path, template=TEMPLATE,
                                                     output_column="shipping_eur"),
    }
    before = _rss()
    t0, cpu0 = time.perf_counter(), time.process_time()
    result = calls[name]()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    del result
    print(json.dumps({"seconds": seconds, "cpu": cpu, "added_bytes": peak - before}))


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def measure(name: str, path: Path, repeat: int) -> dict:
    runs = []
    for _ in range(repeat):
        done = subprocess.run([sys.executable, __file__, "--phase", name, str(path)],
                              capture_output=True, text=True, check=True)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {key: min(r[key] for r in runs) for key in ("seconds", "cpu", "added_bytes")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phase", nargs=2, metavar=("NAME", "FILE"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--xlsx-rows", type=int, default=50_000)
    parser.add_argument("--skip-xlsx", action="store_true")
    args = parser.parse_args()
    if args.phase:
        return phase(*args.phase)
    with tempfile.TemporaryDirectory(prefix="lorahelpers-bench-") as tmp:
        csv_path = Path(tmp) / "orders.csv"
        write_csv(csv_path, args.rows)
        size = csv_path.stat().st_size
        print(f"CSV: {args.rows:,} rows, {size / 1e6:.1f} MB; best of {args.repeat} fresh "
              "processes each")
        base = measure("pandas_csv", csv_path, args.repeat)
        print(f"  pandas.read_csv        {base['seconds']:6.2f} s   adds "
              f"{base['added_bytes'] / size:4.1f}x the file (CPU {base['cpu']:.2f} s)")
        for name, target in (("load_table", 3), ("to_conversations", 6)):
            got = measure(name, csv_path, args.repeat)
            print(f"  {name:<22} {got['seconds']:6.2f} s = {got['seconds'] / base['seconds']:5.1f}x "
                  f"pandas (target <= {target}x); adds {got['added_bytes'] / size:4.1f}x the "
                  "file" + (" (target <= 4x)" if name == "load_table" else "") +
                  f" (CPU {got['cpu'] / base['cpu']:.1f}x)")
        if args.skip_xlsx:
            return
        xlsx_path = Path(tmp) / "orders.xlsx"
        write_xlsx(xlsx_path, args.xlsx_rows)
        print(f"XLSX: {args.xlsx_rows:,} rows, {xlsx_path.stat().st_size / 1e6:.1f} MB")
        base = measure("pandas_xlsx", xlsx_path, args.repeat)
        got = measure("load_table", xlsx_path, args.repeat)
        print(f"  pandas.read_excel      {base['seconds']:6.2f} s")
        print(f"  load_table             {got['seconds']:6.2f} s = "
              f"{got['seconds'] / base['seconds']:5.2f}x pandas (target <= 1.5x; CPU "
              f"{got['cpu'] / base['cpu']:.2f}x)")


if __name__ == "__main__":
    main()
