"""Held-out scores side by side, from the base model to the model Ollama serves: one column
per stage (base, PyTorch after training, each GGUF run by llama.cpp, Ollama greedy, Ollama with
the options `ollama run` uses), the rows that flip between neighbouring columns, the first row
where PyTorch and Ollama answer differently (with the prompt Ollama built), and the check that
Ollama's greedy answers keep the registered GGUF's score.

    >>> ollama = score_ollama("my-model", data.eval, fmt, tok, gguf=gguf,
    ...                       gguf_report=gguf_reports["q8_0"])  # doctest: +SKIP
    >>> compare(before, after, gguf_reports, ollama)  # doctest: +SKIP
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

from lorahelpers.errors import OllamaError

BASE, PYTORCH = "base (before training)", "PyTorch after training"
OLLAMA_GREEDY, OLLAMA_RUN = "Ollama greedy", "Ollama, `ollama run` options"
# A row counts as right when its score is at least this: 1/0 for "exact" and "contains", a
# word overlap of at least one half for "f1".
RIGHT = 0.5
# More than this many rows fewer right through Ollama (greedy) than in the GGUF it serves
# fails the check: one row of slack for a tie broken the other way by another llama.cpp build.
ROWS_ALLOWED = 1.0


def gguf_column(quant: str) -> str:
    """The comparison's column name for the GGUF of type `quant`.

    >>> gguf_column("q8_0")
    'q8_0 GGUF (llama.cpp)'
    """
    return f"{quant} GGUF (llama.cpp)"


class OllamaCheckError(OllamaError):
    """Ollama's greedy answers lose more than one held-out row against the GGUF it serves."""


@dataclass
class OllamaCheck:
    """Ollama's greedy held-out answers against those of the GGUF it serves (llama.cpp), on
    the rows both scored: `passed` unless Ollama gets more than ROWS_ALLOWED fewer right.
    `differences` names what differs between the Ollama model and the training format
    (template, system, stops, num_ctx, options), also when the check passes."""

    passed: bool
    gguf: str
    rows: int
    gguf_right: float
    ollama_right: float
    differences: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        head = (f"{OLLAMA_GREEDY} against the {self.gguf}: {self.ollama_right:g} of {self.rows} "
                f"rows right, the GGUF {self.gguf_right:g}")
        if self.passed:
            text = f"{head}: passed."
            return text + ("".join(f"\n  differs (cost at most one row): {d}"
                                   for d in self.differences))
        what = "; ".join(self.differences) or "nothing found in the template, the stops, num_ctx " \
            "or the options: the served GGUF itself answers differently (another llama.cpp " \
            "build?); compare the answers of the row below"
        return f"{head}: FAILED (more than one row fewer). What differs: {what}."

    def as_dict(self) -> dict:
        return {"passed": self.passed, "gguf": self.gguf, "rows": self.rows,
                "gguf_right": self.gguf_right, "ollama_right": self.ollama_right,
                "differences": self.differences}

    def raise_if_failed(self) -> OllamaCheck:
        if not self.passed:
            raise OllamaCheckError(str(self), fix=_fix(self.differences))
        return self


def _fix(differences: list[str]) -> str:
    if any(d.startswith(("template", "system", "stops", "num_ctx")) for d in differences):
        return ("register the model with lorahelpers.ollama.register(name, gguf, chat_format, "
                "max_seq_length=...) (or the Modelfile write_modelfile writes), which sends the "
                "training TEMPLATE, its stops and num_ctx.")
    return ("score the GGUF with the llama.cpp Ollama runs (scripts/ollama_check.sh) and compare "
            "the answers above; report it if the GGUF answers differently there.")


@dataclass
class OllamaScores:
    """The held-out rows through a registered Ollama model: greedy (GREEDY_OPTIONS) and with
    the options `ollama run` uses (`run_options`: the model's PARAMETERs over the server's
    defaults, the seed fixed for a repeatable score), and the check against the GGUF; or
    `status` saying why it was skipped."""

    status: str
    greedy: object | None = None  # inference.EvalReport
    run: object | None = None
    run_options: dict = field(default_factory=dict)
    version: str | None = None
    check: OllamaCheck | None = None

    def options_text(self) -> str:
        """The run options that change sampling (neutral ones left out), e.g. "temperature
        0.8, top_k 40, top_p 0.9, repeat_penalty 1.1, seed 3407"."""
        o = self.run_options
        neutral = {"num_predict": o.get("num_predict"), "min_p": 0.0, "typical_p": 1.0,
                   "presence_penalty": 0.0, "frequency_penalty": 0.0}
        if o.get("repeat_penalty") == 1.0:
            neutral["repeat_last_n"] = o.get("repeat_last_n")
        return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in o.items() if k not in neutral or neutral[k] != v)

    def as_dict(self) -> dict:
        return {"status": self.status, "version": self.version,
                "greedy": None if self.greedy is None else self.greedy.score,
                "run_options": None if self.run is None else self.run.score,
                "options": self.run_options,
                "check": None if self.check is None else self.check.as_dict()}


