"""Export: the converter source, merging, GGUF files, adapter GGUFs and their failures."""

from __future__ import annotations

import importlib.metadata
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

from lorahelpers import llamacpp
from lorahelpers.export import (
    AdapterNotConvertibleError,
    ExportError,
    LlamaCppMissingError,
    TokenizerNotRecognizedError,
    UnsupportedArchitectureError,
    adapter_gguf_problems,
    converter_dir,
    converter_is_cached,
    export_adapter_gguf,
    export_gguf,
    gguf_metadata,
)

ROOT = Path(__file__).resolve().parent.parent
QUIET = {"progress": lambda s: None}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


# ---- converter source, failure messages (no model needed)

def test_converter_cache_matches_installed_llama_cpp():
    version = importlib.metadata.version("llama-cpp-python")
    assert converter_is_cached(), "run scripts/setup.sh (or converter_dir()) once while online"
    conv = converter_dir()
    assert conv.name == f"llama.cpp-{version}"
    for name in ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "conversion/llama.py",
                 "gguf-py/gguf/gguf_writer.py"):
        assert (conv / name).is_file(), name
    assert not list(conv.rglob("*.c")) and not list(conv.rglob("*.cpp"))
    assert sum(p.stat().st_size for p in conv.rglob("*") if p.is_file()) < 10e6
    assert "LlamaForCausalLM" in llamacpp.supported_architectures(conv)


