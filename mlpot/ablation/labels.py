"""Names of ablation configurations: compact ones for tables and keys, words for plots."""

from __future__ import annotations

from typing import Iterable

__all__ = ["series_name", "varying", "series_words", "layers_words", "VARIANT_WORDS"]

#: Variant name → what a legend says.
VARIANT_WORDS = {"plain": "plain", "residual": "residual", "residual_sd": "residual + stochastic depth",
                 "residual_stem": "plain stem + residual",
                 "residual_sd_stem": "plain stem + residual + stochastic depth"}


def _width_label(run: dict) -> str:
    return "matched" if run.get("width_mode") == "matched" else f"w{run.get('width')}"


def series_name(run: dict, show: Iterable[str] = ()) -> str:
    """Series key of a run (``"residual w16"``, ``"plain matched"``): variant and width, plus
    init/activation when the grid varies them."""
    return " ".join([run["variant"], _width_label(run)] + [str(run.get(k)) for k in show])


def varying(runs: list[dict]) -> list[str]:
    """The factors besides variant and width that differ between runs (init, activation)."""
    return [k for k in ("init", "activation") if len({r.get(k) for r in runs}) > 1]


def series_words(series: str) -> str:
    """A series key in words: ``"residual_sd matched tanh"`` → ``"residual + stochastic depth,
    parameter-matched width, tanh"``."""
    variant, width, *rest = series.split(" ")
    width = ("parameter-matched width" if width == "matched"
             else f"width {width[1:]}" if width.startswith("w") else width)
    return ", ".join([VARIANT_WORDS.get(variant, variant.replace("_", " ")), width]
                     + [r.replace("_", " ") for r in rest])


def layers_words(depth: int) -> str:
    """``"1 hidden layer"``, ``"4 hidden layers"``."""
    return f"{depth} hidden layer" + ("" if depth == 1 else "s")
