"""What the model will be trained on, shown before training: the first training rows exactly as
the model sees them (the ChatFormat's text, tokenized by lorahelpers.batches as train() does)
with the tokens that carry the loss marked; the token length of every training row against
max_seq_length, with how many rows are cut and by how much (a histogram in notebooks); and the
rows the data layer dropped or found repeated. HTML in Jupyter and Colab, text elsewhere."""

from __future__ import annotations

import base64
import html
import statistics
import sys
from dataclasses import dataclass, field

from lorahelpers.batches import IGNORE, tokenize_conversations
from lorahelpers.plots import figure_png

OPEN, CLOSE = "⟦", "⟧"  # around the tokens that carry the loss, in plain text
LOSS_STYLE = "background:#fde68a;border-radius:2px"


@dataclass
class ShownRow:
    """One training row as the model sees it: (text, carries the loss) pieces in order, and
    the tokens cut off after max_seq_length."""

    pieces: list[tuple[str, bool]]
    tokens: int
    cut: int = 0

    def text(self) -> str:
        marked = "".join(f"{OPEN}{t}{CLOSE}" if loss else t for t, loss in self.pieces)
        return marked + (f" [... {self.cut} more tokens cut]" if self.cut else "")

    def _repr_html_(self) -> str:
        spans = "".join(f"<span style='{LOSS_STYLE}'>{html.escape(t)}</span>" if loss
                        else html.escape(t) for t, loss in self.pieces)
        cut = f"<i> [... {self.cut} more tokens cut]</i>" if self.cut else ""
        return f"<pre style='white-space:pre-wrap'>{spans}{cut}</pre>"


@dataclass
class TrainingPreview:
    """Rows as the model sees them, their token lengths, and what the data layer dropped."""

    shown: list[ShownRow]
    lengths: list[int]  # tokens of each training row before the cut
    max_seq_length: int
    dropped_for_length: int  # rows with no answer token left within max_seq_length
    rows_total: int  # training rows in the data (the lengths are of those the run reaches)
    report: object | None = None  # the data layer's DataReport
    notes: list[str] = field(default_factory=list)

    @property
    def cut(self) -> list[int]:
        """How many tokens each cut row loses."""
        return [n - self.max_seq_length for n in self.lengths if n > self.max_seq_length]

    def summary(self) -> str:
        """The numbers in a few lines of text (what the train command prints)."""
        n = len(self.lengths)
        if not n:
            return "no training rows"
        reach = f"{n} training rows" + (f" of {self.rows_total} (those the run reaches)"
                                        if n != self.rows_total else "")
        lines = [f"{reach}: {min(self.lengths)}-{max(self.lengths)} tokens, median "
                 f"{statistics.median(self.lengths):g}; max_seq_length {self.max_seq_length}: "
                 + self._cut_text()]
        if self.report is not None:
            dropped = ", ".join(f"{k} {v}" for k, v in sorted(self.report.dropped.items()))
            lines.append(f"data: {self.report.rows_read} rows read, dropped "
                         f"{dropped or 'none'}, {self.report.duplicates} duplicate(s)")
        return "\n".join(lines + self.notes)

    def _cut_text(self) -> str:
        cut = self.cut
        if not cut:
            return "none cut"
        text = (f"{len(cut)} cut ({len(cut) / len(self.lengths):.0%}), by {min(cut)}-{max(cut)} "
                f"tokens (median {statistics.median(cut):g})")
        if self.dropped_for_length:
            text += (f"; {self.dropped_for_length} keep no answer token and are left out of "
                     "training")
        return text

    def __repr__(self) -> str:
        return f"TrainingPreview({self.summary().splitlines()[0]})"

    def __str__(self) -> str:
        rows = [f"--- training row {i + 1} ({row.tokens} tokens; {OPEN}...{CLOSE} carries the "
                f"loss) ---\n{row.text()}" for i, row in enumerate(self.shown)]
        return "\n\n".join(rows + [self.summary()])

    def figure(self):
        """A histogram of the rows' token lengths against max_seq_length (matplotlib)."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(7, 2.8), dpi=100)
        ax = fig.add_subplot(1, 1, 1)
        ax.hist(self.lengths, bins=min(40, max(5, len(set(self.lengths)))), color="tab:blue")
        ax.axvline(self.max_seq_length, color="tab:red", linestyle="--",
                   label=f"max_seq_length {self.max_seq_length}")
        ax.set_xlabel("tokens per training row")
        ax.set_ylabel("rows")
        ax.set_title(f"{len(self.lengths)} training rows: {self._cut_text()}", fontsize="small")
        ax.legend(fontsize="small")
        fig.tight_layout()
        fig._repr_png_ = lambda: figure_png(fig)
        return fig

    def _repr_html_(self) -> str:
        rows = "".join(f"<p><b>training row {i + 1}</b> ({row.tokens} tokens; "
                       f"<span style='{LOSS_STYLE}'>highlighted</span> tokens carry the loss)"
                       f"</p>{row._repr_html_()}" for i, row in enumerate(self.shown))
        png = base64.b64encode(figure_png(self.figure())).decode()
        summary = html.escape(self.summary()).replace("\n", "<br>")
        return f"{rows}<img src='data:image/png;base64,{png}'/><p>{summary}</p>"


def training_preview(conversations: list, tokenizer, chat_format, max_seq_length: int,
                     *, report=None, rows: int = 3, rows_total: int | None = None
                     ) -> TrainingPreview:
    """Tokenize `conversations` as train() does (lorahelpers.batches.tokenize_conversations)
    and show the first `rows`, the lengths and the cuts.

    >>> print(training_preview(data.train, tok, fmt, 256, report=data.report).summary())  # doctest: +SKIP
    127 training rows: 38-61 tokens, median 45; max_seq_length 256: none cut
    """
    lengths, dropped, shown = [], 0, []
    for conversation in conversations:
        whole, _ = tokenize_conversations(tokenizer, [conversation], chat_format, sys.maxsize)
        tokens = len(whole[0]["input_ids"]) if whole else 0
        lengths.append(tokens)
        kept = whole
        if tokens > max_seq_length:  # cut as train() cuts it: is an answer token left?
            kept, _ = tokenize_conversations(tokenizer, [conversation], chat_format,
                                             max_seq_length)
        dropped += not kept
        if kept and len(shown) < rows:
            shown.append(_shown_row(tokenizer, kept[0], max(tokens - max_seq_length, 0)))
    return TrainingPreview(shown, lengths, max_seq_length, dropped,
                           len(conversations) if rows_total is None else rows_total, report)


def _shown_row(tokenizer, example: dict, cut: int) -> ShownRow:
    """The example's text in pieces that do or do not carry the loss (a label at position 0
    is never predicted, so it carries none)."""
    ids, labels = example["input_ids"], example["labels"]
    flags = [i > 0 and label != IGNORE for i, label in enumerate(labels)]
    bounds = [0] + [i for i in range(1, len(ids)) if flags[i] != flags[i - 1]] + [len(ids)]
    pieces, done = [], ""
    for start, end in zip(bounds, bounds[1:], strict=False):
        upto = tokenizer.decode(ids[:end], skip_special_tokens=False,
                                clean_up_tokenization_spaces=False)
        piece = upto[len(done):] if upto.startswith(done) else \
            tokenizer.decode(ids[start:end], skip_special_tokens=False,
                             clean_up_tokenization_spaces=False)
        pieces.append((piece, flags[start]))
        done = upto
    return ShownRow(pieces, len(ids), cut)
