"""Command line of the pipeline: one subcommand per stage, as the Snakemake rules call it.

Rules pass the config sections a stage needs as one JSON object (--settings), so that
Snakemake reruns a stage exactly when its own settings change.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

from conceptspace.io import ConceptspaceError

log = logging.getLogger("conceptspace")


def _settings(text: str) -> dict:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ConceptspaceError(f"--settings is not valid JSON: {err}")


def _run_fields(run_id: str, text: str) -> dict:
    """A run's seed, gaps and masking ratio (``studies.Run.fields``) from --run's JSON."""
    try:
        fields = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConceptspaceError(f"--run {run_id}: its fields are not valid JSON: {err}")
    if not isinstance(fields, dict) or "seed" not in fields:
        raise ConceptspaceError(
            f"--run {run_id}: its fields {text} name no seed; give the run's JSON fields, "
            'e.g. {"seed": 0, "color_gap": 0.4, "size_gap": 0.4}'
        )
    return fields


def _signal(args: argparse.Namespace):
    """The run's signal level from --color-gap, --size-gap and --background-gap."""
    from conceptspace.concepts import Signal

    return Signal.of_run(args.color_gap, args.size_gap, args.background_gap)


def cmd_render(args: argparse.Namespace) -> None:
    from conceptspace.concepts import MASK_VALUE, layout_named
    from conceptspace.render import render_training_set, save_dataset

    settings = _settings(args.settings)
    signal = _signal(args)
    layout, mask_ratio = layout_named(args.layout), args.mask_ratio or 0.0
    mask_value = settings.get("mask_value", MASK_VALUE)  # studies.underspecification
    dataset = render_training_set(
        settings["data"], signal, args.seed, layout, mask_ratio, mask_value
    )
    save_dataset(args.out, dataset)  # the rendered set carries its metadata and provenance
    log.info("wrote %s (%d images)", args.out, len(dataset["images"]))


def cmd_celeba(args: argparse.Namespace) -> None:
    from conceptspace.celeba import prepare_celeba
    from conceptspace.render import save_dataset

    dataset = prepare_celeba(
        args.root,
        attributes=args.attributes,
        held_out=args.held_out,
        image_size=args.image_size,
        per_class=args.per_class,
        seed=args.seed,
        split=args.split,
        include_held_out=args.include_held_out,
        validation_fraction=args.validation_fraction,
        crop=args.crop,
        verify_md5=args.verify_md5,
        log_every=args.log_every,
    )
    save_dataset(args.out, dataset)  # the set carries its metadata and provenance
    log.info("wrote %s (%d images)", args.out, len(dataset["images"]))


def cmd_probe(args: argparse.Namespace) -> None:
    from conceptspace.concepts import Signal, layout_named
    from conceptspace.probe import train_probe

    settings = _settings(args.settings)
    if args.layout == "celeba" and not args.data:
        raise ConceptspaceError("the celeba probe trains on a prepared set: pass --data PATH")
    # a level is (color gap, size gap[, background gap])
    signals = [Signal(*(float(gap) for gap in level)) for level in settings["signals"]]
    train_probe(
        settings["data"],
        settings["probe"],
        signals,
        args.seed,
        args.out,
        args.metrics,
        device=args.device,
        threads=args.threads,
        # a prepared probe set (CelebA) carries its own layout
        layout=layout_named(None if args.data else args.layout),
        dataset_path=args.data,
    )


def cmd_train(args: argparse.Namespace) -> None:
    from conceptspace.train import train_run

    settings = _settings(args.settings)
    train_run(
        settings["model"],
        settings["training"],
        args.data,
        args.seed,
        args.run_dir,
        args.manifest,
        device=args.device,
        threads=args.threads,
        compile=args.compile,
    )


def cmd_train_pack(args: argparse.Namespace) -> None:
    from conceptspace.io import provenance, write_json
    from conceptspace.train import PackRun, train_pack

    settings = _settings(args.settings)
    runs = [PackRun(data, int(seed), run_dir) for _, data, seed, run_dir in args.run]
    manifests = train_pack(
        settings["model"],
        settings["training"],
        runs,
        device=args.device,
        threads=args.threads,
        compile=args.compile,
    )
    # written last: the runs' manifests (rule run_manifest hands each its own); each run's
    # seed is in its own manifest's provenance, so the pack's names none
    ids = [run_id for run_id, *_ in args.run]
    record = provenance({**settings, "runs": args.run}, seed=None)
    write_json(args.manifest, {"runs": dict(zip(ids, manifests)), "provenance": record})


