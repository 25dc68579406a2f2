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
# ## Base model and its score before training
# The chat format (`params.chat_format`) is the one definition of the prompt: the same text is
# used for training, put into the GGUF and given to Ollama as its TEMPLATE.

# %%
from lorahelpers.inference import evaluate
from lorahelpers.pipeline import load

model, tokenizer, chat_format = load(params)
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
from lorahelpers.pipeline import Comparison

after = evaluate(model, tokenizer, data.eval, params.scorer, chat_format)
display(Comparison({"before training": before.score, "after training": after.score},
                   after.n))
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
# ## The GGUF files on held-out rows
# The PyTorch model is done: deleting it gives its GPU memory to llama.cpp and Ollama. On a GPU
# runtime llama.cpp scores every row on the GPU when its CUDA build is installed, else only the
# first few rows on the CPU (the cell says which).

# %%
from lorahelpers.pipeline import free_torch_memory, score_ggufs

del model
print(free_torch_memory())
gguf_reports = score_ggufs(export.ggufs, data.eval, chat_format, tokenizer, params.scorer)
scores = {"PyTorch, after training": after.score}
scores |= {f"{export.ggufs[q].name} (llama.cpp)": r.score for q, r in gguf_reports.items()}
Comparison(scores, after.n)

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
# ## Chat with it in Ollama
# On Colab this starts an Ollama server (installed by the set-up cell). Elsewhere it uses a
# server you started with `ollama serve`, or skips this step with the reason.

# %%
from lorahelpers import ollama
from lorahelpers.pipeline import register_or_skip

if runtime.colab:
    server = ollama.start_server(install=True)
info, status = register_or_skip(params.ollama_name, gguf, chat_format, params.system,
                                max_seq_length=params.max_seq_length)
print(status)
if info is not None:
    ollama.chat(params.ollama_name, question)

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
                base_model=params.model)
else:
    print("Not uploading: set params.hub_repo to a repository id to share the model.")
