# %% [markdown]
# # Spreadsheet (Excel / CSV) → LoRA fine-tune → GGUF → Ollama
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lorahelpers/lorahelpers/blob/main/notebooks/table_to_ollama.ipynb)
#
# Teach a language model to fill in one column of your spreadsheet from the others, then use
# it on your own computer with Ollama. You need no machine-learning background: each step
# says what it does, and every cell works on a sample workbook if you bring none.
#
# The sample is a small shop's orders (`data/table.xlsx`): item, weight, delivery zone,
# express or not, and the shipping cost in EUR. The cost follows a rule the model is never
# told (a fee per zone, plus 5 EUR for express); it has to work it out from the rows.
#
# * **On a Colab GPU** (Runtime → Change runtime type → T4 GPU) the model is an Unsloth 4-bit
#   Llama-3.2-3B-Instruct.
# * **Without a GPU** the same cells run on SmolLM2-135M-Instruct, a small model that ships
#   with lorahelpers: a few minutes on a laptop, enough to see every step work.

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
# Everything the run depends on, with defaults for the machine above. Change them here, or
# set environment variables named `LORAHELPERS_<FIELD>` (for example
# `LORAHELPERS_MAX_STEPS=20`); the list below says where each value came from. The table fields:
#
# * `sheet`: the sheet with the rows to learn from; `eval_sheet`: a sheet of rows kept apart
#   to test the model (None: `eval_size` rows are set aside at random instead).
# * `template`: how one row is written as a question (see "The question" below).
# * `output_column`: the column whose value the model should answer with.

# %%
from lorahelpers.params import default_params

params = default_params("table")
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
# ## Your spreadsheet
# Upload an Excel workbook (`.xlsx`) or a CSV file. On Colab a "Choose files" button
# appears: pick a file, or press "Cancel upload" to keep the sample. Elsewhere an upload
# button appears below: pick a file, then run the next cell. If you upload nothing, the
# sample orders are used, so the notebook also runs from top to bottom unattended.

# %%
from lorahelpers.notebook import ask_for_upload

upload = ask_for_upload(runtime)

# %%
from lorahelpers.notebook import use_upload

params = use_upload(params, upload)

# %% [markdown]
# ## Choose the sheet
# A workbook can hold several sheets. The rows to learn from come from `params.sheet`; the
# held-out rows from `params.eval_sheet`, or, without one, from `eval_size` rows set aside at
# random. The model never trains on held-out rows: they show whether it learned the rule or
# only remembered rows. CSV files have no sheets. Without a `params.sheet` the first sheet is
# read, unless it is empty or a cover page and one other sheet holds a table. Title lines and
# notes above the column names are skipped (the note below the table says so);
# `params.header_row` names the row of column names yourself.

# %%
from lorahelpers.notebook import choose_sheets

params = choose_sheets(params)

# %%
from lorahelpers.notebook import show_table

show_table(params)

# %% [markdown]
# ## The question and the answer column
# The model reads text, so each row becomes a question written by `params.template`, like a
# mail merge:
#
# * `{column}` puts in the value of that column as the sheet shows it: `25%`, `1,234.50 EUR`,
#   dates in the cell's date format, TRUE/FALSE for yes/no cells (`params.raw_values = True`
#   gives the values as stored: `0.25`, `1234.5`). A CSV cell is the text it holds. Only an
#   empty cell is empty: "None", "N/A" or "-" are words the model sees, unless you list them
#   in `params.empty_markers` (for example `("N/A", "-")`);
# * `[[ ... ]]` marks a part that is left out when a column in it is empty (no "weight: kg"
#   for orders without a weight);
# * `params.output_column` is the column the model answers with. Rows where it is empty are
#   left out and counted.
# * Put the columns that decide the answer first. A small model learns much faster that way:
#   on the sample, SmolLM2-135M got 10 % of the held-out orders right with the zone and the
#   express flag at the end of the question, and 100 % with them at the start.
#
# Uploaded your own file? Write a template from its columns (listed below) and name the
# answer column, for example:
# `params.template = "Product {name}[[, size {size}]], colour {colour}. Price?"` and
# `params.output_column = "price"`.
#
# Below: three rows as the model will see them, before any training, then how many rows were
# read and kept, and why any were left out (for example an empty answer cell). Repeated rows
# are counted too: many repeats make the model memorize them. The notes say what was read
# differently from a plain table: title lines above the header that were skipped
# (`params.header_row` names the header row yourself), merged cells filled into every row
# they span, cells read as empty, the sheet chosen when the first one is a cover page.

