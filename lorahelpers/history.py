"""Training history: what train() records per optimizer step, saved as history.json and
history.csv next to the adapter and read back to resume or to plot (lorahelpers.plots)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from lorahelpers.atomic import write_atomic
from lorahelpers.errors import SettingsError

FIELDS = ("step", "epoch", "loss", "learning_rate", "grad_norm", "tokens", "tokens_per_s",
          "elapsed_s", "eval_loss")


@dataclass
class History:
    """One record per optimizer step: step, epoch, loss, learning_rate, grad_norm, tokens
    (real, non-padding tokens in the step), tokens_per_s, elapsed_s, and eval_loss at the
    steps where an evaluation ran (None elsewhere).

    >>> h = History()
    >>> _ = h.add_train(step=1, loss=2.5, learning_rate=1e-4)
    >>> h.column("loss")
    [2.5]
    """

    records: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def _at(self, step: int) -> dict:
        if self.records and self.records[-1]["step"] == step:
            return self.records[-1]
        for record in self.records:
            if record["step"] == step:
                return record
        record = dict.fromkeys(FIELDS)
        record["step"] = step
        self.records.append(record)
        self.records.sort(key=lambda r: r["step"])
        return record

    def add_train(self, step: int, **values) -> dict:
        unknown = set(values) - set(FIELDS)
        if unknown:
            raise SettingsError(f"History: unknown fields {sorted(unknown)}. Fix: use {FIELDS}")
        record = self._at(step)
        record.update(values)
        return record

    def add_eval(self, step: int, eval_loss: float) -> dict:
        record = self._at(step)
        record["eval_loss"] = eval_loss
        return record

    def truncate(self, last_step: int) -> History:
        """The records up to and including last_step (a resumed run starts from there)."""
        return History([dict(r) for r in self.records if r["step"] <= last_step])

    def column(self, name: str) -> list:
        return [r.get(name) for r in self.records]

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.records, columns=list(FIELDS))

    def save(self, directory) -> tuple[Path, Path]:
        """Write history.json and history.csv into `directory`, each atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: ("" if r.get(k) is None else r.get(k)) for k in FIELDS}
                         for r in self.records)
        json_path = write_atomic(directory / "history.json",
                                  json.dumps(self.records, indent=1) + "\n")
        csv_path = write_atomic(directory / "history.csv", buf.getvalue())
        return json_path, csv_path

    @classmethod
    def load(cls, path) -> History:
        """Read a history.json (or the directory holding one)."""
        path = Path(path)
        if path.is_dir():
            path = path / "history.json"
        try:
            records = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise SettingsError(f"cannot read training history {path}: {err}. Fix: pass the "
                                "history.json that train() wrote") from err
        if not isinstance(records, list) or not all(isinstance(r, dict) and "step" in r
                                                    for r in records):
            raise SettingsError(f"{path} is not a training history (a JSON list of step "
                                "records). Fix: pass the history.json that train() wrote")
        return cls([dict.fromkeys(FIELDS) | r for r in records])