def ollama_rows(scores: OllamaScores | None) -> list[tuple[str, str]]:
    """(label, value) lines of a run summary for `scores`: both scores and the check; none
    when Ollama was not scored (the run's Ollama line says why).

    >>> ollama_rows(OllamaScores("skipped: no Ollama server answers"))
    []
    """
    if scores is None or scores.greedy is None:
        return []
    rows = [("held-out score through Ollama (greedy)", f"{scores.greedy.score:.1f}%"),
            ("held-out score through Ollama (`ollama run` options)", f"{scores.run.score:.1f}%")]
    if scores.check is not None:
        rows.append(("Ollama check", "passed" if scores.check.passed
                     else "FAILED: " + "; ".join(scores.check.differences or ["see the table"])))
    return rows


def score_ollama(name, eval_rows, chat_format, tokenizer, *, scorer="exact",
                 max_new_tokens: int = 64, gguf=None, gguf_report=None, quant=None,
                 seed: int = 3407, host=None, progress=print) -> OllamaScores:
    """The held-out rows through Ollama model `name` (registered from `gguf`), twice:
    greedy, and with the options `ollama run` uses (seed fixed to `seed`, where `ollama run`
    draws one); checked against `gguf_report` (evaluate_gguf of that GGUF, `quant` naming
    it). Skipped, with the reason, when no server answers.

    >>> scores = score_ollama("m", data.eval, fmt, tok, gguf=gguf, gguf_report=q8)  # doctest: +SKIP
    >>> print(scores.check)  # doctest: +SKIP
    Ollama greedy against the q8_0 GGUF (llama.cpp): 40 of 40 rows right, the GGUF 40: passed.
    """
    from lorahelpers import ollama
    from lorahelpers.inference import evaluate_ollama
    from lorahelpers.modelfile import run_options

    version = ollama.server_available(host)
    if version is None:
        return OllamaScores("skipped: no Ollama server answers")
    progress(f"Scoring {len(eval_rows)} held-out rows through Ollama {version} ({name}): "
             "greedy, then with the options `ollama run` uses")
    args = (name, eval_rows, chat_format, tokenizer)
    kwargs = {"scorer": scorer, "max_new_tokens": max_new_tokens, "host": host}
    greedy = evaluate_ollama(*args, options=ollama.GREEDY_OPTIONS, **kwargs)
    run = evaluate_ollama(*args, options={"seed": seed}, **kwargs)
    info = ollama.show(name, host)
    options = run_options(version, info["options"]) | {"seed": seed}
    options.pop("num_predict")  # each request sends the answer budget instead
    scores = OllamaScores(f"scored through Ollama {version}", greedy, run, options, version)
    if gguf_report is not None:
        differences = ollama_differences(info, chat_format, tokenizer, greedy, gguf=gguf,
                                         reference=gguf_report)
        scores.check = check_ollama(greedy, gguf_report, gguf_column(quant or _quant(gguf)),
                                    differences)
    return scores


# Without GPU offload llama.cpp scores a 3B q4_k_m GGUF on Colab's 2 CPU threads at a few
# tokens per second: 40 held-out Alpaca answers of up to 64 tokens would take 20-35 minutes.
GGUF_ROWS_WITHOUT_OFFLOAD = 8


@dataclass(frozen=True)
class ScoringPlan:
    """How GGUF files are scored on this runtime: how many held-out rows, on which device."""

    rows: int
    n_gpu_layers: int
    note: str


