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
        raise RuntimeError("Go is needed to check Ollama templates: apt-get install golang-go")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        out = Path(tmp) / "gorender"
        done = subprocess.run([go, "build", "-o", str(out), "."], cwd=SOURCE,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"go build in {SOURCE} failed:\n{done.stderr}")
        os.replace(out, binary)
    return binary


def render_go(template: str, messages: list[dict], system: str | None = None) -> str:
    """Ollama's Messages-mode render: .Messages (each .Role, .Content), .System (by default
    the system messages' contents joined by a blank line, as Ollama does), .Prompt and
    .Response empty. Raises GoTemplateError when Go rejects the template."""
    if system is None:
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    answer = _harness.render({
        "template": template,
        "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
        "system": system,
    })
    if "error" in answer:
        raise GoTemplateError(answer["error"])
    return answer["output"]
