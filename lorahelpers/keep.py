"""Keep a run's files where a lost runtime cannot take them. A free Colab runtime disconnects
and its disk is wiped; a keep folder (Google Drive when mounted, or any folder named by
`keep_dir`) mirrors checkpoints, history, adapter, GGUFs and Modelfile as they are written, and
a re-run resumes training from the newest checkpoint kept there.

Every copy is atomic: written under a temporary name in the keep folder and renamed when
complete, so the keep folder never holds half a checkpoint or half a GGUF. No torch here.

    >>> folder = keep_folder("", "outputs/alpaca")  # MyDrive/lorahelpers/alpaca, or None
    >>> keep("outputs/alpaca/gguf/m-q8_0.gguf", folder, root="outputs/alpaca")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from array import array
from pathlib import Path

from lorahelpers.atomic import atomic_dir, atomic_path, write_atomic
from lorahelpers.errors import SettingsError


class KeepFolderError(SettingsError, FileExistsError):
    """keep_dir names a folder holding checkpoints that lorahelpers did not write."""


DRIVE = Path("/content/drive/MyDrive")  # where Colab mounts Google Drive
OFF = "off"


def keeps_nothing(keep_dir) -> bool:
    """Whether `keep_dir` says "off" (any case, spaces around): keep no copy anywhere."""
    return str(keep_dir or "").strip().lower() == OFF
RUN_FILE = "run.json"
HISTORY_FILES = ("history.json", "history.csv")
# Settings that change where or how a run reports, not what it computes.
BOOKKEEPING = ("output_dir", "resume", "progress", "reraise_interrupt", "keep_dir", "save_steps",
               "save_total_limit", "eval_steps")


def keep_folder(keep_dir="", output_dir="outputs/run", run_dir=None,
                drive: Path = DRIVE) -> Path | None:
    """The folder that keeps the files of `output_dir`: `keep_dir` when it names one; else,
    when Google Drive is mounted, <MyDrive>/lorahelpers/<name of output_dir>; else None. "off"
    keeps nothing. `run_dir`, a folder inside output_dir (one of several training runs), gets
    the same place inside the keep folder.

    >>> keep_folder("/tmp/keep", "outputs/reviews", run_dir="outputs/reviews/tagger")
    PosixPath('/tmp/keep/tagger')
    >>> keep_folder("off", "outputs/alpaca") is None
    True
    """
    if keeps_nothing(keep_dir):
        return None
    if keep_dir:
        folder = Path(keep_dir).expanduser()
    elif Path(drive).is_dir():
        folder = Path(drive) / "lorahelpers" / (Path(output_dir).resolve().name or "run")
    else:
        return None
    return folder / _relative(Path(run_dir), output_dir) if run_dir is not None and \
        Path(run_dir).resolve() != Path(output_dir).resolve() else folder


def mount_drive(mountpoint: str = "/content/drive") -> Path | None:
    """On Colab, mount Google Drive (Colab asks you to allow access) and return MyDrive; None
    elsewhere, or when the mount is refused (the reason is printed).

    >>> mount_drive()  # doctest: +SKIP
    PosixPath('/content/drive/MyDrive')
    """
    try:
        from google.colab import drive
    except ImportError:
        return None
    try:
        drive.mount(mountpoint)
    except Exception as exc:  # refused, timed out, or no Drive on this account
        print(f"Google Drive is not mounted ({type(exc).__name__}: {exc}); your files stay on "
              "this runtime only. Fix: run this cell again and allow access, or set "
              "params.keep_dir to another folder.")
        return None
    return Path(mountpoint) / "MyDrive"


def keep(path, folder, root=None) -> Path | None:
    """Copy a file or folder into the keep `folder`, at its place relative to `root` (else at
    its name), atomically; an identical copy already there is left alone. Returns the copy,
    or None when `folder` is None (nothing to keep into).

    >>> keep("outputs/alpaca/gguf/m-q8_0.gguf", "/content/drive/MyDrive/run",
    ...      root="outputs/alpaca")  # doctest: +SKIP
    PosixPath('/content/drive/MyDrive/run/gguf/m-q8_0.gguf')
    """
    if folder is None:
        return None
    source = Path(path)
    if not source.exists():
        raise SettingsError(f"{source}: nothing to keep, it does not exist. Fix: keep a "
                            "file or folder that the run has written")
    target = Path(folder) / _relative(source, root)
    if source.is_dir():
        with atomic_dir(target) as tmp:
            shutil.copytree(source, tmp, dirs_exist_ok=True)
    elif not _same_file(source, target):
        with atomic_path(target) as tmp:
            shutil.copy2(source, tmp)
    return target


def _relative(source: Path, root) -> Path:
    if root is not None:
        try:
            return source.resolve().relative_to(Path(root).resolve())
        except ValueError:
            pass
    return Path(source.name)


def _same_file(a: Path, b: Path) -> bool:
    # copy2 keeps the modification time, so size and time identify an earlier copy (where a
    # file system rounds the time, the file is just copied again).
    if not b.is_file():
        return False
    sa, sb = a.stat(), b.stat()
    return sa.st_size == sb.st_size and sa.st_mtime_ns == sb.st_mtime_ns


def last_checkpoint(directory: Path, remove_incomplete: bool = False) -> Path | None:
    """The newest complete checkpoint-N in `directory` (one with a readable
    trainer_state.json, which the trainer writes last and not atomically), or None. With
    `remove_incomplete`, a checkpoint cut short (by Ctrl-C) is deleted, so that neither resume
    nor checkpoint rotation picks it up.

    >>> last_checkpoint(Path("no-such-folder")) is None
    True
    """
    complete = []
    for path in Path(directory).glob("checkpoint-*") if Path(directory).is_dir() else ():
        try:
            json.loads((path / "trainer_state.json").read_text())
            complete.append((int(path.name.rsplit("-", 1)[-1]), path))
        except (OSError, ValueError):
            if remove_incomplete:
                shutil.rmtree(path, ignore_errors=True)
    return max(complete)[1] if complete else None


def _step(checkpoint: Path | None) -> int:
    return -1 if checkpoint is None else int(checkpoint.name.rsplit("-", 1)[-1])


def fingerprint(settings, model, examples) -> str:
    """What a run computes: its settings (less bookkeeping), the LoRA configuration with its
    base model, and the training tokens. A kept checkpoint resumes only a run with the same."""
    fields = {k: v for k, v in dataclasses.asdict(settings).items() if k not in BOOKKEEPING}
    lora = getattr(model, "peft_config", {}).get("default")
    lora = lora.to_dict() if hasattr(lora, "to_dict") else lora
    digest = hashlib.sha256(json.dumps([fields, lora], sort_keys=True, default=_plain).encode())
    for example in examples:
        digest.update(array("q", [len(example["input_ids"])]).tobytes())
        digest.update(array("q", example["input_ids"]).tobytes())
        digest.update(array("q", example["labels"]).tobytes())
    return digest.hexdigest()


def recorded_run(folder) -> str | None:
    """The fingerprint of the run whose checkpoints `folder` holds (its run.json), or None.

    >>> recorded_run("/nonexistent") is None
    True
    """
    try:
        return json.loads((Path(folder) / RUN_FILE).read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None


def record_run(folder, run_fingerprint: str) -> None:
    """Write `folder`/run.json: the run its checkpoints belong to (see fingerprint)."""
    write_atomic(Path(folder) / RUN_FILE, json.dumps({"fingerprint": run_fingerprint}) + "\n")


def _plain(value):
    # Sets (PEFT's target_modules) in a fixed order: their own order changes between processes.
    return sorted(map(str, value)) if isinstance(value, (set, frozenset)) else str(value)


class Keeper:
    """Mirrors a training run's output_dir into a keep folder: each checkpoint and the history
    as the trainer saves them, the adapter when training ends. train() makes one when
    TrainSettings.keep_dir is set; the trainer calls it as one of its callbacks.

    >>> keeper = Keeper.start("/content/drive/MyDrive/run", "outputs/run", fp)  # doctest: +SKIP
    >>> keeper.resumable  # a checkpoint of this same run was kept  # doctest: +SKIP
    True
    """

    def __init__(self, folder, output_dir, resumable: bool = False):
        self.folder, self.output_dir = Path(folder), Path(output_dir)
        self.resumable = resumable

    @classmethod
    def start(cls, folder, output_dir, run_fingerprint: str) -> Keeper:
        """Before training: bring the newest kept checkpoint of this same run (and its
        history) back into output_dir when it is newer than any there; a keep folder that
        holds another run's checkpoints is cleared of them, as a fresh run clears its own."""
        folder, out = Path(folder), Path(output_dir)
        kept_dir = folder / "checkpoints"
        run_file = folder / RUN_FILE
        if not run_file.exists() and any((folder / n).exists() for n in ("checkpoints", "adapter")):
            raise KeepFolderError(f"{folder} holds a checkpoints or adapter folder that lorahelpers "
                                  f"did not write (no {RUN_FILE}); keeping this run there would "
                                  "replace it. Fix: set keep_dir to an empty or new folder")
        for leftover in kept_dir.glob(".*"):  # copies cut short by a lost runtime
            shutil.rmtree(leftover, ignore_errors=True)
        same = recorded_run(folder) == run_fingerprint
        kept = last_checkpoint(kept_dir) if same else None
        if not same:
            if last_checkpoint(kept_dir) is not None:
                print(f"The checkpoints kept in {kept_dir} are from a run with other settings, "
                      "data or model; this run starts over and replaces them.")
            shutil.rmtree(kept_dir, ignore_errors=True)
            record_run(folder, run_fingerprint)
            return cls(folder, out)
        local = last_checkpoint(out / "checkpoints")
        if _step(kept) > _step(local):
            keep(kept, out / "checkpoints")
            for name in HISTORY_FILES:
                if (folder / name).is_file():
                    keep(folder / name, out)
            print(f"Brought {kept.name} back from {folder}; training resumes from it.")
        return cls(folder, out, resumable=kept is not None)

    def on_save(self, args, state, control, **kwargs):
        checkpoints = Path(args.output_dir)
        saved = checkpoints / f"checkpoint-{state.global_step}"
        if saved.is_dir():
            keep(saved, self.folder / "checkpoints")
        # The trainer has already deleted its oldest checkpoints; mirror that, newest kept.
        for kept in (self.folder / "checkpoints").glob("checkpoint-*"):
            if not (checkpoints / kept.name).exists() and kept.name != saved.name:
                shutil.rmtree(kept, ignore_errors=True)
        self._keep_history()

    def finish(self, adapter_dir) -> None:
        """After training: keep the adapter, the final history, and the files the trainer
        writes beside its checkpoints (a model card)."""
        keep(adapter_dir, self.folder, root=self.output_dir)
        for path in (self.output_dir / "checkpoints").glob("*"):
            if path.is_file():
                keep(path, self.folder, root=self.output_dir)
        self._keep_history()

    def _keep_history(self) -> None:
        for name in HISTORY_FILES:
            if (self.output_dir / name).is_file():
                keep(self.output_dir / name, self.folder)

    def __getattr__(self, name):
        # The trainer calls every on_* event on every callback; only on_save matters here.
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)