def gguf_scoring_plan(cuda: bool, offload: bool, n_rows: int) -> ScoringPlan:
    """Score every held-out row, on the GPU where llama.cpp can offload there; on a GPU runtime
    whose llama.cpp is a CPU build, only the first GGUF_ROWS_WITHOUT_OFFLOAD rows (the model that
    was trained on the GPU is too slow for the runtime's CPU).

    >>> gguf_scoring_plan(cuda=True, offload=False, n_rows=40).rows
    8
    """
    if cuda and offload:
        return ScoringPlan(n_rows, -1, "all layers on the GPU (llama.cpp CUDA build)")
    if cuda and n_rows > GGUF_ROWS_WITHOUT_OFFLOAD:
        return ScoringPlan(GGUF_ROWS_WITHOUT_OFFLOAD, 0,
                           f"first {GGUF_ROWS_WITHOUT_OFFLOAD} of {n_rows} held-out rows: this "
                           "llama.cpp build runs on the CPU only (install its CUDA wheel to "
                           "score them all)")
    return ScoringPlan(n_rows, 0, "on the CPU")


def this_runtime_plan(n_rows: int) -> ScoringPlan:
    """gguf_scoring_plan for this machine and its llama.cpp build."""
    from lorahelpers.llamacpp import import_llama_cpp
    from lorahelpers.runtime import runtime_report

    offload = bool(import_llama_cpp().llama_supports_gpu_offload())
    return gguf_scoring_plan(runtime_report().cuda, offload, n_rows)


def score_ggufs(ggufs: dict, eval_rows, chat_format, tokenizer, *, scorer="exact",
                max_new_tokens: int = 64, progress=print) -> dict:
    """evaluate_gguf for each exported file, planned for this runtime (gguf_scoring_plan):
    {quant: EvalReport}. Frees the GPU memory PyTorch no longer holds first: on a GPU, call it
    after `del model`.

    >>> del model  # doctest: +SKIP
    >>> score_ggufs(export.ggufs, data.eval, fmt, tokenizer)["q8_0"].score  # doctest: +SKIP
    """
    from lorahelpers.inference import evaluate_gguf
    from lorahelpers.runtime import free_torch_memory

    progress(free_torch_memory())
    plan = this_runtime_plan(len(eval_rows))
    progress(f"Scoring {len(ggufs)} GGUF file(s) with llama.cpp: {plan.note}")
    reports = {q: evaluate_gguf(path, eval_rows[: plan.rows], chat_format, tokenizer, scorer=scorer,
                                max_new_tokens=max_new_tokens, n_gpu_layers=plan.n_gpu_layers)
               for q, path in ggufs.items()}
    progress("".join(f"  {q}: {r}\n" for q, r in reports.items()).rstrip())
    return reports


def _quant(gguf) -> str:
    return Path(gguf).stem.rsplit("-", 1)[-1] if gguf else "registered"


def check_ollama(greedy, gguf_report, gguf: str, differences=()) -> OllamaCheck:
    """The OllamaCheck of Ollama's greedy report against the GGUF's, on the rows both scored.

    >>> from lorahelpers.inference import EvalReport
    >>> rows = lambda *c: [{"correct": x} for x in c]
    >>> check_ollama(EvalReport(50, rows(1, 0, 0, 1)), EvalReport(100, rows(1, 1, 1, 1)),
    ...              "q8_0 GGUF (llama.cpp)").passed
    False
    """
    n = min(len(greedy.rows), len(gguf_report.rows))
    mine = sum(r["correct"] for r in gguf_report.rows[:n])
    theirs = sum(r["correct"] for r in greedy.rows[:n])
    return OllamaCheck(mine - theirs <= ROWS_ALLOWED, gguf, n, mine, theirs, list(differences))


def ollama_differences(info: dict, chat_format, tokenizer, greedy=None, *, gguf=None,
                       reference=None) -> list[str]:
    """What differs between an Ollama model (ollama.show's answer) and the training format:
    TEMPLATE; SYSTEM added to prompts the `reference` report (the GGUF's) built without it;
    stop strings (a missing one judged by the stop audit against `gguf`); num_ctx against the
    longest prompt and answer of the `greedy` report; sampling PARAMETERs the model sets.
    Empty for a model registered as lorahelpers registers it.

    >>> from lorahelpers.chat import get_chat_format
    >>> fmt = get_chat_format("chatml")
    >>> found = ollama_differences({"template": fmt.go_template,
    ...                             "options": {"stop": ["<|im_end|>"]}}, fmt, None)
    >>> found[0][:60]
    "stops: the Ollama model lacks the stop string '<|im_start|>'"
    """
    options = info.get("options") or {}
    found = _template_difference(info.get("template") or "", chat_format)
    if greedy is not None and reference is not None:
        found += _system_difference(info.get("system") or "", greedy, reference)
    found += _stop_differences(options.get("stop") or [], chat_format, tokenizer, gguf)
    if greedy is not None and tokenizer is not None:
        found += _num_ctx_difference(options.get("num_ctx"), greedy, tokenizer)
    from lorahelpers.modelfile import model_parameters

    ours = model_parameters(None)  # what lorahelpers itself registers (repeat_penalty 1)
    own = {k: v for k, v in options.items()
           if k not in ("stop", "num_ctx") and ours.get(k) != v}
    if own:
        found.append("options: the model sets " + ", ".join(f"{k} {v}" for k, v in own.items())
                     + " (the greedy requests override temperature and the penalties)")
    return found


