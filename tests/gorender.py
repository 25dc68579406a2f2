"""Render Go text/template the way Ollama renders a TEMPLATE, with Go's own engine.

The harness in tests/gotemplate/ is built once per source version into a cache directory and
kept running; each render is one JSON line to its stdin and one back, so property tests can
render hundreds of examples per second.

    >>> render_go("{{ range .Messages }}{{ .Content }}{{ end }}", [{"role": "user", "content": "hi"}])
    'hi'
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

SOURCE = Path(__file__).parent / "gotemplate"


class GoTemplateError(Exception):
    """Go refused the template (parse or execution error); the message is Go's."""


class _Harness:
    def __init__(self):
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None

    def render(self, request: dict) -> dict:
        line = json.dumps(request) + "\n"
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = subprocess.Popen(
                    [str(build())], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    text=True, encoding="utf-8")
            self._proc.stdin.write(line)
            self._proc.stdin.flush()
            reply = self._proc.stdout.readline()
        if not reply:
            raise RuntimeError("the Go template harness exited without answering")
        return json.loads(reply)

    def close(self):
        if self._proc is not None and self._proc.poll() is None:
            self._proc.stdin.close()
            self._proc.wait(timeout=10)


_harness = _Harness()
atexit.register(_harness.close)


def build() -> Path:
    """Path of the harness binary, building it on first use (atomic: build to a temporary
    name, then rename)."""
    digest = hashlib.sha256()
    for name in ("go.mod", "main.go"):
        digest.update((SOURCE / name).read_bytes())
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lorahelpers"
    binary = cache / f"gorender-{digest.hexdigest()[:16]}"
    if binary.exists():
        return binary
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("Go is not on PATH, and the tests render Ollama templates with Go's own "
                           "text/template. Fix: apt-get install golang-go (scripts/setup.sh "
                           "--dev does it as root).")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        out = Path(tmp) / "gorender"
        done = subprocess.run([go, "build", "-o", str(out), "."], cwd=SOURCE,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"go build in {SOURCE} failed:\n{done.stderr}")
        os.replace(out, binary)
    return binary


# The template functions and message fields of the newest release the double knows.
NEWEST_FUNCS = ("json", "currentDate", "yesterdayDate", "toTypeScriptType")


def render_go(template: str, messages: list[dict], system: str | None = None,
              funcs: tuple[str, ...] = NEWEST_FUNCS, tool_call_ids: bool = True) -> str:
    """Ollama's Messages-mode render: .Messages (each .Role, .Content and the release's other
    message fields), .System (by default the system messages' contents joined by a blank line,
    as Ollama does), .Tools, .Response empty, and no .Prompt (Go prints `<no value>`).
    `funcs` are the release's template functions, `tool_call_ids` whether its messages have
    ToolCallID. Raises GoTemplateError when Go rejects the template."""
    if system is None:
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    answer = _harness.render({
        "template": template,
        "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
        "system": system, "funcs": list(funcs), "tool_call_ids": tool_call_ids,
    })
    if "error" in answer:
        raise GoTemplateError(answer["error"])
    return answer["output"]
