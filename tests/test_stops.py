"""The stop/EOS audit (lorahelpers.stops): the trained answer end, the tokenizer's eos, the
generation config, the GGUF's end-of-generation tokens and the Modelfile's stops must agree
that the model stops after its answer.

Checked on the families whose turn end is not their eos (Gemma <end_of_turn> vs <eos>, Qwen
<|im_end|> vs <|endoftext|>, Llama 3 <|eot_id|> vs <|end_of_text|>), with GGUFs written by
llama.cpp's converter (vocabulary only), and on exports broken so that the model runs on: a
turn end llama.cpp does not stop on, a Modelfile without the stop, answers cut before their
turn end, a generation_config.json without it.

RUNS_ON_FORMAT and without_stop() make such a broken export for other tests (the held-out
check through Ollama)."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest

from lorahelpers.batches import tokenize_conversations
from lorahelpers.chat import BUILTIN, get_chat_format
from lorahelpers.modelfile import render_modelfile
from lorahelpers.stops import (
    ERROR,
    INFO,
    OK,
    StopMismatchError,
    add_turn_end_to_generation_config,
    audit_stops,
)
from tests.llama3_tokenizer import llama3_text_tokenizer, tiny_llama_config, vocab_only_gguf

# A turn end that is a special token of the tokenizer but that llama.cpp does not know as an
# end of turn, in a format with no other stop: with the Modelfile's stop removed, nothing
# stops the model after its answer.
RUNS_ON_END = "<|answer_end|>"
RUNS_ON_TEMPLATE = "{INPUT}\n=> {OUTPUT}"
QA = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}]


def runs_on_format(tokenizer):
    """(tokenizer with RUNS_ON_END added, its format): GGUFs made from them lack the turn end
    among their end-of-generation tokens."""
    tok = copy.deepcopy(tokenizer)
    tok.add_special_tokens({"additional_special_tokens": [RUNS_ON_END]})
    return tok, get_chat_format(RUNS_ON_TEMPLATE, eos=RUNS_ON_END)


def without_stop(modelfile: str, stop: str) -> str:
    """The Modelfile text without its `PARAMETER stop <stop>` line."""
    return "".join(line for line in modelfile.splitlines(keepends=True)
                   if line.strip() != f"PARAMETER stop {stop}")


def in_memory(eos_ids):
    return SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=eos_ids))


def levels(audit) -> dict[str, str]:
    return {f.place: f.level for f in audit.findings}


def with_format_tokens(tokenizer, fmt):
    """The tokenizer with the format's special tokens added where it lacks them, as a real
    base of that family has them."""
    tok = copy.deepcopy(tokenizer)
    specials = {fmt.eos, *(s for s in fmt.stop if s.startswith("<") and s.endswith(">"))}
    missing = sorted(s for s in specials if s not in tok.get_vocab())
    if missing:
        tok.add_special_tokens({"additional_special_tokens": missing})
    return tok


# ---- without a GGUF: the tokenizer, the training data, generation_config, the Modelfile ----


@pytest.mark.parametrize("name", BUILTIN)
def test_every_builtin_format_passes_on_a_tokenizer_with_its_tokens(embedded_tokenizer, name):
    fmt = get_chat_format(name, eos=embedded_tokenizer.eos_token)
    tok = with_format_tokens(embedded_tokenizer, fmt)
    end = tok.convert_tokens_to_ids(fmt.eos)
    audit = audit_stops(tok, fmt, model=in_memory(tok.eos_token_id),
                        stops=render_modelfile("m.gguf", fmt))
    print(f"\n{name} on SmolLM2's tokenizer:\n{audit}")
    assert audit.passed and audit.turn_end_id == end
    found = levels(audit)
    assert found["training text (probe conversations)"] == OK and found["Modelfile"] == OK
    # the tokenizer's eos (<|im_end|>) is the turn end of chatml, phi4, qwen, qwen3 and of
    # alpaca (which ends with the eos); the others differ from it, harmlessly
    same = fmt.eos == tok.eos_token
    assert found["tokenizer"] == (OK if same else INFO)
    assert found["generation_config (model in memory)"] == (OK if same else INFO)


def test_a_turn_end_of_several_tokens_is_an_error(embedded_tokenizer):
    fmt = get_chat_format("Q: {INPUT}\nA: {OUTPUT}", eos="<END>")
    audit = audit_stops(embedded_tokenizer, fmt)
    assert not audit.passed and audit.turn_end_id is None
    with pytest.raises(StopMismatchError) as e:
        audit.raise_if_failed()
    message = str(e.value)
    assert "tokenizer: the turn end '<END>' is 3 tokens" in message
    assert "Fix: " in message and "add_special_tokens" in message


def test_answers_cut_before_their_turn_end_are_information_all_cut_an_error(embedded_tokenizer):
    fmt = get_chat_format("chatml")
    long = [QA[0], {"role": "assistant", "content": "four " * 40}]
    examples, dropped = tokenize_conversations(embedded_tokenizer, [QA, long], fmt, 24)
    assert dropped == 0
    some = audit_stops(embedded_tokenizer, fmt, examples=examples)
    assert some.passed
    assert [(f.level, f.text) for f in some.notes] == [
        (INFO, "1 of 2 answers are cut by max_seq_length before '<|im_end|>' and teach no "
               "stop; the other 1 end with it")]
    every = audit_stops(embedded_tokenizer, fmt, examples=examples[1:])
    assert levels(every)["training data"] == ERROR
    assert "never learns to stop" in every.errors[0].text


def test_answers_that_end_with_another_token_are_an_error(embedded_tokenizer):
    fmt = get_chat_format("chatml")
    (example,), _ = tokenize_conversations(embedded_tokenizer, [QA], fmt)
    labels = example["labels"]
    last = max(i for i, label in enumerate(labels) if label != -100)
    eos_free = {"input_ids": example["input_ids"][:last] + example["input_ids"][last + 1:],
                "labels": labels[:last] + labels[last + 1:]}  # "4" labelled, no <|im_end|>
    audit = audit_stops(embedded_tokenizer, fmt, examples=[eos_free])
    assert levels(audit)["training data"] == ERROR
    assert "1 of 1 answers end with '4'" in audit.errors[0].text


def test_generation_config_gap_is_information_in_memory_and_an_error_in_a_checkpoint(
        embedded_tokenizer, tmp_path):
    import json

    tok = with_format_tokens(embedded_tokenizer, get_chat_format("llama3"))
    fmt = get_chat_format("llama3")
    end = tok.convert_tokens_to_ids("<|eot_id|>")
    assert levels(audit_stops(tok, fmt, model=in_memory(2)))[
        "generation_config (model in memory)"] == INFO
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": 2, "bos_token_id": 1}))
    shipped = audit_stops(tok, fmt, checkpoint=tmp_path)
    assert levels(shipped)[f"{tmp_path.name}/config.json"] == ERROR
    assert "vLLM" in shipped.errors[0].text and "generation_config.json" in shipped.errors[0].fix
    # the fix the merge applies: written from config.json's ids, then kept, never doubled
    assert add_turn_end_to_generation_config(tmp_path, tok, fmt) == [2, end]
    assert add_turn_end_to_generation_config(tmp_path, tok, fmt) == [2, end]
    written = json.loads((tmp_path / "generation_config.json").read_text())
    assert written == {"bos_token_id": 1, "eos_token_id": [2, end]}
    assert audit_stops(tok, fmt, checkpoint=tmp_path).passed


def test_a_modelfile_without_the_turn_end_stop(embedded_tokenizer):
    fmt = get_chat_format("llama3")
    tok = with_format_tokens(embedded_tokenizer, fmt)
    text = render_modelfile("m.gguf", fmt)
    audit = audit_stops(tok, fmt, stops=without_stop(text, "<|eot_id|>"))
    assert levels(audit)["Modelfile"] == ERROR
    assert "Ollama's own engine stops only on the eos" in audit.errors[0].text
    assert "PARAMETER stop <|eot_id|>" in audit.errors[0].fix
    # an Ollama model's stop list (what item 1 reads back from the server) is checked alike
    served = audit_stops(tok, fmt, stops=["<|eot_id|>"], stops_from="Ollama model 'm'")
    assert levels(served)["Ollama model 'm'"] == OK
    # when the turn end is the eos, Ollama stops on it without the stop string
    chatml = get_chat_format("chatml")
    eos_only = audit_stops(embedded_tokenizer, chatml,
                           stops=without_stop(render_modelfile("m.gguf", chatml), "<|im_end|>"))
    assert eos_only.passed and levels(eos_only)["Modelfile"] == INFO


def test_train_refuses_before_any_step_when_every_answer_is_cut(embedded_tokenizer, tmp_path):
    import torch
    import transformers

    from lorahelpers.models import add_lora, load_model
    from lorahelpers.training import TrainSettings, train

    base = tmp_path / "base"
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(
        tiny_llama_config(embedded_tokenizer)).save_pretrained(base)
    embedded_tokenizer.save_pretrained(base)
    model, tok = load_model(base, max_seq_length=24, chat_format="chatml")
    model = add_lora(model)
    long = [QA[0], {"role": "assistant", "content": "four " * 40}]
    settings = TrainSettings(output_dir=tmp_path / "run", max_steps=2, progress="none",
                             precision="fp32")
    with pytest.raises(StopMismatchError, match="never learns to stop.* Fix: raise max_seq"):
        train(model, tok, [long] * 4, chat_format="chatml", settings=settings)
    assert not (tmp_path / "run" / "checkpoints").exists()


# ---- with GGUFs: the three families whose turn end is not their eos -------------------------


@pytest.fixture(scope="module")
def family_ggufs(embedded_tokenizer, tmp_path_factory):
    """{family: (tokenizer, format, folder, vocabulary-only GGUF)}, built on first use."""
    built = {}

    def get(family):
        if family not in built:
            built[family] = _family(family, embedded_tokenizer, tmp_path_factory.mktemp(family))
        return built[family]

    return get


def _family(family, embedded_tokenizer, folder):
    import transformers

    if family == "gemma":
        from lorahelpers.models import embedded_gemma

        gemma = embedded_gemma()
        tok = transformers.AutoTokenizer.from_pretrained(gemma)
        config = transformers.Gemma3TextConfig(
            hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
            num_key_value_heads=1, head_dim=16, vocab_size=len(tok),
            architectures=["Gemma3ForCausalLM"])
        gguf = vocab_only_gguf(tok, folder, config, [gemma / "tokenizer.model"])
        return tok, get_chat_format("gemma"), folder, gguf
    if family == "qwen":  # Qwen 2.5 / 3 base: chatml turns, eos <|endoftext|>
        tok = copy.deepcopy(embedded_tokenizer)
        tok.eos_token = "<|endoftext|>"
        return tok, get_chat_format("qwen"), folder, vocab_only_gguf(tok, folder)
    tok = transformers.AutoTokenizer.from_pretrained(llama3_text_tokenizer(folder / "tokenizer"))
    return tok, get_chat_format("llama3"), folder, vocab_only_gguf(tok, folder)


FAMILIES = {  # turn end, eos
    "gemma": ("<end_of_turn>", "<eos>"),
    "qwen": ("<|im_end|>", "<|endoftext|>"),
    "llama3": ("<|eot_id|>", "<|end_of_text|>"),
}


@pytest.mark.parametrize("family", [  # Gemma's 262k vocabulary: about 20 s to convert
    pytest.param("gemma", marks=pytest.mark.slow), "llama3", "qwen"])
def test_a_family_whose_turn_end_is_not_its_eos_passes_with_notes(family, family_ggufs):
    tok, fmt, folder, gguf = family_ggufs(family)
    turn_end, eos = FAMILIES[family]
    assert (fmt.eos, tok.eos_token) == (turn_end, eos)
    modelfile = render_modelfile(gguf, fmt)
    # the converter's folder has config.json only: its eos ids lack the turn end
    before = audit_stops(tok, fmt, checkpoint=folder, ggufs=[gguf], stops=modelfile,
                         stage="at export")
    assert [f.place for f in before.errors] == [f"{folder.name}/config.json"]
    add_turn_end_to_generation_config(folder, tok, fmt)  # what merge_lora does
    audit = audit_stops(tok, fmt, checkpoint=folder, ggufs=[gguf], stops=modelfile,
                        stage="at export")
    print(f"\n{family}:\n{audit}")
    assert audit.passed, str(audit)
    end, eos_id = tok.convert_tokens_to_ids(turn_end), tok.convert_tokens_to_ids(eos)
    assert levels(audit) == {"tokenizer": INFO, "training text (probe conversations)": OK,
                             f"{folder.name}/generation_config.json": OK,
                             "GGUF vocab.gguf": INFO, "Modelfile": OK}
    gguf_note = next(f.text for f in audit.notes if f.place == "GGUF vocab.gguf")
    assert gguf_note.startswith(f"eos {eos!r} (id {eos_id}) is not the turn end and also ends "
                                f"generation; harmless: llama.cpp ends generation on "
                                f"{turn_end!r}")
    assert audit.turn_end_id == end
    assert "every place stops after" in audit.summary().splitlines()[0]
    assert "<table>" in audit._repr_html_() and audit.as_dict()["passed"]


def test_a_llama3_modelfile_without_eot_runs_on_in_ollama(family_ggufs):
    """The classic report: Llama 3 in Ollama never stops. Its GGUF's eos is <|end_of_text|>,
    Ollama's own engine stops on that and on the stop strings only."""
    tok, fmt, _, gguf = family_ggufs("llama3")
    hand_written = 'FROM ./vocab.gguf\nPARAMETER stop "<|end_of_text|>"\n'
    audit = audit_stops(tok, fmt, ggufs=[gguf], stops=hand_written)
    assert [f.place for f in audit.errors] == ["Modelfile"]
    with pytest.raises(StopMismatchError) as e:
        audit.raise_if_failed()
    assert ("Modelfile: stop strings '<|end_of_text|>' lack '<|eot_id|>', which is not the "
            "GGUF's eos ('<|end_of_text|>' (id 128001))") in str(e.value)
    assert str(e.value).endswith("or add the line `PARAMETER stop <|eot_id|>`.")


