# %% [markdown]
# # Two LoRA adapters, one base model
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lorahelpers/lorahelpers/blob/main/notebooks/two_adapters.ipynb)
#
# A LoRA adapter is a small file that changes what a base model does. This notebook trains two
# of them on the same base for two different tasks over the same short product reviews:
#
# * the **tagger** answers `Tag the review.` with `POS` or `NEG`;
# * the **namer** answers `Name the product.` with the product the review is about.
#
# Both are exported as adapter GGUFs that run over **one** base GGUF in llama.cpp, checked
# against their PyTorch models, asked the same prompts side by side, and registered as two
# Ollama models: adapter layers sharing the one base file on Ollama releases that accept
# adapters, and each adapter merged into its own model on 0.34.1 and later, which refuse them.
#
# * **On a Colab GPU** the base is an Unsloth 4-bit Llama-3.2-3B-Instruct (its GGUF is made
#   from the 16-bit original).
# * **Without a GPU** the base is SmolLM2-135M-Instruct, which ships with lorahelpers: a few
#   minutes on a laptop.

# %%
# Set-up: on Colab, fetch lorahelpers and install what it needs (a few minutes, once per
# runtime; Colab's own torch is kept). Elsewhere run `make setup` once in the repository.
import sys

if "google.colab" in sys.modules:
    import os
    if not os.path.exists("/content/lorahelpers"):
        !git clone --depth 1 https://github.com/lorahelpers/lorahelpers /content/lorahelpers
    %cd /content/lorahelpers
    !bash colab_setup.sh --ollama

# %%
from lorahelpers.runtime import runtime_report

runtime = runtime_report()
print(runtime.summary())

# %% [markdown]
# ## Parameters
# The model, steps, LoRA rank and learning rate are shared by both adapters. The values below
# are this notebook's defaults; an environment variable `LORAHELPERS_<FIELD>` still overrides
# any of them (for example `LORAHELPERS_MAX_STEPS=40`). `data` and `eval_data` are the
# tagger's files; the namer's come from `namer_params(params)`. `quants[0]` is the type of the
# one base GGUF (the adapters stay 16-bit: they are small).

# %%
from lorahelpers.pipeline import two_adapter_params

params = two_adapter_params(runtime)
params

# %% [markdown]
# ## Keep your work
# A Colab runtime that disconnects loses its disk. With Google Drive mounted (Colab asks you to
# allow it), each adapter's checkpoints, the adapters, the GGUF files and the Modelfiles are
# copied to `MyDrive/lorahelpers/<output folder>` as they are written, and running the notebook
# again resumes training from the newest checkpoints there. Set `params.keep_dir` to use
# another folder, or to `"off"` for none.

# %%
from lorahelpers.keep import keep, keep_folder, mount_drive

if runtime.colab and params.keep_dir != "off":
    mount_drive()
keep_dir = keep_folder(params.keep_dir, params.output_dir)
print(f"Keeping files in {keep_dir}" if keep_dir else
      f"Files stay in {params.output_dir} only (no Google Drive, no params.keep_dir)")

# %% [markdown]
# ## Two tasks on the same reviews
# Same inputs, different instruction and answer. Each held-out file has reviews (and, for the
# namer, products) the training file never shows.

# %%
from lorahelpers.data import preview
from lorahelpers.pipeline import namer_params, prepare_data

data = {"tag": prepare_data(params), "name": prepare_data(namer_params(params))}
for task, bundle in data.items():
    display(bundle.report)
    print(preview(bundle.train, 2))
tasks = {task: bundle.eval for task, bundle in data.items()}

# %% [markdown]
# ## The base model before training
# Asked either question, the base model answers with a sentence, so the exact-match scores
# start near zero.

# %%
from lorahelpers.compare import score_models
from lorahelpers.pipeline import load

base, tokenizer, chat_format = load(params)
before = score_models({"base": base}, tasks, tokenizer, chat_format, params.scorer)
display(before)
before.side_by_side(2)

# %% [markdown]
# ## Adapter A: the tagger
# The LoRA goes onto the base model scored above, and each adapter has its own output
# directory (`train` saves to `<output_dir>/adapter`). Only one model is in memory at a time:
# the trained model is deleted once its adapter is saved, so a free Colab GPU holds one base.