def cmd_run_manifest(args: argparse.Namespace) -> None:
    from conceptspace.pack_plan import write_run_manifest

    write_run_manifest(args.pack, args.run, args.out)


def cmd_evaluate_pack(args: argparse.Namespace) -> None:
    """Evaluate every checkpoint of each run of a pack (each step's samples of all its runs
    drawn together), then write the list of each run's evaluations (rule gather_run reads
    it): written last, so it stands for a finished job."""
    from conceptspace.checkpoints import checkpoint_path
    from conceptspace.concepts import Signal
    from conceptspace.evaluate import PackMember, RunEvaluation, evaluate_pack
    from conceptspace.io import provenance, write_json

    settings = _settings(args.settings)
    members = []
    for run_id, run_dir, fields in args.run:
        run = _run_fields(run_id, fields)
        signal = Signal.of_run(run.get("color_gap"), run.get("size_gap"), run.get("background_gap"))
        evaluation = RunEvaluation.on(
            args.probe,
            settings["evaluation"],
            settings["probe"]["min_accuracy"],
            signal,
            int(run["seed"]),
            args.device,
            args.threads,
            run.get("mask_ratio"),
        )
        checkpoints = [checkpoint_path(Path(run_dir), step) for step in args.steps]
        members.append(PackMember(evaluation, checkpoints, Path(run_dir) / "eval"))
    evaluations = evaluate_pack(members)
    ids = [run_id for run_id, *_ in args.run]
    record = provenance({**settings, "runs": args.run, "steps": args.steps}, seed=None)
    runs = {run_id: [str(p) for p in paths] for run_id, paths in zip(ids, evaluations)}
    write_json(args.out, {"runs": runs, "provenance": record})


def cmd_gather_run(args: argparse.Namespace) -> None:
    """A run's trajectory from the evaluations its pack's job listed."""
    from conceptspace.io import read_json
    from conceptspace.trajectories import gather_run, save_dataset_nc

    runs = read_json(args.evaluated)["runs"]
    if args.run not in runs:
        raise ConceptspaceError(
            f"{args.evaluated} lists no run {args.run} (its runs: {', '.join(runs)}); the packs "
            "changed (compute.pack): rerun snakemake, which evaluates the run's new pack"
        )
    save_dataset_nc(gather_run(runs[args.run]), args.out)
    log.info("gathered %d checkpoints into %s", len(runs[args.run]), args.out)


def cmd_sample(args: argparse.Namespace) -> None:
    from conceptspace.concepts import layout_named
    from conceptspace.evaluate import sample_checkpoints

    settings = _settings(args.settings)
    sample_checkpoints(
        args.checkpoints,
        evaluation_cfg=settings["evaluation"],
        signal=_signal(args),
        seed=args.seed,
        samples=args.samples,
        out_path=args.out,
        device=args.device,
        threads=args.threads,
        layout=layout_named(args.layout),
        mask_ratio=args.mask_ratio,
    )


def cmd_gather_study(args: argparse.Namespace) -> None:
    from conceptspace.trajectories import gather_study, save_dataset_nc

    config = _settings(args.settings)
    study = gather_study(args.runs, config, config["evaluation"], grid=args.grid)
    save_dataset_nc(study, args.out)
    log.info("gathered %d runs into %s", len(args.runs), args.out)


