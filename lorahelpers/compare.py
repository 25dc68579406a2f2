"""Several models compared on several tasks: a base model and the LoRA adapters trained on it.

An adapter is a small file that changes what its base model does; one base GGUF can carry any
of them (llama.cpp's lora_path, Ollama's ADAPTER). This module scores every model on every task,
in PyTorch or in llama.cpp with each adapter GGUF over the base GGUF, and lines up their answers
to the same prompts. (Saving and loading one adapter is lorahelpers.models; the base checkpoint
with the training chat template, which the one base GGUF is made from, is
lorahelpers.merge.base_with_template.)

    >>> scores = score_models({"tagger": tagger, "namer": namer}, tasks, tok, fmt)  # doctest: +SKIP
    >>> scores.table()                                                             # doctest: +SKIP
"""

from __future__ import annotations

import html
from contextlib import contextmanager
from dataclasses import dataclass

from lorahelpers.errors import SettingsError


@dataclass
class TaskScores:
    """reports[model][task]: each model's EvalReport on each task's held-out rows, all models
    asked the same prompts. `engine` says what ran them ("PyTorch", "llama.cpp")."""

    reports: dict[str, dict]
    engine: str = "PyTorch"

    def __post_init__(self):
        if not self.reports:
            raise SettingsError("TaskScores needs at least one model. Fix: pass the reports of "
                                "one or more")
        first, tasks = next(iter(self.reports.items()))
        for model, by_task in self.reports.items():
            if list(by_task) != list(tasks):
                raise SettingsError(f"model {model!r} has tasks {list(by_task)}, model {first!r} "
                                    f"has {list(tasks)}. Fix: score every model on the same tasks")
            for task, report in by_task.items():
                if _prompts(report) != _prompts(tasks[task]):
                    raise SettingsError(f"task {task!r}: model {model!r} was asked other "
                                        f"prompts than model {first!r}. Fix: pass every model "
                                        "the same rows")

    @property
    def models(self) -> list[str]:
        return list(self.reports)

    @property
    def tasks(self) -> list[str]:
        return list(next(iter(self.reports.values())))

    def table(self):
        """Scores (%) as a DataFrame: one row per model, one column per task."""
        import pandas as pd

        return pd.DataFrame([[self.reports[m][t].score for t in self.tasks] for m in self.models],
                            index=pd.Index(self.models, name=f"model ({self.engine})"),
                            columns=self.tasks).round(1)

    def side_by_side(self, n: int = 3):
        """The first `n` prompts of each task with the expected answer and each model's answer.

        >>> scores.side_by_side(2)  # doctest: +SKIP
        """
        import pandas as pd

        rows = []
        for task in self.tasks:
            reports = {m: self.reports[m][task] for m in self.models}
            first = next(iter(reports.values()))
            for i, row in enumerate(first.rows[:n]):
                rows.append({"task": task, "prompt": row["prompt"], "expected": row["expected"]}
                            | {m: r.rows[i]["answer"] for m, r in reports.items()})
        return pd.DataFrame(rows, columns=["task", "prompt", "expected", *self.models])

    def agreement(self, other: TaskScores):
        """Share (%) of this table's prompts each model answers identically here and in `other`
        (e.g. llama.cpp vs PyTorch), for the models and tasks both have; `other` may have asked
        more prompts, not fewer."""
        import pandas as pd

        models = [m for m in self.models if m in other.reports]
        tasks = [t for t in self.tasks if t in other.tasks]
        if not models or not tasks:
            raise SettingsError(f"no model and task in common: {self.models} x {self.tasks} vs "
                                f"{other.models} x {other.tasks}. Fix: compare the same models")

        def same(m, t) -> float:
            theirs = {r["prompt"]: r["answer"] for r in other.reports[m][t].rows}
            mine = self.reports[m][t].rows
            missing = [r["prompt"] for r in mine if r["prompt"] not in theirs]
            if missing:
                raise SettingsError(f"{m!r} on {t!r}: {len(missing)} prompt(s) here were not "
                                    f"asked there, e.g. {missing[0][:60]!r}. Fix: ask both the "
                                    "same rows")
            return 100.0 * sum(r["answer"] == theirs[r["prompt"]] for r in mine) / max(len(mine), 1)

        return pd.DataFrame([[same(m, t) for t in tasks] for m in models],
                            index=pd.Index(models, name=f"model ({self.engine} = {other.engine})"),
                            columns=tasks).round(1)

    def __str__(self) -> str:
        return self.table().to_string()

    def _repr_html_(self) -> str:
        n = {t: self.reports[self.models[0]][t].n for t in self.tasks}
        sizes = ", ".join(f"{html.escape(t)}: {k}" for t, k in n.items())
        return (f"<p>Held-out score (%), {html.escape(self.engine)}; rows per task: {sizes}</p>"
                + self.table().to_html())