def _system_difference(system: str, greedy, reference) -> list[str]:
    n = min(len(greedy.rows), len(reference.rows))
    differ = sum(a["chat_prompt"] != b["chat_prompt"]
                 for a, b in zip(greedy.rows[:n], reference.rows[:n], strict=True))
    if not differ:
        return []
    return [f"system: Ollama adds the model's SYSTEM {system[:60]!r} to {differ} of {n} rows "
            "that have no system message; the GGUF and PyTorch answered them without it"]


def _template_difference(template: str, chat_format) -> list[str]:
    want = chat_format.go_template
    if template == want:
        return []
    at = next((i for i, (a, b) in enumerate(zip(template, want, strict=False)) if a != b),
              min(len(template), len(want)))
    return [f"template: the Ollama model's TEMPLATE is not chat format "
            f"{getattr(chat_format, 'name', '?')!r}'s: they part at character {at} "
            f"({template[at:at + 30]!r} where training has {want[at:at + 30]!r})"]


def _stop_differences(have, chat_format, tokenizer, gguf) -> list[str]:
    found = [_missing_stop(s, have, chat_format, tokenizer, gguf)
             for s in chat_format.stop if s not in have]
    extra = [s for s in have if s not in chat_format.stop]
    if extra:
        found.append("stops: the Ollama model also stops at " + ", ".join(map(repr, extra))
                     + ", which the training format does not: answers are cut there")
    return found


def _missing_stop(stop: str, have, chat_format, tokenizer, gguf) -> str:
    text = f"stops: the Ollama model lacks the stop string {stop!r}"
    if stop != chat_format.eos:
        return f"{text}: answers run on past it, where the GGUF's and PyTorch's stop"
    if gguf is None or tokenizer is None:
        return text
    from lorahelpers.stops import ERROR, audit_stops  # the turn end: does the GGUF stop anyway?

    audit = audit_stops(tokenizer, chat_format, ggufs=[gguf], stops=list(have),
                        stops_from="Ollama model")
    finding = next(f for f in audit.findings if f.place == "Ollama model")
    return f"{text}: {finding.text}" if finding.level == ERROR else \
        f"{text} (harmless: the GGUF ends generation on it)"


def _num_ctx_difference(num_ctx, greedy, tokenizer) -> list[str]:
    from lorahelpers.modelfile import DEFAULT_NUM_CTX

    ctx = int(num_ctx or DEFAULT_NUM_CTX)
    longest = max(len(tokenizer(r["chat_prompt"])["input_ids"]) for r in greedy.rows)
    budget = max(len(tokenizer(r["answer"], add_special_tokens=False)["input_ids"])
                 for r in greedy.rows)
    if longest + budget <= ctx:
        return []
    source = "the model's" if num_ctx else "the server's default"
    return [f"num_ctx: {source} {ctx} tokens is less than the longest prompt ({longest} tokens) "
            f"and its answer ({budget}): Ollama cuts the history or the prompt to fit"]


# ---- the comparison table --------------------------------------------------------------------


@dataclass
class Flip:
    """Rows (indices into the held-out list) that go right -> wrong and wrong -> right from
    column `before` to column `after`, on the first `rows` rows (those both scored)."""

    before: str
    after: str
    rows: int
    to_wrong: list[int]
    to_right: list[int]


