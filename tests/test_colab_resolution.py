"""scripts/check_colab_resolution.py --pins: the versions pip resolved for Colab, written as the
constraints scripts/colab_set_tests.sh installs (no registry asked here)."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location(
        "check_colab_resolution", ROOT / "scripts" / "check_colab_resolution.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pins_are_the_resolved_versions_without_colab_s_torch(tmp_path, monkeypatch, capsys):
    script = load_script()
    resolved = {"torch": "2.12.0+colab", "torchvision": "0.27.0+colab", "unsloth": "2026.10.9",
                "transformers": "5.17.0", "trl": "1.15.0"}
    monkeypatch.setattr(script, "resolve", lambda torch, torchvision, work: {"torch": torch})
    monkeypatch.setattr(script, "check", lambda report, torch: resolved)
    pins = tmp_path / "pins.txt"
    assert script.main(["2.12.0", "--pins", str(pins)]) == 0
    lines = [line for line in pins.read_text().splitlines() if not line.startswith("#")]
    assert lines == ["transformers==5.17.0", "trl==1.15.0", "unsloth==2026.10.9"]
    assert "Python 3.12 with torch 2.12.0" in pins.read_text()
    assert f"wrote the versions resolved with torch 2.12.0 to {pins}" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["pins.txt"]  # no temporary left


def test_the_colab_set_script_parses():
    assert subprocess.run(["bash", "-n", str(ROOT / "scripts" / "colab_set_tests.sh")]).returncode == 0
