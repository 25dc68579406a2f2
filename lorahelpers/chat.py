"""ChatFormat: the one definition of how a conversation becomes text.

Training text, loss spans, the tokenizer's Jinja chat template (and so the GGUF's) and Ollama's
Go TEMPLATE all come from the same few literal pieces (a `Turns`), so they cannot drift apart.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from lorahelpers.errors import ChatFormatError

Message = dict  # {"role": "system" | "user" | "assistant", "content": str}

ROLES = ("system", "user", "assistant")
ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
)
# BOS strings a copied template may start with; the tokenizer adds BOS itself.
_KNOWN_BOS = ("<|begin_of_text|>", "<|startoftext|>", "<bos>", "<s>")


@dataclass(frozen=True)
class Turns:
    """The literal pieces around each message.

    A system message (only allowed first) renders as system_pre + content + system_post and
    replaces `preamble`; a user turn as user_pre + content + user_post; an assistant turn as
    assistant_pre + content + eos + assistant_post. The generation prompt is assistant_pre.
    `user_after_system_pre`, when set, replaces user_pre for the user turn right after the
    system message: formats such as Gemma's fold the system prompt into that turn.
    """

    preamble: str = ""
    system_pre: str = ""
    system_post: str = ""
    user_pre: str = ""
    user_post: str = ""
    assistant_pre: str = ""
    assistant_post: str = ""
    user_after_system_pre: str | None = None


@dataclass(frozen=True)
class ChatFormat:
    """How conversations become text, for training, the tokenizer, the GGUF and Ollama.

    >>> fmt = get_chat_format("chatml")
    >>> fmt.render([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    '<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n'
    """

    name: str
    eos: str
    stop: tuple[str, ...]
    turns: Turns = field(default_factory=Turns, repr=False)

    def __post_init__(self):
        if not isinstance(self.eos, str) or not self.eos:
            raise ChatFormatError(f"ChatFormat {self.name!r}: eos is empty. Fix: pass a "
                                  "non-empty string, e.g. eos=tokenizer.eos_token")
        if self.eos not in self.stop:
            raise ChatFormatError(f"ChatFormat {self.name!r}: stop {self.stop!r} lacks the eos "
                                  f"{self.eos!r}, so the model in Ollama would never stop. Fix: "
                                  "add the eos to stop")

    def render(self, messages: list[Message], add_generation_prompt: bool = False) -> str:
        """The text of `messages`; with add_generation_prompt, ready for the model to answer.

        >>> get_chat_format("llama3").render([{"role": "user", "content": "Hi"}])
        '<|start_header_id|>user<|end_header_id|>\\n\\nHi<|eot_id|>'
        """
        text, _ = self._render(messages)
        return text + self.turns.assistant_pre if add_generation_prompt else text

    def render_with_spans(self, messages: list[Message]) -> tuple[str, list[tuple[int, int]]]:
        """The text of a conversation ending with an assistant turn, and the [start, end)
        character spans of each assistant content plus its eos (what the loss is computed on).

        >>> get_chat_format("chatml").render_with_spans(
        ...     [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])
        ('<|im_start|>user\\na<|im_end|>\\n<|im_start|>assistant\\nb<|im_end|>\\n', [(51, 62)])
        """
        if not messages or messages[-1].get("role") != "assistant":
            raise ChatFormatError("render_with_spans needs a conversation that ends with an "
                                  "assistant message (the response to learn); got "
                                  f"{_describe(messages)}. Fix: end it with the answer")
        return self._render(messages)

    def generation_prefix(self, messages: list[Message]) -> str:
        """The prompt for the next assistant turn: render(messages, add_generation_prompt=True)."""
        return self.render(messages, add_generation_prompt=True)

    def _render(self, messages: list[Message]) -> tuple[str, list[tuple[int, int]]]:
        _validate(messages)
        t = self.turns
        parts: list[str] = []
        spans: list[tuple[int, int]] = []
        size = 0

        def put(s: str) -> None:
            nonlocal size
            parts.append(s)
            size += len(s)

        for i, m in enumerate(messages):
            role, content = m["role"], m["content"]
            if i == 0 and role != "system":
                put(t.preamble)
            if role == "system":
                put(t.system_pre + content + t.system_post)
            elif role == "user":
                folded = t.user_after_system_pre is not None and i == 1 \
                    and messages[0]["role"] == "system"
                put((t.user_after_system_pre if folded else t.user_pre) + content + t.user_post)
            else:
                put(t.assistant_pre)
                start = size
                put(content + self.eos)
                spans.append((start, size))
                put(t.assistant_post)
        return "".join(parts), spans

    @property
    def jinja_template(self) -> str:
        """The Hugging Face chat template (tokenizer.chat_template, and so the GGUF's)."""
        t, q, j = self.turns, _jinja_str, _jinja_join
        content = "message['content']"
        pre = (f"{{%- if loop.first and message['role'] != 'system' -%}}{{{{ {q(t.preamble)} }}}}"
               "{%- endif -%}\n") if t.preamble else ""
        bad_role = q("Roles must be system, user or assistant, with system only first")
        user_pre = q(t.user_pre)
        if t.user_after_system_pre is not None:
            user_pre = (f"({q(t.user_after_system_pre)} if loop.index0 == 1 and "
                        f"messages[0]['role'] == 'system' else {user_pre})")
        return (
            "{%- for message in messages -%}\n"
            + pre
            + "{%- if message['role'] == 'system' and loop.first -%}\n"
            f"{{{{ {j(q(t.system_pre), content, q(t.system_post))} }}}}\n"
            "{%- elif message['role'] == 'user' -%}\n"
            f"{{{{ {j(user_pre, content, q(t.user_post))} }}}}\n"
            "{%- elif message['role'] == 'assistant' -%}\n"
            f"{{{{ {j(q(t.assistant_pre), content, q(self.eos + t.assistant_post))} }}}}\n"
            "{%- else -%}\n"
            f"{{{{ raise_exception({bad_role}) }}}}\n"
            "{%- endif -%}\n"
            "{%- endfor -%}\n"
            "{%- if add_generation_prompt -%}\n"
            f"{{{{ {q(t.assistant_pre)} }}}}\n"
            "{%- endif -%}\n"
        )

    @property
    def go_template(self) -> str:
        """Ollama's TEMPLATE (Go text/template over .Messages), on one line so that no
        trim marker can eat whitespace that belongs to the format."""
        t, g = self.turns, _go_text
        pre = f'{{{{ if and (eq $i 0) (ne $m.Role "system") }}}}{g(t.preamble)}{{{{ end }}}}' \
            if t.preamble else ""
        user_pre = g(t.user_pre)
        if t.user_after_system_pre is not None:
            user_pre = ('{{ if and (eq $i 1) (eq (index $.Messages 0).Role "system") }}'
                        f"{g(t.user_after_system_pre)}{{{{ else }}}}{user_pre}{{{{ end }}}}")
        return (
            "{{ range $i, $m := .Messages }}" + pre
            + f'{{{{ if eq $m.Role "system" }}}}{g(t.system_pre)}{{{{ $m.Content }}}}'
            f"{g(t.system_post)}"
            f'{{{{ else if eq $m.Role "user" }}}}{user_pre}{{{{ $m.Content }}}}'
            f"{g(t.user_post)}"
            f'{{{{ else if eq $m.Role "assistant" }}}}{g(t.assistant_pre)}{{{{ $m.Content }}}}'
            f"{g(self.eos + t.assistant_post)}"
            "{{ end }}{{ end }}" + g(t.assistant_pre)
        )


BUILTIN = ("alpaca", "chatml", "gemma", "llama3", "mistral", "phi3", "phi4", "qwen", "qwen3")
_ALIASES = {"phi": "phi3", "gemma2": "gemma", "gemma3": "gemma", "qwen2": "qwen",
            "qwen2.5": "qwen", "llama-3": "llama3"}


def _chatml(name: str, eos: str = "<|im_end|>", sep: str = "\n", end: str = "\n",
            think: str = "") -> ChatFormat:
    start = "<|im_start|>"
    return ChatFormat(name, eos, (eos, start), Turns(
        system_pre=f"{start}system{sep}", system_post=eos + end,
        user_pre=f"{start}user{sep}", user_post=eos + end,
        assistant_pre=f"{start}assistant{sep}{think}", assistant_post=end))


def _llama3() -> ChatFormat:
    eot = "<|eot_id|>"

    def head(role: str) -> str:
        return f"<|start_header_id|>{role}<|end_header_id|>\n\n"

    return ChatFormat("llama3", eot, (eot, "<|start_header_id|>", "<|end_header_id|>"),
                      Turns(system_pre=head("system"), system_post=eot,
                            user_pre=head("user"), user_post=eot,
                            assistant_pre=head("assistant")))


def _gemma() -> ChatFormat:
    # Gemma 2 and 3 have no system role: their template puts the system text, a blank line,
    # then the first user message inside one user turn. The answering role is "model".
    end, user = "<end_of_turn>", "<start_of_turn>user\n"
    return ChatFormat("gemma", end, (end, "<start_of_turn>"), Turns(
        system_pre=user, system_post="\n\n", user_after_system_pre="",
        user_pre=user, user_post=end + "\n",
        assistant_pre="<start_of_turn>model\n", assistant_post="\n"))


def _mistral() -> ChatFormat:
    # The [INST] family: "[INST] question[/INST]answer</s>". Mistral-7B-Instruct v0.3 (and
    # Ollama's "mistral" template) write " answer" with a space, v0.1/v0.2 "[INST] question
    # [/INST]", tekken-based models (Nemo, Small 3) "[INST]question[/INST]". Here the answer
    # follows "[/INST]" directly, so the generation prompt is a prefix of the training text and
    # the answer learnt is exactly the answer. The system prompt goes into the first user turn
    # (v0.3 puts it into the last one; the same for single-turn examples).
    return ChatFormat("mistral", "</s>", ("</s>", "[INST]"), Turns(
        system_pre="[INST] ", system_post="\n\n", user_after_system_pre="",
        user_pre="[INST] ", user_post="[/INST]"))


def _phi3() -> ChatFormat:
    end = "<|end|>"
    return ChatFormat("phi3", end, (end, "<|user|>", "<|endoftext|>"), Turns(
        system_pre="<|system|>\n", system_post=end + "\n",
        user_pre="<|user|>\n", user_post=end + "\n",
        assistant_pre="<|assistant|>\n", assistant_post="\n"))


_BUILDERS = {
    "chatml": lambda: _chatml("chatml"),
    "llama3": _llama3,
    "gemma": _gemma,
    "mistral": _mistral,
    "phi3": _phi3,
    # Phi-4: chatml with <|im_sep|> after the role and no line breaks.
    "phi4": lambda: _chatml("phi4", sep="<|im_sep|>", end=""),
    # Qwen 2 / 2.5: chatml; their own template adds a default system prompt, this one does not.
    "qwen": lambda: _chatml("qwen"),
    # Qwen3 answers without thinking when the prompt already holds an empty think block (its
    # template's enable_thinking=False); training and Ollama both get that block every turn.
    "qwen3": lambda: _chatml("qwen3", think="<think>\n\n</think>\n\n"),
}


def get_chat_format(name: str, eos: str | None = None, tokenizer=None) -> ChatFormat:
    """A built-in format (see BUILTIN), "auto" (chosen from `tokenizer`, see detect_chat_format)
    or a custom one from an Unsloth-style template with {INPUT}, {OUTPUT} and optional
    {SYSTEM}. `eos` is needed by alpaca and custom (pass tokenizer.eos_token); the others always
    end turns with their own token.

    >>> get_chat_format("alpaca", eos="</s>").stop
    ('</s>', '### Instruction:')
    """
    if not isinstance(name, str):
        raise TypeError(f"chat format must be a name or a template string, got {type(name)}")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key == "auto":
        if tokenizer is None:
            raise ChatFormatError("chat format 'auto' is chosen from the base model's "
                                  "tokenizer. Fix: pass tokenizer=..., or name the format "
                                  "(e.g. 'chatml')")
        return get_chat_format(detect_chat_format(tokenizer)[0], eos=tokenizer.eos_token)
    if key in _BUILDERS:
        return _BUILDERS[key]()
    if key == "alpaca" or "{INPUT}" in name or "{OUTPUT}" in name:
        if not eos:
            raise ChatFormatError(f"chat format {'alpaca' if key == 'alpaca' else 'custom'} "
                                  "needs the tokenizer's end-of-sequence string. Fix: pass "
                                  "eos=tokenizer.eos_token")
        if key == "alpaca":
            return ChatFormat("alpaca", eos, (eos, "### Instruction:"), Turns(
                preamble=ALPACA_PREAMBLE + "\n\n", system_post="\n\n",
                user_pre="### Instruction:\n", user_post="\n\n",
                assistant_pre="### Response:\n", assistant_post="\n\n"))
        turns = parse_template(name, eos)
        marker = turns.user_pre.strip()
        return ChatFormat("custom", eos, (eos, marker) if marker and marker != eos else (eos,),
                          turns)
    close = difflib.get_close_matches(key, [*BUILTIN, "auto"], n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ChatFormatError(f"unknown chat format {name!r}.{hint} Fix: use one of "
                          f"{', '.join(BUILTIN)}, 'auto' or a template string with {{INPUT}} "
                          "and {OUTPUT}")


# (format, markers that must all be in the tokenizer's own chat template), most specific first.
_TEMPLATE_SIGNS = (
    ("llama3", ("<|start_header_id|>",)),
    ("gemma", ("<start_of_turn>",)),
    ("phi4", ("<|im_sep|>",)),
    ("qwen3", ("<|im_start|>", "<think>")),
    ("qwen", ("<|im_start|>", "Qwen")),
    ("chatml", ("<|im_start|>",)),
    ("phi3", ("<|user|>", "<|end|>")),
    ("mistral", ("[INST]",)),
    ("alpaca", ("### Instruction",)),
)
# What a family's own template adds and its format deliberately leaves out (README, "Model
# families"), recognised by a marker: (marker, what "auto" says about it).
_LEFT_OUT = {
    "llama3": (("Cutting Knowledge Date", "its system turn's 'Cutting Knowledge Date' and "
                "'Today Date' lines (Meta's Llama 3.1/3.2 template) are left out"),),
}
# (format, special tokens that must all be in the vocabulary), for tokenizers without a template.
_VOCAB_SIGNS = (
    ("llama3", ("<|start_header_id|>", "<|eot_id|>")),
    ("gemma", ("<start_of_turn>", "<end_of_turn>")),
    ("phi4", ("<|im_start|>", "<|im_sep|>")),
    ("qwen3", ("<|im_start|>", "<think>")),
    ("chatml", ("<|im_start|>", "<|im_end|>")),
    ("phi3", ("<|user|>", "<|end|>", "<|assistant|>")),
    ("mistral", ("[INST]", "[/INST]")),
)


def detect_chat_format(tokenizer) -> tuple[str, str]:
    """(format name, why) for a base model's tokenizer: from the markers of its own chat
    template when it has one, else from its special tokens, else alpaca (a plain-text format
    that any tokenizer can learn).

    >>> detect_chat_format(tokenizer)  # doctest: +SKIP
    ('chatml', "its chat template uses '<|im_start|>'")
    """
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # several named templates: the default one
        template = template.get("default") or next(iter(template.values()), None)
    if isinstance(template, str) and template:
        for name, signs in _TEMPLATE_SIGNS:
            if all(s in template for s in signs):
                left_out = [why for mark, why in _LEFT_OUT.get(name, ()) if mark in template]
                return name, "; ".join(["its chat template uses " + ", ".join(map(repr, signs)),
                                        *left_out])
    vocab = tokenizer.get_vocab()
    for name, signs in _VOCAB_SIGNS:
        if all(s in vocab for s in signs):
            return name, "its vocabulary has the special tokens " + ", ".join(map(repr, signs))
    return "alpaca", ("it has no chat template and no known chat tokens, so a plain-text format "
                      f"ending with its eos {getattr(tokenizer, 'eos_token', None)!r}")


def install_chat_template(tokenizer, fmt: ChatFormat) -> None:
    """Set tokenizer.chat_template to fmt's Jinja template, after checking that the tokenizer
    knows fmt.eos as one token (otherwise generation cannot stop on it).

    >>> install_chat_template(tokenizer, get_chat_format("chatml"))  # doctest: +SKIP
    """
    vocab = tokenizer.get_vocab()
    if fmt.eos not in vocab:
        raise ChatFormatError(
            f"chat format {fmt.name!r} ends turns with {fmt.eos!r}, which is not a token of this "
            f"tokenizer (its eos is {getattr(tokenizer, 'eos_token', None)!r}). Fix: use a "
            "format that matches the base model, or pass eos=tokenizer.eos_token for "
            "alpaca/custom.")
    tokenizer.chat_template = fmt.jinja_template


def stop_token_ids(tokenizer, stops=()) -> list[int]:
    """The token ids that end generation: the tokenizer's eos (one id or several) and every
    stop string that is a single token of its vocabulary. Stops longer than one token can only
    be cut from the text afterwards (inference.cut_at_stop).

    >>> stop_token_ids(tokenizer, get_chat_format("chatml").stop)  # doctest: +SKIP
    [2]
    """
    eos = tokenizer.eos_token_id
    ids = set(eos) if isinstance(eos, (list, tuple)) else {eos}
    vocab = tokenizer.get_vocab()
    ids |= {vocab[s] for s in stops if s in vocab}
    return sorted(i for i in ids if i is not None)


def parse_template(template: str, eos: str) -> Turns:
    """Split an Unsloth-style template into Turns. One example of {INPUT}/{OUTPUT} or two
    (the second defines what repeats per turn). Other braces are literal text.

    >>> parse_template("{SYSTEM}\\nUSER: {INPUT}\\nBOT: {OUTPUT}", "</s>").user_pre
    'USER: '
    """
    for bos in _KNOWN_BOS:
        if template.startswith(bos):
            template = template[len(bos):]
    n_in, n_out, n_sys = (template.count(k) for k in ("{INPUT}", "{OUTPUT}", "{SYSTEM}"))
    if n_in != n_out or n_in not in (1, 2) or n_sys > 1:
        raise ChatFormatError(
            f"chat template: found {n_in} {{INPUT}}, {n_out} {{OUTPUT}}, {n_sys} {{SYSTEM}} in "
            f"{template!r}. Fix: write {{INPUT}} and {{OUTPUT}} once each (or twice, as two "
            "example turns) and {SYSTEM} at most once")
    if template.index("{OUTPUT}") < template.index("{INPUT}"):
        raise ChatFormatError(f"chat template: {{OUTPUT}} comes before {{INPUT}} in "
                              f"{template!r}. Fix: put {{INPUT}} first")

    if n_in == 2:
        block, turn = _split_two_examples(template)
        head, rest = turn.split("{INPUT}")
        split_sep = ""
    else:
        head_all, rest = template.split("{INPUT}")
        block, head, split_sep = _split_head(head_all, eos)
    mid, tail = rest.split("{OUTPUT}")
    if "{SYSTEM}" in mid + tail + head:
        raise ChatFormatError(f"chat template: {{SYSTEM}} comes after the first {{INPUT}} in "
                              f"{template!r}. Fix: put {{SYSTEM}} first")

    m = re.match(r"\s*(?:" + re.escape(eos) + r"\s*)?", mid)
    user_post, assistant_pre = mid[:m.end()], mid[m.end():]
    if not assistant_pre and not user_post:
        raise ChatFormatError(f"chat template: nothing marks where the answer starts in "
                              f"{template!r}. Fix: put a marker such as '\\n### Response:\\n' "
                              "between {INPUT} and {OUTPUT}")
    if tail.startswith(eos):
        tail = tail[len(eos):]
    if eos in tail:
        raise ChatFormatError(f"chat template: the eos {eos!r} is not right after {{OUTPUT}} "
                              f"in {template!r}. Fix: put it right after {{OUTPUT}}, or leave "
                              "it out (it is added there)")
    if not tail and n_in == 1:
        tail = split_sep or re.match(r"\s*", mid).group()

    if "{SYSTEM}" in block:
        system_pre, system_post = block.split("{SYSTEM}")
        return Turns("", system_pre, system_post, head, user_post, assistant_pre, tail)
    system_post = re.search(r"\s*$", block).group() if block else "\n\n"
    return Turns(block, "", system_post, head, user_post, assistant_pre, tail)


def _split_two_examples(template: str) -> tuple[str, str]:
    # The longest tail that also ends the text before it is the repeating turn.
    first_out = template.index("{OUTPUT}") + len("{OUTPUT}")
    second_in = template.index("{INPUT}", first_out)
    for k in range(first_out, second_in + 1):
        turn = template[k:]
        if template[:k].endswith(turn):
            return template[:k - len(turn)], turn
    raise ChatFormatError(f"chat template: the two example turns differ in {template!r}. Fix: "
                          "write the same turn twice, e.g. 'USER: {INPUT}\\nBOT: {OUTPUT}\\n' "
                          "twice")


def _split_head(head: str, eos: str) -> tuple[str, str, str]:
    """(once-only block, per-turn user prefix, line breaks at the split) of the text before
    {INPUT}, for single-example templates."""
    if "{SYSTEM}" in head:
        at = head.index("{SYSTEM}") + len("{SYSTEM}")
        after = head[at:]
        m = re.match(r"[^\n]*?" + re.escape(eos), after) if eos in after.split("\n")[0] else None
        m = m or re.match(r"[^\n]*(\n+)", after)
        if not m:
            raise ChatFormatError(f"chat template: cannot tell where the system part ends in "
                                  f"{head!r}. Fix: put a line break after {{SYSTEM}}, or write "
                                  "two example turns")
        end = at + m.end()
        return head[:end], head[end:], re.search(r"\n*$", head[:end]).group()
    breaks = [m for m in re.finditer(r"\n{2,}", head) if m.end() < len(head)]
    if not breaks:
        return "", head, ""
    last = breaks[-1]
    return head[:last.end()], head[last.end():], last.group()


def _validate(messages: list[Message]) -> None:
    if not isinstance(messages, (list, tuple)):
        raise TypeError(f"messages must be a list of {{'role', 'content'}} dicts, got "
                        f"{type(messages).__name__}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise ChatFormatError(f"message {i}: role "
                                  f"{m.get('role') if isinstance(m, dict) else m!r} is unknown. "
                                  f"Fix: use one of {ROLES}")
        if not isinstance(m.get("content"), str):
            raise ChatFormatError(f"message {i} ({m['role']}): content is a "
                                  f"{type(m.get('content')).__name__}. Fix: make it a string")
        if m["role"] == "system" and i != 0:
            raise ChatFormatError(f"message {i}: a system message after the first. Fix: move "
                                  "it to the start")


def _describe(messages) -> str:
    if not messages:
        return "no messages"
    return "roles " + ", ".join(str(m.get("role")) for m in messages if isinstance(m, dict))


def _jinja_str(s: str) -> str:
    """A Jinja string expression for s, in the subset every Jinja engine reads alike
    (Jinja2, llama.cpp's): only backslash, quote, newline and carriage-return escapes, and no
    two-character delimiter such as '{{' inside one literal: it becomes '{' + '{'."""
    esc = s.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
    esc = esc.replace("\r", "\\r")
    pieces = re.split(r"(?<=\{)(?=[{%#])|(?<=[}%#])(?=\})", esc)
    return " + ".join("'" + p + "'" for p in pieces)


def _jinja_join(*exprs: str) -> str:
    return " + ".join(e for e in exprs if e != "''")


def _go_text(s: str) -> str:
    """s as Go template text: raw when that is unambiguous, else a quoted string action."""
    if not s:
        return ""
    raw_ok = ("{{" not in s and not s.startswith("}") and not s.endswith("{")
              and '"""' not in s and all(c == "\n" or c.isprintable() for c in s))
    if raw_ok:
        return s
    out = []
    for ch in s:
        o = ord(ch)
        if ch in '\\"':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")
    return '{{ "' + "".join(out) + '" }}'
