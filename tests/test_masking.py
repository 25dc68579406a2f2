"""Loss masking matches inference: the ids before each answer are the tokenization of the
generation prompt (what llama.cpp and Ollama feed the model), and exactly the answer tokens plus
eos are labelled, for every built-in format and for custom templates, on real tokenizers."""

import copy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lorahelpers.batches import IGNORE, tokenize_conversations
from lorahelpers.chat import BUILTIN, get_chat_format
from tests.test_chat_properties import conversations

REVIEW = "Review: {INPUT}\nLabel: {OUTPUT}"
# Prefixes before {OUTPUT} ending in a space, a newline, a colon and nothing at all.
CUSTOM = (REVIEW, "Q: {INPUT}\nA:\n{OUTPUT}", "{INPUT} =>{OUTPUT}", "Q {INPUT} A{OUTPUT}",
          "### Q\n{INPUT}\n### A: {OUTPUT}\n\n", "{SYSTEM}\nUser says {INPUT} bot says {OUTPUT}")
FORMATS = (*BUILTIN, *CUSTOM)
# Words and seams that tokenizers like to merge across.
WORDS = st.sampled_from([" POS", "POS", " NEG", "\n", " ", "  x", "ok.", ":", "é", "日本", "<", ">",
                         "1", " 42", "\t", "Paris", " the", "'s"])
text = st.lists(WORDS, min_size=0, max_size=5).map("".join)


@pytest.fixture(scope="module")
def tokenizers(embedded_tokenizer):
    """(tokenizer, format) for each format on the embedded tokenizer, with the format's special
    tokens added where the vocabulary lacks them (as a real base of that family has them)."""
    out = {}
    for name in FORMATS:
        fmt = get_chat_format(name, eos=embedded_tokenizer.eos_token)
        tok = copy.deepcopy(embedded_tokenizer)
        specials = {fmt.eos, *(s for s in fmt.stop if s.startswith("<") and s.endswith(">"))}
        missing = sorted(s for s in specials if s not in tok.get_vocab())
        if missing:
            tok.add_special_tokens({"additional_special_tokens": missing})
        out[name] = (tok, fmt)
    return out


def encode(tok, text):
    return list(tok(text, add_special_tokens=True)["input_ids"])


def check(tok, fmt, messages):
    (example,), dropped = tokenize_conversations(tok, [messages], fmt, max_seq_length=10**6)
    assert dropped == 0
    ids, labels = example["input_ids"], example["labels"]
    # labelled runs, in order
    runs, run, starts = [], [], []
    for i, (t, label) in enumerate(zip(ids, labels, strict=True)):
        if label != IGNORE:
            assert label == t
            if not run:
                starts.append(i)
            run.append(t)
        elif run:
            runs.append(run)
            run = []
    if run:
        runs.append(run)
    answers = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    eos_id = tok.convert_tokens_to_ids(fmt.eos)
    # one run per answer (an empty answer still labels its eos), each ending in the eos id
    assert len(runs) == len(answers)
    for run, start, k in zip(runs, starts, answers, strict=True):
        assert run[-1] == eos_id
        content = messages[k]["content"]
        if tok.decode(tok(content, add_special_tokens=False)["input_ids"]) == content:
            assert tok.decode(run) == content + fmt.eos  # (some bytes have no token: unk)
        # before the first answer: exactly the generation prompt's tokens. Later prompts hold
        # earlier answers, whose tokens are those learnt; the text is the same.
        prompt = encode(tok, fmt.render(messages[:k], add_generation_prompt=True))
        if k == answers[0]:
            assert ids[:start] == prompt
        else:
            assert tok.decode(ids[:start]) == tok.decode(prompt)
    return ids, labels


@pytest.mark.parametrize("name", FORMATS)
def test_every_format_labels_the_answer_after_the_generation_prompt(tokenizers, name):
    tok, fmt = tokenizers[name]

    @settings(max_examples=25, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                     HealthCheck.function_scoped_fixture])
    @given(messages=conversations(end_with="assistant"), answer=text)
    def run(messages, answer):
        messages[-1] = {"role": "assistant", "content": answer}
        check(tok, fmt, messages)

    run()


def test_the_label_after_a_space_is_learnt_not_only_the_eos(embedded_tokenizer):
    # "Label: " + "POS": the whole text tokenizes as "Label", ":", " POS"; inference sees the
    # prompt "...Label: " whose last token is " ", then must produce "POS".
    fmt = get_chat_format(REVIEW, eos=embedded_tokenizer.eos_token)
    messages = [{"role": "user", "content": "Great kettle."},
                {"role": "assistant", "content": "POS"}]
    ids, labels = check(embedded_tokenizer, fmt, messages)
    learnt = [t for t in labels if t != IGNORE]
    assert embedded_tokenizer.decode(learnt) == "POS" + fmt.eos
    assert len(learnt) >= 2  # the answer, not only the eos


@pytest.mark.slow
def test_the_answer_token_after_label_space_is_learnt(embedded_path):
    import torch

    from lorahelpers.batches import PadCollator, label_loss
    from lorahelpers.models import LoraSettings, add_lora, load_model

    fmt_name = REVIEW
    model, tok = load_model(embedded_path, max_seq_length=64)
    fmt = get_chat_format(fmt_name, eos=tok.eos_token)
    reviews = [("Loved it, works great.", "POS"), ("Broke on day one.", "NEG"),
               ("Quiet and fast.", "POS"), ("Leaks everywhere.", "NEG")]
    rows = [[{"role": "user", "content": r}, {"role": "assistant", "content": a}]
            for r, a in reviews]
    examples, _ = tokenize_conversations(tok, rows, fmt)
    # only the answer tokens, not the eos, whose loss is easy to lower on its own
    answer_only = [{**e, "labels": [t if t != IGNORE and t != tok.eos_token_id else IGNORE
                                    for t in e["labels"]]} for e in examples]
    assert all(any(t != IGNORE for t in e["labels"]) for e in answer_only)
    batch, answers = PadCollator(tok.pad_token_id)(examples), PadCollator(tok.pad_token_id)(
        answer_only)
    model = add_lora(model, LoraSettings(r=8, alpha=16))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    with torch.no_grad():
        before = label_loss(model, answers).item()
    for _ in range(6):
        optimizer.zero_grad()
        label_loss(model, batch).backward()
        optimizer.step()
    with torch.no_grad():
        after = label_loss(model, answers).item()
    assert after < 0.5 * before, (before, after)