# %%
from lorahelpers.pipeline import prepare_data

# params.template = "..."
# params.output_column = "..."
data = prepare_data(params)
data

# %% [markdown]
# ## How answers are scored
# A held-out answer counts as right when its first number is within `tolerance` of the true
# value, so "12", "12.0" and "12 EUR" all match 12. This is a *custom scorer*: any function
# `(expected, answer) -> bool` works, so you can write one that fits your column. Answers
# that are not numbers are compared as text.

# %%
import re

tolerance = 0.5          # how far off a number may be and still count as right
max_answer_tokens = 16   # answers here are short numbers; raise this for longer answers


def first_number(text: str) -> float | None:
    found = re.search(r"-?\d+(?:\.\d+)?", text)
    return float(found.group()) if found else None


def same_amount(expected: str, answer: str) -> bool:
    want, got = first_number(expected), first_number(answer)
    if want is None:
        return expected.strip().lower() == answer.strip().lower()
    return got is not None and abs(got - want) <= tolerance


assert same_amount("12", "12 EUR") and same_amount("12", "It is 12.0.")
assert not same_amount("12", "11") and not same_amount("12", "twelve")

# %% [markdown]
# ## The model, and exactly what it will be trained on
# The first rows below are the text the model reads, in its chat format
# (`params.chat_format`: the one definition of it, used for training, written into the GGUF
# file and given to Ollama). The highlighted tokens are those the model learns to write: the
# loss is on them only. The histogram shows how many tokens each training row takes against
# `params.max_seq_length`; a row longer than that is cut, and one cut before its answer is
# left out of training. Raise `max_seq_length` or shorten the template if rows are cut.

# %%
from lorahelpers.pipeline import load

model, tokenizer, chat_format = load(params)

# %%
from lorahelpers.pipeline import preview_training

preview_training(params, data, tokenizer, chat_format)

# %% [markdown]
# ## Its score before training
# The model has never seen these orders, so it can only guess.

# %%
from lorahelpers.inference import evaluate

before = evaluate(model, tokenizer, data.eval, same_amount, chat_format=chat_format,
                  max_new_tokens=max_answer_tokens)
before

# %% [markdown]
# ## Train
# LoRA adds a few small trainable matrices to the model and leaves the rest unchanged. The
# loss (how wrong the model's answers are on the rows) is drawn as training runs and should
# fall. Interrupting this cell keeps the adapter trained so far; run it again with
# `resume=True` (`train_adapter(..., resume=True)`) to continue from the last checkpoint.

# %%
from lorahelpers.pipeline import train_adapter

model, result = train_adapter(model, tokenizer, data, chat_format, params=params)
result

# %% [markdown]
# The loss on the training rows and, at a few points, on the held-out rows. If the held-out
# loss rises while the training loss keeps falling, the model is memorizing rows: train for
# fewer steps.

# %%
from lorahelpers.plots import plot_history

plot_history(result.history)

# %% [markdown]
# ## Did it learn?
# The same held-out rows, scored again.

# %%
after = evaluate(model, tokenizer, data.eval, same_amount, chat_format=chat_format,
                 max_new_tokens=max_answer_tokens)
after

# %%
from lorahelpers.heldout import compare

compare(before, after)

# %% [markdown]
# ## Ask it about one order
# A held-out row the model never trained on, and its answer as it is written.

# %%
from lorahelpers.pipeline import try_row

answer = try_row(model, tokenizer, data.eval[0], chat_format, max_new_tokens=max_answer_tokens)

