"""What only a notebook needs around the pipeline steps: keeping files on Google Drive, asking
for and using an uploaded file, choosing a workbook's sheets, showing the table, and listing
(or downloading) the files a run wrote. Each is one call in a notebook cell."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lorahelpers.params import Params

UPLOAD_TYPES = ".xlsx,.csv,.tsv,.json,.jsonl,.parquet"


def keep_work(params: Params, runtime=None, progress=print) -> Path | None:
    """The folder that keeps this run's files (keep.keep_folder): on Colab, Google Drive is
    mounted first unless params.keep_dir is "off" (Colab asks you to allow it). Says which.

    >>> keep_work(default_params("alpaca", keep_dir="off"))  # doctest: +SKIP
    Files stay in outputs/alpaca only (no Google Drive, no params.keep_dir)
    """
    from lorahelpers.keep import keep_folder, keeps_nothing, mount_drive
    from lorahelpers.runtime import runtime_report

    runtime = runtime or runtime_report()
    if runtime.colab and not keeps_nothing(params.keep_dir):
        mount_drive()
    folder = keep_folder(params.keep_dir, params.output_dir)
    progress(f"Keeping files in {folder}" if folder else
             f"Files stay in {params.output_dir} only (no Google Drive, no params.keep_dir)")
    return folder


def ask_for_upload(runtime=None):
    """Ask for a data file: on Colab the browser's file picker (files.upload(), which waits
    for it and returns {name: bytes}); elsewhere an upload button, shown and returned. Give
    what it returns to use_upload (after choosing a file, for the button).

    >>> upload = ask_for_upload()  # doctest: +SKIP
    """
    from lorahelpers.runtime import runtime_report

    if (runtime or runtime_report()).colab:
        from google.colab import files

        return files.upload()
    import ipywidgets
    from IPython.display import display

    upload = ipywidgets.FileUpload(accept=UPLOAD_TYPES, multiple=False,
                                   description="Upload a file")
    display(upload)
    return upload


def use_upload(params: Params, uploaded, progress=print) -> Params:
    """params reading an uploaded file (what ask_for_upload returned: Colab's {name: bytes}, or
    the upload button, whose .value is read now), saved under output_dir/uploads, with no
    separate held-out file; unchanged when nothing was uploaded. Says which.

    >>> params = use_upload(params, {})  # doctest: +SKIP
    No file uploaded: using the sample data/table.xlsx
    """
    from lorahelpers.data import save_upload

    uploaded = getattr(uploaded, "value", uploaded)  # the button holds the files in .value
    path = save_upload(uploaded, Path(params.output_dir) / "uploads")
    if path is None:
        progress(f"No file uploaded: using the sample {params.data}")
        return params
    progress(f"Using your file: {path}")
    return params.replace(data=str(path), eval_data=None)


def choose_sheets(params: Params, progress=print) -> Params:
    """params with sheet and eval_sheet that exist in the workbook params.data: a missing
    training sheet becomes the one load_table reads by default (the first, or the only sheet
    with a table when the first is empty or a cover page), a missing held-out sheet none
    (eval_size rows are then set aside at random); a file without sheets gets neither. Says
    which rows are used.

    >>> params = choose_sheets(default_params("table"))  # doctest: +SKIP
    Sheets in the workbook: orders, held_out
    Rows to learn from: orders. Held-out rows: held_out.
    """
    from lorahelpers.data import sheet_names
    from lorahelpers.workbook import default_sheet

    sheets = sheet_names(params.data)
    lines = []
    sheet, eval_sheet = params.sheet, params.eval_sheet
    if not sheets:
        sheet = eval_sheet = None
    else:
        lines.append("Sheets in the workbook: " + ", ".join(sheets))
        if sheet not in sheets:
            first, note = default_sheet(params.data)
            if sheet:
                lines.append(f"No sheet {sheet!r} here: using " + (
                    f"the first sheet, {first!r}." if first == sheets[0] else f"{first!r}."))
            lines += [note[0].upper() + note[1:] + "."] if note else []
            sheet = first
        if eval_sheet and eval_sheet not in sheets:
            lines.append(f"No held-out sheet {eval_sheet!r} here: setting "
                         f"{params.eval_size} rows aside at random instead.")
            eval_sheet = None
    held_out = eval_sheet or f"{params.eval_size} rows set aside at random"
    lines.append(f"Rows to learn from: {sheet or Path(params.data).name}. "
                 f"Held-out rows: {held_out}.")
    progress("\n".join(lines))
    return params.replace(sheet=sheet, eval_sheet=eval_sheet)


def show_table(params: Params, rows: int = 5):
    """The first rows of the table params.data (params.sheet), as load_table reads it: the
    header found, cells as the sheet shows them. A pandas DataFrame.

    >>> show_table(default_params("table"))  # doctest: +SKIP
    """
    from lorahelpers.data import load_table

    table, _ = load_table(params.data, sheet=params.sheet, header_row=params.header_row,
                          empty_markers=params.empty_markers, raw_values=params.raw_values)
    return table.head(rows)


@dataclass
class YourFiles:
    """The files a run wrote (checkpoints and links left out) with their sizes, and where
    they were kept or downloaded."""

    files: list[tuple[Path, int]]
    kept: list[str]
    keep_dir: Path | None
    downloaded: list[Path]

    def __repr__(self) -> str:
        lines = [f"{size / 1e6:9.1f} MB  {path}" for path, size in self.files]
        if self.keep_dir is not None:
            lines.append(f"Kept in {self.keep_dir}: " + ", ".join(self.kept))
        if self.downloaded:
            lines.append("Downloaded: " + ", ".join(p.name for p in self.downloaded))
        return "\n".join(lines)


def _listed(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()
                  and "checkpoints" not in p.parts)


def your_files(output_dir, keep_dir=None, download=(), runtime=None) -> YourFiles:
    """The files in output_dir and, when there is a keep folder (Google Drive), what it holds;
    on Colab without one, the files in `download` are offered as downloads (the runtime's disk
    is wiped when it stops; large GGUFs often fail that way, so keep small ones there).

    >>> your_files("outputs/alpaca", keep_dir, download=[export.gguf, export.modelfile])  # doctest: +SKIP
    """
    from lorahelpers.runtime import runtime_report

    downloaded = []
    if keep_dir is None and download and (runtime or runtime_report()).colab:
        from google.colab import files

        for path in download:
            files.download(str(path))
            downloaded.append(Path(path))
    keep_dir = None if keep_dir is None else Path(keep_dir)
    kept = [p.name for p in _listed(keep_dir)] if keep_dir is not None and keep_dir.is_dir() \
        else []
    return YourFiles([(p, p.stat().st_size) for p in _listed(Path(output_dir))], kept, keep_dir,
                     downloaded)
