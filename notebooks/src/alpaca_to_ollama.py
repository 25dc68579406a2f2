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
print(runtime.summary())

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
from lorahelpers.keep import keep, keep_folder, mount_drive

if runtime.colab and params.keep_dir != "off":
    mount_drive()
keep_dir = keep_folder(params.keep_dir, params.output_dir)
print(f"Keeping files in {keep_dir}" if keep_dir else
      f"Files stay in {params.output_dir} only (no Google Drive, no params.keep_dir)")

# %% [markdown]
# ## Data
# Alpaca rows (`instruction`, optional `input`, `output`) become conversations. The report
# counts what was read, kept and dropped, and why.

# %%
from lorahelpers.data import preview
from lorahelpers.pipeline import prepare_data

data = prepare_data(params)
display(data.report)
print(preview(data.train, 3))

# %% [markdown]
# ## The base model, and exactly what it will be trained on
# The chat format (`params.chat_format`) is the one definition of the prompt: the same text is
# used for training, put into the GGUF and given to Ollama as its TEMPLATE. Below, the first
# training rows as the model reads them, with the tokens the loss is on highlighted (the
# answer and the end-of-turn token), and the token length of each training row against
# `params.max_seq_length`: longer rows are cut.

# %%
from lorahelpers.pipeline import load, preview_training

model, tokenizer, chat_format = load(params)
preview_training(params, data, tokenizer, chat_format)

# %% [markdown]
# ## Its score before training

# %%
from lorahelpers.inference import evaluate

before = evaluate(model, tokenizer, data.eval, params.scorer, chat_format)
before

# %% [markdown]
# ## Train the LoRA adapter
# The loss is computed on the answers only (and the end-of-turn token, so the model learns to
# stop). Interrupting this cell keeps the adapter trained so far; run it again with
# `resume=True` in `train_settings` to continue from the last checkpoint.

# %%
from lorahelpers.models import add_lora
from lorahelpers.pipeline import lora_settings, train_settings
from lorahelpers.training import train

model = add_lora(model, lora_settings(params))
result = train(model, tokenizer, data.train, data.eval, chat_format, train_settings(params))
print(f"{result.steps} steps in {result.elapsed_s:.0f} s; adapter in {result.adapter_dir}")

# %%
from lorahelpers.plots import plot_history

plot_history(result.history)

# %% [markdown]
# ## Did it learn?

# %%
from lorahelpers.heldout import compare

after = evaluate(model, tokenizer, data.eval, params.scorer, chat_format)
display(compare(before, after))
after

# %%
from lorahelpers.inference import generate

question = data.eval[0][:-1]
print("Q:", question[-1]["content"])
answer = generate(model, tokenizer, question, chat_format, max_new_tokens=64)

# %% [markdown]
# ## Export to GGUF and verify
# The adapter is merged into the 16-bit base weights (tensor by tensor, so memory stays low),
# converted by llama.cpp, and every file is compared with the PyTorch model: same tokens, close
# next-token probabilities (KL divergence, top-1 agreement) and the same greedy answers.

# %%
from lorahelpers.pipeline import export_and_verify

prompts = [row[:-1] for row in data.eval[:4]]
export = export_and_verify(model, tokenizer, result.adapter_dir, chat_format, params.output_dir,
                           params.ollama_name, params.quants, prompts)
for path in export.ggufs.values():  # to the keep folder now, before the longer steps below
    keep(path, keep_dir, root=params.output_dir)
export

# %% [markdown]
# ## The Modelfile
# Written next to the GGUF: the TEMPLATE and stop strings come from the same chat format the
# model was trained with, so Ollama builds exactly the training prompt.

# %%
from lorahelpers.modelfile import write_modelfile

gguf = export.ggufs[params.quants[0]]
modelfile = write_modelfile(gguf, chat_format, system=params.system,
                            max_seq_length=params.max_seq_length)
keep(modelfile, keep_dir, root=params.output_dir)
print(modelfile.read_text())

# %% [markdown]
# ## Register it with Ollama
# On Colab this starts an Ollama server (installed by the set-up cell). Elsewhere it uses a
# server you started with `ollama serve`, or skips this step and the Ollama cells below with
# the reason. The PyTorch model stays in memory for the next cell; on a GPU, Ollama takes the
# memory that is left and runs on the CPU whatever does not fit.

# %%
from lorahelpers import ollama
from lorahelpers.pipeline import register_or_skip

if runtime.colab:
    server = ollama.start_server(install=True)
info, status = register_or_skip(params.ollama_name, gguf, chat_format, params.system,
                                max_seq_length=params.max_seq_length)
print(status)

# %% [markdown]
# ## Try it: the notebook's model and Ollama's, side by side
# One message to the PyTorch model in memory and to the model Ollama serves. Both answer
# greedily, so their answers should agree. In Jupyter or Colab a box below the answers sends
# more messages; change the text here to ask something else. `ollama_options={}` makes Ollama
# sample as `ollama run` does.

# %%
from lorahelpers.sidebyside import chat_side_by_side

chat_side_by_side(question[-1]["content"], model, tokenizer, chat_format, params.ollama_name,
                  system=params.system)

# %% [markdown]
# ## The GGUF files on held-out rows
# The PyTorch model is done: deleting it gives its GPU memory to llama.cpp and Ollama. On a GPU
# runtime llama.cpp scores every row on the GPU when its CUDA build is installed, else only the
# first few rows on the CPU (the cell says which).

# %%
from lorahelpers.pipeline import free_torch_memory, score_ggufs

del model
print(free_torch_memory())
gguf_reports = score_ggufs(export.ggufs, data.eval, chat_format, tokenizer, params.scorer)

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
                             params.scorer, gguf=gguf, gguf_report=gguf_reports[quant],
                             quant=quant, seed=params.seed)

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
# one; otherwise Colab offers the GGUF as a download (large files often fail that way).

# %%
from pathlib import Path

for path in sorted(Path(params.output_dir).rglob("*")):
    if path.is_file() and "checkpoints" not in path.parts:
        print(f"{path.stat().st_size / 1e6:9.1f} MB  {path}")
if keep_dir:
    print(f"Kept in {keep_dir}:", ", ".join(sorted(p.name for p in keep_dir.rglob("*")
                                                  if p.is_file() and "checkpoints" not in p.parts)))
elif runtime.colab:
    from google.colab import files
    files.download(str(gguf))  # the runtime's disk is wiped when it stops

# %% [markdown]
# ## Share it on the Hugging Face Hub (optional)
# Set `params.hub_repo = "your-user/your-model"` and add a Hugging Face token with write
# access as a Colab secret named `HF_TOKEN` (key icon in the left bar). The GGUF files go up
# with Ollama's `template`, `params` and `system` files and a model card with the
# verification table, so on any computer `ollama run hf.co/your-user/your-model` builds
# exactly the prompt the model was trained on.

# %%
from lorahelpers.hub import push_to_hub

if params.hub_repo:
    push_to_hub(params.hub_repo, export, chat_format, system=params.system,
                max_seq_length=params.max_seq_length, base_model=params.model)
else:
    print("Not uploading: set params.hub_repo to a repository id to share the model.")
