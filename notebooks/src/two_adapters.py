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
runtime

# %% [markdown]
# ## Parameters
# The model, steps, LoRA rank and learning rate are shared by both adapters. The values below
# are this notebook's defaults; an environment variable `LORAHELPERS_<FIELD>` still overrides
# any of them (for example `LORAHELPERS_MAX_STEPS=40`). `data` and `eval_data` are the
# tagger's files; the namer's come from `namer_params(params)`. `quants[0]` is the type of the
# one base GGUF (the adapters stay 16-bit: they are small).

# %%
from lorahelpers.two_adapters import two_adapter_params

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
from lorahelpers.notebook import keep_work

keep_dir = keep_work(params, runtime)

# %% [markdown]
# ## Two tasks on the same reviews
# Same inputs, different instruction and answer. Each held-out file has reviews (and, for the
# namer, products) the training file never shows.

# %%
from lorahelpers.two_adapters import prepare_tasks

data = prepare_tasks(params)
data

# %% [markdown]
# ## The base model before training
# Asked either question, the base model answers with a sentence, so the exact-match scores
# start near zero.

# %%
from lorahelpers.pipeline import load

base, tokenizer, chat_format = load(params)

# %%
from lorahelpers.compare import score_models

before = score_models({"base": base}, data.held_out, tokenizer, chat_format, scorer=params.scorer)
before

# %%
before.side_by_side(2)

# %% [markdown]
# ## Adapter A: the tagger
# The LoRA goes onto a fresh copy of the base (the one scored above is deleted first), and
# each adapter has its own output directory (`<output_dir>/tagger/adapter`). Only one model is
# in memory at a time: the trained model is deleted once its adapter is saved, so a free Colab
# GPU holds one base.

# %%
from lorahelpers.two_adapters import train_task

del base  # train_task loads a fresh base: one model in memory at a time
tagger_run = train_task(params, "tagger", data["tag"])
tagger_run

# %% [markdown]
# ## Adapter B: the namer
# A fresh copy of the base, its own LoRA.

# %%
namer_run = train_task(params, "namer", data["name"])
namer_run

# %% [markdown]
# ## Same prompts, three models (PyTorch)
# One base is loaded with both saved adapters; `one_base` gives the base and each adapter as
# a model of its own that switches its adapter on when used. Every model on every task: each
# adapter does its own task; asked the other question, it usually still answers in its own
# way (a tag, a product name), because that is all it learned. The base does neither.

# %%
from lorahelpers.two_adapters import score_adapters

runs = {"tagger": tagger_run, "namer": namer_run}
models, scores = score_adapters(params, runs, data, tokenizer, chat_format=chat_format,
                                before=before)
scores

# %%
scores.side_by_side(3)

# %% [markdown]
# ## Export: one base GGUF, two adapter GGUFs
# The base GGUF is written once, from the base checkpoint with the training chat template (the
# base's own template may add a default system prompt the adapters never saw). Each adapter
# becomes its own small GGUF that llama.cpp and Ollama apply over that base.

# %%
from lorahelpers.two_adapters import export_adapters

export = export_adapters(params, runs, chat_format, models["base"], keep_dir=keep_dir)
export

# %% [markdown]
# ## Verify each adapter over the base GGUF
# llama.cpp runs the base GGUF alone and with each adapter GGUF; each is compared with its
# PyTorch model on the same chat prompts: same tokens, close next-token probabilities, the
# same greedy answers.

# %%
from lorahelpers.two_adapters import verify_adapters

verify_adapters(export, models, tokenizer, data)

# %% [markdown]
# ## Same prompts, three models (llama.cpp)
# The same score table from the GGUF files, and how often llama.cpp gives exactly the PyTorch
# answer. llama.cpp runs on the CPU here, so with a GPU runtime's larger model it is asked only
# the first rows of each task.

# %%
from lorahelpers.two_adapters import score_adapter_ggufs

gguf_scores = score_adapter_ggufs(export, data, tokenizer, chat_format, scorer=params.scorer)
gguf_scores

# %%
gguf_scores.agreement(scores)

# %%
gguf_scores.side_by_side(3)

# %% [markdown]
# ## The Modelfiles: FROM the base, ADAPTER on top
# Two Modelfiles, one per adapter, both naming the same base file. TEMPLATE and stop strings
# come from the chat format both adapters were trained with; `num_ctx` from the training
# `max_seq_length`, rounded up.

# %%
print(export.modelfiles_text())

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
from lorahelpers.two_adapters import register_adapters

registered = register_adapters(params, export, runs, chat_format, start_server=runtime.colab)

# %%
from lorahelpers.two_adapters import ask_registered

ask_registered(registered, data)

# %% [markdown]
# ## Your files
# The base GGUF is the big file; each adapter adds only a few MB. All of them and the
# Modelfiles were copied to the keep folder (Google Drive) when there is one; otherwise Colab
# offers the adapters and the Modelfiles as downloads (for the base GGUF, mount Drive above).

# %%
from lorahelpers.notebook import your_files

your_files(params.output_dir, keep_dir,
           download=[*export.adapters.values(), *export.modelfiles.values()])
