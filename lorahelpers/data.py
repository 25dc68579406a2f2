"""Rows in, conversations out: Alpaca, ShareGPT, chat-message and plain table rows become
conversations (lists of {"role", "content"} messages), validated loudly, then split
train/eval. Loading (workbook sheets and notebook uploads included) lives in
lorahelpers.tables and is re-exported here. No torch here.

Row numbers in messages count data rows from 1, as a person does; the header is not a data
row, so data row 5 of a CSV file is on line 6 (messages name both).
"""

from __future__ import annotations

import contextlib
import difflib
import gc
import json
import random
from collections import defaultdict

import pandas as pd

from lorahelpers.cells import render_value
from lorahelpers.tables import DataError, DataReport, load_table, save_upload
from lorahelpers.workbook import sheet_names

__all__ = ["DataError", "DataReport", "load_table", "render_value", "sheet_names",
           "save_upload", "merge_columns", "to_conversations", "extend_conversations", "split",
           "preview"]

FORMATS = ("auto", "alpaca", "sharegpt", "messages", "table")
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "bot": "assistant", "model": "assistant", "chatgpt": "assistant",
                   "system": "system"}


def merge_columns(template: str, row) -> str:
    """Fill a column-merge template from one row: `{column}` inserts the value, a `[[...]]`
    block is left out when a column in it is empty, `{{` and `}}` are literal braces.

    >>> merge_columns("{name}[[ ({age} years)]]", {"name": "Ada", "age": None})
    'Ada'
    """
    return _fill(_compile(template, list(row.keys())), row)


def _compile(template: str, columns: list[str], source: str = "the data") -> list:
    """Parse a template into text, column and block pieces, checking every column exists."""
    pieces: list = []
    current = pieces
    i = 0
    while i < len(template):
        two = template[i:i + 2]
        if two in ("{{", "}}"):
            current.append(two[0])
            i += 2
        elif two == "[[":
            if current is not pieces:
                raise DataError(f"template: '[[' inside another '[[...]]' at character {i + 1} "
                                f"of {template!r}. Fix: blocks cannot be nested")
            current = []
            pieces.append(current)
            i += 2
        elif two == "]]" and current is not pieces:
            current = pieces
            i += 2
        elif template[i] == "{":
            end = template.find("}", i)
            if end == -1:
                raise DataError(f"template: '{{' at character {i + 1} is never closed in "
                                f"{template!r}. Fix: write {{column}}, or {{{{ for a literal "
                                "brace")
            current.append((_column(template[i + 1:end], columns, source),))
            i = end + 1
        else:
            current.append(template[i])
            i += 1
    if current is not pieces:
        raise DataError(f"template: a '[[' block is never closed with ']]' in {template!r}. "
                        "Fix: end the block with ]]")
    return pieces


def _column(name: str, columns: list[str], source: str, what: str = "template") -> str:
    if name in columns:
        return name
    folded = [c for c in columns if c.strip().lower() == name.strip().lower()]
    close = folded or difflib.get_close_matches(name, columns, n=1, cutoff=0.5)
    hint = f" The closest is {close[0]!r}." if close else ""
    if what == "template":
        label, fix = f"template column {{{name}}}", "use one of those names (write {{ and }} " \
            "for literal braces)"
    else:
        label, fix = f"{what} column {name!r}", "rename the column, or pick another format"
    raise DataError(f"{label} is not in {source}; its columns are "
                    f"{', '.join(map(repr, columns))}.{hint} Fix: {fix}")


def _fill(pieces: list, row) -> str:
    out = []
    for piece in pieces:
        if isinstance(piece, str):
            out.append(piece)
        elif isinstance(piece, tuple):
            out.append(render_value(row[piece[0]]))
        else:
            values = [render_value(row[p[0]]) for p in piece if isinstance(p, tuple)]
            if all(values):
                out.append(_fill(piece, row))
    return "".join(out)