def test_an_export_that_runs_on_fails_the_audit_at_the_gguf_and_the_modelfile(
        embedded_tokenizer, tmp_path):
    tok, fmt = runs_on_format(embedded_tokenizer)
    gguf = vocab_only_gguf(tok, tmp_path)
    broken = without_stop(render_modelfile(gguf, fmt), RUNS_ON_END)
    assert "PARAMETER stop" not in broken  # nothing left to stop the model in Ollama
    audit = audit_stops(tok, fmt, ggufs=[gguf], stops=broken, stage="at export")
    assert [f.place for f in audit.errors] == ["GGUF vocab.gguf", "Modelfile"]
    with pytest.raises(StopMismatchError) as e:
        audit.raise_if_failed()
    message = str(e.value)
    assert message.startswith("Stop/EOS audit (at export): FAILED, the model would not stop "
                              "after '<|answer_end|>'")
    assert ("GGUF vocab.gguf: llama.cpp does not end generation on '<|answer_end|>'"
            in message and "llama-server and Ollama 0.30+ would run on" in message)
    assert "Modelfile: stop strings none lack '<|answer_end|>'" in message
    fix = message.split(" Fix: ", 1)[1]
    assert "tokenizer.eos_token = '<|answer_end|>'" in fix and "write_modelfile" in fix


