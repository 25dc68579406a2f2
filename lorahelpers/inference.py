"""Inference with the in-memory model: generate (optionally streamed) and evaluate held-out rows;
the same scoring for a GGUF run by llama.cpp (evaluate_gguf) and a model served by Ollama
(evaluate_ollama).

Prompts are rendered by the same ChatFormat the model was trained with, and generation stops at
the format's eos and stop strings, as Ollama does.
"""

from __future__ import annotations

import html
import re
import sys
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from .chat import ChatFormat, get_chat_format, stop_token_ids
from .errors import DataError, SettingsError


def _format(chat_format, tokenizer) -> ChatFormat | None:
    if chat_format is None or isinstance(chat_format, ChatFormat):
        return chat_format
    return get_chat_format(chat_format, eos=tokenizer.eos_token)


def _prompt(tokenizer, messages: list[dict], fmt: ChatFormat | None) -> str:
    if fmt is not None:
        return fmt.generation_prefix(messages)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _stops(tokenizer, fmt: ChatFormat | None) -> tuple[list[str], list[int], dict]:
    """(stop strings, stop token ids, extra generate() arguments). Stops that are single
    tokens end generation by id; only the others need transformers' slower string matching."""
    strings = list(fmt.stop) if fmt else [tokenizer.eos_token]
    vocab = tokenizer.get_vocab()
    by_text = [s for s in strings if s not in vocab]
    extra = {"stop_strings": by_text, "tokenizer": tokenizer} if by_text else {}
    return strings, stop_token_ids(tokenizer, strings), extra


def cut_at_stop(text: str, stops) -> str:
    """text up to the first stop string.

    >>> cut_at_stop("Paris.<|im_end|>\\n", ["<|im_end|>"])
    'Paris.'
    """
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=len(text))
    return text[:cut]


@contextmanager
def eval_mode(model):
    """`model` in eval mode (no dropout; Unsloth's inference switch on that backend) under
    torch.inference_mode() while inside; training mode is restored after, if it was on.

    >>> with eval_mode(model):  # doctest: +SKIP
    ...     logits = model(input_ids=ids).logits
    """
    was_training = model.training
    if getattr(model, "lorahelpers_backend", "") == "unsloth":
        from unsloth import FastLanguageModel

        FastLanguageModel.for_inference(model)
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        if was_training:
            model.train()


class StopStreamer:
    """Prints generated text as it comes, never printing a stop string (or its start, held
    back until it is clear it is not one) or an incomplete UTF-8 character."""

    def __init__(self, tokenizer, stops, file=None):
        self.tokenizer, self.stops, self.file = tokenizer, [s for s in stops if s], file
        self.ids: list[int] = []
        self.printed = 0
        self.prompt_seen = False
        self.stopped = False

    def put(self, value) -> None:
        if not self.prompt_seen:  # generate() first passes the prompt
            self.prompt_seen = True
            return
        self.ids.extend(value.reshape(-1).tolist())
        self._flush(final=False)

    def end(self) -> None:
        self._flush(final=True)
        if self.printed:
            self._write("\n")

    def _flush(self, final: bool) -> None:
        if self.stopped:
            return
        text = self.tokenizer.decode(self.ids, skip_special_tokens=False)
        visible = cut_at_stop(text, self.stops)
        if len(visible) < len(text):
            self.stopped = True
        elif not final:
            visible = visible.rstrip("\ufffd")
            hold = max((k for s in self.stops for k in range(1, len(s))
                        if visible.endswith(s[:k])), default=0)
            visible = visible[:len(visible) - hold]
        if len(visible) > self.printed:
            self._write(visible[self.printed:])
            self.printed = len(visible)

    def _write(self, s: str) -> None:
        out = self.file or sys.stdout
        out.write(s)
        out.flush()


