"""Stop/EOS audit: every place that decides where a fine-tuned model stops must agree that it
stops right after its answer.

The places: the token that ends every trained answer (the ChatFormat's eos, its turn end, as
lorahelpers.batches tokenized the training data); the tokenizer's eos; the generation config's
eos ids (what transformers' generate() and servers that read the checkpoint stop on); the GGUF's
end-of-generation tokens (what llama.cpp, llama-server and so Ollama 0.30+ stop on); the
Modelfile's or the Ollama model's stop strings (Ollama's own engine stops only on the GGUF's eos
and on these). train() audits before training, pipeline.export_and_verify again at export. A
mismatch that would make the model run on past its answer is a StopMismatchError naming each
place and the fix; a harmless difference (a GGUF whose eos is not the turn end but also ends
generation) is one line of information.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from lorahelpers.chat import ChatFormat
from lorahelpers.errors import ChatFormatError

OK, INFO, ERROR = "ok", "info", "error"
# Tokenized when no training examples are given: a first answer, and a later one after a
# system prompt and an earlier turn.
PROBES = (
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
     {"role": "assistant", "content": "4"}, {"role": "user", "content": "3+3?"},
     {"role": "assistant", "content": "6"}],
)


class StopMismatchError(ChatFormatError):
    """The places that decide where the model stops disagree, so that it would run on."""


@dataclass(frozen=True)
class Finding:
    """What one place says about stopping: level OK, INFO (harmless) or ERROR (runs on)."""

    place: str
    level: str
    text: str
    fix: str = ""


@dataclass
class StopAudit:
    """The audit's findings, one or more per place; `passed` when none would make the model
    run on. raise_if_failed() raises StopMismatchError naming each failing place."""

    stage: str
    turn_end: str
    turn_end_id: int | None
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == ERROR]

    @property
    def notes(self) -> list[Finding]:
        return [f for f in self.findings if f.level == INFO]

    @property
    def passed(self) -> bool:
        return not self.errors

    def headline(self) -> str:
        where = f" ({self.stage})" if self.stage else ""
        token = repr(self.turn_end) + ("" if self.turn_end_id is None
                                       else f" (id {self.turn_end_id})")
        if self.passed:
            return f"Stop/EOS audit{where}: every place stops after {token}."
        return f"Stop/EOS audit{where}: FAILED, the model would not stop after {token}."

    def summary(self) -> str:
        """The headline and one line per error or note (what training and export print)."""
        return "\n".join([self.headline()] + [f"  {f.level}: {f.place}: {f.text}"
                                              for f in self.findings if f.level != OK])

    def __str__(self) -> str:
        width = max((len(f.place) for f in self.findings), default=0)
        return "\n".join([self.headline()] + [f"  {f.level:<5}  {f.place:<{width}}  {f.text}"
                                              for f in self.findings])

    def _repr_html_(self) -> str:
        e = html.escape
        colors = {OK: "green", INFO: "gray", ERROR: "red"}
        rows = "".join(f"<tr><td style='color:{colors[f.level]}'>{f.level}</td>"
                       f"<td>{e(f.place)}</td><td style='text-align:left'>{e(f.text)}</td></tr>"
                       for f in self.findings)
        return (f"<p><b>{e(self.headline())}</b></p><table><tr><th></th><th>place</th>"
                f"<th>what it says</th></tr>{rows}</table>")

    def as_dict(self) -> dict:
        return {"stage": self.stage, "turn_end": self.turn_end, "turn_end_id": self.turn_end_id,
                "passed": self.passed,
                "findings": [{"place": f.place, "level": f.level, "text": f.text}
                             for f in self.findings]}

    def raise_if_failed(self) -> StopAudit:
        if self.errors:
            places = "; ".join(f"{f.place}: {f.text}" for f in self.errors)
            fixes = " ".join(dict.fromkeys(f.fix for f in self.errors if f.fix))
            raise StopMismatchError(f"{self.headline()} {places}.", fix=fixes)
        return self


def audit_stops(tokenizer, chat_format: ChatFormat, *, examples=None, model=None,
                checkpoint=None, ggufs=(), stops=None, stops_from: str = "Modelfile",
                stage: str = "") -> StopAudit:
    """Check that the places deciding where the model stops agree on chat_format's turn end:
    the tokenizer; the tokenized training `examples` (input_ids, labels; default: PROBES
    tokenized by lorahelpers.batches); the generation config of `model` (in memory: a gap
    is information, lorahelpers' own generation passes the stops) or of the `checkpoint`
    directory (a gap is an error: the file ships); each GGUF in `ggufs`; and `stops`, the
    text of a Modelfile, a Modelfile path, or a list of stop strings (e.g. an Ollama model's),
    named `stops_from`. Places not given are not checked.

    >>> audit = audit_stops(tok, fmt, examples=examples, model=model)  # doctest: +SKIP
    >>> print(audit.summary())  # doctest: +SKIP
    Stop/EOS audit: every place stops after '<|eot_id|>' (id 128009).
      info: tokenizer: its eos '<|end_of_text|>' (id 128001) is not the turn end; ...
    """
    turn_end = chat_format.eos
    turn_end_id, findings = _tokenizer_findings(tokenizer, turn_end)
    audit = StopAudit(stage, turn_end, turn_end_id, findings)
    if turn_end_id is None:
        return audit
    if examples is None:
        from lorahelpers.batches import tokenize_conversations

        examples, _ = tokenize_conversations(tokenizer, list(PROBES), chat_format, 10**6)
        audit.findings.append(_training_finding(examples, tokenizer, turn_end, turn_end_id,
                                                "training text (probe conversations)"))
    else:
        audit.findings.append(_training_finding(examples, tokenizer, turn_end, turn_end_id,
                                                "training data"))
    if model is not None or checkpoint is not None:
        audit.findings.append(_generation_finding(model, checkpoint, turn_end, turn_end_id))
    ollama_eos = tokenizer.eos_token_id
    for i, path in enumerate([ggufs] if isinstance(ggufs, (str, Path)) else list(ggufs)):
        finding, gguf_eos = _gguf_finding(Path(path), turn_end, turn_end_id)
        audit.findings.append(finding)
        ollama_eos = gguf_eos if i == 0 else ollama_eos
    if stops is not None:
        audit.findings.append(_stops_finding(stop_strings(stops), stops_from, turn_end,
                                             turn_end_id, ollama_eos, tokenizer))
    return audit


def answer_ends(examples) -> list[tuple[int, bool]]:
    """(last labelled token, whether the example ends there) for each answer, i.e. each run of
    labelled positions, of tokenized examples ({"input_ids", "labels"}).

    >>> answer_ends([{"input_ids": [5, 6, 7, 2, 9, 8], "labels": [-100, -100, 7, 2, -100, 8]}])
    [(2, False), (8, True)]
    """
    from lorahelpers.batches import IGNORE

    ends = []
    for example in examples:
        labels = list(example["labels"])
        for i, label in enumerate(labels):
            if label != IGNORE and (i + 1 == len(labels) or labels[i + 1] == IGNORE):
                ends.append((int(label), i + 1 == len(labels)))
    return ends


def stop_strings(stops) -> list[str]:
    """The stop strings of a Modelfile (its text, or a Path to it) or of a list.

    >>> stop_strings('FROM ./m.gguf\\nPARAMETER stop <|im_end|>\\nPARAMETER stop "### A:"\\n')
    ['<|im_end|>', '### A:']
    """
    if isinstance(stops, Path):
        stops = stops.read_text(encoding="utf-8")
    if not isinstance(stops, str):
        return [str(s) for s in stops]
    found = []
    for line in stops.splitlines():
        match = re.match(r"\s*parameter\s+stop\s+(.*?)\s*$", line, re.IGNORECASE)
        if match:
            value = match.group(1)
            quoted = re.fullmatch(r'"""(.*)"""|"(.*)"', value)
            found.append(next(g for g in quoted.groups() if g is not None) if quoted else value)
    return found


def add_turn_end_to_generation_config(directory, tokenizer, chat_format: ChatFormat
                                      ) -> list[int] | None:
    """Add the turn end's id to eos_token_id in directory/generation_config.json (written from
    config.json's ids when there is none), so that transformers' generate() and servers that
    read the checkpoint stop after an answer, as the model was trained to. Returns the ids
    written (None when the turn end is not one token).

    >>> add_turn_end_to_generation_config("outputs/merged", tok, fmt)  # doctest: +SKIP
    [128001, 128009]
    """
    directory = Path(directory)
    ids = tokenizer(chat_format.eos, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        return None
    path = directory / "generation_config.json"
    if path.is_file():
        config = json.loads(path.read_text())
    else:
        model = json.loads((directory / "config.json").read_text())
        config = {k: model[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")
                  if model.get(k) is not None}
    eos = _ids(config.get("eos_token_id"))
    if ids[0] not in eos:
        config["eos_token_id"] = [*eos, ids[0]]
        path.write_text(json.dumps(config, indent=2) + "\n")
    return _ids(config.get("eos_token_id"))


def _ids(value) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def _token(tokenizer, token_id) -> str:
    return f"{tokenizer.convert_ids_to_tokens(int(token_id))!r} (id {token_id})"


def _tokenizer_findings(tokenizer, turn_end: str) -> tuple[int | None, list[Finding]]:
    ids = list(tokenizer(turn_end, add_special_tokens=False)["input_ids"])
    if len(ids) != 1:
        return None, [Finding(
            "tokenizer", ERROR, f"the turn end {turn_end!r} is {len(ids)} tokens {ids}, so no "
            "one token can end generation",
            "use the base model's own format (chat_format='auto'), or add the turn end as a "
            "special token (tokenizer.add_special_tokens({'additional_special_tokens': "
            f"[{turn_end!r}]}}) and model.resize_token_embeddings(len(tokenizer))) before "
            "add_lora.")]
    eos = tokenizer.eos_token
    if eos == turn_end:
        return ids[0], [Finding("tokenizer", OK, f"its eos is the turn end {turn_end!r}")]
    what = "has no eos" if eos is None else \
        f"its eos {_token(tokenizer, tokenizer.eos_token_id)} is not the turn end"
    return ids[0], [Finding("tokenizer", INFO, f"{what}; harmless: lorahelpers generates with "
                            "the turn end and the eos both as stops")]


def _training_finding(examples, tokenizer, turn_end: str, turn_end_id: int,
                      place: str) -> Finding:
    ends = answer_ends(examples)
    good = sum(token == turn_end_id for token, _ in ends)
    cut = sum(token != turn_end_id and last for token, last in ends)
    wrong = sorted({token for token, last in ends if token != turn_end_id and not last})
    if not ends:
        return Finding(place, ERROR, "no answer token is labelled, so nothing teaches the "
                       "model to stop", "tokenize conversations that end with an assistant "
                       "answer (lorahelpers.batches.tokenize_conversations).")
    if wrong:
        return Finding(place, ERROR, f"{len(ends) - good - cut} of {len(ends)} answers end with "
                       f"{', '.join(_token(tokenizer, t) for t in wrong)} instead of "
                       f"{turn_end!r}, so the model learns to end answers with tokens that no "
                       "place stops on", "tokenize the training conversations with "
                       "lorahelpers.batches.tokenize_conversations and the same ChatFormat.")
    if not good:
        return Finding(place, ERROR, f"none of the {len(ends)} answers ends with {turn_end!r}: "
                       "max_seq_length cuts every one before it, so the model never learns to "
                       "stop", "raise max_seq_length (TrainSettings.max_seq_length) above the "
                       "longest conversation, or shorten the answers.")
    if cut:
        return Finding(place, INFO, f"{cut} of {len(ends)} answers are cut by max_seq_length "
                       f"before {turn_end!r} and teach no stop; the other {good} end with it")
    return Finding(place, OK, f"all {len(ends)} answers end with {turn_end!r} (id "
                   f"{turn_end_id}), labelled")


def _generation_finding(model, checkpoint, turn_end: str, turn_end_id: int) -> Finding:
    if checkpoint is not None:
        directory = Path(checkpoint)
        path = directory / "generation_config.json"
        if not path.is_file():
            path = directory / "config.json"
        ids = _ids(json.loads(path.read_text()).get("eos_token_id"))
        place = f"{directory.name}/{path.name}"
    else:
        config = getattr(model, "generation_config", None)
        value = getattr(config, "eos_token_id", None)
        if value is None:
            value = getattr(getattr(model, "config", None), "eos_token_id", None)
        ids, place = _ids(value), "generation_config (model in memory)"
    if turn_end_id in ids:
        return Finding(place, OK, f"eos_token_id {ids} includes {turn_end!r}")
    gap = f"eos_token_id {ids or 'is unset and'} lacks {turn_end!r} (id {turn_end_id})"
    if checkpoint is None:
        return Finding(place, INFO, f"{gap}; harmless here: lorahelpers generates with the turn "
                       "end as a stop, and the merge adds it to the merged checkpoint's "
                       "generation_config.json")
    return Finding(place, ERROR, f"{gap}: transformers' generate() and servers that read the "
                   "checkpoint (vLLM, TGI) would run on past every answer",
                   f"add {turn_end_id} to eos_token_id in {path.parent / 'generation_config.json'} "
                   "(lorahelpers.stops.add_turn_end_to_generation_config; "
                   "merge_lora(..., chat_format=fmt) does it).")


def _gguf_finding(path: Path, turn_end: str, turn_end_id: int) -> tuple[Finding, int | None]:
    from lorahelpers.llamacpp import end_of_generation

    gguf = end_of_generation(path, [turn_end])
    place, ids = f"GGUF {path.name}", gguf.ids_of[turn_end]

    def name(i):
        return f"{gguf.texts.get(i, '?')!r} (id {i})"

    if ids != [turn_end_id]:
        return Finding(place, ERROR, f"llama.cpp reads the turn end {turn_end!r} as {ids}, the "
                       f"training tokenizer as [{turn_end_id}]: the GGUF's vocabulary is not "
                       "the one the model was trained with", "export the GGUF from this "
                       "run's merged checkpoint (lorahelpers.pipeline.export_and_verify)."), \
            gguf.eos
    if turn_end_id not in gguf.eog:
        return Finding(place, ERROR, f"llama.cpp does not end generation on {turn_end!r} (id "
                       f"{turn_end_id}); it ends on {', '.join(map(name, gguf.eog)) or 'nothing'}"
                       ", so llama.cpp, llama-server and Ollama 0.30+ would run on past every "
                       "answer", f"make the turn end the tokenizer's eos before the merge "
                       f"(tokenizer.eos_token = {turn_end!r}, saved with the adapter), so that "
                       "the converter writes it as tokenizer.ggml.eos_token_id."), gguf.eos
    how = {gguf.eos: "its eos", gguf.eot: "its eot token", gguf.eom: "its eom token"}.get(
        turn_end_id, "known to llama.cpp by its text")
    if gguf.eos is None or gguf.eos == turn_end_id:
        return Finding(place, OK, f"llama.cpp ends generation on {turn_end!r} ({how})"), gguf.eos
    also = "also ends generation" if gguf.eos in gguf.eog else "does not end generation"
    return Finding(place, INFO, f"eos {name(gguf.eos)} is not the turn end and {also}; "
                   f"harmless: llama.cpp ends generation on {turn_end!r} ({how})"), gguf.eos


def _stops_finding(stops: list[str], place: str, turn_end: str, turn_end_id: int,
                   ollama_eos: int | None, tokenizer) -> Finding:
    listed = ", ".join(map(repr, stops)) or "none"
    if turn_end in stops:
        return Finding(place, OK, f"stop strings {listed} include {turn_end!r}")
    if ollama_eos == turn_end_id:
        return Finding(place, INFO, f"stop strings {listed} lack {turn_end!r}; harmless: it is "
                       "the GGUF's eos, on which Ollama stops anyway")
    eos = "none" if ollama_eos is None else _token(tokenizer, ollama_eos)
    return Finding(place, ERROR, f"stop strings {listed} lack {turn_end!r}, which is not the "
                   f"GGUF's eos ({eos}): Ollama's own engine stops only on the eos and on stop "
                   "strings, so it would run on past every answer",
                   "write the Modelfile with lorahelpers.modelfile.write_modelfile(gguf, "
                   "chat_format) (its stops are chat_format.stop), or add the line "
                   f"`PARAMETER stop {turn_end}`.")
