"""Get the model off Colab: a Hugging Face model repository that `ollama run hf.co/<user>/<repo>`
runs with the training prompt on any laptop.

What Ollama takes from such a repository (the Hub's Ollama guide, and Ollama's server, which
turns each file into a layer of the model it pulls):
- the GGUF files; the tag picks one by the quant type in its name (`:Q8_0`, any case), and
  without a tag Q4_K_M when there is one;
- `template`: the Go TEMPLATE, read verbatim (ChatFormat.go_template, as in the Modelfile);
- `params`: a JSON object of Ollama parameters (the stop list, num_ctx);
- `system`: the default system prompt, verbatim, used when a request brings none.
A Modelfile in the repository is not read. hub_files builds the folder's contents (pure);
push_to_hub writes it next to the export and uploads it with huggingface_hub.

    >>> push_to_hub("me/my-model", export, chat_format)  # doctest: +SKIP
    'https://huggingface.co/me/my-model'
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from lorahelpers.atomic import atomic_dir
from lorahelpers.errors import HubError
from lorahelpers.modelfile import model_parameters

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


def gguf_name(repo_id: str, quant: str) -> str:
    """The GGUF's name in the repository: the repository name and the quant type in capitals,
    the form the Hub reads the `:Q8_0` tag from.

    >>> gguf_name("me/shop-bot", "q4_k_m")
    'shop-bot-Q4_K_M.gguf'
    """
    return f"{repo_id.rsplit('/', 1)[-1]}-{quant.upper()}.gguf"


def hub_files(repo_id: str, ggufs: dict, chat_format, *, system: str | None = None,
              max_seq_length: int | None = None, parameters: dict | None = None,
              reports: dict | None = None, base_model: str | None = None) -> dict:
    """The repository's files: {name in the repo: text, or the Path of a GGUF to upload}.

    >>> from lorahelpers.chat import get_chat_format
    >>> sorted(hub_files("me/bot", {"q8_0": Path("m.gguf")}, get_chat_format("chatml")))
    ['README.md', 'bot-Q8_0.gguf', 'params', 'template']
    """
    check_repo_id(repo_id)
    if not ggufs:
        raise HubError(f"{repo_id}: no GGUF to upload. Fix: pass the export_and_verify result "
                       "(or a {quant: path} dict) of a finished export")
    # num_ctx as the Modelfile sets it (modelfile.num_ctx_for the training length)
    params = model_parameters(parameters, tuple(chat_format.stop), max_seq_length)
    files: dict = {gguf_name(repo_id, q): Path(p) for q, p in ggufs.items()}
    files["template"] = trim_proof(chat_format.go_template)
    files["params"] = json.dumps(params, indent=2, ensure_ascii=False) + "\n"
    if system:
        files["system"] = system
    files["README.md"] = model_card(repo_id, [q.upper() for q in ggufs], chat_format, params,
                                    system=system, reports=reports or {}, base_model=base_model)
    return files


def trim_proof(template: str) -> str:
    """The Go template with whitespace at either end moved into string actions, so it renders
    the same even if the file is trimmed on its way to Ollama (the Hub's handling of the file
    is not documented; ChatFormat templates end in a newline that the prompt needs).

    >>> trim_proof("{{ .Prompt }}\\n")
    '{{ .Prompt }}{{ "\\\\n" }}'
    """
    core = template.strip()
    if not core:
        return template
    lead, trail = template[: template.index(core)], template[template.index(core) + len(core):]
    # Whitespace next to a trim marker ({{- or -}}) is not rendered: leave it out.
    lead = "" if core.startswith("{{-") else lead
    trail = "" if core.endswith("-}}") else trail
    quote = lambda text: "{{ " + json.dumps(text) + " }}" if text else ""  # noqa: E731
    return quote(lead) + core + quote(trail)


def check_repo_id(repo_id: str) -> str:
    if not isinstance(repo_id, str) or not REPO_ID.match(repo_id) or ".." in repo_id \
            or repo_id.endswith((".git", ".")):
        raise HubError(f"{repo_id!r} is not a Hugging Face repository id. Fix: write it as "
                       "'<your user name>/<model name>', letters, digits, '-', '_' and '.', "
                       "e.g. params.hub_repo = 'jane/shop-bot'")
    return repo_id


def _hub_base_model(base_model: str | None) -> str | None:
    # The Hub rejects a card whose base_model is not a repository id (a local path, 'embedded').
    if base_model and REPO_ID.match(base_model) and not Path(base_model).exists():
        return base_model
    return None


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def model_card(repo_id: str, quants: list[str], chat_format, params: dict, *, system,
               reports: dict, base_model: str | None) -> str:
    """README.md for the repository: how to run it with Ollama, and the verification table of
    each GGUF against the PyTorch model."""
    base = _hub_base_model(base_model)
    front = ["---", "library_name: gguf", "tags:", "- gguf", "- ollama", "- lora",
             "- lorahelpers"] + ([f"base_model: {base}"] if base else []) + ["---", ""]
    name = repo_id.rsplit("/", 1)[-1]
    lines = [f"# {name}", "",
             f"A LoRA fine-tune{f' of [{base}](https://huggingface.co/{base})' if base else ''}"
             " made with lorahelpers, exported to GGUF and checked against the PyTorch model "
             "it came from.", "", "## Run it with Ollama", "", "```sh"]
    lines += [f"ollama run hf.co/{repo_id}:{quant}" for quant in quants]
    lines += ["```", "",
              f"The `template` and `params` files give Ollama the prompt format the model was "
              f"trained with (`{chat_format.name}`) and its stop strings "
              f"({', '.join(f'`{s}`' for s in params.get('stop', []))})"
              + (f", and a context of {params['num_ctx']} tokens" if "num_ctx" in params else "")
              + "." + (" The `system` file holds the default system prompt." if system else ""),
              ""]
    if reports:
        lines += ["## Verification", "",
                  "Each GGUF against the PyTorch model, on the same prompts:", ""]
        for quant, report in reports.items():
            status = report.status() if hasattr(report, "status") else str(report)
            lines += [f"**{_cell(Path(getattr(report, 'artifact', quant)).name)}**: "
                      f"{_cell(status)}", "", "| check | value | limit |", "|---|---|---|"]
            lines += [f"| {_cell(a)} | {_cell(b)} | {_cell(c)} |" for a, b, c in report.rows()]
            lines.append("")
    return "\n".join(front + lines)


def write_hub_folder(files: dict, folder) -> Path:
    """Write hub_files(...) into `folder` (replaced as a whole, atomically): texts as UTF-8,
    GGUFs as hard links (no second copy of a large file), or symbolic links across devices."""
    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        for name, content in files.items():
            target = tmp / name
            if isinstance(content, Path):
                if not content.is_file():
                    raise HubError(f"{content}: GGUF not found. Fix: run the export cell again")
                try:
                    os.link(content, target)
                except OSError:
                    target.symlink_to(content.resolve())
            else:
                target.write_bytes(content.encode("utf-8"))
    return folder


def hub_token() -> str | None:
    """A Hugging Face token: the Colab secret HF_TOKEN (the key icon in Colab's left bar), else
    the HF_TOKEN environment variable, else the one `hf auth login` saved; None if none."""
    try:
        from google.colab import userdata

        token = userdata.get("HF_TOKEN")
        if token:
            return token
    except Exception:  # not on Colab, no such secret, or access not granted to this notebook
        pass
    if os.environ.get("HF_TOKEN"):
        return os.environ["HF_TOKEN"]
    try:
        from huggingface_hub import get_token

        return get_token()
    except ImportError:
        return None


def push_to_hub(repo_id: str | None, export, chat_format, *, system: str | None = None,
                max_seq_length: int | None = None, parameters: dict | None = None,
                base_model: str | None = None, private: bool = False, folder=None,
                token: str | None = None, api=None, allow_unverified: bool = False,
                progress=print) -> str | None:
    """Upload an export (export_and_verify's result) to the model repository `repo_id`, made
    if missing: the GGUFs, `template`, `params`, `system` and a README with the verification
    table. Returns the repository's address. Other GGUFs already in the repository are
    removed, so it holds this export only. The token comes from hub_token() unless given.
    Without a repo_id (params.hub_repo unset) nothing is uploaded and None is returned.

    >>> push_to_hub("me/shop-bot", export, chat_format, system=params.system)  # doctest: +SKIP
    'https://huggingface.co/me/shop-bot'
    """
    if not repo_id:
        progress("Not uploading: set params.hub_repo to a repository id to share the model.")
        return None
    reports = dict(getattr(export, "reports", {}) or {})
    ggufs = dict(getattr(export, "ggufs", export))
    failed = [q for q, r in reports.items() if not getattr(r, "passed", True)]
    if failed and not allow_unverified:
        raise HubError(f"{repo_id}: the {', '.join(failed)} GGUF did not pass verification "
                       "against the PyTorch model, so it would not answer like the model you "
                       "trained. Fix: see the export's report; push only what passed, or pass "
                       "allow_unverified=True to upload it anyway")
    files = hub_files(repo_id, ggufs, chat_format, system=system, max_seq_length=max_seq_length,
                      parameters=parameters, reports=reports, base_model=base_model)
    first = Path(next(iter(ggufs.values())))
    staged = write_hub_folder(files, folder or first.parent.parent / "hub")
    if api is None:
        from huggingface_hub import HfApi

        token = token or hub_token()
        if not token:
            raise HubError(f"{repo_id}: no Hugging Face token. Fix: make a token with write "
                           "access at https://huggingface.co/settings/tokens and add it as a "
                           "Colab secret named HF_TOKEN (key icon, left bar), or set the "
                           "HF_TOKEN environment variable")
        api = HfApi(token=token)
    progress(f"Uploading {staged} to https://huggingface.co/{repo_id} ...")
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=str(staged),
                      commit_message="Upload GGUF and Ollama files from lorahelpers",
                      delete_patterns=["*.gguf"])
    url = f"https://huggingface.co/{repo_id}"
    progress(f"Done: {url}\nOn your computer: ollama run hf.co/{repo_id}")
    return url
