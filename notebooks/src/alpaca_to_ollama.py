# %% [markdown]
# # Alpaca data → LoRA fine-tune → GGUF → Ollama
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lorahelpers/lorahelpers/blob/main/notebooks/alpaca_to_ollama.ipynb)
#
# Step through the cells to fine-tune a model on instruction data, check that it learned,
# export it to GGUF (verified against the PyTorch model), and chat with it in Ollama.
#
# * **On a Colab GPU** (Runtime → Change runtime type → T4 GPU) the defaults are an Unsloth
#   4-bit Llama-3.2-3B-Instruct and the `yahma/alpaca-cleaned` dataset.
# * **Without a GPU** the same cells run on SmolLM2-135M-Instruct, which ships with
#   lorahelpers, and the small review-tagging sample in `data/`: a few minutes on a laptop.
#
# Each cell calls one `lorahelpers` function; use the same calls in your own notebooks.

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
# Defaults depend on the runtime above. Change them here, or set environment variables
# named `LORAHELPERS_<FIELD>` (for example `LORAHELPERS_MAX_STEPS=20`). The table says where
# each value came from: the GPU or CPU default, the environment, or set by you.

# %%
from lorahelpers.params import default_params

params = default_params("alpaca")
# params.max_steps = 120            # more steps learn more
# params.quants = ("q8_0", "q4_k_m")
# params.keep_dir = "off"           # no copy on Google Drive
# params.hub_repo = "your-user/your-model"
params

# %% [markdown]
# ## Keep your work
# A Colab runtime that disconnects loses its disk. With Google Drive mounted (Colab asks you to
# allow it), checkpoints, the adapter, the GGUF files and the Modelfile are copied to
# `MyDrive/lorahelpers/<output folder>` as they are written, and running the notebook again
# resumes training from the newest checkpoint there. Set `params.keep_dir` to use another
# folder, or to `"off"` for none.

# %%
from lorahelpers.notebook import keep_work

keep_dir = keep_work(params, runtime)

# %% [markdown]
# ## Data
# Alpaca rows (`instruction`, optional `input`, `output`) become conversations. The report
# counts what was read, kept and dropped, and why.

# %%
from lorahelpers.pipeline import prepare_data

data = prepare_data(params)
data

# %% [markdown]
# ## The base model, and exactly what it will be trained on
# The chat format (`params.chat_format`) is the one definition of the prompt: the same text is
# used for training, put into the GGUF and given to Ollama as its TEMPLATE. Below, the first
# training rows as the model reads them, with the tokens the loss is on highlighted (the
# answer and the end-of-turn token), and the token length of each training row against
# `params.max_seq_length`: longer rows are cut.

# %%
from lorahelpers.pipeline import load

model, tokenizer, chat_format = load(params)

# %%
from lorahelpers.pipeline import preview_training

preview_training(params, data, tokenizer, chat_format)

# %% [markdown]
# ## Its score before training

# %%
from lorahelpers.inference import evaluate

before = evaluate(model, tokenizer, data.eval, params.scorer, chat_format=chat_format)
before

# %% [markdown]
# ## Train the LoRA adapter
# The loss is computed on the answers only (and the end-of-turn token, so the model learns to
# stop). Interrupting this cell keeps the adapter trained so far; run it again with
# `resume=True` (`train_adapter(..., resume=True)`) to continue from the last checkpoint.

# %%
from lorahelpers.pipeline import train_adapter

model, result = train_adapter(model, tokenizer, data, chat_format, params=params)
result

# %%
from lorahelpers.plots import plot_history

plot_history(result.history)

# %% [markdown]
# ## Did it learn?

# %%
after = evaluate(model, tokenizer, data.eval, params.scorer, chat_format=chat_format)
after

# %%
from lorahelpers.heldout import compare

compare(before, after)

# %%
from lorahelpers.pipeline import try_row

answer = try_row(model, tokenizer, data.eval[0], chat_format)

# %% [markdown]
# ## Export to GGUF and verify
# The adapter is merged into the 16-bit base weights (tensor by tensor, so memory stays low),
# converted by llama.cpp, and every file is compared with the PyTorch model: same tokens, close
# next-token probabilities (KL divergence, top-1 agreement) and the same greedy answers.

# %%
from lorahelpers.pipeline import export_and_verify