def to_conversations(data, format: str = "auto", template: str | None = None,
                     output_column: str | None = None, *, system: str | None = None,
                     conversation_extension: int = 1, seed: int = 3407,
                     drop_duplicates: bool = False, sheet: str | int | None = None,
                     header_row: int | None = None, empty_markers=None,
                     raw_values: bool = False):
    """Turn rows into conversations and a DataReport. `data` is anything load_table reads
    (`sheet`, `header_row`, `empty_markers` and `raw_values` go to it).
    Formats: "alpaca" (instruction, optional input and system, output), "sharegpt"
    (conversations of from/value), "messages" (role/content), "table" (a merge `template`
    for the prompt and an `output_column` for the answer); "auto" picks from the columns.
    `system` sets the system message of every conversation. conversation_extension=N joins
    each row with N-1 random others (seeded); to keep eval rows out of training, split first
    and use extend_conversations on the train part.

    >>> convs, report = to_conversations([{"instruction": "Hi", "output": "Hello"}])
    >>> convs[0]
    [{'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hello'}]
    """
    if format not in FORMATS:
        raise DataError(f"format={format!r} is unknown. Fix: use one of {', '.join(FORMATS)}")
    df, report = load_table(data, sheet=sheet, header_row=header_row,
                            empty_markers=empty_markers, raw_values=raw_values)
    columns = list(df.columns)
    if format == "auto":
        format = _detect(columns, template, report.source)
    report.format = format
    if format == "table":
        made = _table_rows(df, template, output_column, report.source)
    elif format == "alpaca":
        for name in ("instruction", "output"):
            _column(name, columns, report.source, what=format)
        made = _alpaca_rows(df)
    else:
        _column(format if format == "messages" else "conversations", columns, report.source,
                what=format)
        make = {"sharegpt": _sharegpt, "messages": _messages}[format]
        made = ((*make(row, lambda i=i: f"{report.source}, {report.where(i)}"), None)
                for i, row in enumerate(df.to_dict("records")))
    conversations = _collect(made, report, system, drop_duplicates)
    report.rows_kept = len(conversations)
    if not conversations:
        raise DataError(f"{report.source}: no usable rows ({report.rows_read} read, dropped: "
                        f"{report.dropped}). Fix: every row needs a non-empty answer")
    if conversation_extension > 1:
        conversations = extend_conversations(conversations, conversation_extension, seed)
        report.warnings.append(f"each conversation joins {conversation_extension} rows")
    return conversations, report


def _collect(made, report, system: str | None, drop_duplicates: bool) -> list:
    """The conversations of (messages, reason dropped, key) triples: drops counted, `system`
    put first, repeats counted (and dropped with drop_duplicates). A row's key stands for its
    messages (its contents, where the roles follow from the format); None: made here."""
    system = system.strip() if system else None
    conversations, seen, first_dupe = [], {}, None
    with _cycles_not_collected():
        for index, (messages, reason, key) in enumerate(made):
            if reason:
                report.drop(reason)
                continue
            if system:
                messages = [{"role": "system", "content": system}] + \
                    [m for m in messages if m["role"] != "system"]
                key = None
            if key is None:
                key = tuple((m["role"], m["content"]) for m in messages)
            first = seen.setdefault(key, index)
            if first != index:
                report.duplicates += 1
                first_dupe = first_dupe or (index, first)
                if drop_duplicates:
                    report.drop("duplicate")
                    continue
            conversations.append(messages)
        seen.clear()  # its keys, freed before the collector runs again, are not walked
    if first_dupe:
        report.warnings.append(f"{report.duplicates} row(s) repeat an earlier row, e.g. "
                               f"{report.where(first_dupe[0])} repeats "
                               f"{report.where(first_dupe[1])}")
    return conversations


@contextlib.contextmanager
def _cycles_not_collected():
    """Pauses the cycle collector while hundreds of thousands of small lists and dicts are
    made: it would walk the growing heap again and again (to_conversations took 2.3x as long
    on 200,000 rows), and none of them can form a cycle."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _column_texts(column):
    """Every cell of a DataFrame column as render_value writes it, as an Arrow array (text
    columns read by pyarrow are trimmed there, without a Python loop)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(column.dtype, pd.StringDtype) and column.dtype.storage == "pyarrow":
        arrow = pa.array(column).cast(pa.large_string())
        return pc.utf8_trim_whitespace(pc.fill_null(arrow, ""))
    return pa.array([render_value(v) for v in column.tolist()], pa.large_string())


def _detect(columns: list[str], template, source: str) -> str:
    if template is not None:
        return "table"
    if "messages" in columns:
        return "messages"
    if "conversations" in columns:
        return "sharegpt"
    if "instruction" in columns and "output" in columns:
        return "alpaca"
    raise DataError(
        f"{source}: cannot tell the format from the columns {', '.join(map(repr, columns))}. "
        "Fix: Alpaca needs 'instruction' and 'output', ShareGPT a 'conversations' column, chat "
        "data a 'messages' column; for any other table pass template='...{column}...' and "
        "output_column='...'")


