"""`conceptspace info` reads the provenance back out of figures (PDF Subject, PNG
Description), whatever characters the record holds."""

import pytest

from conceptspace.figures import new_figure, save_figure
from conceptspace.info import describe, read_provenance
from conceptspace.io import ConceptspaceError, provenance


def test_figure_provenance_round_trips_through_pdf_and_png(tmp_path):
    record = provenance({"figures": {"x": 1}}, 3, note="(nested (parens)) \\ back\nslash")
    figure = new_figure(2, 2)
    figure.add_subplot().plot([0, 1])
    pdf, png = save_figure(figure, tmp_path / "fig.pdf", record=record)
    assert read_provenance(pdf) == record
    assert read_provenance(png) == record
    assert f"config_hash  {record['config_hash']}" in describe(pdf)


def test_a_figure_without_provenance_is_named(tmp_path):
    pdf, png = save_figure(new_figure(2, 2), tmp_path / "bare.pdf")
    for path in (pdf, png):
        with pytest.raises(ConceptspaceError, match="carries no provenance"):
            read_provenance(path)
