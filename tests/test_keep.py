"""Keeping a run's files in a folder that outlives the runtime (a plain folder stands for Google
Drive): where the folder is, atomic copies, restore before resume, and a training process
killed with SIGKILL while copying a checkpoint, then run again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lorahelpers.errors import SettingsError
from lorahelpers.keep import Keeper, KeepFolderError, keep, keep_folder, last_checkpoint

ROOT = Path(__file__).resolve().parent.parent


# ---- where the keep folder is -----------------------------------------------------------------


def test_keep_folder_explicit_then_drive_then_none(tmp_path):
    drive = tmp_path / "MyDrive"
    assert keep_folder("", "outputs/alpaca", drive=drive) is None  # Drive not mounted
    drive.mkdir()
    assert keep_folder("", "outputs/alpaca", drive=drive) == drive / "lorahelpers" / "alpaca"
    assert keep_folder(str(tmp_path / "mine"), "outputs/alpaca", drive=drive) == tmp_path / "mine"
    assert keep_folder("off", "outputs/alpaca", drive=drive) is None
    assert keep_folder(" OFF ", "outputs/alpaca", drive=drive) is None
    # several training runs in one output_dir keep apart, at the same place inside
    assert keep_folder("", "outputs/reviews", run_dir="outputs/reviews/namer", drive=drive) == \
        drive / "lorahelpers" / "reviews" / "namer"
    assert keep_folder("/k", "outputs/reviews", run_dir="outputs/reviews") == Path("/k")


def test_train_settings_keep_each_run_in_its_own_place(tmp_path):
    from lorahelpers.params import Params
    from lorahelpers.pipeline import train_settings

    params = Params(output_dir=str(tmp_path / "reviews"), keep_dir=str(tmp_path / "k"))
    assert train_settings(params).keep_dir == tmp_path / "k"
    tagger = train_settings(params, output_dir=f"{params.output_dir}/tagger")
    assert tagger.keep_dir == tmp_path / "k" / "tagger"
    assert train_settings(Params(keep_dir="off")).keep_dir is None


# ---- copies -----------------------------------------------------------------------------------


def test_keep_copies_files_and_folders_to_their_place_under_root(tmp_path):
    run, folder = tmp_path / "run", tmp_path / "drive" / "run"
    (run / "gguf").mkdir(parents=True)
    gguf = run / "gguf" / "m-q8_0.gguf"
    gguf.write_bytes(b"GGUF" + bytes(100))
    (run / "adapter").mkdir()
    (run / "adapter" / "a.safetensors").write_bytes(b"A")
    assert keep(gguf, folder, root=run) == folder / "gguf" / "m-q8_0.gguf"
    assert (folder / "gguf" / "m-q8_0.gguf").read_bytes() == gguf.read_bytes()
    assert keep(run / "adapter", folder, root=run) == folder / "adapter"
    outside = tmp_path / "Modelfile"
    outside.write_text("FROM ./m.gguf\n")
    assert keep(outside, folder, root=run) == folder / "Modelfile"  # not under root: its name
    assert keep(gguf, None) is None
    with pytest.raises(SettingsError, match="nothing to keep.*Fix:"):
        keep(run / "missing.gguf", folder)


def test_keep_replaces_changed_files_and_skips_identical_ones(tmp_path):
    src, folder = tmp_path / "history.json", tmp_path / "keep"
    src.write_text("[1]")
    copy = keep(src, folder)
    first = copy.stat().st_ino
    keep(src, folder)
    assert copy.stat().st_ino == first  # identical: not copied again
    src.write_text("[1, 2]")
    keep(src, folder)
    assert copy.read_text() == "[1, 2]"
    # a changed folder replaces the kept one as a whole
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "old.bin").write_bytes(b"1")
    keep(tmp_path / "adapter", folder)
    (tmp_path / "adapter" / "old.bin").unlink()
    (tmp_path / "adapter" / "new.bin").write_bytes(b"2")
    keep(tmp_path / "adapter", folder)
    assert [p.name for p in (folder / "adapter").iterdir()] == ["new.bin"]
    assert sorted(p.name for p in folder.iterdir()) == ["adapter", "history.json"]


def _checkpoint(directory: Path, step: int, complete: bool = True) -> Path:
    path = directory / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "optimizer.pt").write_bytes(bytes([step]))
    if complete:
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return path


def test_start_restores_the_newest_kept_checkpoint_of_the_same_run(tmp_path):
    folder, out = tmp_path / "drive", tmp_path / "run"
    Keeper.start(folder, out, "abc")  # first run: records what it computes
    _checkpoint(folder / "checkpoints", 2)
    _checkpoint(folder / "checkpoints", 4)
    _checkpoint(folder / "checkpoints", 6, complete=False)  # trainer state never written
    half = folder / "checkpoints" / ".checkpoint-8.1a2b.part"
    half.mkdir()
    (folder / "history.json").write_text('{"records": []}')
    _checkpoint(out / "checkpoints", 2)  # what survived locally, older

    keeper = Keeper.start(folder, out, "abc")
    assert keeper.resumable
    assert last_checkpoint(out / "checkpoints") == out / "checkpoints" / "checkpoint-4"
    assert (out / "checkpoints" / "checkpoint-4" / "optimizer.pt").read_bytes() == bytes([4])
    assert (out / "history.json").read_text() == '{"records": []}'
    assert not half.exists()

    # a local checkpoint newer than the kept ones is left as it is
    _checkpoint(out / "checkpoints", 10)
    (out / "checkpoints" / "checkpoint-10" / "optimizer.pt").write_bytes(b"local")
    assert Keeper.start(folder, out, "abc").resumable
    assert (out / "checkpoints" / "checkpoint-10" / "optimizer.pt").read_bytes() == b"local"


def test_start_clears_checkpoints_of_another_run(tmp_path, capsys):
    folder, out = tmp_path / "drive", tmp_path / "run"
    Keeper.start(folder, out, "abc")
    _checkpoint(folder / "checkpoints", 4)
    keeper = Keeper.start(folder, out, "other settings")
    assert not keeper.resumable
    assert "other settings, data or model" in capsys.readouterr().out
    assert not (folder / "checkpoints").exists() and not (out / "checkpoints").exists()
    assert json.loads((folder / "run.json").read_text()) == {"fingerprint": "other settings"}


def test_start_refuses_a_folder_with_checkpoints_it_did_not_write(tmp_path):
    mine = _checkpoint(tmp_path / "drive" / "checkpoints", 7)
    with pytest.raises(KeepFolderError, match="did not write.*Fix: set keep_dir to an empty"):
        Keeper.start(tmp_path / "drive", tmp_path / "run", "abc")
    assert (mine / "optimizer.pt").is_file()


# ---- a training process killed mid-copy, then run again ----------------------------------------

CHILD = textwrap.dedent("""
    import shutil, signal, os, sys
    from pathlib import Path
    from tests.test_keep import run_settings, tiny_rows
    from lorahelpers.chat import get_chat_format
    from lorahelpers.models import LoraSettings, add_lora, load_model
    from lorahelpers.training import train

    model_dir, out, folder, kill_at = sys.argv[1:5]
    copytree = shutil.copytree

    def dying_copytree(src, dst, **kwargs):
        # SIGKILL (no cleanup of any kind) after the first file of checkpoint-<kill_at>
        if Path(src).name != f"checkpoint-{kill_at}":
            return copytree(src, dst, **kwargs)
        def copy_then_die(a, b):
            shutil.copy2(a, b)
            os.kill(os.getpid(), signal.SIGKILL)
        return copytree(src, dst, copy_function=copy_then_die, **kwargs)

    shutil.copytree = dying_copytree
    fmt = get_chat_format("chatml")
    model, tokenizer = load_model(model_dir, max_seq_length=64, chat_format=fmt)
    model = add_lora(model, LoraSettings(r=4, alpha=8, seed=3407))
    train(model, tokenizer, tiny_rows(), None, chat_format=fmt, settings=run_settings(out, folder))
    print("finished without being killed")