def cmd_figure(args: argparse.Namespace) -> None:
    from conceptspace.io import provenance

    settings = _settings(args.settings)
    record = provenance(settings)
    if args.name == "sheet":
        from conceptspace.figures.sheets import plot_sample_sheet, run_title
        from conceptspace.netcdf import open_samples

        sheet = settings["figures"]["sample_sheet"]
        samples = open_samples(_required(args.samples, "--samples", args.name))
        # titled by the file's own run: --samples may hold any run's, not the configured one
        title = run_title(samples)
        plot_sample_sheet(samples, args.out, title, int(sheet["samples"]), record=record)
        log.info("wrote %s", args.out)
        return

    from conceptspace.studies import FIGURE_INPUTS, figure_named
    from conceptspace.trajectories import open_study

    figure = figure_named(args.name)
    study = open_study(_required(args.study, "--study", args.name))
    given = {
        declared.option: _option_values(args, declared.option)
        for declared in FIGURE_INPUTS.values()
        if declared.option
    }
    try:
        inputs = figure.inputs_of(settings, given)
    except KeyError as err:
        raise ConceptspaceError(
            f"`figure {args.name}` reads config key {err} from --settings, which lacks it; "
            f"pass the keys {', '.join(figure.settings_keys)}"
        )
    module, function = figure.plot.split(":")
    plot = getattr(importlib.import_module(module), function)
    plot(study, args.out, **inputs, record=record)
    log.info("wrote %s", args.out)


def _option_values(args: argparse.Namespace, option: str) -> list[str] | None:
    return getattr(args, option.lstrip("-").replace("-", "_"))


def _required(value: str | None, option: str, figure: str) -> str:
    if value is None:
        raise ConceptspaceError(f"`figure {figure}` needs {option} PATH")
    return value


def cmd_claims(args: argparse.Namespace) -> None:
    from conceptspace.claims import write_claims

    config = _settings(args.settings)
    write_claims(args.out, args.table, config, args.study, args.underspecification)
    log.info("wrote %s and %s", args.out, args.table)


def cmd_claims_table(args: argparse.Namespace) -> None:
    from conceptspace.claims import claims_table_markdown
    from conceptspace.io import read_json

    print(claims_table_markdown(read_json(args.claims)), end="")


def cmd_claims_budget(args: argparse.Namespace) -> None:
    from conceptspace.budget import budget_table_markdown, claims_by_budget
    from conceptspace.claims import open_underspecification
    from conceptspace.config import load_config
    from conceptspace.io import write_json
    from conceptspace.netcdf import open_study

    claims_cfg = load_config(*args.configfile)["claims"]
    underspec = None
    if args.underspecification:
        underspec = open_underspecification(args.underspecification)
    rows = claims_by_budget(open_study(args.signal), claims_cfg, args.steps, underspec)
    if args.out:
        write_json(args.out, {"budgets": rows, "claims_cfg": claims_cfg})
    print(budget_table_markdown(rows), end="")


def cmd_calibration_record(args: argparse.Namespace) -> None:
    from conceptspace.calibration import write_record

    out = write_record(
        args.name,
        args.configfile,
        args.results,
        args.out,
        args.wall_seconds,
        args.peak_rss_kib,
        args.command,
    )
    log.info("wrote %s", out)


def cmd_info(args: argparse.Namespace) -> None:
    from conceptspace.info import describe

    for path in args.paths:
        print(describe(Path(path)))


