"""One loss for every model and launcher: label_loss equals the model's own loss for heads that
scale or cap their logits, a model wrapped for several processes computes it through the
wrapper's forward, and training never reaches TRL's own loss (whose fused LM head fails on CPU
under trl 1.15). Tiny random-weight models, no tokenizer: fast."""

from __future__ import annotations

import pytest
import torch

from lorahelpers.batches import IGNORE, PadCollator, label_loss, logit_transform
from lorahelpers.models import LoraSettings, add_lora

VOCAB = 96
TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, max_position_embeddings=128, vocab_size=VOCAB,
            initializer_range=0.5, pad_token_id=0, bos_token_id=1, eos_token_id=2)
# (config class, what its head does to the logits)
HEADS = {
    "llama": ("LlamaConfig", {}),
    "gemma2": ("Gemma2Config", {"final_logit_softcapping": 0.5, "query_pre_attn_scalar": 8}),
    "cohere": ("CohereConfig", {"logit_scale": 3.0}),
    "granite": ("GraniteConfig", {"logits_scaling": 4.0}),
}


def tiny_model(arch: str, lora: bool = True):
    import transformers

    class_name, extra = HEADS[arch]
    config = getattr(transformers, class_name)(**TINY, **extra)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return add_lora(model, LoraSettings(r=4, alpha=8, seed=0)) if lora else model


def batch():
    """Two conversations of different lengths, labels on a few answer tokens of each."""
    g = torch.Generator().manual_seed(1)
    examples = []
    for length, answer in ((12, 3), (9, 5)):
        ids = torch.randint(3, VOCAB, (length,), generator=g).tolist()
        examples.append({"input_ids": ids, "labels": [IGNORE] * (length - answer) + ids[-answer:]})
    return PadCollator(0)(examples)


@pytest.mark.parametrize("arch", sorted(HEADS))
def test_label_loss_is_the_models_own_loss_for_every_head(arch):
    model = tiny_model(arch)
    model.eval()
    inputs = batch()
    with torch.no_grad():
        ours, theirs = float(label_loss(model, inputs)), float(model(**inputs).loss)
    assert ours == pytest.approx(theirs, rel=1e-5)
    assert (logit_transform(model) is None) == (arch == "llama")
    if arch != "llama":  # the transform matters: without it the loss is another number
        from lorahelpers import batches

        plain = batches.logit_transform
        batches.logit_transform = lambda model: None
        try:
            with torch.no_grad():
                assert float(label_loss(model, inputs)) != pytest.approx(theirs, rel=1e-3)
        finally:
            batches.logit_transform = plain


@pytest.fixture
def process_group(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0,
                            world_size=1)
    yield
    dist.destroy_process_group()


def test_a_wrapped_model_computes_our_loss_through_the_wrappers_forward(process_group):
    from torch.nn.parallel import DistributedDataParallel

    from lorahelpers.training import wrapped_loss

    model = tiny_model("gemma2")
    model.train()
    inputs = batch()
    expected = label_loss(model, inputs)
    expected.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()

    wrapper = DistributedDataParallel(model)
    calls = []
    forward = model.forward  # the class's forward: no instance attribute before or after
    original = DistributedDataParallel.forward

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    DistributedDataParallel.forward = counted
    try:
        loss = wrapped_loss(wrapper, model, inputs)
    finally:
        DistributedDataParallel.forward = original
    assert calls == [1]  # through the wrapper, which synchronises the gradients
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert torch.allclose(p.grad, grads[name], rtol=1e-5, atol=1e-7), name
    assert "forward" not in model.__dict__ and model.forward == forward


def test_training_a_soft_capped_model_never_uses_trls_loss(tmp_path, monkeypatch,
                                                           embedded_tokenizer):
    """Gemma 2's capped head went to TRL's loss, whose fused LM head fails on CPU under trl
    1.15; now it trains on ours."""
    import trl

    from lorahelpers.chat import get_chat_format
    from lorahelpers.training import TrainSettings, train

    def refuse(*args, **kwargs):
        raise AssertionError("SFTTrainer.compute_loss was called")

    monkeypatch.setattr(trl.SFTTrainer, "compute_loss", refuse)
    import transformers

    config = transformers.Gemma2Config(**TINY | {"vocab_size": len(embedded_tokenizer),
                                                "pad_token_id": embedded_tokenizer.pad_token_id},
                                       final_logit_softcapping=30.0, query_pre_attn_scalar=8)
    torch.manual_seed(0)
    model = add_lora(transformers.AutoModelForCausalLM.from_config(config),
                     LoraSettings(r=4, alpha=8, seed=0))
    rows = [[{"role": "user", "content": f"Say {w}."}, {"role": "assistant", "content": w}]
            for w in ("yes", "no", "maybe", "never")]
    result = train(model, embedded_tokenizer, rows, rows[:2], chat_format=get_chat_format("chatml"),
                   settings=TrainSettings(output_dir=tmp_path, max_steps=2, batch_size=2,
                                          eval_steps=2,
                                 precision="fp32", progress="none", reraise_interrupt=False))
    assert result.steps == 2
    losses = [v for v in result.history.column("loss") if v is not None]
    assert len(losses) == 2 and all(loss > 0 for loss in losses), losses
