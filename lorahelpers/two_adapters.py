"""The two-adapter notebook's steps, one call per cell: two tasks (tag a review, name its
product) each get a LoRA adapter over one base model; both are scored against the base, written
as adapter GGUFs over one base GGUF (through the same disk check as every export), verified,
scored by llama.cpp and registered with Ollama."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

from lorahelpers.params import Params
from lorahelpers.pipeline import DataBundle


def two_adapter_params(runtime=None, env=None) -> Params:
    """The two-adapter notebook's parameters: the tagger's data (the namer's: namer_params),
    20 held-out rows per task scored by exact match, 60 steps per adapter and a q8_0 base GGUF
    on a GPU (24 steps and f16 on CPU). A LORAHELPERS_<FIELD> variable still overrides each.

    >>> two_adapter_params(env={"LORAHELPERS_MAX_STEPS": "5"}).max_steps  # doctest: +SKIP
    5
    """
    import os

    from lorahelpers.params import DATA_DIR, ENV_PREFIX, default_params
    from lorahelpers.runtime import runtime_report

    runtime = runtime or runtime_report()
    env = os.environ if env is None else env
    mine = {"data": str(DATA_DIR / "alpaca_train.jsonl"),  # tagger: review -> POS / NEG
            "eval_data": str(DATA_DIR / "alpaca_eval.jsonl"),
            "scorer": "exact", "eval_size": 20,
            "max_steps": 60 if runtime.cuda else 24,
            "quants": ("q8_0",) if runtime.cuda else ("f16",),  # the one base GGUF
            "ollama_name": "lorahelpers-reviews",  # -> ...-tagger and ...-namer
            "output_dir": "outputs/two_adapters"}
    return default_params("alpaca", runtime=runtime, env=env,
                          **{k: v for k, v in mine.items() if ENV_PREFIX + k.upper() not in env})


def namer_params(params: Params) -> Params:
    """params for the namer task (review -> product name): its own training and held-out
    files, everything else shared with the tagger.

    >>> namer_params(params).data  # doctest: +SKIP
    '.../data/extract_train.jsonl'
    """
    from lorahelpers.params import DATA_DIR

    return params.replace(data=str(DATA_DIR / "extract_train.jsonl"),
                          eval_data=str(DATA_DIR / "extract_eval.jsonl"))


class Shown(dict):
    """A dict of reports (anything with _repr_html_), shown one under the other, each under
    its name."""

    def __repr__(self) -> str:
        return "\n\n".join(f"# {name}\n{item!r}" for name, item in self.items())

    def _repr_html_(self) -> str:
        return "".join(f"<h4>{html.escape(name)}</h4>" + (
            item._repr_html_() if hasattr(item, "_repr_html_")
            else f"<pre>{html.escape(repr(item))}</pre>") for name, item in self.items())


class Tasks(Shown):
    """{task: DataBundle}, shown as each task's reports and first rows."""

    @property
    def held_out(self) -> dict[str, list]:
        """{task: held-out conversations}: what score_models and score_gguf take."""
        return {task: bundle.eval for task, bundle in self.items()}


def prepare_tasks(params: Params) -> Tasks:
    """The tagger's and the namer's conversations (pipeline.prepare_data of params and of
    namer_params(params)): {"tag": DataBundle, "name": DataBundle}.

    >>> data = prepare_tasks(two_adapter_params())  # doctest: +SKIP
    """
    from lorahelpers.pipeline import prepare_data

    return Tasks(tag=prepare_data(params), name=prepare_data(namer_params(params)))


def train_task(params: Params, adapter: str, data: DataBundle):
    """Load a fresh base model, train the LoRA adapter `adapter` ("tagger", "namer") on
    `data` into output_dir/<adapter>, and free the model's memory: training.TrainResult.

    >>> tagger_run = train_task(params, "tagger", data["tag"])  # doctest: +SKIP
    """
    from lorahelpers.pipeline import load, train_adapter
    from lorahelpers.runtime import free_torch_memory

    model, tokenizer, chat_format = load(params)
    model, result = train_adapter(model, tokenizer, data, chat_format, params=params,
                                  output_dir=f"{params.output_dir}/{adapter}")
    del model
    print(free_torch_memory())
    return result


def score_adapters(params: Params, runs: dict, data: Tasks, tokenizer, *, chat_format, before):
    """A fresh base with every trained adapter over it (compare.one_base; runs: {adapter:
    TrainResult}), each adapter scored on every task and put beside `before` (the base's
    scores): (models, compare.TaskScores of all).

    >>> models, scores = score_adapters(params, runs, data, tokenizer,
    ...                                 chat_format=chat_format, before=before)  # doctest: +SKIP
    """
    from lorahelpers.compare import TaskScores, one_base, score_models
    from lorahelpers.pipeline import load

    base, _, _ = load(params)
    models = one_base(base, {name: run.adapter_dir for name, run in runs.items()})
    after = score_models({name: models[name] for name in runs}, data.held_out, tokenizer,
                         chat_format, scorer=params.scorer)
    return models, TaskScores({**before.reports, **after.reports})


@dataclass
class AdapterExport:
    """The one base GGUF (made from base_dir, the base checkpoint with the training chat
    template), an adapter GGUF and a Modelfile per adapter."""

    base_dir: Path
    base_gguf: Path
    adapters: dict[str, Path]
    modelfiles: dict[str, Path]

    @property
    def files(self) -> list[Path]:
        return [self.base_gguf, *self.adapters.values(), *self.modelfiles.values()]

    def modelfiles_text(self) -> str:
        """Each Modelfile, under a line naming it."""
        return "\n".join(f"# {path}\n{path.read_text()}" for path in self.modelfiles.values())

    def __repr__(self) -> str:
        return "\n".join(f"{p.stat().st_size / 1e6:8.1f} MB  {p}" for p in self.files)


def export_adapters(params: Params, runs: dict, chat_format, model, *, keep_dir=None,
                    progress=print) -> AdapterExport:
    """The base checkpoint with the training chat template (merge.base_with_template), one base
    GGUF of params.quants[0], one adapter GGUF per run and a Modelfile for each (base +
    ADAPTER), copied to keep_dir (Google Drive) when given. The disk is checked first, as
    every export is (pipeline.preflight, for `model`'s base).

    >>> export = export_adapters(params, runs, chat_format, models["base"])  # doctest: +SKIP
    """
    from lorahelpers.export import export_adapter_gguf, export_gguf
    from lorahelpers.keep import keep
    from lorahelpers.merge import base_with_template
    from lorahelpers.modelfile import write_modelfile
    from lorahelpers.pipeline import preflight

    out, quant = Path(params.output_dir), params.quants[0]
    preflight(model, (quant,), out, progress)
    base_dir = base_with_template(params.resolved_model(), chat_format, out / "base",
                                  progress=progress)
    base_gguf = export_gguf(base_dir, out / "gguf", "base", (quant,), progress=progress)[quant]
    adapters = {name: export_adapter_gguf(run.adapter_dir, base_dir,
                                          out / "gguf" / f"{name}-lora-f16.gguf",
                                          progress=progress)
                for name, run in runs.items()}
    modelfiles = {name: write_modelfile(base_gguf, chat_format, system=params.system,
                                        adapter=adapter, path=out / "gguf" / f"Modelfile.{name}",
                                        max_seq_length=params.max_seq_length)
                  for name, adapter in adapters.items()}
    export = AdapterExport(base_dir, base_gguf, adapters, modelfiles)
    for path in export.files:
        keep(path, keep_dir, root=out)
    return export


def verify_adapters(export: AdapterExport, models: dict, tokenizer, data: Tasks) -> Shown:
    """Each model of score_adapters (the base too) against its GGUF (the base GGUF with that
    adapter GGUF) on the first two held-out rows of every task: {model: verify.VerifyReport}.

    >>> verify_adapters(export, models, tokenizer, data)  # doctest: +SKIP
    """
    from lorahelpers.verify import verify

    prompts = [row[:-1] for rows in data.held_out.values() for row in rows[:2]]
    return Shown({name: verify(export.base_gguf, model, tokenizer, prompts,
                               lora_path=export.adapters.get(name))
                  for name, model in models.items()})


def score_adapter_ggufs(export: AdapterExport, data: Tasks, tokenizer, chat_format,
                        *, scorer="exact"):
    """The base GGUF alone and with each adapter GGUF, scored by llama.cpp on every task's
    held-out rows (as many as heldout.gguf_scoring_plan gives this runtime): a TaskScores.

    >>> gguf_scores = score_adapter_ggufs(export, data, tokenizer, chat_format)  # doctest: +SKIP
    """
    from lorahelpers.compare import score_gguf
    from lorahelpers.heldout import this_runtime_plan

    rows = this_runtime_plan(max(len(r) for r in data.held_out.values())).rows
    print(f"Scoring the GGUF files with llama.cpp: {rows} held-out rows per task")
    return score_gguf(export.base_gguf, {"base": None, **export.adapters},
                      {task: held_out[:rows] for task, held_out in data.held_out.items()},
                      tokenizer, chat_format=chat_format, scorer=scorer)


def merged_gguf(adapter_dir, base_dir, out_dir, name, *, quant, chat_format,
                progress=print) -> Path:
    """The adapter merged into the base checkpoint `base_dir` (out_dir/<name>-merged), written
    as one GGUF of type `quant` into out_dir/gguf: what Ollama 0.34.1 and later register in
    place of an adapter layer (pass it to register_or_skip as merged=).

    >>> merged_gguf(run.adapter_dir, base_dir, "out", "tagger", quant="q8_0",
    ...             chat_format=fmt)  # doctest: +SKIP
    PosixPath('out/gguf/tagger-merged-q8_0.gguf')
    """
    from lorahelpers.export import export_gguf
    from lorahelpers.merge import merge_lora

    out = Path(out_dir)
    merged = merge_lora(adapter_dir, out / f"{name}-merged", base_dir=base_dir,
                        chat_format=chat_format, progress=progress)
    return export_gguf(merged.out_dir, out / "gguf", f"{name}-merged", (quant,),
                       progress=progress)[quant]


def register_adapters(params: Params, export: AdapterExport, runs: dict, chat_format, *,
                      start_server: bool = False, progress=print) -> dict:
    """Register <ollama_name>-<adapter> for each adapter: the base GGUF with the adapter as a
    layer, or, where the server refuses adapters (Ollama 0.34.1 and later), the adapter merged
    into the base (made only then). {adapter: pipeline.Registration}; skipped with the reason
    when no server answers. With start_server (on Colab), start one first.

    >>> registered = register_adapters(params, export, runs, chat_format)  # doctest: +SKIP
    """
    from functools import partial

    from lorahelpers.pipeline import register_or_skip

    out, done = Path(params.output_dir), {}
    for name, adapter in export.adapters.items():
        merged = partial(merged_gguf, runs[name].adapter_dir, export.base_dir, out, name,
                         params.quants[0], chat_format)
        done[name] = register_or_skip(f"{params.ollama_name}-{name}", export.base_gguf,
                                      chat_format, system=params.system, adapter=adapter,
                                      merged=merged, max_seq_length=params.max_seq_length,
                                      start_server=start_server and not done,
                                      progress=progress)
        progress(done[name].status)
    return done


def ask_registered(registered: dict, data: Tasks) -> None:
    """Each registered model answers the first held-out question of every task through
    Ollama (streamed), one after the other.

    >>> ask_registered(registered, data)  # doctest: +SKIP
    """
    from lorahelpers import ollama

    names = [r.name for r in registered.values() if r.registered]
    if not names:
        print("No model is registered: nothing to ask.")
    for rows in data.held_out.values() if names else ():
        question = rows[0][:-1]
        print(f"\nQ: {question[-1]['content']}")
        for name in names:
            print(f"{name}:", end=" ")
            ollama.chat(name, question)
            print()
