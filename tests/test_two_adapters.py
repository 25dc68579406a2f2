"""Two LoRA adapters over one base (lorahelpers.compare and the namer sample data): the score
tables line models up correctly, the base checkpoint carries the training template without
copying weights, two adapter GGUFs over one base GGUF behave in llama.cpp as their PyTorch
models do, and in Ollama they become two models on every release: adapter layers sharing the
base file where adapters are accepted, merged models from 0.34.1."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from lorahelpers.chat import get_chat_format
from lorahelpers.compare import TaskScores
from lorahelpers.merge import base_with_template
from tests.ollama_double import VERSIONS

DATA = Path(__file__).resolve().parents[1] / "data"
CHATML = get_chat_format("chatml")


def rows(name):
    return [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines()]


def make_extract():
    import sys

    sys.path.insert(0, str(DATA))  # the script imports make_samples from its own folder
    try:
        spec = importlib.util.spec_from_file_location("make_extract", DATA / "make_extract.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(DATA))


# ---- the namer's data -------------------------------------------------------------------------

@pytest.mark.parametrize("split", ["train", "eval"])
def test_namer_data_asks_another_question_about_the_same_reviews(split):
    reviews, named = rows(f"alpaca_{split}.jsonl"), rows(f"extract_{split}.jsonl")
    assert [r["input"] for r in named] == [r["input"] for r in reviews]
    assert {r["instruction"] for r in named} == {"Name the product."}
    for r in named:
        assert r["output"] and r["output"] in r["input"], r


def test_namer_data_is_what_the_script_writes():
    script = make_extract()
    products = script.PRODUCTS + script.EVAL_PRODUCTS
    for target, source in script.SOURCES.items():
        expected = "".join(json.dumps(r, ensure_ascii=False) + "\n"
                           for r in script.extract_rows(rows(source), products))
        assert (DATA / target).read_text(encoding="utf-8") == expected, target


def test_namer_eval_has_products_training_never_names():
    seen = {r["output"] for r in rows("extract_train.jsonl")}
    unseen = [r for r in rows("extract_eval.jsonl") if r["output"] not in seen]
    assert len(unseen) >= 5


def test_product_of_prefers_the_longest_name_and_refuses_reviews_without_one():
    script = make_extract()
    assert script.product_of("My desk lamp broke.", ["lamp", "desk lamp"]) == "desk lamp"
    with pytest.raises(ValueError, match="no known product"):
        script.product_of("It broke.", ["lamp"])


# ---- TaskScores -------------------------------------------------------------------------------

def report(answers, expected, prompts=None):
    from lorahelpers.inference import EvalReport

    prompts = prompts or [f"q{i}" for i in range(len(answers))]
    rows_ = [{"prompt": p, "expected": e, "answer": a, "correct": float(a == e)}
             for p, e, a in zip(prompts, expected, answers, strict=True)]
    return EvalReport(100.0 * sum(r["correct"] for r in rows_) / len(rows_), rows_)


TAG, NAME = ["POS", "NEG"], ["kettle", "tent"]


def scores(engine="PyTorch"):
    return TaskScores({
        "base": {"tag": report(["Great!", "Bad."], TAG, ["t1", "t2"]),
                 "name": report(["A kettle.", "tent"], NAME, ["n1", "n2"])},
        "tagger": {"tag": report(["POS", "NEG"], TAG, ["t1", "t2"]),
                   "name": report(["POS", "POS"], NAME, ["n1", "n2"])},
    }, engine)


def test_table_has_a_row_per_model_and_a_column_per_task():
    table = scores().table()
    assert list(table.index) == ["base", "tagger"] and list(table.columns) == ["tag", "name"]
    assert table.loc["base"].tolist() == [0.0, 50.0]
    assert table.loc["tagger"].tolist() == [100.0, 0.0]
    assert "tagger" in scores()._repr_html_() and "100.0" in str(scores())


def test_side_by_side_lines_up_each_models_answer_to_the_same_prompt():
    frame = scores().side_by_side(1)
    assert frame.to_dict("records") == [
        {"task": "tag", "prompt": "t1", "expected": "POS", "base": "Great!", "tagger": "POS"},
        {"task": "name", "prompt": "n1", "expected": "kettle", "base": "A kettle.",
         "tagger": "POS"}]
    assert len(scores().side_by_side(5)) == 4  # n beyond the rows: all of them


def test_models_asked_different_prompts_or_tasks_are_refused():
    with pytest.raises(ValueError, match="other prompts"):
        TaskScores({"a": {"tag": report(TAG, TAG, ["t1", "t2"])},
                    "b": {"tag": report(TAG, TAG, ["t1", "x"])}})
    with pytest.raises(ValueError, match="same tasks"):
        TaskScores({"a": {"tag": report(TAG, TAG)}, "b": {"name": report(TAG, TAG)}})
    with pytest.raises(ValueError, match="at least one model"):
        TaskScores({})


def test_agreement_counts_identical_answers_per_model_and_task():
    other = scores("llama.cpp")
    other.reports["tagger"]["name"] = report(["POS", "tent"], NAME, ["n1", "n2"])
    table = other.agreement(scores())
    assert table.loc["base"].tolist() == [100.0, 100.0]
    assert table.loc["tagger"].tolist() == [100.0, 50.0]
    first_only = TaskScores({"base": {"tag": report(["Great!"], ["POS"], ["t1"])}})
    assert first_only.agreement(scores()).loc["base"].tolist() == [100.0]  # a subset of prompts
    with pytest.raises(ValueError, match="not asked there"):
        scores().agreement(first_only)
    lone = TaskScores({"namer": {"tag": report(TAG, TAG, ["t1", "t2"])}})
    with pytest.raises(ValueError, match="no model and task in common"):
        lone.agreement(scores())


# ---- the base checkpoint with the training template ----------------------------------------

def test_base_with_template_links_the_weights_and_installs_the_template(embedded_path,
                                                                       tmp_path):
    from transformers import AutoTokenizer

    original = AutoTokenizer.from_pretrained(embedded_path).chat_template
    assert original != CHATML.jinja_template  # SmolLM2's own adds a default system prompt
    quiet = lambda s: None  # noqa: E731
    out = base_with_template(embedded_path, CHATML, tmp_path / "base", progress=quiet)
    weights = out / "model.safetensors"
    assert weights.is_symlink() and weights.samefile(embedded_path / "model.safetensors")
    assert json.loads((out / "config.json").read_text()) == \
        json.loads((embedded_path / "config.json").read_text())
    assert AutoTokenizer.from_pretrained(out).chat_template == CHATML.jinja_template
    again = base_with_template(embedded_path, CHATML, out, progress=quiet)  # replaces it
    assert again == out and sorted(p.name for p in tmp_path.iterdir()) == ["base"]
    assert (embedded_path / "model.safetensors").is_file()  # the link went, not the weights


def test_base_with_template_names_a_missing_base(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        base_with_template(tmp_path / "nowhere", CHATML, tmp_path / "base")


# ---- two adapter GGUFs over one base GGUF ----------------------------------------------------

@pytest.fixture(scope="module")
def two_adapters(embedded_path, tmp_path_factory):
    """Two different random LoRAs on the embedded base, each exported as an adapter GGUF over
    one f16 base GGUF made with the chatml template."""
    from types import SimpleNamespace

    from lorahelpers.export import export_adapter_gguf, export_gguf
    from tests.fixtures_export import make_stand_in

    tmp = tmp_path_factory.mktemp("two_adapters")
    quiet = lambda s: None  # noqa: E731
    base_dir = base_with_template(embedded_path, CHATML, tmp / "base", progress=quiet)
    base_gguf = export_gguf(base_dir, tmp / "gguf", "base", ("f16",), progress=quiet)["f16"]
    models, ggufs, adapter_dirs = {}, {}, {}
    for name, kwargs in (("first", {"r": 8}), ("second", {"r": 4, "lora_alpha": 16})):
        stand_in = make_stand_in(embedded_path, tmp / name, **kwargs)
        models[name] = stand_in.model
        adapter_dirs[name] = stand_in.adapter_dir
        ggufs[name] = export_adapter_gguf(stand_in.adapter_dir, base_dir,
                                          tmp / "gguf" / f"{name}.gguf", progress=quiet)
    tasks = {"tag": [conv(r) for r in rows("alpaca_eval.jsonl")[:3]],
             "name": [conv(r) for r in rows("extract_eval.jsonl")[:3]]}
    return SimpleNamespace(base_gguf=base_gguf, models=models, ggufs=ggufs, tasks=tasks,
                           tokenizer=stand_in.tokenizer, base_dir=base_dir,
                           adapter_dirs=adapter_dirs, tmp=tmp)


@pytest.fixture(scope="module")
def merged_gguf(two_adapters):
    """name -> that adapter merged into the base as an f16 GGUF, made on first call (what the
    notebook registers where Ollama refuses adapters)."""
    from lorahelpers.two_adapters import merged_gguf as merge_to_gguf

    t, made = two_adapters, {}

    def make(name):
        if name not in made:
            made[name] = merge_to_gguf(t.adapter_dirs[name], t.base_dir, t.tmp, name, quant="f16",
                                       chat_format=CHATML, progress=lambda s: None)
            assert made[name] == t.tmp / "gguf" / f"{name}-merged-f16.gguf"
        return made[name]

    return make


def conv(row):
    return [{"role": "user", "content": f"{row['instruction']}\n\n{row['input']}"},
            {"role": "assistant", "content": row["output"]}]


@pytest.mark.slow
def test_each_adapter_gguf_over_the_base_answers_like_its_pytorch_model(two_adapters):
    from lorahelpers.compare import score_gguf, score_models
    from lorahelpers.llamacpp import gguf_metadata
    from lorahelpers.verify import verify

    t = two_adapters
    assert gguf_metadata(t.base_gguf)["tokenizer.chat_template"] == CHATML.jinja_template
    torch_scores = score_models(t.models, t.tasks, t.tokenizer, CHATML)
    gguf_scores = score_gguf(t.base_gguf, t.ggufs, t.tasks, t.tokenizer, chat_format=CHATML)
    agreement = gguf_scores.agreement(torch_scores)
    assert agreement.to_numpy().mean() >= 75, agreement
    first, second = (torch_scores.side_by_side(3)[m].tolist() for m in ("first", "second"))
    assert first != second  # two adapters, two behaviours
    prompts = [row[:-1] for rows_ in t.tasks.values() for row in rows_[:2]]
    for name, model in t.models.items():
        check = verify(t.base_gguf, model, t.tokenizer, prompts, lora_path=t.ggufs[name])
        assert check.kind == "f16+adapter" and check.passed, check.table()
    # The other adapter over the same base is not a match: verification tells them apart.
    wrong = verify(t.base_gguf, t.models["first"], t.tokenizer, prompts,
                   lora_path=t.ggufs["second"])
    assert not wrong.passed


@pytest.mark.slow
def test_one_base_in_memory_serves_the_base_and_every_adapter(two_adapters, embedded_path):
    # What the notebook scores and verifies after training: one base with both adapters loaded,
    # each view answering like its separately loaded model, in any order of use.
    import torch
    from transformers import AutoModelForCausalLM

    from lorahelpers.compare import one_base, score_models
    from lorahelpers.verify import verify

    t = two_adapters
    base = AutoModelForCausalLM.from_pretrained(embedded_path, dtype=torch.float32)
    plain = AutoModelForCausalLM.from_pretrained(embedded_path, dtype=torch.float32).eval()
    base_numel = sum(p.numel() for p in plain.parameters())
    models = one_base(base, t.adapter_dirs)
    assert list(models) == ["base", "first", "second"]
    lora_numel = sum(p.numel() for m in t.models.values()
                     for n, p in m.named_parameters() if "lora_" in n)
    shared = models["first"]._shared
    assert sum(p.numel() for p in shared.parameters()) == base_numel + lora_numel  # one base
    ids = torch.tensor([t.tokenizer("Tag the review.\n\nThe lid broke.")["input_ids"]])
    expected = {"base": plain, **t.models}
    with torch.no_grad():
        for name in ("first", "base", "second", "first", "base"):
            got, want = models[name](input_ids=ids).logits, expected[name](input_ids=ids).logits
            assert torch.allclose(got, want, atol=1e-4), name
        with models["second"].disable_adapter():  # what verify compares the adapter effect to
            assert torch.allclose(models["second"](input_ids=ids).logits,
                                  plain(input_ids=ids).logits, atol=1e-4)
    assert not hasattr(models["base"], "peft_config")  # verify treats it as a plain model
    views = score_models(models, t.tasks, t.tokenizer, CHATML).side_by_side(3)
    separate = score_models(expected, t.tasks, t.tokenizer, CHATML).side_by_side(3)
    assert views.equals(separate)
    prompts = [row[:-1] for rows_ in t.tasks.values() for row in rows_[:2]]
    assert verify(t.base_gguf, models["base"], t.tokenizer, prompts).passed
    check = verify(t.base_gguf, models["second"], t.tokenizer, prompts,
                   lora_path=t.ggufs["second"])
    assert check.passed and check.kind == "f16+adapter", check.table()


def test_one_base_refuses_a_model_with_a_lora_and_no_adapters():
    from types import SimpleNamespace

    from lorahelpers.compare import one_base
    from lorahelpers.errors import SettingsError

    with pytest.raises(SettingsError, match="at least one adapter"):
        one_base(SimpleNamespace(), {})
    with pytest.raises(SettingsError, match="without a LoRA.*Fix: load the base again"):
        one_base(SimpleNamespace(peft_config={}), {"a": "x"})
    with pytest.raises(SettingsError, match="named 'base'"):
        one_base(SimpleNamespace(), {"base": "x"})


@pytest.mark.slow
@pytest.mark.parametrize("version", VERSIONS[1:])  # one that accepts adapters, one that refuses
def test_two_ollama_models_on_each_release(two_adapters, merged_gguf, version):
    from lorahelpers import ollama
    from lorahelpers.pipeline import register_or_skip
    from tests.ollama_double import OllamaDouble
    from tests.test_ollama_e2e import greedy

    t = two_adapters
    messages = t.tasks["tag"][0][:-1]
    prompt = CHATML.render(messages, add_generation_prompt=True)
    replies, modes = {}, {}
    with OllamaDouble(version) as double:
        refused = double.release.refuses_adapters
        for name, adapter in t.ggufs.items():
            registration = register_or_skip(f"reviews-{name}", t.base_gguf, CHATML,
                                            host=double.url, adapter=adapter,
                                            merged=lambda name=name: merged_gguf(name),
                                            progress=lambda s: None)
            modes[name] = registration.info["registration"]
            assert repr(registration) == (f"registered as 'reviews-{name}' ({modes[name]}) "
                                          f"with Ollama {version}")
        for name, adapter in t.ggufs.items():
            replies[name] = ollama.chat(f"reviews-{name}", messages, host=double.url,
                                        stream=False,
                                        options=ollama.GREEDY_OPTIONS | {"num_predict": 24})
            assert double.last_prompt == prompt
            model, lora = (merged_gguf(name), None) if refused else (t.base_gguf, adapter)
            assert replies[name] == greedy(model, prompt, CHATML.stop, lora, 24)[1]
        uploads = double.uploads
    assert replies["first"] != replies["second"]
    if refused:  # 0.34.1 and later: two merged models, no adapter sent
        assert set(modes.values()) == {"merged model"}
        assert sorted(uploads) == sorted(ollama.sha256_file(merged_gguf(n)) for n in t.ggufs)
    else:  # adapter layers over one base, uploaded once
        assert set(modes.values()) == {"adapter layer"}
        assert uploads.count(ollama.sha256_file(t.base_gguf)) == 1
        assert sorted(uploads) == sorted([ollama.sha256_file(t.base_gguf)]
                                         + [ollama.sha256_file(p) for p in t.ggufs.values()])