def build_parser() -> argparse.ArgumentParser:
    from conceptspace.runs import SIGNAL_GRID
    from conceptspace.studies import FIGURE_INPUTS, figure_names

    parser = argparse.ArgumentParser(prog="conceptspace", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def stage(name: str, func, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.set_defaults(func=func)
        return p

    def layout_option(p: argparse.ArgumentParser, *extra: str) -> None:
        from conceptspace.concepts import LAYOUTS

        choices = list(LAYOUTS) + list(extra)
        p.add_argument("--layout", default="color_size", choices=choices, help="concepts")

    def study_run_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--mask-ratio", type=float, default=None, help="underspecification: masked fraction"
        )
        p.add_argument(
            "--background-gap", type=float, default=None, help="background study: gap db"
        )

    def sampled_run_options(p: argparse.ArgumentParser) -> None:
        """The run whose checkpoints a sampling command reads: gaps, seed, study options."""
        p.add_argument("--color-gap", type=float, help="the run's gaps (none for CelebA)")
        p.add_argument("--size-gap", type=float)
        p.add_argument("--seed", type=int, required=True)
        study_run_options(p)

    def compute(p: argparse.ArgumentParser) -> None:
        p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
        p.add_argument("--threads", type=int, default=None, help="torch CPU threads")

    p = stage("render", cmd_render, "render one run's synthetic training set")
    p.add_argument("--settings", required=True, help="JSON with the 'data' section")
    p.add_argument("--color-gap", type=float, required=True)
    p.add_argument("--size-gap", type=float, required=True)
    p.add_argument("--seed", type=int, required=True)
    layout_option(p)
    study_run_options(p)
    p.add_argument("--out", required=True)

    p = stage("celeba", cmd_celeba, "balanced CelebA set (torchvision layout) as a dataset")
    p.add_argument("--root", required=True, help="the folder holding celeba/ (studies.celeba.root)")
    p.add_argument("--attributes", nargs=2, default=["Male", "Wearing_Hat"], metavar="NAME")
    p.add_argument(
        "--held-out",
        nargs=2,
        type=int,
        default=[0, 1],
        metavar="DIGIT",
        help="the unseen class, 1 = attribute present (default 0 1: female with hat)",
    )
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--per-class", type=int, required=True, help="images of each class")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--split", default="train", choices=["train", "valid", "test", "all"])
    p.add_argument("--include-held-out", action="store_true", help="all four classes (probe)")
    p.add_argument("--validation-fraction", type=float, default=0.15)
    p.add_argument("--crop", type=int, default=None, help="central square, px (default: width)")
    p.add_argument(
        "--no-verify-md5",
        dest="verify_md5",
        action="store_false",
        help="accept edited text files (checks their format instead of the official md5s)",
    )
    p.add_argument("--log-every", type=int, default=1000, help="progress line every N images")
    p.add_argument("--out", required=True)

    p = stage("probe", cmd_probe, "train the concept classifier")
    p.add_argument("--settings", required=True, help="JSON: 'data', 'probe', 'signals'")
    layout_option(p, "celeba")  # celeba: the layout of --data
    p.add_argument(
        "--data", default=None, help="a prepared probe set with every class (CelebA) to train on"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--metrics", required=True)
    compute(p)

    p = stage("train", cmd_train, "train one VDM, resuming from its last checkpoint")
    p.add_argument("--settings", required=True, help="JSON: 'model', 'training'")
    p.add_argument("--data", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--run-dir", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--compile", action="store_true", help="torch.compile the network")
    compute(p)

    p = stage("train-pack", cmd_train_pack, "train runs as one stacked model (a pack)")
    p.add_argument("--settings", required=True, help="JSON: 'model', 'training'")
    p.add_argument(
        "--run",
        nargs=4,
        action="append",
        required=True,
        metavar=("ID", "DATA", "SEED", "RUN_DIR"),
        help="one run of the pack (repeat for each)",
    )
    p.add_argument("--manifest", required=True, help="JSON: the manifest of every run, by id")
    p.add_argument("--compile", action="store_true", help="torch.compile the network")
    compute(p)

    p = stage("run-manifest", cmd_run_manifest, "a run's manifest, from its pack's")
    p.add_argument("--pack", required=True, help="the pack's manifest (train-pack --manifest)")
    p.add_argument("--run", required=True, help="the run's id")
    p.add_argument("--out", required=True)

    p = stage(
        "evaluate-pack",
        cmd_evaluate_pack,
        "score every checkpoint of each run of a pack, drawing the runs' samples together",
    )
    p.add_argument("--settings", required=True, help="JSON: 'evaluation', 'probe'")
    p.add_argument("--probe", required=True)
    p.add_argument(
        "--run",
        nargs=3,
        action="append",
        required=True,
        metavar=("ID", "RUN_DIR", "FIELDS"),
        help="one run of the pack (repeat for each): its id, its folder (checkpoints/ in it; "
        "its evaluations go to eval/), and JSON of its seed, gaps and masking ratio",
    )
    p.add_argument("--steps", nargs="+", type=int, required=True, help="the checkpoint steps")
    p.add_argument("--out", required=True, help="JSON: each run's evaluations, by id")
    compute(p)

    p = stage("gather-run", cmd_gather_run, "a run's trajectory from its pack's evaluations")
    p.add_argument("--evaluated", required=True, help="the pack's list (evaluate-pack --out)")
    p.add_argument("--run", required=True, help="the run's id")
    p.add_argument("--out", required=True, help="netCDF: the run's trajectory")

    p = stage("sample", cmd_sample, "images of every method and prompt, as evaluated")
    p.add_argument("--settings", required=True, help="JSON: 'evaluation'")
    sampled_run_options(p)
    p.add_argument("--samples", type=int, required=True, help="first N samples per condition")
    layout_option(p)
    p.add_argument("--out", required=True, help="netCDF: images (step, method, prompt, ...)")
    p.add_argument("checkpoints", nargs="+", help="checkpoints of one run")
    compute(p)

    p = stage("gather-study", cmd_gather_study, "all runs' trajectories -> study dataset")
    p.add_argument("--settings", required=True, help="JSON: 'evaluation', and the config to record")
    p.add_argument(
        "--grid",
        nargs="+",
        default=list(SIGNAL_GRID),
        help="run coordinates that span the study (underspecification: seed mask_ratio)",
    )
    p.add_argument("--out", required=True)
    p.add_argument("runs", nargs="+")

    p = stage("figure", cmd_figure, "draw one figure from a gathered dataset")
    p.add_argument("name", choices=[*figure_names(), "sheet"])
    p.add_argument("--settings", required=True, help="JSON: the config keys the figure reads")
    p.add_argument("--study", help="study dataset (every figure but sheet)")
    p.add_argument("--samples", help="samples file of one run (sheet)")
    for declared in FIGURE_INPUTS.values():  # the options of the figures' inputs
        if declared.option:
            p.add_argument(declared.option, nargs="+", help=declared.help)
    p.add_argument("--out", required=True, help="PDF (a PNG is written beside it); sheet: PNG")

    p = stage("claims", cmd_claims, "judge the paper's claims from the study datasets")
    p.add_argument("--settings", required=True, help="JSON: the 'claims' section")
    p.add_argument("--study", required=True, help="the signal study dataset")
    p.add_argument("--underspecification", help="the underspecification study (claim 5)")
    p.add_argument("--out", required=True, help="claims JSON")
    p.add_argument("--table", required=True, help="claims table, HTML")

    p = stage("claims-table", cmd_claims_table, "print a claims.json as a Markdown table")
    p.add_argument("claims", help="results/claims.json")

    p = stage(
        "claims-budget",
        cmd_claims_budget,
        "judge the claims again as if training had stopped earlier: outcome against budget",
    )
    p.add_argument(
        "--configfile", nargs="+", required=True, help="config.yaml and the run's preset"
    )
    p.add_argument("--signal", required=True, help="results/signal/study.nc")
    p.add_argument("--underspecification", help="results/underspecification/study.nc")
    p.add_argument(
        "--steps", nargs="+", type=int, required=True, help="the budgets, in training steps"
    )
    p.add_argument("--out", help="also write the outcomes as JSON here")

    p = stage(
        "calibration-record",
        cmd_calibration_record,
        "write docs/calibration/<name>-<date>/ from one calibration run (scripts/calibrate.sh)",
    )
    p.add_argument("name", help="the candidate (workflow/presets/calibration/<name>.yaml)")
    p.add_argument(
        "--configfile",
        nargs="+",
        required=True,
        help="config.yaml, the presets and the candidate's overlay last, as the run used them",
    )
    p.add_argument("--results", required=True, help="the run's results folder")
    p.add_argument("--out", required=True, help="the record's folder")
    p.add_argument("--wall-seconds", type=float, required=True, help="the run's wall time")
    p.add_argument("--peak-rss-kib", type=int, help="peak RSS of any job (/usr/bin/time -v)")
    p.add_argument("--command", help="the command that ran it, as the record shows it")

    p = stage("info", cmd_info, "print the provenance of files the pipeline wrote")
    p.add_argument("paths", nargs="+")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        args.func(args)
    except ConceptspaceError as err:
        log.error("%s", err)
        return 1
    except BrokenPipeError:
        # The reader of our stdout left (`conceptspace info ... | head`): not an error.
        # Point stdout at devnull so that Python's flush at exit does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
