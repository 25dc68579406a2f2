"""Batches for training: conversations to token ids with labels only on the assistant
responses (the ChatFormat's spans), right padding, length-grouped sampling, and the loss over
labelled positions only. Used by lorahelpers.training; handy on its own for custom loops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .chat import ChatFormat

IGNORE = -100  # label of a token the loss skips


def _messages(item, index: int) -> list[dict]:
    if isinstance(item, dict) and "messages" in item:
        item = item["messages"]
    if not isinstance(item, (list, tuple)):
        raise TypeError(f"conversation {index}: expected a list of {{'role', 'content'}} "
                        f"messages (or a dict with 'messages'), got {type(item).__name__}")
    return list(item)


def tokenize_conversations(tokenizer, conversations, chat_format: ChatFormat,
                           max_seq_length: int = 2048) -> tuple[list[dict], int]:
    """Token ids and labels for each conversation: labels are IGNORE (-100) except on the
    tokens of assistant contents and their eos. Conversations longer than max_seq_length are
    cut; those left with nothing to learn are dropped. Returns (examples, dropped).

    >>> tokenize_conversations(tok, [[user, answer]], get_chat_format("chatml"))  # doctest: +SKIP
    ([{'input_ids': [...], 'labels': [-100, ..., 2, -100]}], 0)
    """
    texts, spans = [], []
    for i, item in enumerate(conversations):
        try:
            text, s = chat_format.render_with_spans(_messages(item, i))
        except ValueError as err:
            raise ValueError(f"conversation {i}: {err}") from err
        texts.append(text)
        spans.append(s)
    if not texts:
        return [], 0
    if not getattr(tokenizer, "is_fast", True):
        raise ValueError("loss masking needs character offsets, which only fast tokenizers "
                         "give: load the tokenizer with use_fast=True")
    encoded = tokenizer(texts, return_offsets_mapping=True, add_special_tokens=True)
    examples, dropped = [], 0
    for ids, offsets, s in zip(encoded["input_ids"], encoded["offset_mapping"], spans,
                               strict=True):
        labels = [tok if _starts_inside(start, end, s) else IGNORE
                  for tok, (start, end) in zip(ids, offsets, strict=True)]
        ids, labels = ids[:max_seq_length], labels[:max_seq_length]
        # Position 0 is never predicted, so it cannot carry the only label.
        if all(label == IGNORE for label in labels[1:]):
            dropped += 1
            continue
        examples.append({"input_ids": ids, "labels": labels})
    return examples, dropped


def _starts_inside(start: int, end: int, spans: list[tuple[int, int]]) -> bool:
    # A token belongs to the response when its first character does; zero-width tokens
    # (a BOS the tokenizer adds) belong to nothing.
    return end > start and any(a <= start < b for a, b in spans)


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


def _causal_lm(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _plain_lm_head(model) -> bool:
    # Heads that scale or cap their logits go through TRL's own loss instead.
    config = _causal_lm(model).config.get_text_config()
    return not any(getattr(config, k, None) for k in
                   ("final_logit_softcapping", "logit_scale", "logits_scaling"))


def label_loss(model, batch: dict, num_items_in_batch=None):
    """Mean next-token loss over the labelled positions of a padded batch (input_ids,
    attention_mask, labels), the same value as the model's own loss, but only labelled positions
    go through the LM head: on CPU the head (vocab x hidden) is a fifth of a small model's
    arithmetic, and prompts are often half the tokens.

    >>> label_loss(model, PadCollator(tokenizer.pad_token_id)(examples))  # doctest: +SKIP
    tensor(2.3125, grad_fn=<DivBackward0>)
    """
    causal_lm = _causal_lm(model)
    hidden = causal_lm.base_model(input_ids=batch["input_ids"],
                                  attention_mask=batch["attention_mask"],
                                  use_cache=False).last_hidden_state
    labels = batch["labels"][:, 1:]
    mask = labels != IGNORE
    total = _label_nll(hidden[:, :-1][mask], labels[mask], causal_lm.get_output_embeddings())
    denom = mask.sum() if num_items_in_batch is None else num_items_in_batch
    return total / torch.as_tensor(denom, device=total.device).clamp(min=1)


def _label_nll(hidden, targets, lm_head, chunk_elements: int = 2**26):
    """Sum of -log p(target) over rows of hidden, in chunks whose logits are recomputed in
    backward, so memory stays bounded for long sequences and large vocabularies."""
    weight, bias = lm_head.weight, lm_head.bias

    def nll(h, y):
        logits = F.linear(h, weight, bias)
        return F.cross_entropy(logits.float(), y, reduction="sum")

    rows = max(256, chunk_elements // weight.shape[0])
    if hidden.shape[0] <= rows:
        return nll(hidden, targets)
    from torch.utils.checkpoint import checkpoint

    return sum(checkpoint(nll, h, y, use_reentrant=False)
               for h, y in zip(hidden.split(rows), targets.split(rows), strict=True))
