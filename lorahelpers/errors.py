"""The errors lorahelpers raises on purpose. Every expected failure is a LorahelpersError whose
message says what happened, names the file, row, setting or model it happened to, and ends
with "Fix: ..."; `python -m lorahelpers` prints such a message without a traceback.

The base class and one class per stage live here; a narrower error (MergeError,
VerificationError, LlamaCppMissingError, ...) lives beside the code that raises it and derives
from its stage's class. Each stage class also keeps the built-in type it had before
(ValueError for bad input, RuntimeError for a step that failed), so `except ValueError`
still catches a DataError. No dependencies.
"""

from __future__ import annotations


class LorahelpersError(Exception):
    """An expected failure, worded for the person who can fix it. With `fix`, the message is
    `message` followed by " Fix: <fix>".

    >>> str(LorahelpersError("data.csv: no data rows.", fix="add rows below the header"))
    'data.csv: no data rows. Fix: add rows below the header'
    """

    def __init__(self, message: str, *, fix: str | None = None):
        super().__init__(f"{message} Fix: {fix}" if fix else message)


class DataError(LorahelpersError, ValueError):
    """Bad input data: the message names the file, the row/column and the fix."""


class SettingsError(LorahelpersError, ValueError):
    """A setting or argument that cannot work (Params, TrainSettings, LoraSettings, a quant
    type, a scorer): the message names it, its value and what would work."""


class ChatFormatError(LorahelpersError, ValueError):
    """A chat format or template that cannot render conversations the same everywhere."""


class ModelError(LorahelpersError, RuntimeError):
    """A base model cannot be found or loaded; the message says how to fix it."""


class TrainingError(LorahelpersError, ValueError):
    """Training cannot start on this model or data."""


class ExportError(LorahelpersError, RuntimeError):
    """Merging, exporting or verifying failed; the message says why and what to do."""


class OllamaError(LorahelpersError, RuntimeError):
    """Ollama cannot do what was asked; the message says why and how to fix it."""


class HubError(LorahelpersError, RuntimeError):
    """An upload to the Hugging Face Hub that cannot be done as asked."""