# %%
from lorahelpers.models import add_lora
from lorahelpers.pipeline import free_torch_memory, lora_settings, train_settings
from lorahelpers.plots import plot_history
from lorahelpers.training import train

tagger = add_lora(base, lora_settings(params))
tagger_run = train(tagger, tokenizer, data["tag"].train, data["tag"].eval, chat_format,
                   train_settings(params, output_dir=f"{params.output_dir}/tagger"))
print(f"{tagger_run.steps} steps in {tagger_run.elapsed_s:.0f} s; adapter in "
      f"{tagger_run.adapter_dir}")
plot_history(tagger_run.history)
del base, tagger
print(free_torch_memory())

# %% [markdown]
# ## Adapter B: the namer
# A fresh copy of the base, its own LoRA.

# %%
namer, _, _ = load(params)
namer = add_lora(namer, lora_settings(params))
namer_run = train(namer, tokenizer, data["name"].train, data["name"].eval, chat_format,
                  train_settings(params, output_dir=f"{params.output_dir}/namer"))
print(f"{namer_run.steps} steps in {namer_run.elapsed_s:.0f} s; adapter in "
      f"{namer_run.adapter_dir}")
plot_history(namer_run.history)
del namer
print(free_torch_memory())

# %% [markdown]
# ## Same prompts, three models (PyTorch)
# One base is loaded with both saved adapters; `one_base` gives the base and each adapter as
# a model of its own that switches its adapter on when used. Every model on every task: each
# adapter does its own task; asked the other question, it usually still answers in its own
# way (a tag, a product name), because that is all it learned. The base does neither.

# %%
from lorahelpers.compare import TaskScores, one_base

base, _, _ = load(params)
models = one_base(base, {"tagger": tagger_run.adapter_dir, "namer": namer_run.adapter_dir})
after = score_models({"tagger": models["tagger"], "namer": models["namer"]}, tasks, tokenizer,
                     chat_format, params.scorer)
scores = TaskScores({**before.reports, **after.reports})
display(scores)
scores.side_by_side(3)

# %% [markdown]
# ## Export: one base GGUF, two adapter GGUFs
# The base GGUF is written once, from the base checkpoint with the training chat template (the
# base's own template may add a default system prompt the adapters never saw). Each adapter
# becomes its own small GGUF that llama.cpp and Ollama apply over that base.

# %%
from pathlib import Path

from lorahelpers.compare import base_with_template
from lorahelpers.export import export_adapter_gguf, export_gguf

out = Path(params.output_dir)
base_dir = base_with_template(params.resolved_model(), chat_format, out / "base")
base_gguf = export_gguf(base_dir, out / "gguf", "base", params.quants[:1])[params.quants[0]]
adapter_ggufs = {name: export_adapter_gguf(run.adapter_dir, base_dir,
                                           out / "gguf" / f"{name}-lora-f16.gguf")
                 for name, run in (("tagger", tagger_run), ("namer", namer_run))}
for path in (base_gguf, *adapter_ggufs.values()):
    print(f"{path.stat().st_size / 1e6:8.1f} MB  {path}")
    keep(path, keep_dir, root=params.output_dir)  # to the keep folder (Drive), if there is one

# %% [markdown]
# ## Verify each adapter over the base GGUF
# llama.cpp runs the base GGUF alone and with each adapter GGUF; each is compared with its
# PyTorch model on the same chat prompts: same tokens, close next-token probabilities, the
# same greedy answers.

# %%
from lorahelpers.verify import verify

prompts = [row[:-1] for rows in tasks.values() for row in rows[:2]]
checks = {name: verify(base_gguf, model, tokenizer, prompts, lora_path=adapter_ggufs.get(name))
          for name, model in models.items()}
for report in checks.values():
    display(report)

# %% [markdown]
# ## Same prompts, three models (llama.cpp)
# The same score table from the GGUF files, and how often llama.cpp gives exactly the PyTorch
# answer. llama.cpp runs on the CPU here, so with a GPU runtime's larger model it is asked only
# the first rows of each task.

# %%
from lorahelpers.compare import score_gguf

gguf_tasks = {task: rows[:5] if runtime.cuda else rows for task, rows in tasks.items()}
gguf_scores = score_gguf(base_gguf, {"base": None, **adapter_ggufs}, gguf_tasks, tokenizer,
                         chat_format, params.scorer)