def generate(model, tokenizer, messages, chat_format=None, *, max_new_tokens: int = 256,
             stream: bool = True, temperature: float = 0.0, file=None, **generate_kwargs) -> str:
    """The model's answer to `messages` (a list of {role, content}, or one user string),
    greedy unless temperature > 0, stopped at the format's eos/stop strings; with stream=True
    it is printed as it is generated. Returns the answer without the eos.

    >>> generate(model, tokenizer, "What is the capital of France?", "chatml")  # doctest: +SKIP
    The capital of France is Paris.
    'The capital of France is Paris.'
    """
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    fmt = _format(chat_format, tokenizer)
    stops, stop_ids, extra = _stops(tokenizer, fmt)
    prompt = _prompt(tokenizer, messages, fmt)
    enc = tokenizer(prompt, return_tensors="pt", add_special_tokens=_add_special(tokenizer, prompt))
    enc = enc.to(model.device)
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else \
        {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    streamer = StopStreamer(tokenizer, stops, file) if stream else None
    with eval_mode(model):
        out = model.generate(**enc, max_new_tokens=max_new_tokens, eos_token_id=stop_ids,
                             pad_token_id=tokenizer.pad_token_id, streamer=streamer,
                             **sampling | extra | generate_kwargs)
    new = out[0, enc["input_ids"].shape[1]:]
    return cut_at_stop(tokenizer.decode(new, skip_special_tokens=False), stops)


def _add_special(tokenizer, prompt: str) -> bool:
    # Our formats never write the BOS into the text; a copied template might.
    bos = tokenizer.bos_token
    return not (bos and prompt.startswith(bos))


# ---- evaluation ----------------------------------------------------------------------------


def normalize(text: str) -> str:
    """Lower case, single spaces, no surrounding spaces or final punctuation: what exact
    matching compares.

    >>> normalize("  The answer is\\n42. ")
    'the answer is 42'
    """
    return re.sub(r"\s+", " ", text).strip().casefold().rstrip(".!?;:, ")


def token_f1(expected: str, answer: str) -> float:
    """Word-overlap F1 (as in SQuAD) for free-text answers that cannot match exactly.

    >>> round(token_f1("the cat sat", "a cat sat down"), 3)
    0.571
    """
    want, got = normalize(expected).split(), normalize(answer).split()
    common = sum(min(want.count(w), got.count(w)) for w in set(want))
    if not want or not got or not common:
        return float(want == got)
    precision, recall = common / len(got), common / len(want)
    return 2 * precision * recall / (precision + recall)


def _scorer(scorer) -> Callable[[str, str], float]:
    if callable(scorer):
        return scorer
    if scorer == "exact":
        return lambda expected, answer: float(normalize(expected) == normalize(answer))
    if scorer == "contains":
        return lambda expected, answer: float(normalize(expected) in normalize(answer))
    if scorer == "f1":
        return token_f1
    raise SettingsError(f"scorer {scorer!r} is unknown. Fix: use 'exact', 'contains', 'f1' or "
                        "a function (expected, answer) -> bool or float in [0, 1]")


@dataclass
class EvalReport:
    """Score (0-100) of a model on held-out rows, with one row per example: prompt,
    expected, answer, correct (1/0 or the custom scorer's value)."""

    score: float
    rows: list[dict] = field(repr=False)
    scorer: str = "exact"

    @property
    def n(self) -> int:
        return len(self.rows)

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.rows, columns=["prompt", "expected", "answer", "correct"])

    def __str__(self) -> str:
        return f"{self.score:.1f}% ({self.scorer}, {self.n} rows)"

    def _repr_html_(self) -> str:
        def cell(v) -> str:
            text = v if isinstance(v, str) else f"{v:g}"
            return f"<td style='text-align:left;white-space:pre-wrap'>{html.escape(text)}</td>"

        body = "".join("<tr>" + "".join(cell(r[k]) for k in ("prompt", "expected", "answer",
                                                              "correct")) + "</tr>"
                       for r in self.rows)
        return (f"<p><b>Score: {self.score:.1f}%</b> ({html.escape(self.scorer)}, {self.n} rows)"
                "</p><table><tr><th>prompt</th><th>expected</th><th>answer</th><th>correct</th>"
                f"</tr>{body}</table>")