@dataclass(repr=False)
class Comparison:
    """Held-out scores side by side, one column per stage in pipeline order: an EvalReport
    (or a bare score, or None for a stage that was skipped: `notes` says why) per column name.
    Flips between neighbouring scored columns; the first row where the `pytorch` column and an
    `ollama` column answer differently; the Ollama `check`.

    >>> print(Comparison({"before training": 0.0, "after training": 92.5}, 40))
    held-out rows: 40
    column           score
    before training   0.0%
    after training   92.5%
    """

    columns: dict
    n: int | None = None
    notes: dict = field(default_factory=dict)
    pytorch: str | None = None
    ollama: tuple = ()
    check: OllamaCheck | None = None

    def __repr__(self) -> str:  # the table, also where only text is shown (nbmake, a console)
        return str(self)

    def score(self, column: str) -> float | None:
        value = self.columns.get(column)
        return value if value is None or isinstance(value, (int, float)) else value.score

    def rows(self) -> list[tuple[str, str]]:
        """(column, score as text) in order; "-" for a skipped stage."""
        return [(name, "-" if self.score(name) is None else f"{self.score(name):.1f}")
                for name in self.columns]

    def _reports(self) -> list[tuple[str, object]]:
        return [(k, v) for k, v in self.columns.items() if hasattr(v, "rows")]

    def flips(self) -> list[Flip]:
        """Flips between each scored column and the scored column before it."""
        reports, out = self._reports(), []
        for (a, ra), (b, rb) in zip(reports, reports[1:], strict=False):
            n = min(len(ra.rows), len(rb.rows))
            pairs = [(x["correct"] >= RIGHT, y["correct"] >= RIGHT)
                     for x, y in zip(ra.rows[:n], rb.rows[:n], strict=True)]
            out.append(Flip(a, b, n, [i for i, (x, y) in enumerate(pairs) if x and not y],
                            [i for i, (x, y) in enumerate(pairs) if y and not x]))
        return out

    def first_disagreement(self) -> dict | None:
        """The first row where the `pytorch` column (the PyTorch model after training, else
        the first GGUF) and an Ollama column answer differently:
        {"row", "expected", "prompt" (the one Ollama built), "answers" {column: answer}}."""
        mine = self.columns.get(self.pytorch)
        theirs = [(k, self.columns[k]) for k in self.ollama if hasattr(self.columns.get(k), "rows")]
        if not hasattr(mine, "rows") or not theirs:
            return None
        n = min(len(mine.rows), *(len(r.rows) for _, r in theirs))
        row = next((i for i in range(n) if any(r.rows[i]["answer"] != mine.rows[i]["answer"]
                                               for _, r in theirs)), None)
        if row is None:
            return None
        return {"row": row, "expected": mine.rows[row]["expected"],
                "prompt": theirs[0][1].rows[row]["chat_prompt"],
                "answers": {self.pytorch: mine.rows[row]["answer"]}
                | {k: r.rows[row]["answer"] for k, r in theirs}}

    def as_dict(self) -> dict:
        return {"rows": self.n,
                "columns": {k: {"score": self.score(k), "note": self.notes.get(k, "")}
                            for k in self.columns},
                "flips": [{"from": f.before, "to": f.after, "rows": f.rows,
                           "right_to_wrong": f.to_wrong, "wrong_to_right": f.to_right}
                          for f in self.flips()],
                "first_disagreement": self.first_disagreement(),
                "ollama_check": None if self.check is None else self.check.as_dict()}

    def _table(self) -> list[list[str]]:
        flips = {f.after: f for f in self.flips()}
        out = []
        for name, score in self.rows():
            f = flips.get(name)
            cells = [name, score if score == "-" else f"{score}%",
                     "" if f is None else str(len(f.to_wrong)),
                     "" if f is None else str(len(f.to_right)), self.notes.get(name, "")]
            out.append(cells)
        return out

    def __str__(self) -> str:
        table = self._table()
        wide = [c for c in range(2, 5) if any(row[c] for row in table)]
        head = ["column", "score", "right->wrong", "wrong->right", "note"]
        keep = [0, 1, *wide]
        widths = [max(len(r[c]) for r in [head, *table]) for c in keep]
        lines = [f"held-out rows: {self.n}" if self.n else "held-out rows"]
        for row in [head, *table]:
            cells = [row[c].ljust(w) if c in (0, 4) else row[c].rjust(w)
                     for c, w in zip(keep, widths, strict=True)]
            lines.append("  ".join(cells).rstrip())
        if any(c in wide for c in (2, 3)):
            lines.append("(right->wrong, wrong->right: rows that flip against the scored "
                         "column above)")
        lines += self._details()
        return "\n".join(lines)

    def _who(self) -> str:
        return "PyTorch" if self.pytorch == PYTORCH else f"the {self.pytorch}"

    def _notable(self) -> list[Flip]:
        """Flips listed row by row: all but training's own (base -> PyTorch)."""
        return [f for f in self.flips() if f.before != BASE and (f.to_wrong or f.to_right)]

    def _details(self) -> list[str]:
        lines = [f"{f.before} -> {f.after}: right->wrong rows {f.to_wrong or 'none'}, "
                 f"wrong->right rows {f.to_right or 'none'}" for f in self._notable()]
        if self.check is not None:
            lines.append(str(self.check))
        first = self.first_disagreement()
        if first is not None:
            width = max(len(k) for k in first["answers"])
            lines.append(f"First row where {self._who()} and Ollama answer differently: row "
                         f"{first['row']} (expected {first['expected']!r})")
            lines += [f"  {k + ':':<{width + 1}} {v!r}" for k, v in first["answers"].items()]
            lines.append("  the prompt Ollama built:")
            lines += [f"    {line}" for line in first["prompt"].splitlines()]
        return lines

    def _repr_html_(self) -> str:
        e = html.escape
        table = self._table()
        body = "".join("<tr>" + "".join(f"<td style='text-align:{'left' if i in (0, 4) else 'right'}'>"
                                        f"{e(c)}</td>" for i, c in enumerate(row)) + "</tr>"
                       for row in table)
        out = (f"<table><tr><th>column ({self.n or '?'} held-out rows)</th><th>score</th>"
               "<th>right&rarr;wrong</th><th>wrong&rarr;right</th><th>note</th></tr>"
               f"{body}</table>")
        if self.check is not None:
            color = "green" if self.check.passed else "red"
            out += f"<p style='color:{color}'>{e(str(self.check))}</p>"
        for f in self._notable():
            out += (f"<p>{e(f.before)} &rarr; {e(f.after)}: right&rarr;wrong rows "
                    f"{f.to_wrong or 'none'}, wrong&rarr;right rows {f.to_right or 'none'}</p>")
        first = self.first_disagreement()
        if first is not None:
            cells = "".join(f"<th>{e(k)}</th>" for k in first["answers"])
            answers = "".join(f"<td style='text-align:left;white-space:pre-wrap'>{e(v)}</td>"
                              for v in first["answers"].values())
            out += (f"<p>First row where {e(self._who())} and Ollama answer differently: row "
                    f"{first['row']} (expected {e(repr(first['expected']))})</p>"
                    f"<table><tr>{cells}</tr><tr>{answers}</tr></table>"
                    f"<p>The prompt Ollama built:</p><pre>{e(first['prompt'])}</pre>")
        return out


