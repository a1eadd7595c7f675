"""Figures, drawn only from gathered datasets (never from models), as PDF + PNG.

Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas attached
explicitly: no pyplot, no global state, no GUI backend, whatever backend the caller
has chosen. :func:`save_figure` writes the PDF and a PNG beside it atomically.
"""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from conceptspace.io import atomic_path

PNG_DPI = 150


def new_figure(width: float, height: float) -> Figure:
    """A figure (inches) on the Agg canvas, with constrained layout."""
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(
    figure: Figure, out_pdf: str | os.PathLike, dpi: int = PNG_DPI
) -> tuple[Path, Path]:
    """Write ``out_pdf`` and the PNG with the same stem beside it, each atomically."""
    out_pdf = Path(out_pdf)
    out_png = out_pdf.with_suffix(".png")
    with atomic_path(out_pdf, suffix=".pdf") as tmp:
        figure.savefig(tmp, format="pdf")
    with atomic_path(out_png, suffix=".png") as tmp:
        figure.savefig(tmp, format="png", dpi=dpi)
    return out_pdf, out_png
