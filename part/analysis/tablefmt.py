"""How the tables' numbers are written: one cell format for Markdown and LaTeX, names, escaping.

Shared by the main table (``part.analysis.aggregate``) and the paper comparison (``part.analysis.compare``) so that a
number reads the same in every file: ``83.42 ± 0.26 (+0.84)``, bold for the best of a family, † where
seeds are missing, a typographic minus for negative differences.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

COLUMNS = {"natural": "Natural", "pgd20": "PGD-20", "mma": "MMA", "aa": "AA", "aa_release": "AA (release)", "mm3": "MM3", "worst_case": "Worst case"}
"""Table columns by attack key, in the paper's order."""

DATASET_NAMES = {"cifar10": "CIFAR-10", "svhn": "SVHN", "tinyimagenet200": "TinyImageNet-200",
                 "fashion_mnist": "Fashion-MNIST", "digits": "digits"}
ARCH_NAMES = {"resnet18": "ResNet-18", "preact_resnet18": "PreAct ResNet-18", "wrn34_10": "WRN-34-10",
              "small_cnn": "small CNN"}


@dataclass(frozen=True)
class Style:
    """How a cell is marked up: Markdown and LaTeX share ``format_cell``."""
    bold: Callable[[str], str]
    pm: str
    dagger: str
    minus: str
    dash: str


MARKDOWN = Style(bold=lambda s: f"**{s}**", pm="±", dagger="†", minus="−", dash="—")
LATEX = Style(bold=lambda s: f"\\textbf{{{s}}}", pm="$\\pm$", dagger="$^\\dagger$", minus="$-$", dash="---")


def signed(value: float, style: Style = MARKDOWN) -> str:
    """``+0.84`` / ``−0.30`` (a typographic minus), as the paper prints differences."""
    rounded = round(float(value), 2) + 0.0  # + 0.0 turns -0.0 into 0.0
    return f"{style.minus if rounded < 0 else '+'}{abs(rounded):.2f}"


def format_cell(mean: float, std: float, n_seeds: int, missing: str, diff: float, best: bool, style: Style) -> str:
    """``83.42 ± 0.26 (+0.84)``: bold mean if best, † if seeds are missing, std only from 2 seeds on."""
    if n_seeds == 0:
        return style.dash
    text = style.bold(f"{mean:.2f}") if best else f"{mean:.2f}"
    if n_seeds > 1:
        text += f" {style.pm} {std:.2f}"
    if missing:
        text += style.dagger
    if not math.isnan(diff):
        text += f" ({signed(diff, style)})"
    return text


def format_interval(value: float, low: float, high: float, style: Style = MARKDOWN) -> str:
    """``+1.20 [+0.35, +2.05]``: a difference with its confidence interval (empty when not measured,
    the difference alone when it has no interval)."""
    if math.isnan(value):
        return ""
    if math.isnan(low):
        return signed(value, style)
    return f"{signed(value, style)} [{signed(low, style)}, {signed(high, style)}]"


def dataset_name(dataset: str, arch: str) -> str:
    return f"{DATASET_NAMES.get(dataset, dataset)} ({ARCH_NAMES.get(arch, arch)})"



TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$",
               "†": r"$^\dagger$", "—": "---", "−": "$-$", "ε": r"$\varepsilon$", "×": r"$\times$",
               "≤": r"$\leq$", "√": r"$\surd$", "²": r"$^2$"}


def latex_escape(text: str) -> str:
    """Plain text (labels, captions) to LaTeX that pdflatex accepts."""
    return "".join(TEX_ESCAPES.get(ch, ch) for ch in text)