export = export_and_verify(model, tokenizer, result.adapter_dir, chat_format,
                           out_dir=params.output_dir, name=params.ollama_name,
                           quants=params.quants, prompts=data.prompts(), system=params.system,
                           max_seq_length=params.max_seq_length, keep_dir=keep_dir)
export

# %% [markdown]
# ## The Modelfile
# Written next to the GGUF by the export: the TEMPLATE and stop strings come from the same chat format the
# model was trained with, so Ollama builds exactly the training prompt.

# %%
print(export.modelfile.read_text())

# %% [markdown]
# ## Register it with Ollama
# On Colab this starts an Ollama server (installed by the set-up cell). Elsewhere it uses a
# server you started with `ollama serve`, or skips this step and the Ollama cells below with
# the reason. The PyTorch model stays in memory for the next cell; on a GPU, Ollama takes the
# memory that is left and runs on the CPU whatever does not fit.

# %%
from lorahelpers.pipeline import register_or_skip

register_or_skip(params.ollama_name, export.gguf, chat_format, system=params.system,
                 max_seq_length=params.max_seq_length, start_server=runtime.colab)

# %% [markdown]
# ## Try it: the notebook's model and Ollama's, side by side
# One message to the PyTorch model in memory and to the model Ollama serves. Both answer
# greedily, so their answers should agree. In Jupyter or Colab a box below the answers sends
# more messages; change the text here to ask something else. `ollama_options={}` makes Ollama
# sample as `ollama run` does.

# %%
from lorahelpers.sidebyside import chat_side_by_side

chat_side_by_side(data.eval[0][-2]["content"], model, tokenizer, chat_format,
                  ollama_name=params.ollama_name, system=params.system)

# %% [markdown]
# ## The GGUF files on held-out rows
# The PyTorch model is done: deleting it gives its GPU memory to llama.cpp and Ollama. On a GPU
# runtime llama.cpp scores every row on the GPU when its CUDA build is installed, else only the
# first few rows on the CPU (the cell says which).

# %%
from lorahelpers.heldout import score_ggufs

del model
gguf_reports = score_ggufs(export.ggufs, data.eval, chat_format, tokenizer, scorer=params.scorer)

# %% [markdown]
# ## The held-out rows through Ollama
# What `ollama run` gives you: every held-out row sent to the registered model twice. Greedy
# (temperature 0) it must answer as the GGUF file did: more than one row fewer right is a
# failed check that names what differs (template, stops, num_ctx, options). Then with the
# options `ollama run` uses: Ollama's defaults (temperature 0.8, ...) under the Modelfile's
# PARAMETERs.

# %%
from lorahelpers.heldout import score_ollama

quant = params.quants[0]
ollama_scores = score_ollama(params.ollama_name, data.eval, chat_format, tokenizer,
                             scorer=params.scorer, gguf=export.gguf,
                             gguf_report=gguf_reports[quant], quant=quant, seed=params.seed)

# %% [markdown]
# ## Every stage side by side
# The base model, the PyTorch model after training, each GGUF file run by llama.cpp, and
# Ollama: the held-out score of each, the rows that flip between neighbours (right to wrong,
# wrong to right), and the first row where PyTorch and Ollama answer differently, with the
# prompt Ollama built.

# %%
compare(before, after, gguf_reports, ollama_scores)

# %% [markdown]
# ## Your files
# The GGUF files and the Modelfile were copied to the keep folder (Google Drive) when there is
# one; otherwise Colab offers the GGUF and the Modelfile as downloads (large files often fail
# that way).

# %%
from lorahelpers.notebook import your_files

your_files(params.output_dir, keep_dir, download=[export.gguf, export.modelfile])

# %% [markdown]
# ## Share it on the Hugging Face Hub (optional)
# Set `params.hub_repo = "your-user/your-model"` and add a Hugging Face token with write
# access as a Colab secret named `HF_TOKEN` (key icon in the left bar). The GGUF files go up
# with Ollama's `template`, `params` and `system` files and a model card with the
# verification table, so on any computer `ollama run hf.co/your-user/your-model` builds
# exactly the prompt the model was trained on.

# %%
from lorahelpers.hub import push_to_hub

push_to_hub(params.hub_repo, export, chat_format, system=params.system,
            max_seq_length=params.max_seq_length, base_model=params.model)