def _split_row(row, index: int) -> tuple[list[dict], str]:
    messages = row["messages"] if isinstance(row, dict) and "messages" in row else row
    if (not isinstance(messages, (list, tuple)) or not messages
            or not isinstance(messages[-1], dict) or messages[-1].get("role") != "assistant"):
        raise DataError(f"eval row {index}: expected a conversation ending with the expected "
                        "assistant answer. Fix: e.g. [{'role': 'user', ...}, {'role': "
                        "'assistant', 'content': expected}]")
    return list(messages[:-1]), messages[-1]["content"]


def _questions(tokenizer, eval_rows, chat_format, scorer):
    """(format, [(messages, expected)], prompts): bad rows, no rows and unknown scorers fail
    here, before any model runs."""
    _scorer(scorer)
    fmt = _format(chat_format, tokenizer)
    pairs = [_split_row(row, i) for i, row in enumerate(eval_rows)]
    if not pairs:
        raise DataError("no held-out rows to score. Fix: pass a list of conversations, each "
                        "ending with the expected assistant answer (e.g. the .eval of "
                        "lorahelpers.pipeline.prepare_data).")
    return fmt, pairs, [_prompt(tokenizer, messages, fmt) for messages, _ in pairs]


def _report(pairs, answers, scorer, prompts) -> EvalReport:
    """The EvalReport of `answers` to the (messages, expected) `pairs`, whatever ran the model;
    each row keeps the whole prompt the model was given ("chat_prompt")."""
    score_fn = _scorer(scorer)
    rows = []
    for (messages, expected), answer, prompt in zip(pairs, answers, prompts, strict=True):
        value = float(score_fn(expected, answer))
        if not 0.0 <= value <= 1.0:
            raise SettingsError(f"scorer returned {value} for {expected!r}. Fix: return a bool "
                                "or a float in [0, 1]")
        rows.append({"prompt": messages[-1]["content"] if messages else "",
                     "expected": expected, "answer": answer, "correct": value,
                     "chat_prompt": prompt})
    score = 100.0 * sum(r["correct"] for r in rows) / len(rows)
    name = scorer if isinstance(scorer, str) else getattr(scorer, "__name__", "custom")
    return EvalReport(score, rows, name)


def answer_budget(tokenizer, pairs, scorer, max_new_tokens: int) -> int:
    """How many tokens to generate per answer: `max_new_tokens`, or with the "exact" scorer
    fewer when every expected answer is short. An answer more than twice as long as the
    longest expected one (plus 8 tokens) can no longer equal it, and a base model that does
    not stop would otherwise run on to max_new_tokens in every row.

    >>> from transformers import AutoTokenizer
    >>> from lorahelpers.models import embedded_base
    >>> tok = AutoTokenizer.from_pretrained(embedded_base())
    >>> pairs = [([], "POS"), ([], "NEG")]
    >>> answer_budget(tok, pairs, "exact", 64), answer_budget(tok, pairs, "f1", 64)
    (12, 64)
    """
    if scorer != "exact":
        return max_new_tokens
    longest = max(len(tokenizer(expected, add_special_tokens=False)["input_ids"])
                  for _, expected in pairs)
    return min(max_new_tokens, 2 * longest + 8)


def evaluate(model, tokenizer, eval_rows, scorer="exact", *, chat_format=None,
             batch_size: int | None = None, max_new_tokens: int = 64) -> EvalReport:
    """Answer each held-out conversation's last user turn greedily (batched, left-padded) and
    score the answer against the conversation's assistant message: "exact" (normalized
    equality), "contains" (expected appears in the answer), "f1" or a function
    (expected, answer) -> bool/float in [0, 1]. Answers are at most `max_new_tokens` long
    (fewer with "exact": see answer_budget). `batch_size` defaults to 32 rows on a CPU, where
    each decoding step costs about the same for 1 or 32 rows (it is bound by reading the
    weights: measured 10x faster than 8 rows on the embedded model), and 8 on a GPU.

    >>> evaluate(model, tokenizer, eval_conversations, "exact",
    ...          chat_format="chatml").score  # doctest: +SKIP
    72.0
    """
    fmt, pairs, prompts = _questions(tokenizer, eval_rows, chat_format, scorer)
    if batch_size is None:
        batch_size = 32 if model.device.type == "cpu" else 8
    answers = _generate_batched(model, tokenizer, prompts, fmt, batch_size,
                                answer_budget(tokenizer, pairs, scorer, max_new_tokens))
    return _report(pairs, answers, scorer, prompts)