display(gguf_scores)
display(gguf_scores.agreement(scores))
gguf_scores.side_by_side(3)

# %% [markdown]
# ## The Modelfiles: FROM the base, ADAPTER on top
# Two Modelfiles, one per adapter, both naming the same base file. TEMPLATE and stop strings
# come from the chat format both adapters were trained with; `num_ctx` from the training
# `max_seq_length`, rounded up.

# %%
from lorahelpers.modelfile import write_modelfile

modelfiles = {name: write_modelfile(base_gguf, chat_format, system=params.system,
                                    adapter=adapter, path=out / "gguf" / f"Modelfile.{name}",
                                    max_seq_length=params.max_seq_length)
              for name, adapter in adapter_ggufs.items()}
for name, path in modelfiles.items():
    keep(path, keep_dir, root=params.output_dir)
    print(f"# {path}\n{path.read_text()}")

# %% [markdown]
# ### Which Ollama versions accept `ADAPTER`
# | Ollama | LoRA adapter GGUF (`ADAPTER`, REST `adapters`) | What `register` does |
# |---|---|---|
# | before 0.5.5 | no structured `/api/create` | refuses the server: upgrade |
# | 0.5.5 - 0.24 | accepted, one per model | base + adapter layer |
# | 0.30 - 0.34.0 | accepted, one per model (llama-server applies it) | base + adapter layer |
# | 0.34.1 and later | refused: *LoRA adapters are no longer supported* | registers the merged model |
#
# * **One adapter per model.** To use both skills at once, train one adapter on both tasks.
# * Ollama does **not** check that `FROM` is the base the adapter was trained on: over another
#   base it may fail to load or, worse, load and answer nonsense. Keep each adapter with the
#   base GGUF it was made for.
# * llama.cpp itself keeps loading adapter GGUFs over a base, as the cells above do.

# %% [markdown]
# ## Register both with Ollama
# `register` asks the server its version first. Where adapters are accepted, both models share
# the one uploaded base and each adds only its adapter. Where they are refused (0.34.1 and
# later), it says so and registers the adapter merged into the base instead, made here only
# then (a merge and one GGUF per adapter). On Colab this starts an Ollama server (installed by
# the set-up cell); elsewhere it uses one you started with `ollama serve`, or skips this step
# with the reason.

# %%
from functools import partial

from lorahelpers import ollama
from lorahelpers.pipeline import merged_gguf, register_or_skip

if runtime.colab:
    server = ollama.start_server(install=True)
runs = {"tagger": tagger_run, "namer": namer_run}
registered = {}
for name, adapter in adapter_ggufs.items():
    merged = partial(merged_gguf, runs[name].adapter_dir, base_dir, out, name, params.quants[0],
                     chat_format)  # made only where Ollama refuses adapters
    info, status = register_or_skip(f"{params.ollama_name}-{name}", base_gguf, chat_format,
                                    params.system, adapter=adapter, merged=merged,
                                    max_seq_length=params.max_seq_length)
    print(status)
    if info is not None:
        registered[name] = f"{params.ollama_name}-{name}"
for task, rows in tasks.items() if registered else ():
    question = rows[0][:-1]
    print(f"\nQ: {question[-1]['content']}")
    for name, model_name in registered.items():
        print(f"{model_name}:", end=" ")
        ollama.chat(model_name, question)
        print()

# %% [markdown]
# ## Your files
# The base GGUF is the big file; each adapter adds only a few MB. All of them and the
# Modelfiles were copied to the keep folder (Google Drive) when there is one.

# %%
for path in sorted(out.rglob("*")):
    if path.is_file() and not path.is_symlink() and "checkpoints" not in path.parts:
        print(f"{path.stat().st_size / 1e6:9.1f} MB  {path}")
if keep_dir:
    print(f"Kept in {keep_dir}:", ", ".join(sorted(p.name for p in keep_dir.rglob("*")
                                                  if p.is_file() and "checkpoints" not in p.parts)))
elif runtime.colab:
    from google.colab import files
    # The adapters and Modelfiles are small; for the base GGUF mount Drive (Keep your work)
    # rather than download it. The runtime's disk is wiped when it stops.
    for path in (*adapter_ggufs.values(), *modelfiles.values()):
        files.download(str(path))