def _prompts(report) -> list[str]:
    return [r["prompt"] for r in report.rows]


def score_models(models: dict, tasks: dict, tokenizer, chat_format, *, scorer="exact",
                 max_new_tokens: int = 16) -> TaskScores:
    """Score each in-memory model (name -> model) on each task (name -> held-out conversations)
    with lorahelpers.inference.evaluate. Short answers need few new tokens.

    >>> score_models({"base": model}, {"tag": eval_rows}, tok, fmt).table()  # doctest: +SKIP
    """
    from lorahelpers.inference import evaluate

    return TaskScores({name: {task: evaluate(model, tokenizer, rows, scorer,
                                             chat_format=chat_format,
                                             max_new_tokens=max_new_tokens)
                              for task, rows in tasks.items()}
                       for name, model in models.items()})


def score_gguf(base_gguf, adapters: dict, tasks: dict, tokenizer, *, chat_format, scorer="exact",
               max_new_tokens: int = 16) -> TaskScores:
    """The same as score_models, run by llama.cpp: `adapters` maps a model name to an adapter
    GGUF applied over `base_gguf` (None: the base alone). Prompts are rendered by chat_format
    and tokenized by llama.cpp, answers decoded greedily and cut at its stop strings.

    >>> score_gguf("base-f16.gguf", {"base": None, "tagger": "tagger.gguf"}, tasks, tok,
    ...            fmt).table()  # doctest: +SKIP
    """
    from lorahelpers.inference import evaluate_gguf

    return TaskScores({name: {task: evaluate_gguf(base_gguf, rows, chat_format, tokenizer,
                                                  scorer=scorer,
                                                  max_new_tokens=max_new_tokens, lora_path=adapter)
                              for task, rows in tasks.items()}
                       for name, adapter in adapters.items()}, "llama.cpp")


def one_base(base, adapters: dict) -> dict:
    """The base model and each trained adapter (name -> adapter directory) as models that share
    the one `base` in memory: {"base": ..., name: ...}. Each switches its adapter on when it
    is called or generates (the base switches every adapter off), so score_models, evaluate
    and verify take them like separately loaded models, and a GPU holds one base, not one per
    adapter. `base` must be a freshly loaded model (lorahelpers.pipeline.load) without a LoRA.

    >>> models = one_base(base, {"tagger": "out/tagger/adapter", "namer": "out/namer/adapter"})  # doctest: +SKIP
    >>> score_models(models, tasks, tok, fmt)  # doctest: +SKIP
    """
    from peft import PeftModel

    if not adapters:
        raise SettingsError("one_base needs at least one adapter. Fix: pass {name: adapter "
                            "directory}, e.g. {'tagger': tagger_run.adapter_dir}")
    if hasattr(base, "peft_config"):
        raise SettingsError("one_base needs the base model without a LoRA (this one has an "
                            "adapter). Fix: load the base again with lorahelpers.pipeline.load")
    if "base" in adapters:
        raise SettingsError("an adapter is named 'base', the name of the model without one. "
                            "Fix: give it another name")
    (first, first_dir), *rest = adapters.items()
    shared = PeftModel.from_pretrained(base, str(first_dir), adapter_name=first)
    for name, adapter_dir in rest:
        shared.load_adapter(str(adapter_dir), adapter_name=name)
    shared.eval()
    return {"base": AdapterView(shared, None)} | {name: AdapterView(shared, name)
                                                  for name in adapters}


class AdapterView:
    """One adapter of a multi-adapter PEFT model (None: the base alone), switched on whenever
    the model is called or generates; every other attribute is the shared model's. See
    one_base."""

    def __init__(self, shared, adapter: str | None):
        self._shared, self.adapter = shared, adapter
        self._off = adapter is None

    def _use(self):
        base = self._shared.base_model  # the LoRA layers' owner
        if self._off:
            base.disable_adapter_layers()
        else:
            base.enable_adapter_layers()
            self._shared.set_adapter(self.adapter)
        return self._shared

    def __call__(self, *args, **kwargs):
        return self._use()(*args, **kwargs)

    def generate(self, *args, **kwargs):
        return self._use().generate(*args, **kwargs)

    @contextmanager
    def disable_adapter(self):
        """The base alone while inside (as PeftModel.disable_adapter)."""
        was, self._off = self._off, True
        try:
            yield
        finally:
            self._off = was

    def __getattr__(self, name):
        if self.adapter is None and name in ("disable_adapter", "peft_config"):
            raise AttributeError(name)  # the base view is not a PEFT model
        return getattr(self._shared, name)

    def __repr__(self) -> str:
        return f"AdapterView({self.adapter or 'base, no adapter'})"