""")


def tiny_rows() -> list:
    return [[{"role": "user", "content": f"What is {a} plus {b}?"},
             {"role": "assistant", "content": str(a + b)}]
            for a, b in [(2, 3), (10, 7), (4, 4), (21, 9), (6, 1), (13, 13)]]


def run_settings(out, folder=None):
    from lorahelpers.training import TrainSettings

    return TrainSettings(output_dir=out, keep_dir=folder, max_steps=8, batch_size=2,
                         learning_rate=1e-2, warmup_steps=1, save_steps=2, save_total_limit=2,
                         eval_steps=0, progress="none", reraise_interrupt=False)


@pytest.fixture(scope="module")
def tiny_model(embedded_path, tmp_path_factory) -> Path:
    """A one-layer Llama with random weights and the embedded model's tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("tiny")
    tokenizer = AutoTokenizer.from_pretrained(embedded_path)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=128, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _tiny_lora(model_dir: Path, seed: int):
    from lorahelpers.chat import get_chat_format
    from lorahelpers.models import LoraSettings, add_lora, load_model

    fmt = get_chat_format("chatml")
    model, tokenizer = load_model(model_dir, max_seq_length=64, chat_format=fmt)
    return add_lora(model, LoraSettings(r=4, alpha=8, seed=seed)), tokenizer, fmt


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.mark.slow
def test_a_run_killed_while_keeping_a_checkpoint_resumes_from_the_kept_one(tiny_model, tmp_path):
    import torch

    from lorahelpers.history import History
    from lorahelpers.training import train
    from tests.test_training import FirstOptimizerState, lora_weights

    folder = tmp_path / "drive" / "run"  # stands for /content/drive/MyDrive/lorahelpers/run
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    killed = subprocess.run([sys.executable, "-c", CHILD, str(tiny_model),
                             str(tmp_path / "lost"), str(folder), "6"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    kept = folder / "checkpoints"
    # the copy of checkpoint-6 was cut short: only a hidden temporary holds part of it
    assert sorted(p.name for p in kept.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert [p.name.startswith(".checkpoint-6.") for p in kept.glob(".*")] == [True]

    saved = torch.load(kept / "checkpoint-4" / "optimizer.pt", weights_only=True)

    # A new runtime: an empty disk, a fresh model with other LoRA weights, the same cells.
    probe = FirstOptimizerState()
    model, tokenizer, fmt = _tiny_lora(tiny_model, seed=1)
    out = tmp_path / "new-runtime"
    resumed = train(model, tokenizer, tiny_rows(), None, chat_format=fmt,
                    settings=run_settings(out, folder),
                    callbacks=[probe])
    assert resumed.resumed_from == out / "checkpoints" / "checkpoint-4"
    assert resumed.steps == 8 and not resumed.interrupted
    assert [r["step"] for r in resumed.history.records] == list(range(1, 9))

    assert saved["state"] and probe.state.keys() == saved["state"].keys()
    for key, state in saved["state"].items():
        assert int(probe.state[key]["step"]) == 4
        torch.testing.assert_close(probe.state[key]["exp_avg"], state["exp_avg"])
        torch.testing.assert_close(probe.state[key]["exp_avg_sq"], state["exp_avg_sq"])

    # Nothing lost: the keep folder holds every file of the finished run, byte for byte.
    assert not list(kept.glob(".*"))
    local, mirror = _files(out), _files(folder)
    # both record the run they hold (run.json): the same fingerprint
    assert set(local) == set(mirror)
    assert all(local[name] == mirror[name] for name in local)
    assert sorted(p.name for p in kept.glob("checkpoint-*")) == ["checkpoint-6", "checkpoint-8"]
    assert [r["step"] for r in History.load(folder).records] == list(range(1, 9))

    # ... and it ends where a run that was never killed ends.
    straight, tokenizer, fmt = _tiny_lora(tiny_model, seed=3407)
    train(straight, tokenizer, tiny_rows(), None, chat_format=fmt,
          settings=run_settings(tmp_path / "straight"))
    for name, weight in lora_weights(straight).items():
        torch.testing.assert_close(lora_weights(model)[name], weight, rtol=1e-4, atol=1e-6)
