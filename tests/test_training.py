"""Training: loss masking, batching, settings, the loss itself, a short run, interrupt and
resume, saved adapters and history files. Runs on the embedded model with tiny batches."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import TrainerCallback

from lorahelpers.batches import (
    IGNORE,
    LengthGroupedSampler,
    PadCollator,
    label_loss,
    tokenize_conversations,
)
from lorahelpers.chat import get_chat_format
from lorahelpers.history import History
from lorahelpers.models import (
    ALL_PROJECTIONS,
    LoraSettings,
    ModelError,
    adapter_info,
    add_lora,
    load_adapter,
    load_model,
)
from lorahelpers.runtime import RuntimeReport
from lorahelpers.training import TrainSettings, train

CHATML = get_chat_format("chatml")


def conv(question: str, answer: str, system: str | None = None) -> list[dict]:
    head = [{"role": "system", "content": system}] if system else []
    return head + [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


TINY = [conv(f"What is {a} plus {b}?", str(a + b)) for a, b in
        [(2, 3), (10, 7), (4, 4), (21, 9), (6, 1), (13, 13)]]


def quick(tmp_path, **overrides) -> TrainSettings:
    values = dict(output_dir=tmp_path, max_steps=4, batch_size=2, learning_rate=1e-3,
                  warmup_steps=1, save_steps=2, eval_steps=0, progress="none",
                  reraise_interrupt=False)
    return TrainSettings(**values | overrides)


def fresh_model(embedded_path, seed: int = 3407):
    model, tokenizer = load_model(embedded_path, max_seq_length=128, chat_format=CHATML)
    return add_lora(model, LoraSettings(seed=seed)), tokenizer


# ---- masking ---------------------------------------------------------------------------------


def test_labels_cover_exactly_the_assistant_contents_and_their_eos(embedded_tokenizer):
    talk = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": "And of Italy?"},
            {"role": "assistant", "content": "Rome, since 1871."}]
    (example,), dropped = tokenize_conversations(embedded_tokenizer, [talk], CHATML)
    assert dropped == 0
    ids, labels = example["input_ids"], example["labels"]
    assert len(ids) == len(labels)
    # Runs of labelled tokens, decoded, are the answers each followed by the eos.
    runs, current = [], []
    for token, label in zip(ids, labels, strict=True):
        if label == IGNORE:
            if current:
                runs.append(current)
            current = []
        else:
            assert label == token
            current.append(token)
    if current:
        runs.append(current)
    decoded = [embedded_tokenizer.decode(run) for run in runs]
    assert decoded == ["Paris.<|im_end|>", "Rome, since 1871.<|im_end|>"]
    # Everything else, the prompt text included, is ignored.
    text = CHATML.render(talk)
    assert embedded_tokenizer.decode(ids) == text
    assert sum(label != IGNORE for label in labels) == sum(len(r) for r in runs)


def test_truncation_drops_conversations_left_without_an_answer(embedded_tokenizer):
    long_question = conv("word " * 200, "short answer")
    short = conv("Hi", "Hello")
    examples, dropped = tokenize_conversations(embedded_tokenizer, [long_question, short],
                                               CHATML, max_seq_length=64)
    assert dropped == 1
    assert len(examples) == 1 and len(examples[0]["input_ids"]) < 64
    kept, _ = tokenize_conversations(embedded_tokenizer, [long_question], CHATML, 1024)
    assert len(kept[0]["input_ids"]) > 64


def test_a_conversation_without_a_final_answer_is_named(embedded_tokenizer):
    bad = [{"role": "user", "content": "Hi"}]
    with pytest.raises(ValueError, match="conversation 1"):
        tokenize_conversations(embedded_tokenizer, [TINY[0], bad], CHATML)
    from lorahelpers.errors import ChatFormatError

    with pytest.raises(ChatFormatError, match="conversation 0: expected a list .* Fix: "):
        tokenize_conversations(embedded_tokenizer, ["not a conversation"], CHATML)


def test_rows_with_a_messages_key_are_accepted(embedded_tokenizer):
    plain, _ = tokenize_conversations(embedded_tokenizer, TINY[:2], CHATML)
    rows, _ = tokenize_conversations(embedded_tokenizer, [{"messages": c} for c in TINY[:2]],
                                     CHATML)
    assert plain == rows


# ---- batching --------------------------------------------------------------------------------


def test_pad_collator_pads_to_the_longest_and_masks_padding():
    batch = PadCollator(pad_token_id=0)([
        {"input_ids": [5, 6, 7], "labels": [IGNORE, 6, 7]},
        {"input_ids": [8], "labels": [8]},
    ])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7], [8, IGNORE, IGNORE]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    wide = PadCollator(pad_token_id=0, pad_to_multiple_of=8)([{"input_ids": [1], "labels": [1]}])
    assert wide["input_ids"].shape == (1, 8)


def test_length_grouped_sampler_groups_similar_lengths_deterministically():
    lengths = [(i * 37) % 101 + 1 for i in range(100)]
    sampler = LengthGroupedSampler(lengths, batch_size=4, seed=1, group_batches=5)
    order = list(sampler)
    assert sorted(order) == list(range(100))
    assert list(sampler) == order  # same epoch, same order
    sampler.set_epoch(1)
    assert list(sampler) != order
    batches = [order[i:i + 4] for i in range(0, 100, 4)]
    spread = sum(max(lengths[j] for j in b) - min(lengths[j] for j in b) for b in batches)
    shuffled = torch.randperm(100, generator=torch.Generator().manual_seed(0)).tolist()
    random_spread = sum(max(lengths[j] for j in shuffled[i:i + 4]) -
                        min(lengths[j] for j in shuffled[i:i + 4]) for i in range(0, 100, 4))
    assert spread < random_spread / 3


def test_a_partial_batch_comes_last_so_batches_stay_aligned():
    sampler = LengthGroupedSampler(list(range(1, 12)), batch_size=4, seed=0, group_batches=1)
    order = list(sampler)
    batches = [order[i:i + 4] for i in range(0, len(order), 4)]
    assert [len(b) for b in batches] == [4, 4, 3]


# ---- settings --------------------------------------------------------------------------------


def report(cuda: bool, bf16: bool) -> RuntimeReport:
    return RuntimeReport(cuda=cuda, gpu_name="T4" if cuda else None,
                         gpu_memory_gb=15.0 if cuda else None, bf16=bf16, unsloth=False,
                         colab=False, cpu_threads=2, torch_version="2", python_version="3.11")


def test_defaults_follow_the_device():
    cpu = TrainSettings().resolved(report(cuda=False, bf16=True))
    assert (cpu.gradient_checkpointing, cpu.precision, cpu.optim) == (False, "bf16", "adamw_torch")
    assert cpu.batch_size == 8 and cpu.grad_accum == 1 and cpu.learning_rate == 5e-4
    assert cpu.max_seq_length == 256  # the machine's default when no model says otherwise
    gpu = TrainSettings().resolved(report(cuda=True, bf16=False))
    assert gpu.gradient_checkpointing is True and gpu.precision == "fp16"
    assert gpu.optim in ("adamw_8bit", "adamw_torch_fused")
    assert gpu.batch_size == 2 and gpu.grad_accum == 4 and gpu.learning_rate == 2e-4
    assert gpu.max_seq_length == 2048
    mine = TrainSettings(batch_size=3, precision="fp32").resolved(report(cuda=False, bf16=True))
    assert mine.batch_size == 3 and mine.precision == "fp32"


@pytest.mark.parametrize("bad, match", [
    (dict(batch_size=0), "batch_size"),
    (dict(learning_rate=2.0), "learning_rate"),
    (dict(max_steps=0, num_epochs=0), "max_steps"),
    (dict(progress="loud"), "progress"),
    (dict(eval_steps=-1), "eval_steps"),
])
def test_bad_settings_say_what_to_fix(bad, match):
    with pytest.raises(ValueError, match=match):
        TrainSettings(**bad)


def test_lora_settings_validate_and_scale():
    assert LoraSettings().target_modules == ALL_PROJECTIONS
    assert LoraSettings(r=16, alpha=32).scale == 2.0
    assert LoraSettings(r=16, alpha=16, use_rslora=True).scale == 4.0
    for bad in (dict(r=0), dict(alpha=0), dict(dropout=1.0), dict(target_modules=()),
                dict(target_modules=("lm_head",))):
        with pytest.raises(ValueError, match="LoraSettings"):
            LoraSettings(**bad)


# ---- models ----------------------------------------------------------------------------------


def test_missing_models_get_an_error_that_points_to_the_embedded_base(tmp_path):
    with pytest.raises(ModelError, match="embedded_base"):
        load_model(tmp_path / "nope")
    with pytest.raises(ModelError, match="config.json"):
        load_model(tmp_path)
    with pytest.raises(ModelError, match="embedded_base"):  # the Hub is offline in tests
        load_model("someone/not-a-model-xyz")


def test_load_model_installs_the_template_and_a_pad_token(embedded_path):
    model, tokenizer = load_model(embedded_path, chat_format="chatml")
    assert tokenizer.chat_template == CHATML.jinja_template
    assert tokenizer.pad_token is not None
    assert next(model.parameters()).dtype == torch.float32
    with pytest.raises(ValueError, match="not layers of this model"):
        add_lora(model, LoraSettings(target_modules=("query_key_value",)))


# ---- the loss and a short run ----------------------------------------------------------------


def hf_loss(model, batch) -> float:
    with torch.no_grad():
        return float(model(**batch).loss)


def test_label_loss_equals_the_models_own_loss(embedded_path, embedded_tokenizer):
    model, _ = fresh_model(embedded_path)
    model.eval()
    examples, _ = tokenize_conversations(embedded_tokenizer, TINY[:4], CHATML)
    batch = PadCollator(embedded_tokenizer.pad_token_id)(examples)
    with torch.no_grad():
        ours = float(label_loss(model, batch))
    assert ours == pytest.approx(hf_loss(model, batch), rel=1e-4)
    # In chunks (as for long sequences) it is the same number.
    from lorahelpers import batches

    labels = batch["labels"][:, 1:]
    with torch.no_grad():
        hidden = model.get_base_model().model(input_ids=batch["input_ids"],
                                              attention_mask=batch["attention_mask"])[0]
        mask = labels != IGNORE
        head = model.get_base_model().get_output_embeddings()
        whole = batches._label_nll(hidden[:, :-1][mask], labels[mask], head)
        chunked = batches._label_nll(hidden[:, :-1][mask], labels[mask], head,
                                      chunk_elements=1)
    assert float(chunked) == pytest.approx(float(whole), rel=1e-5)


@pytest.mark.slow
def test_training_lowers_the_loss_and_writes_adapter_and_history(embedded_path, tmp_path):
    model, tokenizer = fresh_model(embedded_path)
    examples, _ = tokenize_conversations(tokenizer, TINY[:4], CHATML)
    batch = PadCollator(tokenizer.pad_token_id)(examples)
    model.eval()
    before = hf_loss(model, batch)
    result = train(model, tokenizer, TINY[:4], TINY[4:], chat_format=CHATML,
                   settings=quick(tmp_path, max_steps=8, batch_size=4, eval_steps=4, save_steps=4))
    after = hf_loss(model, batch)
    assert after < 0.7 * before, (before, after)
    assert not model.training and result.steps == 8 and not result.interrupted

    # History: one record per step, the same in JSON and CSV, eval loss at eval steps.
    assert [r["step"] for r in result.history.records] == list(range(1, 9))
    saved = History.load(tmp_path / "history.json")
    assert saved.records == result.history.records
    frame = __import__("pandas").read_csv(tmp_path / "history.csv")
    assert frame["step"].tolist() == list(range(1, 9))
    assert frame["loss"].tolist() == pytest.approx(result.history.column("loss"))
    assert [r["step"] for r in saved.records if r["eval_loss"] is not None] == [4, 8]
    assert all(r["tokens"] > 0 and r["tokens_per_s"] > 0 and r["grad_norm"] is not None
               for r in saved.records)
    assert saved.records[0]["learning_rate"] < saved.records[1]["learning_rate"]  # warm-up

    # The adapter reloads onto its base and gives the same logits.
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    info = adapter_info(result.adapter_dir)
    assert info["steps"] == 8 and info["chat_format"]["name"] == "chatml"
    loaded, loaded_tokenizer = load_adapter(result.adapter_dir)
    assert loaded_tokenizer.chat_template == CHATML.jinja_template
    with torch.no_grad():
        a = model(**batch).logits
        b = loaded(**batch).logits
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("checkpoint-*")) == \
        ["checkpoint-4", "checkpoint-8"]


class StopAt(TrainerCallback):
    """Presses Ctrl-C after step k."""

    def __init__(self, k: int):
        self.k = k

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.k:
            raise KeyboardInterrupt


class FirstOptimizerState(TrainerCallback):
    """Records the optimizer state as the first step after (re)start begins."""

    def __init__(self):
        self.state = None

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        if self.state is None:
            self.state = {k: {n: t.clone() if torch.is_tensor(t) else t for n, t in v.items()}
                          for k, v in optimizer.state_dict()["state"].items()}


def lora_weights(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


@pytest.mark.slow
def test_interrupt_keeps_the_adapter_and_resume_continues_with_optimizer_state(
        embedded_path, tmp_path):
    straight_model, tokenizer = fresh_model(embedded_path)
    train(straight_model, tokenizer, TINY, None, chat_format=CHATML,
          settings=quick(tmp_path / "straight"))

    out = tmp_path / "stopped"
    model, tokenizer = fresh_model(embedded_path)
    stopped = train(model, tokenizer, TINY, None, chat_format=CHATML, settings=quick(out),
                    callbacks=[StopAt(3)])
    assert stopped.interrupted and stopped.steps == 3
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert adapter_info(out / "adapter")["interrupted"] is True
    # Ctrl-C came before step 3 was logged; the adapter has its update all the same.
    assert [r["step"] for r in History.load(out).records] == [1, 2]

    # A checkpoint that Ctrl-C cut short (no trainer_state.json) is not resumed from.
    partial = out / "checkpoints" / "checkpoint-3"
    partial.mkdir()
    (partial / "adapter_model.safetensors").write_bytes(b"half")

    # A new session: fresh model, resume=True.
    probe = FirstOptimizerState()
    model, tokenizer = fresh_model(embedded_path, seed=1)  # different init, overwritten
    resumed = train(model, tokenizer, TINY, None, chat_format=CHATML, settings=quick(out,
                                                                                     resume=True),
                    callbacks=[probe])
    assert resumed.resumed_from == out / "checkpoints" / "checkpoint-2"
    assert resumed.steps == 4 and not resumed.interrupted and not partial.exists()
    assert [r["step"] for r in resumed.history.records] == [1, 2, 3, 4]

    saved = torch.load(out / "checkpoints" / "checkpoint-2" / "optimizer.pt", weights_only=True)
    assert probe.state.keys() == saved["state"].keys()
    for key, state in saved["state"].items():
        assert int(probe.state[key]["step"]) == 2
        torch.testing.assert_close(probe.state[key]["exp_avg"], state["exp_avg"])
        torch.testing.assert_close(probe.state[key]["exp_avg_sq"], state["exp_avg_sq"])

    # Interrupted + resumed ends where the uninterrupted run ended.
    for name, weight in lora_weights(straight_model).items():
        torch.testing.assert_close(lora_weights(model)[name], weight, rtol=1e-4, atol=1e-6)

    # The same checkpoints are refused to a run with another learning rate or other data.
    from lorahelpers.errors import TrainingError

    for other in (dict(learning_rate=5e-4), dict(rows=TINY[:3])):
        model, tokenizer = fresh_model(embedded_path)
        with pytest.raises(TrainingError, match="other settings, data or model.*Fix: "
                                                "resume=False"):
            train(model, tokenizer, other.pop("rows", TINY), None, chat_format=CHATML,
                  settings=quick(out, resume=True, **other))
    assert (out / "checkpoints" / "checkpoint-4").is_dir()  # refused, not cleared


@pytest.mark.slow
def test_a_fresh_run_clears_checkpoints_of_an_earlier_run(embedded_path, tmp_path):
    stale = tmp_path / "checkpoints" / "checkpoint-999"
    stale.mkdir(parents=True)
    (stale / "trainer_state.json").write_text(json.dumps({}))
    model, tokenizer = fresh_model(embedded_path)
    result = train(model, tokenizer, TINY[:2], None, chat_format=CHATML,
                   settings=quick(tmp_path, max_steps=1))
    assert result.steps == 1 and not stale.exists()


def test_train_needs_lora_adapters(embedded_path, tmp_path):
    model, tokenizer = load_model(embedded_path)
    with pytest.raises(ValueError, match="add_lora"):
        train(model, tokenizer, TINY, None, chat_format=CHATML, settings=quick(tmp_path))


@pytest.mark.slow
def test_the_finetuned_fixture_learned_the_task(finetuned):
    losses = finetuned.history.column("loss")
    assert losses[-1] < losses[0] / 4
    assert not finetuned.model.training
    assert next(finetuned.model.parameters()).dtype == torch.float32
    assert (finetuned.adapter_dir / "adapter_model.safetensors").is_file()
    assert finetuned.tokenizer.chat_template == finetuned.chat_format.jinja_template


@pytest.mark.gpu
def test_gpu_training_runs_with_the_device_defaults(embedded_path, tmp_path):
    model, tokenizer = load_model(embedded_path, max_seq_length=128, chat_format=CHATML)
    model = add_lora(model)
    result = train(model, tokenizer, TINY, None, chat_format=CHATML,
                   settings=TrainSettings(output_dir=tmp_path, max_steps=3, progress="none",
                                 reraise_interrupt=False))
    assert result.steps == 3
    assert result.settings.optim in ("adamw_8bit", "adamw_torch_fused")
    assert all(r["loss"] is not None for r in result.history.records)


def test_cpu_training_runs_under_bf16_autocast_where_supported(embedded_path, tmp_path):
    from lorahelpers.runtime import runtime_report

    if not runtime_report().bf16 or torch.cuda.is_available():
        pytest.skip("this CPU has no fast bf16")
    model, tokenizer = fresh_model(embedded_path)
    seen = []
    layer = model.get_base_model().model.layers[0].self_attn.q_proj
    handle = layer.register_forward_hook(lambda m, args, out: seen.append(out.dtype))
    try:
        weights = {n: p for n, p in model.named_parameters()}
        train(model, tokenizer, TINY[:2], None, chat_format=CHATML,
              settings=quick(tmp_path, max_steps=1))
        assert seen and set(seen) == {torch.bfloat16}
        seen.clear()
        with torch.no_grad():  # afterwards the model runs in float32 again
            model(**tokenizer(["Hi"], return_tensors="pt"))
        assert seen == [torch.float32]
        # ...with the very same weights, the LM head still tied, the attention as loaded.
        after = dict(model.named_parameters())
        assert after.keys() == weights.keys()
        assert all(after[n] is p and p.dtype == torch.float32 for n, p in weights.items())
        assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
        assert model.config._attn_implementation == "sdpa"
    finally:
        handle.remove()