def _alpaca_rows(df):
    """(messages, reason dropped, key) for each Alpaca row: instruction, optional input and
    system, output."""
    texts = {c: _column_texts(df[c]).to_pylist() if c in df.columns else None
             for c in ("instruction", "input", "output", "system")}
    blank = [""] * len(df)
    for instruction, extra, output, own_system in zip(
            *(texts[c] if texts[c] is not None else blank
              for c in ("instruction", "input", "output", "system")), strict=True):
        if not output:
            yield None, "empty output", None
        elif not instruction:
            yield None, "empty instruction", None
        else:
            user = f"{instruction}\n\n### Input:\n{extra}" if extra else instruction
            messages = [{"role": "user", "content": user},
                        {"role": "assistant", "content": output}]
            if own_system:
                messages.insert(0, {"role": "system", "content": own_system})
            yield messages, None, (own_system, user, output)


def _turns(value, where, column: str, role_key: str, content_key: str, roles: dict):
    """The messages of one row's list of turns; `where()` names the row in errors."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
    if not isinstance(value, list):
        raise DataError(f"{where()}, column {column!r}: expected a list of turns, got "
                        f"{type(value).__name__}. Fix: [{{{role_key!r}: ..., {content_key!r}: "
                        "...}, ...]")
    messages = []
    for number, turn in enumerate(value, start=1):
        if not isinstance(turn, dict) or role_key not in turn:
            raise DataError(f"{where()}, column {column!r}, turn {number}: expected an object "
                            f"with {role_key!r} and {content_key!r}, got {turn!r:.80}. Fix: "
                            f"{{{role_key!r}: ..., {content_key!r}: ...}}")
        role = roles.get(str(turn[role_key]).strip().lower())
        if role is None:
            raise DataError(f"{where()}, column {column!r}, turn {number}: unknown {role_key} "
                            f"{turn[role_key]!r}. Fix: use one of {', '.join(sorted(roles))}")
        if role == "system" and messages:
            raise DataError(f"{where()}, column {column!r}, turn {number}: a system message may "
                            "only come first. Fix: move it to the start")
        messages.append({"role": role, "content": render_value(turn.get(content_key))})
    if not messages or messages[-1]["role"] != "assistant":
        return None, "no assistant reply at the end"
    if any(m["role"] == "assistant" and not m["content"] for m in messages):
        return None, "empty output"
    return messages, None


def _sharegpt(row, where):
    return _turns(row["conversations"], where, "conversations", "from", "value", _SHAREGPT_ROLES)


def _messages(row, where):
    roles = {r: r for r in ("system", "user", "assistant")}
    return _turns(row["messages"], where, "messages", "role", "content", roles)


def _table_rows(df, template, output_column, source):
    """(messages, reason dropped, key) for each table row: the prompt merged from `template`,
    the answer from `output_column`; the merge runs over whole columns at once."""
    import pyarrow.compute as pc

    columns = list(df.columns)
    if not template:
        raise DataError(f"{source}: table rows need a template to write the prompt from the "
                        f"columns {', '.join(map(repr, columns))}. Fix: pass "
                        "template='...{column}...'")
    if not output_column:
        raise DataError(f"{source}: table rows need the column the model should answer with. "
                        f"Fix: pass output_column= one of {', '.join(map(repr, columns))}")
    output_column = _column(output_column, columns, source, what="output")
    pieces = _compile(template, columns, source)
    texts = {name: _column_texts(df[name]) for name in _used(pieces) | {output_column}}
    prompts, outputs = _fill_columns(pieces, texts, len(df)), texts[output_column]
    if not (isinstance(pieces[0], str) and isinstance(pieces[-1], str)
            and not pieces[0].isspace() and not pieces[-1].isspace()):
        prompts = pc.utf8_trim_whitespace(prompts)  # an empty value or block at an end
    return _table_messages(prompts.to_pylist(), outputs.to_pylist())


def _table_messages(prompts: list, outputs: list):
    for prompt, output in zip(prompts, outputs, strict=True):
        if not output:
            yield None, "empty output", None
        elif not prompt:
            yield None, "empty prompt", None
        else:
            yield [{"role": "user", "content": prompt},
                   {"role": "assistant", "content": output}], None, (prompt, output)


def _used(pieces: list) -> set[str]:
    return {p[0] for p in pieces if isinstance(p, tuple)} | \
        {name for p in pieces if isinstance(p, list) for name in _used(p)}


def _fill_columns(pieces: list, texts: dict, n: int):
    """_fill over whole columns: `texts` holds each column's rendered cells (Arrow)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    parts: list = []
    for piece in pieces:
        if isinstance(piece, str) and parts and isinstance(parts[-1], str):
            parts[-1] += piece
        elif isinstance(piece, str):
            parts.append(piece)
        elif isinstance(piece, tuple):
            parts.append(texts[piece[0]])
        else:
            block, present = _fill_columns(piece, texts, n), None
            for name in _used(piece):
                filled = pc.not_equal(texts[name], "")
                present = filled if present is None else pc.and_(present, filled)
            parts.append(block if present is None else pc.if_else(present, block, ""))
    if all(isinstance(p, str) for p in parts):
        return pa.array(["".join(parts)] * n, pa.large_string())
    return pc.binary_join_element_wise(
        *(pa.scalar(p, pa.large_string()) if isinstance(p, str) else p for p in parts),
        pa.scalar("", pa.large_string()))