def test_the_fix_the_audit_names_makes_the_gguf_stop(embedded_tokenizer, tmp_path):
    tok, fmt = runs_on_format(embedded_tokenizer)
    tok.eos_token = RUNS_ON_END  # the fix: the turn end is the eos the converter writes
    gguf = vocab_only_gguf(tok, tmp_path)
    audit = audit_stops(tok, fmt, ggufs=[gguf], stops=render_modelfile(gguf, fmt))
    assert audit.passed and levels(audit)["GGUF vocab.gguf"] == OK


@pytest.mark.slow
def test_export_and_verify_refuses_an_export_that_runs_on(embedded_tokenizer, tmp_path):
    """Through the pipeline: a tiny Llama whose format ends answers with a token llama.cpp
    does not stop on is refused at export, before verification, naming the GGUF."""
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model

    from lorahelpers.models import load_model
    from lorahelpers.pipeline import export_and_verify

    tok, fmt = runs_on_format(embedded_tokenizer)
    base = tmp_path / "base"
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(tiny_llama_config(tok)).save_pretrained(base)
    tok.save_pretrained(base)
    model, tok = load_model(base, max_seq_length=64, chat_format=fmt)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                  init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    tok.save_pretrained(tmp_path / "adapter")
    with pytest.raises(StopMismatchError, match=r"GGUF m-f16.gguf: llama.cpp does not end "
                                                r"generation on '<\|answer_end\|>'.* Fix: "):
        export_and_verify(peft_model, tok, tmp_path / "adapter", fmt, out_dir=tmp_path / "out",
                          name="m", quants=["f16"], prompts=[QA[:1]], progress=lambda line: None)