def _fake_sdist(path: Path) -> Path:
    files = {
        "convert_hf_to_gguf.py": "print('convert')", "convert_lora_to_gguf.py": "",
        "conversion/__init__.py": "TEXT_MODEL_MAP: dict[str, str] = {'LlamaForCausalLM': 'llama'}",
        "gguf-py/gguf/__init__.py": "", "requirements.txt": "numpy",
        "ggml/src/ggml.c": "int main;", "src/llama.cpp": "//", "docs/build.md": "#",
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items() | {"../../evil.py": "x"}.items():
            data = text.encode()
            prefix = "llama_cpp_python-9.9.9/vendor/llama.cpp/"
            info = tarfile.TarInfo(prefix + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_converter_dir_keeps_only_the_scripts(tmp_path, monkeypatch):
    monkeypatch.setenv("LORAHELPERS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(llamacpp, "_download_sdist",
                        lambda version, dest: _fake_sdist(tmp_path / "fake.tar.gz"))
    assert not converter_is_cached()
    conv = converter_dir(**QUIET)
    kept = sorted(str(p.relative_to(conv)) for p in conv.rglob("*") if p.is_file())
    assert kept == ["conversion/__init__.py", "convert_hf_to_gguf.py", "convert_lora_to_gguf.py",
                    "gguf-py/gguf/__init__.py", "requirements.txt"]
    assert not (tmp_path / "evil.py").exists() and not list(tmp_path.rglob("evil.py"))
    assert converter_is_cached()
    assert [p.name for p in conv.parent.iterdir()] == [conv.name]  # no temporary left
    assert llamacpp.supported_architectures(conv) == {"LlamaForCausalLM"}


def test_converter_download_failure_says_what_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("LORAHELPERS_CACHE", str(tmp_path / "cache"))
    # A package index nobody listens on: pip fails at once, as it does offline.
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    with pytest.raises(llamacpp.ConverterUnavailableError) as e:
        converter_dir(**QUIET)
    message = str(e.value)
    assert "one-time step" in message and "converter_dir()" in message
    assert "llama-cpp-python" in message
    assert list((tmp_path / "cache").iterdir()) == []  # the temporary directory is gone


def test_missing_llama_cpp_says_how_to_install(monkeypatch):
    real = importlib.metadata.version

    def version(name):
        if name == "llama-cpp-python":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    assert converter_is_cached() is False
    with pytest.raises(LlamaCppMissingError, match="CMAKE_ARGS=.*GGML_NATIVE=OFF"):
        converter_dir()
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    with pytest.raises(LlamaCppMissingError, match="pip install llama-cpp-python=="):
        llamacpp.import_llama_cpp()


BPE_FAILURE = """\
INFO:hf-to-gguf:Loading model: mymodel
WARNING:hf-to-gguf:** WARNING: The BPE pre-tokenizer was not recognized!
WARNING:hf-to-gguf:** chkhsh:  1b2ac5d9c3e6c1a6b0c0b8e8a1f6d4c3b2a1908f7e6d5c4b3a2918f7e6d5c4b3
Traceback (most recent call last):
NotImplementedError: BPE pre-tokenizer was not recognized - update get_vocab_base_pre()"""


def test_unrecognised_pre_tokenizer_message_shows_hash_and_fix():
    error = llamacpp.classify_failure("convert_hf_to_gguf.py", ["/m"], BPE_FAILURE.splitlines(),
                                      1, version="0.3.36")
    assert isinstance(error, TokenizerNotRecognizedError)
    text = str(error)
    assert "1b2ac5d9c3e6c1a6b0c0b8e8a1f6d4c3b2a1908f7e6d5c4b3a2918f7e6d5c4b3" in text
    assert "newer llama-cpp-python" in text and "known tokenizer" in text
    assert "/m" in text


def test_unsupported_architecture_message_names_it_and_the_version():
    lines = ["INFO:hf-to-gguf:Model architecture: FooForCausalLM",
             "ERROR:hf-to-gguf:Model FooForCausalLM is not supported"]
    error = llamacpp.classify_failure("convert_hf_to_gguf.py", ["/m"], lines, 1, version="0.3.36")
    assert isinstance(error, UnsupportedArchitectureError)
    assert "'FooForCausalLM'" in str(error) and "0.3.36" in str(error)
    assert "pip install -U llama-cpp-python" in str(error)


def test_other_converter_failures_show_the_last_lines():
    lines = [f"line {i}" for i in range(40)] + ["ValueError: something odd"]
    error = llamacpp.classify_failure("convert_hf_to_gguf.py", ["/m"], lines, -9, version="0.3.36")
    assert "exit code -9" in str(error) and "out of memory" in str(error)
    assert "ValueError: something odd" in str(error) and "line 5\n" not in str(error)


def test_relay_drops_tensor_lines_and_most_progress_redraws():
    seen = []
    relay = llamacpp._Relay(seen.append)
    for line in ["INFO:hf-to-gguf:Loading model: m",
                 "INFO:hf-to-gguf:blk.0.attn_q.weight, torch.float32 --> F16, shape = {576}",
                 "INFO:gguf.vocab:Setting chat_template to {%- for m in messages -%}",
                 "{{ m['content'] }}", "Writing:  10%|#", "Writing:  40%|####",
                 "Writing:  50%|#####", "Writing: 100%|##########",
                 "WARNING:hf-to-gguf:Unknown RoPE type: default"]:
        relay(line)
    assert seen == ["Loading model: m", "Writing:  10%|#", "Writing:  40%|####",
                    "Writing: 100%|##########", "WARNING: Unknown RoPE type: default"]


# ---- adapter-only GGUF refusals (before any conversion)

@pytest.mark.parametrize("config, why", [
    ({"use_dora": True}, "DoRA"),
    ({"use_rslora": True}, "rsLoRA"),
    ({"alpha_pattern": {"q_proj": 32}}, "alpha_pattern"),
    ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
    ({"target_modules": ["q_proj", "embed_tokens"]}, "embeddings or lm_head"),
    ({"peft_type": "IA3"}, "IA3"),
])
def test_adapter_gguf_problems_name_the_reason(config, why):
    problems = adapter_gguf_problems({"target_modules": ["q_proj"]} | config, [])
    assert len(problems) == 1 and why in problems[0]


def test_plain_lora_and_rank_pattern_are_convertible():
    names = ["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
    assert adapter_gguf_problems({"target_modules": ["q_proj"], "r": 8}, names) == []
    assert adapter_gguf_problems({"rank_pattern": {"q_proj": 4}}, names) == []
    assert adapter_gguf_problems({}, ["base_model.model.lm_head.lora_A.weight"]) != []


def _write_adapter(path: Path, config: dict, tensors: dict | None = None) -> Path:
    from safetensors.numpy import save_file

    path.mkdir(parents=True, exist_ok=True)
    config = {"peft_type": "LORA", "r": 2, "lora_alpha": 4,
              "target_modules": ["q_proj"]} | config
    (path / "adapter_config.json").write_text(json.dumps(config))
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    tensors = tensors if tensors is not None else {
        f"{prefix}.lora_A.weight": np.zeros((2, 576), np.float32),
        f"{prefix}.lora_B.weight": np.zeros((576, 2), np.float32)}
    save_file(tensors, str(path / "adapter_model.safetensors"))
    return path


@pytest.mark.parametrize("config", [{"use_dora": True}, {"use_rslora": True},
                                    {"modules_to_save": ["lm_head"]}])
def test_adapter_gguf_refuses_before_converting(config, tmp_path, monkeypatch, embedded_path):
    def no_conversion(*args, **kwargs):
        raise AssertionError("the converter must not run")

    monkeypatch.setattr("lorahelpers.export.run_script", no_conversion)
    adapter = _write_adapter(tmp_path / "adapter", config)
    out = tmp_path / "out" / "adapter.gguf"
    with pytest.raises(AdapterNotConvertibleError, match="Fix: merge it instead"):
        export_adapter_gguf(adapter, embedded_path, out, **QUIET)
    assert not out.parent.exists() or not list(out.parent.iterdir())


# ---- corrupted input and bad arguments

def _model_copy(src: Path, dst: Path, weights: str = "link") -> Path:
    dst.mkdir(parents=True)
    for p in src.iterdir():
        if p.name == "model.safetensors" and weights == "link":
            os.symlink(p, dst / p.name)
        elif p.name != "model.safetensors":
            shutil.copy(p, dst / p.name)
    return dst


def test_unknown_architecture_is_refused_up_front(tmp_path, embedded_path):
    model = _model_copy(embedded_path, tmp_path / "m")
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps(config | {"architectures": ["FooForCausalLM"]}))
    with pytest.raises(UnsupportedArchitectureError) as e:
        export_gguf(model, tmp_path / "out", "m", **QUIET)
    assert "FooForCausalLM" in str(e.value) and llamacpp.llama_cpp_version() in str(e.value)
    assert str(model / "config.json") in str(e.value)


def test_truncated_safetensors_is_named(tmp_path, embedded_path):
    model = _model_copy(embedded_path, tmp_path / "m", weights="none")
    with open(embedded_path / "model.safetensors", "rb") as f, \
            open(model / "model.safetensors", "wb") as out:
        out.write(f.read(5_000_000))
    with pytest.raises(ExportError, match="truncated") as e:
        export_gguf(model, tmp_path / "out", "m", **QUIET)
    assert str(model / "model.safetensors") in str(e.value)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_not_a_gguf_is_named(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 a zip file")
    with pytest.raises(ExportError, match="not a GGUF file"):
        gguf_metadata(fake)


def test_gguf_metadata_reads_the_header_as_llama_cpp_does(tmp_path):
    """The one reader of GGUF metadata (export, verify, Ollama registration): the header's
    values as llama.cpp's own model metadata gives them (as text, arrays left out), also for
    an adapter GGUF, which llama.cpp cannot load as a model."""
    from lorahelpers.models import embedded_gguf
    from tests.ollama_double import write_tiny_gguf

    llama_cpp = llamacpp.import_llama_cpp()
    with llamacpp.quiet_llama_logs():
        llm = llama_cpp.Llama(str(embedded_gguf()), vocab_only=True, verbose=False)
    try:
        assert gguf_metadata(embedded_gguf()) == llm.metadata
    finally:
        llm.close()
    adapter = write_tiny_gguf(tmp_path / "a.gguf", general_type="adapter", chat_template="{{ x }}")
    assert gguf_metadata(adapter) == {"general.architecture": "llama", "general.type": "adapter",
                                      "tokenizer.chat_template": "{{ x }}"}
    cut = tmp_path / "cut.gguf"
    with open(embedded_gguf(), "rb") as f:
        cut.write_bytes(f.read(100_000))  # ends inside the vocabulary
    with pytest.raises(ExportError, match=r"cut.gguf: its GGUF header cannot be read .*Fix: "):
        gguf_metadata(cut)


def test_architecture_is_checked_by_one_function_for_training_and_export(tmp_path):
    from lorahelpers.llamacpp import check_architecture

    conv = converter_dir(**QUIET)
    config = {"text_config": {"architectures": ["FooForCausalLM"]}}
    with pytest.raises(UnsupportedArchitectureError) as e:
        check_architecture(config, "some/model", conv)
    assert str(e.value).startswith("some/model: architecture 'FooForCausalLM' is not supported")
    assert check_architecture({"architectures": ["LlamaForCausalLM"]}, "m", conv) == \
        "LlamaForCausalLM"
    assert check_architecture({}, "m", conv) is None  # the export says what is missing


def test_bad_quant_and_name_are_rejected(tmp_path, embedded_path):
    with pytest.raises(ValueError, match="q4_k_m"):
        export_gguf(embedded_path, tmp_path, "m", ("q3_xs",), **QUIET)
    with pytest.raises(ValueError, match="file-name stem"):
        export_gguf(embedded_path, tmp_path, "a/b", **QUIET)


def test_disk_space_is_checked_before_writing(tmp_path, embedded_path, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=100_000_000))
    with pytest.raises(ExportError, match="Not enough disk space") as e:
        export_gguf(embedded_path, tmp_path / "out", "m", ("f16", "q4_k_m"), **QUIET)
    assert f"100 MB free, but exporting {embedded_path} to f16, q4_k_m needs about" in \
        str(e.value)
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.slow
def test_unrecognised_pre_tokenizer_from_the_real_converter(tmp_path, embedded_path):
    model = _model_copy(embedded_path, tmp_path / "m")
    tokenizer = json.loads((model / "tokenizer.json").read_text())
    pre = tokenizer["pre_tokenizer"]
    byte_level = next(p for p in pre.get("pretokenizers", [pre]) if p["type"] == "ByteLevel")
    byte_level["add_prefix_space"] = True  # encodes the test text differently
    (model / "tokenizer.json").write_text(json.dumps(tokenizer))
    with pytest.raises(TokenizerNotRecognizedError) as e:
        export_gguf(model, tmp_path / "out", "m", ("f16",), **QUIET)
    assert __import__("re").search(r"chkhsh [0-9a-f]{64}", str(e.value))
    assert list((tmp_path / "out").iterdir()) == []


# ---- GGUF export of the fine-tuned model

@pytest.mark.slow
def test_export_writes_each_quant_with_the_training_template(merged_ggufs, export_source):
    from tests.fixtures_export import QUANTS

    assert list(merged_ggufs) == list(QUANTS)
    folder = merged_ggufs["f16"].parent
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"model-{q}.gguf" for q in QUANTS)
    template = export_source.chat_format.jinja_template
    file_types = {"f16": "1", "bf16": "32", "q8_0": "7", "q4_k_m": "15", "q5_k_m": "17"}
    for quant, path in merged_ggufs.items():
        meta = gguf_metadata(path)
        assert meta["tokenizer.chat_template"] == template, quant
        assert meta["general.file_type"] == file_types[quant]
    sizes = {q: p.stat().st_size for q, p in merged_ggufs.items()}
    assert sizes["q4_k_m"] < sizes["q5_k_m"] < sizes["q8_0"] < sizes["f16"]


@pytest.mark.slow
def test_template_mismatch_fails_the_export(merged_dir, tmp_path):
    model = tmp_path / "m"
    shutil.copytree(merged_dir, model)
    # The converter prefers tokenizer_config.json's template; transformers reads the .jinja.
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["chat_template"] = "{{ messages[0]['content'] }}"
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    (model / "chat_template.jinja").write_text("{{ 'other' }}")
    with pytest.raises(ExportError, match="chat template differs"):
        export_gguf(model, tmp_path / "out", "m", ("q8_0",), **QUIET)
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.slow
def test_failed_quantize_leaves_nothing_behind(merged_dir, tmp_path, monkeypatch):
    def broken(src, dst, quant, nthread=0):
        Path(dst).write_bytes(b"GGUF half-written")
        raise RuntimeError("injected failure")

    monkeypatch.setattr("lorahelpers.export.quantize", broken)
    with pytest.raises(RuntimeError, match="injected"):
        export_gguf(merged_dir, tmp_path, "m", ("q4_k_m",), **QUIET)
    assert list(tmp_path.iterdir()) == []  # neither the part file nor the f16 intermediate


@pytest.mark.slow
def test_interrupted_converter_leaves_nothing_behind(merged_dir, tmp_path):
    def interrupt(line):
        if line.startswith("Writing"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export_gguf(merged_dir, tmp_path, "m", ("f16",), progress=interrupt)
    assert list(tmp_path.iterdir()) == []


def test_broken_tokenizer_is_named(tmp_path, embedded_path):
    model = _model_copy(embedded_path, tmp_path / "m")
    (model / "tokenizer.json").write_text("{ not json")
    with pytest.raises(ExportError, match="the tokenizer does not load"):
        export_gguf(model, tmp_path / "out", "m", ("q8_0",), **QUIET)
    assert list((tmp_path / "out").iterdir()) == []


def _tiny_llama(path: Path, embedded_path: Path, extra: dict) -> Path:
    from safetensors.numpy import save_file

    path.mkdir()
    rng = np.random.default_rng(0)
    h, ff, vocab = 64, 128, 49152
    shapes = {"model.embed_tokens.weight": (vocab, h), "model.norm.weight": (h,),
              **{f"model.layers.0.{k}.weight": s for k, s in {
                  "self_attn.q_proj": (h, h), "self_attn.k_proj": (h, h),
                  "self_attn.v_proj": (h, h), "self_attn.o_proj": (h, h),
                  "mlp.gate_proj": (ff, h), "mlp.up_proj": (ff, h), "mlp.down_proj": (h, ff),
                  "input_layernorm": (h,), "post_attention_layernorm": (h,)}.items()}}
    tensors = {k: rng.standard_normal(s, dtype=np.float32) * 0.02 for k, s in shapes.items()}
    save_file(tensors | extra, str(path / "model.safetensors"))
    config = json.loads((embedded_path / "config.json").read_text())
    config |= {"hidden_size": h, "intermediate_size": ff, "num_hidden_layers": 1,
               "num_attention_heads": 4, "num_key_value_heads": 4, "head_dim": 16}
    (path / "config.json").write_text(json.dumps(config))
    for name in TOKENIZER_FILES:
        shutil.copy(embedded_path / name, path / name)
    return path


def test_converter_failure_is_reported_and_leaves_nothing(tmp_path, embedded_path):
    extra = {"model.layers.0.mystery.weight": np.ones((4, 4), np.float32)}
    model = _tiny_llama(tmp_path / "m", embedded_path, extra)
    with pytest.raises(ExportError, match="convert_hf_to_gguf.py failed") as e:
        export_gguf(model, tmp_path / "out", "m", ("q8_0",), **QUIET)
    assert "mystery" in str(e.value) and str(model) in str(e.value)
    assert list((tmp_path / "out").iterdir()) == []


def test_tiny_model_converts(tmp_path, embedded_path):
    model = _tiny_llama(tmp_path / "m", embedded_path, {})
    paths = export_gguf(model, tmp_path / "out", "tiny", ("f16", "q8_0"), **QUIET)
    assert [p.name for p in paths.values()] == ["tiny-f16.gguf", "tiny-q8_0.gguf"]
    assert gguf_metadata(paths["q8_0"])["general.architecture"] == "llama"


# ---- memory of the streamed merge

MEASURE = textwrap.dedent("""
    import json, os, sys, threading, time
    import torch, transformers, safetensors
    from transformers import AutoTokenizer
    from lorahelpers.merge import merge_lora
    base, adapter, out = sys.argv[1:4]
    AutoTokenizer.from_pretrained(base)  # load the tokenizer code before the baseline
    page = os.sysconf("SC_PAGE_SIZE")
    def rss():
        return int(open("/proc/self/statm").read().split()[1]) * page
    peak, done = [rss()], []
    def sample():
        while not done:
            peak.append(rss())
            time.sleep(0.005)
    before = rss()
    sampler = threading.Thread(target=sample)
    sampler.start()
    merge_lora(adapter, out, base_dir=base, progress=lambda s: None)
    done.append(1)
    sampler.join()
    print(json.dumps({"before": before, "peak": max(peak)}))
""")


def _synthetic_checkpoint(path: Path, embedded_path: Path, shards: int, per_shard: int,
                          dim: int) -> Path:
    from safetensors.numpy import save_file

    path.mkdir()
    rng = np.random.default_rng(0)
    weight_map = {}
    for s in range(shards):
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        tensors = {f"model.layers.{s * per_shard + i}.mlp.up_proj.weight":
                   rng.standard_normal((dim, dim), dtype=np.float32) for i in range(per_shard)}
        save_file(tensors, str(path / name))
        weight_map |= dict.fromkeys(tensors, name)
    (path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    for name in TOKENIZER_FILES:
        shutil.copy(embedded_path / name, path / name)
    return path


@pytest.mark.slow
def test_merge_streams_one_block_at_a_time(tmp_path, embedded_path):
    shards, per_shard, dim = 8, 4, 2048
    base = _synthetic_checkpoint(tmp_path / "base", embedded_path, shards, per_shard, dim)
    rng = np.random.default_rng(1)
    lora = {}
    for layer in range(shards * per_shard):
        prefix = f"base_model.model.model.layers.{layer}.mlp.up_proj"
        lora[f"{prefix}.lora_A.weight"] = rng.standard_normal((8, dim), dtype=np.float32)
        lora[f"{prefix}.lora_B.weight"] = rng.standard_normal((dim, 8), dtype=np.float32)
    adapter = _write_adapter(tmp_path / "adapter", {"r": 8, "lora_alpha": 8,
                                                    "target_modules": ["up_proj"]}, lora)
    # A fixed malloc threshold returns freed blocks to the system at once, so RSS shows what
    # the merge holds rather than what glibc keeps cached for reuse.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(2**20))
    run = subprocess.run([sys.executable, "-c", MEASURE, str(base), str(adapter),
                          str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT,
                         env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    memory = json.loads(run.stdout.strip().splitlines()[-1])
    grew = memory["peak"] - memory["before"]
    total = shards * per_shard * dim * dim * 4
    # Loading the model would take `total` (512 MiB); streaming holds one shard's pages
    # (64 MiB) plus a few float32 blocks of one tensor (16 MiB each): about 150 MiB here.
    assert grew < total / 2, f"merge grew RSS by {grew / 2**20:.0f} MiB for {total / 2**20:.0f}"

    from safetensors import safe_open

    key = "model.layers.5.mlp.up_proj.weight"
    shard = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())[
        "weight_map"][key]
    with safe_open(base / shard, "np") as f, safe_open(tmp_path / "out" / shard, "np") as g:
        a = lora[f"base_model.model.{key[:-7]}.lora_A.weight"]
        b = lora[f"base_model.model.{key[:-7]}.lora_B.weight"]
        np.testing.assert_allclose(g.get_tensor(key), f.get_tensor(key) + b @ a, rtol=1e-5,
                                   atol=1e-4)