# %% [markdown]
# ## Export to GGUF and verify
# Ollama and llama.cpp run models stored as one GGUF file. The adapter is merged into the
# model, converted, and every file is checked against the model above: same tokens, nearly
# the same next-word probabilities, the same answers.

# %%
from lorahelpers.pipeline import export_and_verify

export = export_and_verify(model, tokenizer, result.adapter_dir, chat_format,
                           out_dir=params.output_dir, name=params.ollama_name,
                           quants=params.quants, prompts=data.prompts(), system=params.system,
                           max_seq_length=params.max_seq_length, keep_dir=keep_dir)
export

# %% [markdown]
# ## The Modelfile
# Ollama's recipe for the model, written next to the GGUF file. Its TEMPLATE and stop words
# come from the chat format the model was trained with, so Ollama asks the question in
# exactly the form the model learned.

# %%
print(export.modelfile.read_text())

# %% [markdown]
# ## Register it with Ollama
# On Colab this starts an Ollama server (installed by the set-up cell). Elsewhere it uses a
# server you started with `ollama serve`, or skips this step and the Ollama cells below and
# says why. The model above stays in memory for the next cell; on a GPU, Ollama takes the
# memory that is left and runs on the CPU whatever does not fit.

# %%
from lorahelpers.pipeline import register_or_skip

register_or_skip(params.ollama_name, export.gguf, chat_format, system=params.system,
                 max_seq_length=params.max_seq_length, start_server=runtime.colab)

# %% [markdown]
# ## Try it: ask both models
# One question to the model in this notebook and to the model in Ollama. Both answer
# greedily (always their most likely next word), so the answers should be the same. Change
# the text to ask about another order; in Jupyter or Colab a box below the answers sends more.

# %%
from lorahelpers.sidebyside import chat_side_by_side

chat_side_by_side(data.eval[0][-2]["content"], model, tokenizer, chat_format,
                  ollama_name=params.ollama_name, system=params.system,
                  max_new_tokens=max_answer_tokens)

# %% [markdown]
# The held-out score of each GGUF file, run by llama.cpp (the engine inside Ollama): it should
# be close to the score after training. The model above is done, so it is deleted first: on
# a GPU its memory goes to llama.cpp and Ollama.

# %%
from lorahelpers.heldout import score_ggufs

del model
gguf_reports = score_ggufs(export.ggufs, data.eval, chat_format, tokenizer, scorer=same_amount,
                           max_new_tokens=max_answer_tokens)

# %% [markdown]
# ## The held-out orders through Ollama
# What `ollama run` would answer: every held-out order sent to the model in Ollama twice.
# First greedily: it must score as the GGUF file did; more than one order fewer right is a
# failed check that says what differs (template, stop words, num_ctx, options). Then with the
# settings `ollama run` uses (Ollama's defaults, such as temperature 0.8, under the
# Modelfile's PARAMETERs), which pick less likely words now and then.

# %%
from lorahelpers.heldout import score_ollama

quant = params.quants[0]
ollama_scores = score_ollama(params.ollama_name, data.eval, chat_format, tokenizer,
                             scorer=same_amount, max_new_tokens=max_answer_tokens, gguf=export.gguf,
                             gguf_report=gguf_reports[quant], quant=quant, seed=params.seed)

# %% [markdown]
# ## Every stage side by side
# The model before and after training, each GGUF file run by llama.cpp, and Ollama: the share
# of held-out orders each got right, the orders that flip between neighbours (right to wrong,
# wrong to right), and the first order where this notebook's model and Ollama answer
# differently, with the exact text Ollama gave the model.

# %%
compare(before, after, gguf_reports, ollama_scores)

# %% [markdown]
# ## Your files
# Everything is under `params.output_dir`: the adapter (`adapter/`, small, loads onto the
# same base model), the merged model (`merged/`), the GGUF file and its Modelfile (`gguf/`),
# and the loss history. The GGUF file and the Modelfile were copied to the keep folder (Google
# Drive) when there is one; otherwise Colab offers them as downloads. To use the model on your
# own computer, put the `.gguf` file and the `Modelfile` into one folder and run
# `ollama create my-model -f Modelfile` there.

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
