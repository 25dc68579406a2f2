"""Verify an exported model against the PyTorch model it came from: the same tokens for the
same chat text, close next-token distributions at every position, the same greedy answers.

The candidate is a GGUF (run by llama.cpp, optionally with an adapter GGUF over it) or a merged
Hugging Face checkpoint directory. Each quant type has its own tolerances (THRESHOLDS, from
the table of GGUF types in quants.py, which says where they come from); a candidate outside
them is reported unverified, or raises with strict.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lorahelpers.chat import stop_token_ids
from lorahelpers.errors import SettingsError
from lorahelpers.llamacpp import (
    ExportError,
    GGUFRunner,
    check_gguf,
    gguf_metadata,
)
from lorahelpers.quants import FTYPES, THRESHOLDS, Thresholds

FILE_TYPES = {v: k for k, v in FTYPES.items()}


class VerificationError(ExportError):
    def __init__(self, report: VerifyReport):
        super().__init__(f"{report.artifact} failed verification:\n{report.table()}\nFix: "
                         "the rows over their limit show where it differs from the PyTorch "
                         "model; check that the adapter was merged with its own base and "
                         "scale, and for a small model use q8_0 rather than a 4-5 bit type")
        self.report = report


@dataclass(frozen=True)
class VerifyReport:
    """How closely an exported model follows the PyTorch model; `passed` says if within limits."""

    artifact: str
    kind: str                      # quant type, "merged", or e.g. "f16+adapter"
    limits: Thresholds
    prompts: int
    positions: int
    tokens_match: bool
    template_match: bool | None    # None: not checked (adapter over a base GGUF)
    top1: float
    mean_kl: float
    max_kl: float
    nmse: float
    greedy_match: float
    notes: list[str] = field(default_factory=list)
    adapter_kept: float | None = None  # None: no adapter to compare, or it changed no top token
    adapter_positions: int = 0
    adapter_scale: float | None = None  # None: no adapter to compare, or it changed too little

    @property
    def failures(self) -> list[str]:
        lim, out = self.limits, []
        if not self.tokens_match:
            out.append("tokenization differs from the Hugging Face tokenizer")
        if self.template_match is False:
            out.append("chat template differs from the tokenizer's")
        if self.mean_kl > lim.max_kl:
            out.append(f"mean KL {self.mean_kl:.3g} > {lim.max_kl:g}")
        if self.top1 < lim.min_top1:
            out.append(f"top-1 agreement {self.top1:.1%} < {lim.min_top1:.0%}")
        if self.nmse > lim.max_nmse:
            out.append(f"NMSE {self.nmse:.3g} > {lim.max_nmse:g}")
        if self.greedy_match < lim.min_greedy:
            out.append(f"greedy answers match {self.greedy_match:.0%} < {lim.min_greedy:.0%}")
        # Judged on 10 or more changed positions; fewer say too little either way.
        if (self.adapter_kept is not None and self.adapter_positions >= 10
                and self.adapter_kept < lim.min_adapter_kept):
            out.append(f"adapter's top-token changes kept {self.adapter_kept:.0%} < "
                       f"{lim.min_adapter_kept:.0%} (of {self.adapter_positions})")
        low, high = lim.adapter_scale
        if self.adapter_scale is not None and not low <= self.adapter_scale <= high:
            out.append(f"adapter's effect carried at scale {self.adapter_scale:.2f}, outside "
                       f"{low:g} to {high:g} (a merge at the wrong scale?)")
        return out

    @property
    def passed(self) -> bool:
        return not self.failures

    def rows(self) -> list[tuple[str, str, str]]:
        lim = self.limits
        yesno = {True: "yes", False: "NO", None: "not checked"}
        return [
            ("tokens identical", yesno[self.tokens_match], "yes"),
            ("chat template identical", yesno[self.template_match], "yes"),
            ("top-1 agreement", f"{self.top1:.1%}", _at_least(lim.min_top1)),
            ("mean KL (nats)", f"{self.mean_kl:.2e}", f"<= {lim.max_kl:g}"),
            ("max KL (nats)", f"{self.max_kl:.2e}", ""),
            ("NMSE of logits", f"{self.nmse:.2e}", f"<= {lim.max_nmse:g}"),
            ("greedy answers identical", f"{self.greedy_match:.0%}", _at_least(lim.min_greedy)),
            ("adapter changes kept", "not checked" if self.adapter_kept is None else
             f"{self.adapter_kept:.0%} of {self.adapter_positions}",
             _at_least(lim.min_adapter_kept)),
            ("adapter effect scale", "not checked" if self.adapter_scale is None else
             f"{self.adapter_scale:.2f}", f"{lim.adapter_scale[0]:g} to {lim.adapter_scale[1]:g}"),
        ]

    def status(self) -> str:
        return "verified" if self.passed else "UNVERIFIED: " + "; ".join(self.failures)

    def table(self) -> str:
        head = (f"{Path(self.artifact).name} [{self.kind}], {self.prompts} prompts, "
                f"{self.positions} positions: {self.status()}")
        lines = [head] + [f"  {a:<26}{b:>14}   {c}" for a, b, c in self.rows()]
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])

    def __str__(self) -> str:
        return self.table()

    def _repr_html_(self) -> str:
        e = html.escape
        color = "green" if self.passed else "red"
        body = "".join(f"<tr><td>{e(a)}</td><td>{e(b)}</td><td>{e(c)}</td></tr>"
                       for a, b, c in self.rows())
        notes = "".join(f"<li>{e(n)}</li>" for n in self.notes)
        return (f"<p><b>{e(Path(self.artifact).name)}</b> [{e(self.kind)}], {self.prompts} "
                f"prompts, {self.positions} positions: <b style='color:{color}'>"
                f"{e(self.status())}</b></p><table><tr><th>check</th><th>value</th>"
                f"<th>limit</th></tr>{body}</table>" + (f"<ul>{notes}</ul>" if notes else ""))

    def raise_if_failed(self) -> VerifyReport:
        if not self.passed:
            raise VerificationError(self)
        return self


def verify(artifact, reference_model, tokenizer, prompts, *, quant: str | None = None,
           lora_path=None, n_ctx: int | None = None, max_new_tokens: int = 12,
           strict: bool = False) -> VerifyReport:
    """Compare `artifact` (a .gguf, a merged checkpoint directory, or a model in memory) with
    `reference_model`
    (the PyTorch/PEFT model) on chat `prompts` (strings or message lists) rendered with
    `tokenizer`'s chat template. `lora_path`: an adapter GGUF applied over `artifact`.
    `quant` picks the limits (default: read from the GGUF). strict=True raises when outside.

    >>> verify("out/model-q8_0.gguf", model, tokenizer, ["What is 2+2?"]).passed  # doctest: +SKIP
    True
    """
    loaded = not isinstance(artifact, (str, os.PathLike))  # a model already in memory
    if not loaded:
        artifact = Path(artifact)
        if not artifact.is_dir():
            check_gguf(artifact)  # fail before the slow reference run
    texts = [_render(tokenizer, p) for p in prompts]
    if not texts:
        raise SettingsError("verify needs at least one prompt. Fix: pass a few chat prompts")
    reference = _TorchRunner(reference_model, tokenizer)
    eos = stop_token_ids(tokenizer)
    prompt_ids = [reference.tokenize(t) for t in texts]
    answers = [reference.greedy(ids, max_new_tokens, eos) for ids in prompt_ids]
    sequences = [ids + a for ids, a in zip(prompt_ids, answers, strict=True)]
    need_ctx = n_ctx or max(64, max(len(s) for s in sequences) + 8)
    if loaded:
        candidate, kind, notes = _TorchRunner(artifact, tokenizer), quant or "merged", []
        artifact = f"{type(artifact).__name__} in memory"
    else:
        candidate, kind, notes = _open(artifact, quant, lora_path, need_ctx)
    try:
        tokens_match = True
        for text, ids in zip(texts, prompt_ids, strict=True):
            theirs = candidate.tokenize(text)
            if theirs != ids:
                tokens_match = False
                at = _first_difference(ids, theirs)
                notes.append(f"tokens differ at {at} in {text[:60]!r}: reference "
                             f"{ids[at:at + 5]}, candidate {theirs[at:at + 5]}")
        expected = getattr(tokenizer, "chat_template", None)
        template_match = None
        if candidate.template is not None and expected is not None:
            template_match = candidate.template == expected
        stats = _Stats()
        greedy_same = 0
        for ids, seq, answer in zip(prompt_ids, sequences, answers, strict=True):
            stats.add(seq, reference.logits(seq), candidate.logits(seq),
                      reference.base_logits(seq))
            mine = candidate.greedy(ids, max_new_tokens, eos)
            greedy_same += mine == answer
            if mine != answer and len(notes) < 8:
                notes.append(f"greedy differs: reference {tokenizer.decode(answer)!r}, "
                             f"candidate {tokenizer.decode(mine)!r}")
    finally:
        candidate.close()
    report = VerifyReport(str(artifact), kind, THRESHOLDS[kind.split("+")[0]], len(texts),
                          stats.n, tokens_match, template_match, stats.top1 / stats.n,
                          stats.kl / stats.n, stats.max_kl, stats.nmse(),
                          greedy_same / len(texts), notes,
                          stats.adapter_kept / stats.adapter_n if stats.adapter_n else None,
                          stats.adapter_n, stats.adapter_scale())
    return report.raise_if_failed() if strict else report


def verify_or_raise(*args, **kwargs) -> VerifyReport:
    """verify(..., strict=True): the report if it passed, else VerificationError."""
    return verify(*args, **kwargs, strict=True)


def _at_least(limit: float) -> str:
    # A limit of 0 % cannot fail (q8_0's greedy answers): the row is shown, not judged.
    return f">= {limit:.0%}" if limit > 0 else "information"


def _render(tokenizer, prompt) -> str:
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    if getattr(tokenizer, "chat_template", None) is None:
        return prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in messages)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _first_difference(a: list[int], b: list[int]) -> int:
    pairs = zip(a, b, strict=False)  # the shorter one ends the comparison
    return next((i for i, (x, y) in enumerate(pairs) if x != y), min(len(a), len(b)))


class _Stats:
    """Running sums over positions. A context several prompts share (a common prefix) counts
    once; a position where the reference's two best tokens lie within TIE logits counts as
    agreeing if the candidate picks either (which of them wins is rounding, not the export)."""

    TIE = 0.01
    CLEAR = 0.5  # logits by which the adapter's top token must beat the base's to count
    # The adapter must move the reference's log-probabilities by this much (probability-weighted
    # mean square per position, nats^2) before the scale of its effect is judged.
    MIN_EFFECT = 1e-3

    def __init__(self):
        self.adapter_n = self.adapter_kept = 0
        self.effect_dot = self.effect_sq = 0.0
        self.seen: set[tuple[int, ...]] = set()
        self.n = self.top1 = 0
        self.kl = self.max_kl = 0.0
        self.sq_err = self.sum_ref = self.sum_ref2 = 0.0
        self.count = 0

    def add(self, ids: list[int], ref: np.ndarray, cand: np.ndarray,
            base: np.ndarray | None = None) -> None:
        fresh = [i for i in range(len(ids)) if tuple(ids[: i + 1]) not in self.seen]
        self.seen.update(tuple(ids[: i + 1]) for i in fresh)
        ref, cand = ref[fresh].astype(np.float64), cand[fresh].astype(np.float64)
        rows = np.arange(len(ref))
        agree = ref[rows, cand.argmax(axis=1)] >= ref.max(axis=1) - self.TIE
        if base is not None:
            changed = ref[rows, base[fresh].argmax(axis=1)] < ref.max(axis=1) - self.CLEAR
            self.adapter_n += int(changed.sum())
            self.adapter_kept += int((agree & changed).sum())
        log_p = ref - _logsumexp(ref)
        log_q = cand - _logsumexp(cand)
        if base is not None:
            log_b = base[fresh].astype(np.float64)
            log_b -= _logsumexp(log_b)
            weight = (np.exp(log_p) + np.exp(log_b)) / 2
            self.effect_dot += float((weight * (log_q - log_b) * (log_p - log_b)).sum())
            self.effect_sq += float((weight * (log_p - log_b) ** 2).sum())
        kl = (np.exp(log_p) * (log_p - log_q)).sum(axis=1)
        self.n += len(ref)
        self.kl += float(kl.sum())
        self.max_kl = max(self.max_kl, float(kl.max(initial=0.0)))
        self.top1 += int(agree.sum())
        self.sq_err += float(((cand - ref) ** 2).sum())
        self.sum_ref += float(ref.sum())
        self.sum_ref2 += float((ref ** 2).sum())
        self.count += ref.size

    def adapter_scale(self) -> float | None:
        """Slope of the candidate's change over the base against the reference's change,
        probability-weighted; None when the adapter changes too little to judge."""
        if not self.n or self.effect_sq / self.n < self.MIN_EFFECT:
            return None
        return self.effect_dot / self.effect_sq

    def nmse(self) -> float:
        mean = self.sum_ref / self.count
        return (self.sq_err / self.count) / (self.sum_ref2 / self.count - mean ** 2)


def _logsumexp(x: np.ndarray) -> np.ndarray:
    top = x.max(axis=1, keepdims=True)
    return top + np.log(np.exp(x - top).sum(axis=1, keepdims=True))


class _TorchRunner:
    def __init__(self, model, tokenizer, template=None):
        self.model, self.tokenizer, self.template = model, tokenizer, template

    def tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def logits(self, ids: list[int]) -> np.ndarray:
        import torch

        from lorahelpers.inference import eval_mode

        device = next(self.model.parameters()).device
        with eval_mode(self.model):
            out = self.model(input_ids=torch.tensor([ids], device=device)).logits[0]
        return out.float().cpu().numpy()

    def base_logits(self, ids: list[int]) -> np.ndarray | None:
        """The logits with the LoRA switched off (None: not a PEFT model)."""
        if not hasattr(self.model, "disable_adapter") or not hasattr(self.model, "peft_config"):
            return None
        with self.model.disable_adapter():
            return self.logits(ids)

    def greedy(self, ids: list[int], n: int, eos: set[int]) -> list[int]:
        # A fresh GenerationConfig: plain argmax, none of the model's sampling or penalties.
        import torch
        from transformers import GenerationConfig

        from lorahelpers.inference import eval_mode

        device = next(self.model.parameters()).device
        config = GenerationConfig(do_sample=False, max_new_tokens=n, eos_token_id=sorted(eos),
                                  pad_token_id=min(eos) if eos else 0)
        with eval_mode(self.model):
            out = self.model.generate(input_ids=torch.tensor([ids], device=device),
                                      attention_mask=torch.ones(1, len(ids), dtype=torch.long,
                                                                device=device),
                                      generation_config=config)
        return [int(t) for t in out[0, len(ids):]]

    def close(self) -> None:
        pass


def load_reference(checkpoint_dir):
    """(model, tokenizer) of a merged checkpoint, loaded to serve as a verification reference:
    float32 on CPU; on a GPU in its 16-bit training precision, on the GPU.

    >>> merged, tok = load_reference("outputs/alpaca/merged")  # doctest: +SKIP
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lorahelpers.runtime import choose_precision

    kwargs: dict = {"dtype": torch.float32}
    if torch.cuda.is_available():
        bf16, _ = choose_precision(True, torch.cuda.get_device_capability(0), False)
        kwargs = {"dtype": torch.bfloat16 if bf16 else torch.float16, "device_map": {"": 0}}
    model = AutoModelForCausalLM.from_pretrained(checkpoint_dir, **kwargs)
    model.eval()
    return model, AutoTokenizer.from_pretrained(checkpoint_dir)


def _open(path: Path, quant, lora_path, n_ctx):
    """(runner, kind, notes) for a GGUF or a merged checkpoint directory."""
    if path.is_dir():
        model, tok = load_reference(path)
        return _TorchRunner(model, tok, tok.chat_template), quant or "merged", []
    check_gguf(path)
    if lora_path is not None:
        check_gguf(Path(lora_path))
    if quant is None:
        file_type = int(gguf_metadata(path).get("general.file_type", -1))
        quant = FILE_TYPES.get(file_type)
        if quant is None:
            raise ExportError(f"{path}: GGUF file type {file_type} has no verification limits. "
                              f"Fix: pass quant= one of {', '.join(THRESHOLDS)}")
    if quant not in THRESHOLDS:
        raise SettingsError(f"quant {quant!r} is unknown. Fix: choose from "
                            f"{', '.join(THRESHOLDS)}")
    kind = f"{quant}+adapter" if lora_path else quant
    notes = ["chat template not compared: it comes from the base GGUF"] if lora_path else []
    return GGUFRunner(path, lora_path, n_ctx), kind, notes