def evaluate_gguf(gguf, eval_rows, chat_format, tokenizer, *, scorer="exact",
                  max_new_tokens: int = 64, n_gpu_layers: int = 0, lora_path=None) -> EvalReport:
    """evaluate, run by llama.cpp: the same prompts (rendered by chat_format), stop tokens,
    answer lengths, scorers and report, for a GGUF (with `lora_path`, an adapter GGUF over
    it). Greedy, one row at a time; n_gpu_layers=-1 puts every layer on the GPU (a llama.cpp
    CUDA build).

    >>> evaluate_gguf("out/m-q8_0.gguf", eval_rows, fmt, tokenizer).score  # doctest: +SKIP
    100.0
    """
    from lorahelpers.llamacpp import GGUFRunner

    fmt, pairs, prompts = _questions(tokenizer, eval_rows, chat_format, scorer)
    stops, stop_ids, _ = _stops(tokenizer, fmt)
    max_new_tokens = answer_budget(tokenizer, pairs, scorer, max_new_tokens)
    longest = max(len(tokenizer(p)["input_ids"]) for p in prompts)
    with GGUFRunner(gguf, lora_path, n_ctx=longest + max_new_tokens + 8,
                    n_gpu_layers=n_gpu_layers) as runner:
        answers = [cut_at_stop(runner.detokenize(runner.greedy(runner.tokenize(p),
                                                               max_new_tokens, stop_ids)), stops)
                   for p in prompts]
    return _report(pairs, answers, scorer, prompts)


def evaluate_ollama(name, eval_rows, chat_format, tokenizer, *, scorer="exact",
                    max_new_tokens: int = 64, options=None, host=None) -> EvalReport:
    """evaluate, through a model registered with Ollama: each conversation sent to /api/chat
    as `ollama run` sends it, with `options` (e.g. lorahelpers.ollama.GREEDY_OPTIONS; none:
    the model's PARAMETERs over the server's defaults) and num_predict the answer budget; the
    same scorers and report. Answers are Ollama's, cut at the model's own stops only. Each
    row's "chat_prompt" is the prompt Ollama builds: chat_format's rendering, with the model's
    SYSTEM where the conversation has no system message (as Ollama does).

    >>> evaluate_ollama("my-model", rows, fmt, tok, options=GREEDY_OPTIONS).score  # doctest: +SKIP
    100.0
    """
    from lorahelpers import ollama

    fmt, pairs, _ = _questions(tokenizer, eval_rows, chat_format, scorer)
    system = ollama.show(name, host).get("system") or ""
    sent = {**(options or {}),
            "num_predict": answer_budget(tokenizer, pairs, scorer, max_new_tokens)}
    answers, prompts = [], []
    for messages, _ in pairs:
        answers.append(ollama.chat(name, messages, host=host, stream=False, options=sent))
        if system and not (messages and messages[0]["role"] == "system"):
            messages = [{"role": "system", "content": system}, *messages]
        prompts.append(_prompt(tokenizer, messages, fmt))
    return _report(pairs, answers, scorer, prompts)


def _generate_batched(model, tokenizer, prompts, fmt, batch_size, max_new_tokens) -> list[str]:
    stops, stop_ids, extra = _stops(tokenizer, fmt)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths together
    answers: list[str] = [""] * len(prompts)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues every row from its last real token
    try:
        with eval_mode(model):
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                batch = [prompts[i] for i in idx]
                enc = tokenizer(batch, return_tensors="pt", padding=True,
                                add_special_tokens=_add_special(tokenizer, batch[0]))
                enc = enc.to(model.device)
                out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     temperature=None, top_p=None, top_k=None,
                                     eos_token_id=stop_ids, pad_token_id=tokenizer.pad_token_id,
                                     **extra)
                new = out[:, enc["input_ids"].shape[1]:]
                for i, ids in zip(idx, new, strict=True):
                    text = tokenizer.decode(ids, skip_special_tokens=False)
                    answers[i] = cut_at_stop(text, stops)
    finally:
        tokenizer.padding_side = side
    return answers