def compare(before=None, after=None, ggufs=None, ollama=None) -> Comparison:
    """The comparison of every stage scored so far: `before` and `after` training (EvalReports
    of the PyTorch model), `ggufs` ({quant: evaluate_gguf report}, e.g. score_ggufs'), and
    `ollama` (score_ollama's OllamaScores, also when skipped). A GGUF scored on fewer rows
    (a GPU runtime without llama.cpp's CUDA build) is noted as such.

    >>> table = compare(before, after, gguf_reports, ollama_scores)  # doctest: +SKIP
    """
    columns, notes = {}, {}
    if before is not None:
        columns[BASE] = before
    if after is not None:
        columns[PYTORCH] = after
    for quant, report in (ggufs or {}).items():
        columns[gguf_column(quant)] = report
    check = None
    if ollama is not None:
        columns[OLLAMA_GREEDY], columns[OLLAMA_RUN] = ollama.greedy, ollama.run
        notes[OLLAMA_GREEDY] = (ollama.status if ollama.greedy is None else
                                f"Ollama {ollama.version}, temperature 0, no penalties")
        notes[OLLAMA_RUN] = ollama.status if ollama.run is None else ollama.options_text()
        check = ollama.check
    n = max((len(v.rows) for v in columns.values() if hasattr(v, "rows")), default=None)
    for quant, report in (ggufs or {}).items():
        if len(report.rows) < (n or 0):
            notes[gguf_column(quant)] = f"first {len(report.rows)} of {n} rows"
    reference = PYTORCH if after is not None else next(
        (gguf_column(q) for q in ggufs or {}), None)  # e.g. scripts/ollama_check.sh: no PyTorch
    return Comparison(columns, n, notes, reference,
                      (OLLAMA_GREEDY, OLLAMA_RUN) if ollama is not None else (), check)