def extend_conversations(conversations: list, n: int, seed: int = 3407) -> list:
    """Join each conversation with n-1 others chosen at random (seeded) into one multi-turn
    conversation; the first keeps its system message, the others' are left out.

    >>> len(extend_conversations([[{"role": "user", "content": "a"}]] * 3, 2)[0])
    2
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DataError(f"conversation_extension={n!r} is not a number of rows. Fix: a whole "
                        "number, 1 or more")
    if n == 1 or len(conversations) < 2:
        return [list(c) for c in conversations]
    rng = random.Random(seed)
    extended = []
    for i, conversation in enumerate(conversations):
        others = rng.sample(range(len(conversations) - 1), min(n - 1, len(conversations) - 1))
        merged = list(conversation)
        for j in others:
            merged += [m for m in conversations[j + (j >= i)] if m["role"] != "system"]
        extended.append(merged)
    return extended


def split(conversations: list, eval_size: float | int, seed: int = 3407,
          stratify: bool = False) -> tuple[list, list]:
    """Seeded train/eval split; `eval_size` is a fraction (0.1) or a count (50). With
    stratify=True each distinct final answer keeps its share in both parts.

    >>> train, held = split(list(range(10)), 0.2)
    >>> len(train), len(held)
    (8, 2)
    """
    n = len(conversations)
    if isinstance(eval_size, bool) or not isinstance(eval_size, (int, float)):
        raise DataError(f"eval_size={eval_size!r} is not a number. Fix: a fraction such as 0.1 "
                        "or a count")
    k = round(n * eval_size) if isinstance(eval_size, float) else eval_size
    if isinstance(eval_size, float) and 0 < eval_size < 1:
        k = min(max(k, 1), n - 1)
    if not 1 <= k < n:
        raise DataError(f"eval_size={eval_size!r} leaves {n - k} training and {k} evaluation "
                        f"rows out of {n}. Fix: a fraction between 0 and 1, or a count from 1 "
                        f"to {n - 1}")
    rng = random.Random(seed)
    if not stratify:
        order = list(range(n))
        rng.shuffle(order)
        held = set(order[:k])
    else:
        held = _stratified(conversations, k, rng)
    return ([c for i, c in enumerate(conversations) if i not in held],
            [c for i, c in enumerate(conversations) if i in held])


def _stratified(conversations: list, k: int, rng: random.Random) -> set[int]:
    groups = defaultdict(list)
    for i, c in enumerate(conversations):
        answer = [m["content"] for m in c if m["role"] == "assistant"][-1:] \
            if isinstance(c, list) and c and isinstance(c[0], dict) else [c]
        groups[json.dumps(answer, default=str)].append(i)
    n = len(conversations)
    if len(groups) * 2 > n:
        raise DataError(f"stratify=True balances the final answers, but {len(groups)} of {n} "
                        "answers are distinct, so there is nothing to balance. Fix: "
                        "stratify=False")
    keys = sorted(groups)
    for key in keys:
        rng.shuffle(groups[key])
    share = {key: len(groups[key]) * k / n for key in keys}
    quota = {key: int(share[key]) for key in keys}
    ties = {key: rng.random() for key in keys}
    for key in sorted(keys, key=lambda g: (share[g] - quota[g], ties[g]), reverse=True):
        if sum(quota.values()) >= k:
            break
        quota[key] += 1
    return {i for key in keys for i in groups[key][:quota[key]]}


def preview(conversations: list, n: int = 3, fmt=None) -> str:
    """The first n conversations as text: rendered by a ChatFormat when given, else one
    "role: content" line per message.

    >>> print(preview([[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]]))
    user: Hi
    assistant: Yo
    """
    shown = []
    for conversation in conversations[:n]:
        shown.append(fmt.render(conversation) if fmt is not None else
                     "\n".join(f"{m['role']}: {m['content']}" for m in conversation))
    return "\n\n".join(shown)
