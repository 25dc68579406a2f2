"""Batches for training: conversations to token ids with labels only on the assistant
responses (the ChatFormat's spans), right padding, length-grouped sampling, and the loss over
labelled positions only. Used by lorahelpers.training; handy on its own for custom loops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .chat import ChatFormat
from .errors import ChatFormatError

IGNORE = -100  # label of a token the loss skips


def _messages(item, index: int) -> list[dict]:
    if isinstance(item, dict) and "messages" in item:
        item = item["messages"]
    if not isinstance(item, (list, tuple)):
        raise ChatFormatError(f"conversation {index}: expected a list of {{'role', 'content'}} "
                              f"messages (or a dict with 'messages'), got "
                              f"{type(item).__name__}.",
                              fix="pass the conversations lorahelpers.data.to_conversations "
                                  "returns, not the raw rows")
    return list(item)


def tokenize_conversations(tokenizer, conversations, chat_format: ChatFormat,
                           max_seq_length: int = 2048) -> tuple[list[dict], int]:
    """Token ids and labels for each conversation: labels are IGNORE (-100) except on the
    tokens of assistant contents and their eos. The text before each answer is tokenized on its
    own, as llama.cpp and Ollama tokenize the generation prompt, so the model learns the answer
    tokens it has to produce after exactly that prompt. Conversations longer than
    max_seq_length are cut; those left with nothing to learn are dropped.
    Returns (examples, dropped).

    >>> tokenize_conversations(tok, [[user, answer]], get_chat_format("chatml"))  # doctest: +SKIP
    ([{'input_ids': [...], 'labels': [-100, ..., 2, -100]}], 0)
    """
    examples, dropped = [], 0
    for i, item in enumerate(conversations):
        try:
            text, spans = chat_format.render_with_spans(_messages(item, i))
        except ValueError as err:
            raise ChatFormatError(f"conversation {i}: {err}") from err
        ids, labels = encode_with_labels(tokenizer, text, spans)
        ids, labels = ids[:max_seq_length], labels[:max_seq_length]
        # Position 0 is never predicted, so it cannot carry the only label.
        if all(label == IGNORE for label in labels[1:]):
            dropped += 1
            continue
        examples.append({"input_ids": ids, "labels": labels})
    return examples, dropped


def encode_with_labels(tokenizer, text: str, spans: list[tuple[int, int]],
                       ) -> tuple[list[int], list[int]]:
    """(ids, labels) of a rendered conversation whose answers (with eos) are at `spans`.
    Before each answer, the ids are the tokenization of text[:start] (what inference sees);
    the answer's ids are how it continues that prompt: the rest of the whole text's
    tokenization when the prompt's tokens are a prefix of it, else the answer tokenized on its
    own (a prompt ending in a space followed by " POS" would otherwise lose the answer's first
    token to the prompt). In a multi-turn conversation a later prompt holds the earlier
    answers as they were learnt; its text is the same, its tokens may differ at a seam.

    >>> ids, labels = encode_with_labels(tok, "Label: POS</s>", [(7, 14)])  # doctest: +SKIP
    >>> tok.decode([t for t in labels if t != IGNORE])  # doctest: +SKIP
    'POS</s>'
    """
    ids: list[int] = []
    labels: list[int] = []
    for start, end in spans:
        prompt = _ids(tokenizer, text[:start], True)
        if prompt[:len(ids)] == ids:
            new = prompt[len(ids):]
        else:  # the earlier answer's last token merged with the text after it: keep both
            new = _standalone_ids(tokenizer, text[_decoded_upto(spans, start):start])
        ids += new
        labels += [IGNORE] * len(new)
        whole = _ids(tokenizer, text[:end], True)
        answer = whole[len(ids):] if whole[:len(ids)] == ids and len(whole) > len(ids) \
            else _standalone_ids(tokenizer, text[start:end])
        ids += answer
        labels += answer
    tail = _standalone_ids(tokenizer, text[spans[-1][1]:]) if spans else \
        _ids(tokenizer, text, True)
    return ids + tail, labels + [IGNORE] * len(tail)


def _ids(tokenizer, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def _decoded_upto(spans, start: int) -> int:
    return max((e for _, e in spans if e <= start), default=0)


def _standalone_ids(tokenizer, text: str) -> list[int]:
    """text's tokens as a continuation, not as the start of a text: tokenized after the eos
    token (which every tokenizer keeps whole), so SentencePiece tokenizers add no space in
    front of the first word."""
    if not text:
        return []
    eos = tokenizer.eos_token
    ids = _ids(tokenizer, eos + text, False)
    eos_ids = _ids(tokenizer, eos, False)
    if ids[:len(eos_ids)] != eos_ids:
        return _ids(tokenizer, text, False)
    return ids[len(eos_ids):]


class PadCollator:
    """Pads a list of {input_ids, labels} to the longest in the batch (right padding)."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        self.pad_token_id = pad_token_id
        self.multiple = pad_to_multiple_of

    def __call__(self, examples: list[dict]) -> dict:
        n = max(len(e["input_ids"]) for e in examples)
        if self.multiple:
            n = -(-n // self.multiple) * self.multiple
        input_ids = torch.full((len(examples), n), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(examples), n), IGNORE, dtype=torch.long)
        attention_mask = torch.zeros((len(examples), n), dtype=torch.long)
        for row, e in enumerate(examples):
            k = len(e["input_ids"])
            input_ids[row, :k] = torch.as_tensor(e["input_ids"])
            labels[row, :k] = torch.as_tensor(e["labels"])
            attention_mask[row, :k] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class LengthGroupedSampler(torch.utils.data.Sampler):
    """Indices such that each consecutive batch_size of them have similar lengths: shuffle,
    sort within groups of 16 batches, cut into batches, shuffle the batches. The order depends
    only on (seed, epoch), so a resumed run sees the same batches."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int, group_batches: int = 16):
        self.lengths, self.batch_size, self.seed = lengths, batch_size, seed
        self.group = batch_size * group_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=g).tolist()
        full, partial = [], []
        for i in range(0, len(order), self.group):
            chunk = sorted(order[i:i + self.group], key=lambda j: -self.lengths[j])
            for k in range(0, len(chunk), self.batch_size):
                batch = chunk[k:k + self.batch_size]
                (full if len(batch) == self.batch_size else partial).append(batch)
        shuffled = [full[i] for i in torch.randperm(len(full), generator=g).tolist()]
        return iter([j for batch in shuffled + partial for j in batch])


def causal_lm_of(model):
    """The causal LM under a PEFT wrapper (the model itself when there is none).

    >>> causal_lm_of(add_lora(model)) is model  # doctest: +SKIP
    True
    """
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def logit_transform(model):
    """What the model's head does to its logits after the linear layer, as a function (None
    when nothing): Gemma 2's tanh soft-capping, Cohere's logit_scale, Granite's
    logits_scaling. label_loss applies it, so its loss is the model's own for these heads too.

    >>> logit_transform(model) is None  # doctest: +SKIP
    True
    """
    config = causal_lm_of(model).config.get_text_config()
    cap = getattr(config, "final_logit_softcapping", None)
    scale = getattr(config, "logit_scale", None)
    divisor = getattr(config, "logits_scaling", None)
    if not (cap or scale or divisor):
        return None

    def transform(logits):
        if scale:
            logits = logits * scale
        if divisor:
            logits = logits / divisor
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    return transform


def label_loss(model, batch: dict, num_items_in_batch=None):
    """Mean next-token loss over the labelled positions of a padded batch (input_ids,
    attention_mask, labels), the same value as the model's own loss, but only labelled positions
    go through the LM head: on CPU the head (vocab x hidden) is a fifth of a small model's
    arithmetic, and prompts are often half the tokens.

    >>> label_loss(model, PadCollator(tokenizer.pad_token_id)(examples))  # doctest: +SKIP
    tensor(2.3125, grad_fn=<DivBackward0>)
    """
    causal_lm = causal_lm_of(model)
    hidden = causal_lm.base_model(input_ids=batch["input_ids"],
                                  attention_mask=batch["attention_mask"],
                                  use_cache=False).last_hidden_state
    labels = batch["labels"][:, 1:]
    mask = labels != IGNORE
    total = _label_nll(hidden[:, :-1][mask], labels[mask], causal_lm.get_output_embeddings(),
                       logit_transform(causal_lm))
    denom = mask.sum() if num_items_in_batch is None else num_items_in_batch
    return total / torch.as_tensor(denom, device=total.device).clamp(min=1)


def _label_nll(hidden, targets, lm_head, transform=None, chunk_elements: int = 2**26):
    """Sum of -log p(target) over rows of hidden, in chunks whose logits are recomputed in
    backward, so memory stays bounded for long sequences and large vocabularies."""
    weight, bias = lm_head.weight, lm_head.bias

    def nll(h, y):
        logits = F.linear(h, weight, bias)
        if transform is not None:
            logits = transform(logits.float())
        return F.cross_entropy(logits.float(), y, reduction="sum")

    rows = max(256, chunk_elements // weight.shape[0])
    if hidden.shape[0] <= rows:
        return nll(hidden, targets)
    from torch.utils.checkpoint import checkpoint

    return sum(checkpoint(nll, h, y, use_reentrant=False)
               for h, y in zip(hidden.split(rows), targets.split(rows), strict=True))
