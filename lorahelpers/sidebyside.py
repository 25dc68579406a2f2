"""Try it: one message to the PyTorch model in memory and to the model Ollama serves, both
answers side by side: text anywhere, and in Jupyter or Colab a small box to send more.

    >>> chat_side_by_side("Tag: the lid broke.", model, tok, fmt,
    ...                   ollama_name="my-model")  # doctest: +SKIP
"""

from __future__ import annotations

import html
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field

COLUMN = 46  # characters per column of the text view


@dataclass
class SideBySide:
    """One message and each model's answer ({label: answer}, or the reason it has none), with
    the prompt both were given (the ChatFormat rendering, which Ollama builds too). `ask`, when
    set, answers another message the same way: the notebook box uses it."""

    message: str
    answers: dict[str, str]
    prompt: str = ""
    ask: Callable[[str], SideBySide] | None = field(default=None, repr=False)

    def __str__(self) -> str:
        labels = list(self.answers)
        columns = [textwrap.wrap(self.answers[k], COLUMN, replace_whitespace=False,
                                 drop_whitespace=False) or [""] for k in labels]
        lines = [f"Message: {self.message}", " | ".join(k.ljust(COLUMN) for k in labels).rstrip(),
                 "-+-".join("-" * COLUMN for _ in labels)]
        for i in range(max(len(c) for c in columns)):
            cells = [(c[i] if i < len(c) else "").replace("\n", " ") for c in columns]
            lines.append(" | ".join(cell.ljust(COLUMN) for cell in cells).rstrip())
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        e = html.escape
        head = "".join(f"<th>{e(k)}</th>" for k in self.answers)
        cells = "".join(f"<td style='text-align:left;vertical-align:top;white-space:pre-wrap'>"
                        f"{e(v)}</td>" for v in self.answers.values())
        return (f"<p style='white-space:pre-wrap'><b>Message:</b> {e(self.message)}</p>"
                f"<table><tr>{head}</tr><tr>{cells}"
                f"</tr></table><details><summary>the prompt both models got</summary><pre>"
                f"{e(self.prompt)}</pre></details>")

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display({"text/plain": str(self), "text/html": self._repr_html_()}, raw=True)
        box = self.box()
        if box is not None:
            display(box)

    def box(self):
        """An ipywidgets box (a text field and a Send button) that shows the answers to each
        message sent; None without ipywidgets or `ask`."""
        try:
            import ipywidgets as widgets
        except ImportError:
            return None
        if self.ask is None:
            return None
        text = widgets.Text(placeholder="Another message for both models",
                            layout=widgets.Layout(width="70%"))
        send, out = widgets.Button(description="Send"), widgets.Output()

        def on_send(_=None):
            if text.value.strip():
                out.clear_output()
                with out:
                    from IPython.display import HTML, display

                    display(HTML(self.ask(text.value)._repr_html_()))

        send.on_click(on_send)
        return widgets.VBox([widgets.HBox([text, send]), out])


def chat_side_by_side(message: str, model, tokenizer, chat_format, *, ollama_name=None,
                      system=None, host=None, max_new_tokens: int = 128,
                      ollama_options=None) -> SideBySide:
    """Send `message` (with the `system` prompt, if any) to the PyTorch model (greedy) and to
    Ollama model `ollama_name` (greedy too, lorahelpers.ollama.GREEDY_OPTIONS, unless
    `ollama_options` says otherwise: pass {} to sample as `ollama run` does), and show both
    answers side by side; where no Ollama server answers, its column says so. Displayed in a
    notebook, it adds a box to send more messages.

    >>> chat_side_by_side("Tag the review.\\n\\nThe lid broke.", model, tok, fmt,
    ...                   ollama_name="lorahelpers-demo")  # doctest: +SKIP
    """
    from lorahelpers import ollama
    from lorahelpers.inference import generate

    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": message}]
    answers = {"PyTorch (greedy)": generate(model, tokenizer, messages, chat_format,
                                            max_new_tokens=max_new_tokens, stream=False)}
    options = ollama.GREEDY_OPTIONS if ollama_options is None else ollama_options
    label = f"Ollama {ollama_name} ({'greedy' if ollama_options is None else 'your options'})"
    if not ollama_name:
        answers[label] = "(no Ollama model given)"
    elif ollama.server_available(host) is None:
        answers[label] = ("skipped: no Ollama server answers (start one with `ollama serve`, or "
                          "lorahelpers.ollama.start_server(install=True) on Colab)")
    else:
        answers[label] = ollama.chat(ollama_name, messages, host=host, stream=False,
                                     options={**options, "num_predict": max_new_tokens})

    def ask(text: str) -> SideBySide:
        return chat_side_by_side(text, model, tokenizer, chat_format, ollama_name=ollama_name,
                                 system=system, host=host,
                                 max_new_tokens=max_new_tokens, ollama_options=ollama_options)

    prompt = chat_format.generation_prefix(messages) if hasattr(chat_format, "turns") else ""
    return SideBySide(message, answers, prompt, ask)
