"""Which runs train together (a pack, conceptspace.pack), and each run's manifest from its
pack's: what the workflow plans with. Light on purpose (no torch): Snakemake imports it
to plan, and rule run_manifest runs it once per run."""

from __future__ import annotations

from typing import Sequence

from conceptspace.io import ConceptspaceError, read_json, write_json


def form_packs(run_ids: Sequence[str], size: int) -> dict[str, list[str]]:
    """The study's runs, in the order of its run table, cut into packs of ``size`` (the
    last one may be smaller): pack id -> its run ids. A pack of one is named by its run
    (so its files and logs are the run's); a larger one "pack<index>", from 000."""
    if size < 1:
        raise ValueError(f"a pack holds at least one run, got {size}")
    chunks = [list(run_ids[start : start + size]) for start in range(0, len(run_ids), size)]
    if size == 1:
        return {chunk[0]: chunk for chunk in chunks}
    return {f"pack{index:03d}": chunk for index, chunk in enumerate(chunks)}


def write_run_manifest(pack_manifest: str, run_id: str, out: str) -> None:
    """A run's manifest, as a lone training writes it, from its pack's manifest."""
    runs = read_json(pack_manifest)["runs"]
    if run_id not in runs:
        raise ConceptspaceError(
            f"{pack_manifest} holds no run {run_id} (its runs: {', '.join(runs)}); the packs "
            "changed (compute.pack): rerun snakemake, which trains the run's new pack"
        )
    write_json(out, runs[run_id])
