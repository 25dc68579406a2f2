"""`python -m lorahelpers demo`: the whole pipeline (lorahelpers.runner) on this machine's
defaults: the embedded model (a Llama 3.2 on a GPU) and the review-tagging sample, exported,
verified and registered with Ollama when a server answers; a summary table and summary.json
at the end."""

from __future__ import annotations

from lorahelpers.params import Params


def demo_params(**overrides) -> Params:
    """The demo's parameters: the Alpaca notebook's defaults for this machine, with
    `overrides` (Params fields; None leaves the default).

    >>> demo_params(max_steps=5, env={}).max_steps
    5
    """
    from lorahelpers.params import default_params

    return default_params("alpaca", **{k: v for k, v in overrides.items() if v is not None})


def run_demo(params: Params | None = None, progress=print, **overrides):
    """Fine-tune on the Alpaca sample with this machine's defaults, then export, verify and
    register (runner.run_pipeline); returns its PipelineRun. Overrides are Params fields.

    >>> print(run_demo(max_steps=20))  # doctest: +SKIP
    """
    from lorahelpers.runner import run_pipeline

    return run_pipeline(params or demo_params(**overrides), export=True, register=True,
                        progress=progress)
