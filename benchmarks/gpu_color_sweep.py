"""Does config.yaml learn color at the paper's speed? One GPU call (issue 24).

    benchmarks/gpu_color_sweep.sh OUTDIR              # on a machine with a CUDA GPU
    TINY=1 benchmarks/gpu_color_sweep.sh OUTDIR       # the same, tiny, on a CPU (seconds)
    python benchmarks/gpu_color_sweep.py record OUTDIR --out docs/calibration/NAME-DATE

``run`` trains six runs of config.yaml's model, VDM and training settings (color gaps 0.4,
0.6 and 0.8 at size gap 0.4, seeds 0 and 100; ``gpu_color_sweep/paper.yaml``) as ONE pack
(``train.train_pack``: vmapped on CUDA), trains the probe beside it, and evaluates each
checkpoint as soon as it is written (naive prompting, 32 samples per prompt, 50 sampler
steps) in evaluation worker processes sharing the GPU. Training runs to config.yaml's
20,000 steps unless the time guard stops it first: it is stopped when the evaluations
still to do and the final steps (gathering, claims, sample sheets, the report) would no
longer fit in ``--budget-s``; a run cut at step S is the run a budget of S steps trains
(the learning rate is constant, nothing before a step depends on the total). What
finished is gathered: every run on the checkpoints that all runs have evaluated.
Should the pack fail before its first checkpoint (vmap on this GPU, say), the six runs
train as six processes sharing the GPU instead (what the 2026-11-30 H200 call ran),
and the report says so.

OUTDIR gets (at most 8 files: what the device tool brings back):

- README.md: the learning times beside the paper's 8.0k / 4.4k / 3.3k with the ratios
  (T under both definitions: the default, accuracy smoothed with sigma 2 reaching 0.8; the
  authors', hard accuracy smoothed with sigma 1.5 > 0.9 at three checkpoints in a row),
  the claims table, class 11's naive accuracy per checkpoint, gamma_0 with the
  reconstruction and diffusion terms per checkpoint, the timings;
- study.nc, claims.json; checkpoints.csv (every checkpoint of every run: gamma_0,
  gamma_1, the training loss, the validation ELBO's terms, class 11's scores);
- record.tar.gz: the sample sheets (the seed-0 run of each gap), the logs, the runs'
  trajectories, the probe's metrics, the config files; run.log: this script's log.

``record`` turns such an OUTDIR into a docs/calibration/ folder.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
HERE = ROOT / "benchmarks" / "gpu_color_sweep"
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
# Fig. 3 of the paper: naive learning time of color at size gap 0.4, by color gap (steps).
PAPER_T = {0.4: 8000.0, 0.6: 4400.0, 0.8: 3300.0}
# What the study dataset records of the config (workflow/rules/gather.smk's DATASET_KEYS).
DATASET_KEYS = ("preset", "data", "model", "training", "probe", "evaluation", "figures.signal")
GATHER_ONLY = ("threshold", "sigma", "authors")  # evaluation keys sampling does not read
UNSEEN = "11"

log = logging.getLogger("gpu_color_sweep")


# ----------------------------------------------------------------------------- config


def config_files(tiny: bool) -> list[Path]:
    files = [ROOT / "config.yaml", HERE / "paper.yaml"]
    return files + [HERE / "tiny.yaml"] if tiny else files


def load(tiny: bool) -> dict:
    """The config the sweep runs; refuses (non-tiny) one whose model or training differs
    from config.yaml's."""
    from conceptspace.config import load_config, validate_config

    config = load_config(*config_files(tiny))
    validate_config(config, SCHEMA)
    if not tiny:
        paper = load_config(ROOT / "config.yaml")
        for section in ("model", "training"):
            if config[section] != paper[section]:
                raise SystemExit(
                    f"gpu_color_sweep: the {section} section differs from config.yaml's"
                )
    return config


def runs_of(config: dict) -> list:
    from conceptspace.studies import STUDIES

    return STUDIES["signal"].runs(config)


def sampling_cfg(config: dict) -> dict:
    return {k: v for k, v in config["evaluation"].items() if k not in GATHER_ONLY}


class Layout:
    """Where everything of one sweep lives under ``work``."""

    def __init__(self, work: Path):
        self.work = Path(work)
        self.data = self.work / "data"
        self.logs = self.work / "logs"
        self.probe = self.work / "probe" / "probe.pt"
        self.probe_metrics = self.work / "probe" / "metrics.json"
        self.stop = self.work / "training-ended"

    def run_dir(self, run_id: str) -> Path:
        return self.work / "runs" / run_id

    def dataset(self, run_id: str) -> Path:
        return self.data / f"{run_id}.npz"

    def eval_path(self, run_id: str, step: int) -> Path:
        return self.run_dir(run_id) / "eval" / f"step_{step:06d}.nc"

    def checkpoints(self, run_id: str) -> dict[int, Path]:
        found = {}
        for path in (self.run_dir(run_id) / "checkpoints").glob("step_*.pt"):
            found[int(path.stem.split("_")[1])] = path
        return dict(sorted(found.items()))

    def evaluated(self, run_id: str) -> list[int]:
        return sorted(
            int(p.stem.split("_")[1]) for p in (self.run_dir(run_id) / "eval").glob("step_*.nc")
        )


def default_work() -> Path:
    """RAM when there is plenty (checkpoints: ~10 GB of writes for six paper runs)."""
    shm = Path("/dev/shm")
    try:
        if shm.is_dir() and shutil.disk_usage(shm).free > 40e9 and os.access(shm, os.W_OK):
            return shm / "conceptspace-color-sweep"
    except OSError:
        pass
    return ROOT / "results" / "gpu-color-sweep"


# ----------------------------------------------------------------------------- workers


def cmd_train(args: argparse.Namespace) -> None:
    """The pack: every run of the sweep as one stacked model (train.train_pack)."""
    from conceptspace import train
    from conceptspace.train import PackRun, train_pack

    if args.simulate_failure:
        raise SystemExit("train: --simulate-failure (a test of the fallback)")
    if args.force_vmap:  # the CUDA path (one vmapped pass) on a CPU: the tiny run's check
        train.vmap_runs = lambda device: True
    config = load(args.tiny)
    where = Layout(args.work)
    runs = [
        PackRun(where.dataset(run.id), run.seed, where.run_dir(run.id)) for run in runs_of(config)
    ]
    train_pack(config["model"], config["training"], runs, device=args.device, threads=args.threads)


def cmd_evaluate(args: argparse.Namespace) -> None:
    """Evaluate the checkpoints of ``--runs`` as they appear, earliest step first, until
    the training has ended (the stop file) and none is left."""
    from conceptspace.evaluate import evaluate_checkpoint

    config = load(args.tiny)
    where = Layout(args.work)
    runs = {run.id: run for run in runs_of(config) if run.id in args.runs}
    failures: dict[Path, int] = {}
    while True:
        ended = where.stop.exists()  # read before listing: nothing is written after it
        pending = [
            (step, run_id, path)
            for run_id in runs
            for step, path in where.checkpoints(run_id).items()
            if not where.eval_path(run_id, step).exists() and failures.get(path, 0) < 2
        ]
        if pending and where.probe.exists():
            step, run_id, path = min(pending)
            run = runs[run_id]
            try:
                evaluate_checkpoint(
                    path,
                    where.probe,
                    evaluation_cfg=sampling_cfg(config),
                    min_accuracy=float(config["probe"]["min_accuracy"]),
                    signal=run.signal,
                    seed=run.seed,
                    out_path=where.eval_path(run_id, step),
                    device=args.device,
                    threads=args.threads,
                )
            except Exception as err:  # a checkpoint rewritten meanwhile: try once more
                failures[path] = failures.get(path, 0) + 1
                log.warning("evaluating %s failed (%s: %s)", path, type(err).__name__, err)
            continue
        if ended and not pending:
            return
        time.sleep(0.5)


# ----------------------------------------------------------------------------- the run


def _python() -> list[str]:
    return [sys.executable, "-u"]


def _start(command: list[str], log_path: Path) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])
        ),
    }
    handle = open(log_path, "w")
    log.info("start: %s > %s", " ".join(command), log_path)
    return subprocess.Popen(
        command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True
    )


def _stop(process: subprocess.Popen, why: str) -> None:
    if process.poll() is not None:
        return
    log.info("stopping pid %d: %s", process.pid, why)
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def render(config: dict, where: Layout) -> None:
    from conceptspace.render import render_training_set, save_dataset

    for run in runs_of(config):
        save_dataset(
            where.dataset(run.id), render_training_set(config["data"], run.signal, run.seed)
        )


class Sweep:
    """The processes of one call and the time guard over them."""

    def __init__(self, args: argparse.Namespace, config: dict, where: Layout):
        self.args, self.config, self.where = args, config, where
        self.runs = runs_of(config)
        self.started = time.monotonic()
        self.deadline = self.started + args.budget_s
        self.events: dict[str, float] = {}
        self.mode = "pack"
        self.training: list[subprocess.Popen] = []
        self.stopped_by_guard = False

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def mark(self, name: str) -> None:
        self.events[name] = round(self.elapsed(), 1)
        log.info("%s at %.1f s", name, self.events[name])

    def base(self, command: str) -> list[str]:
        line = _python() + [str(Path(__file__)), command, "--work", str(self.where.work)]
        return line + (["--tiny"] if self.args.tiny else [])

    def start_pack(self) -> None:
        line = self.base("train") + [
            "--device",
            self.args.device,
            "--threads",
            str(self.args.train_threads),
        ]
        if self.args.tiny:
            line.append("--force-vmap")
        if self.args.simulate_pack_failure:
            line.append("--simulate-failure")
        self.training = [_start(line, self.where.logs / "train.log")]

    def start_separate(self) -> None:
        """The fallback: each run its own `conceptspace train` process, sharing the GPU."""
        from conceptspace.config import select

        self.mode = "separate processes (the pack failed)"
        settings = json.dumps(select(self.config, ("model", "training")))
        self.training = []
        for run in self.runs:
            shutil.rmtree(self.where.run_dir(run.id) / "checkpoints", ignore_errors=True)
            line = _python() + ["-m", "conceptspace", "train", "--settings", settings]
            line += ["--data", str(self.where.dataset(run.id)), "--seed", str(run.seed)]
            line += ["--run-dir", str(self.where.run_dir(run.id))]
            line += ["--manifest", str(self.where.run_dir(run.id) / "manifest.json")]
            line += ["--device", self.args.device, "--threads", "2"]
            self.training.append(_start(line, self.where.logs / f"train_{run.id}.log"))

    def checkpoints_written(self) -> int:
        return sum(len(self.where.checkpoints(run.id)) for run in self.runs)

    def backlog(self) -> int:
        return sum(
            len(set(self.where.checkpoints(run.id)) - set(self.where.evaluated(run.id)))
            for run in self.runs
        )

    def eval_seconds(self) -> float:
        """Seconds per evaluated checkpoint, the workers together: measured once a few are
        done, else the guess ``--eval-s``."""
        done = sum(len(self.where.evaluated(run.id)) for run in self.runs)
        if done < 4 or "first evaluation" not in self.events:
            return self.args.eval_s / self.args.eval_workers
        return max(self.elapsed() - self.events["first evaluation"], 1.0) / (done - 1)

    def run(self) -> None:
        args, where = self.args, self.where
        probe_settings = json.dumps(
            {
                "data": self.config["data"],
                "probe": self.config["probe"],
                "signals": [list(level) for level in self._levels()],
            }
        )
        probe = _start(
            _python()
            + [
                "-m",
                "conceptspace",
                "probe",
                "--settings",
                probe_settings,
                "--seed",
                str(self.runs[0].seed),
            ]
            + ["--out", str(where.probe), "--metrics", str(where.probe_metrics)]
            + ["--device", args.device, "--threads", str(args.probe_threads)],
            where.logs / "probe.log",
        )
        self.start_pack()
        workers = []
        for k in range(args.eval_workers):
            ids = [run.id for run in self.runs[k :: args.eval_workers]]
            line = self.base("evaluate") + [
                "--device",
                args.device,
                "--threads",
                str(args.eval_threads),
            ]
            workers.append(_start(line + ["--runs", *ids], where.logs / f"evaluate_{k}.log"))
        finish_at = self.deadline - args.finish_s
        while True:
            time.sleep(args.poll_s)
            if "probe" not in self.events and probe.poll() is not None:
                self.mark("probe")
                if probe.returncode != 0:
                    log.error("the probe failed (logs/probe.log): nothing can be evaluated")
                    break
            if "first evaluation" not in self.events and any(
                self.where.evaluated(run.id) for run in self.runs
            ):
                self.mark("first evaluation")
            training = any(p.poll() is None for p in self.training)
            if not training and "training ended" not in self.events:
                codes = [p.returncode for p in self.training]
                failed = codes[0] != 0 and not self.stopped_by_guard
                if self.mode == "pack" and failed and self.checkpoints_written() == 0:
                    log.error("the pack failed before its first checkpoint (exit %s)", codes[0])
                    self.mark("pack failed")
                    self.start_separate()
                    continue
                self.mark("training ended")
                self.events["training exit codes"] = codes
                where.stop.touch()
            if (
                training
                and self.elapsed() + self.backlog() * self.eval_seconds() + args.margin_s
                >= finish_at
            ):
                self.stopped_by_guard = True
                for process in self.training:
                    _stop(process, "time guard: the evaluations left and the report need the rest")
                continue
            if all(w.poll() is not None for w in workers) and "training ended" in self.events:
                self.mark("evaluations ended")
                break
            if self.elapsed() >= finish_at:
                self.mark("evaluations cut by the time guard")
                break
        where.stop.touch()
        for process in [probe, *self.training, *workers]:
            _stop(process, "the call's time is up")

    def _levels(self) -> list:
        from conceptspace.studies import STUDIES

        return STUDIES["signal"].levels(self.config)


def _begin(args: argparse.Namespace) -> tuple[Path, dict, Layout]:
    """OUTDIR made, the log going to it, the config and the work folder."""
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _log_to(out / "run.log")
    # this process samples the sheets: on a busy CPU, more threads than it may use stall
    torch.set_num_threads(args.threads)
    return out, load(args.tiny), Layout(args.work or default_work())


def cmd_run(args: argparse.Namespace) -> None:
    out, config, where = _begin(args)
    shutil.rmtree(where.work, ignore_errors=True)
    where.logs.mkdir(parents=True)
    import torch

    device = args.device
    log.info(
        "gpu_color_sweep: torch %s, device %s%s, work %s, budget %.0f s",
        torch.__version__,
        device,
        f" ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "",
        where.work,
        args.budget_s,
    )
    sweep = Sweep(args, config, where)
    render(config, where)
    sweep.mark("rendered")
    sweep.run()
    facts = {
        "events_s": sweep.events,
        "training_mode": sweep.mode,
        "stopped_by_time_guard": sweep.stopped_by_guard,
        "budget_s": args.budget_s,
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
    }
    finish(config, where, out, facts, args.tiny, deadline=sweep.deadline, device=device)
    log.info("done in %.1f s", sweep.elapsed())


def _log_to(path: Path) -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[logging.StreamHandler(sys.stderr), logging.FileHandler(path)],
    )


# ----------------------------------------------------------------------------- gathering


def common_steps(config: dict, where: Layout) -> list[int]:
    """The checkpoints every run has evaluated, from the first on without a gap (the
    schedule's prefix that all runs reached)."""
    from conceptspace.runs import checkpoint_steps

    steps = checkpoint_steps(config["training"])
    done = [set(where.evaluated(run.id)) for run in runs_of(config)]
    common = []
    for step in steps:
        if not all(step in d for d in done):
            break
        common.append(step)
    return common


def finish(
    config: dict,
    where: Layout,
    out: Path,
    facts: dict,
    tiny: bool,
    deadline: float | None = None,
    device: str = "cpu",
) -> None:
    """Gather what finished into OUTDIR (see the module docstring)."""
    from conceptspace.claims import claims_table_markdown, write_claims
    from conceptspace.config import select
    from conceptspace.netcdf import save_dataset_nc
    from conceptspace.trajectories import gather_run, gather_study

    out.mkdir(parents=True, exist_ok=True)
    runs = runs_of(config)
    steps = common_steps(config, where)
    facts["steps_evaluated_by_all_runs"] = steps
    facts["last_checkpoint_per_run"] = {
        run.id: max(where.checkpoints(run.id), default=None) for run in runs
    }
    facts["training_speed"] = training_speed(where)
    sections = [
        f"# The paper's model on the color sweep, in one call ({facts.get('device_name', '')})\n"
    ]
    if not steps:
        sections.append("No checkpoint was evaluated by every run: nothing to gather.\n")
        _write_outputs(out, where, sections, facts, tiny)
        return
    trajectories = []
    for run in runs:
        path = where.run_dir(run.id) / "trajectory.nc"
        save_dataset_nc(gather_run([where.eval_path(run.id, s) for s in steps]), path)
        trajectories.append(path)
    study = gather_study(
        trajectories,
        select(config, (*DATASET_KEYS, "studies.signal")),
        config["evaluation"],
        grid=("seed", "color_gap", "size_gap"),
    )
    save_dataset_nc(study, out / "study.nc")
    record = write_claims(
        out / "claims.json",
        where.work / "claims.html",
        select(config, ("claims",)),
        out / "study.nc",
    )
    sections.append(times_table(study, steps, config))
    sections.append("## Claims\n\n" + claims_table_markdown(record))
    rows = checkpoint_rows(config, where, study)
    _write_csv(out / "checkpoints.csv", rows)
    sections.append(accuracy_table(study))
    sections.append(terms_table(rows, runs))
    if deadline is None or time.monotonic() < deadline - 5:
        sections.append(sample_sheets(config, where, steps, device, deadline))
    _write_outputs(out, where, sections, facts, tiny)


def _t(value: float, last: int, never_is_last: bool = False) -> str:
    if not math.isfinite(value) or (never_is_last and value >= last):
        return f"never (by {last:,})"
    return f"{value:,.0f}"


def times_table(study, steps: list[int], config: dict) -> str:
    """T per run under both definitions, beside the paper's, with the ratio."""
    last = int(steps[-1])
    naive = study.sel({"method": "naive"})
    ev = config["evaluation"]
    authors = ev["authors"]
    lines = [
        "## Learning times of class 11 (naive prompting), beside the paper's Fig. 3\n",
        f"Checkpoints evaluated in every run: {len(steps)}, steps {steps[0]:,} to {last:,}. "
        f"T: first checkpoint where the accuracy, Gaussian-smoothed over checkpoints (sigma "
        f"{ev['sigma']:g}), reaches {ev['threshold']:g} (the paper's text; NaN: never). T "
        f"authors: hard accuracy smoothed (sigma {authors['sigma']:g}, reflect) > "
        f"{authors['threshold']:g} at {authors['consecutive']} checkpoints in a row, the "
        "middle one (the authors' notebooks; never: the last step). Ratio: T(color) / the "
        "paper's.\n",
        "| color gap | seed | T(color) | T(size) | T(joint) | T authors (color) | T authors (size) | paper T(color) | ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for gap in study["color_gap"].values:
        for seed in study["seed"].values:
            run = naive.sel(color_gap=gap, seed=seed, size_gap=0.4)
            concept = run["learning_time_concept"]
            t_color = float(concept.sel(concept="color"))
            t_size = float(concept.sel(concept="size"))
            a = run["learning_time_authors"]
            paper = PAPER_T.get(round(float(gap), 3), math.nan)
            ratio = f"{t_color / paper:.2f}" if math.isfinite(t_color) else f"> {last / paper:.2f}"
            lines.append(
                f"| {float(gap):g} | {int(seed)} | {_t(t_color, last)} | {_t(t_size, last)} | "
                f"{_t(float(run['learning_time']), last)} | "
                f"{_t(float(a.sel(concept='color')), last, True)} | "
                f"{_t(float(a.sel(concept='size')), last, True)} | {paper:,.0f} | {ratio} |"
            )
    return "\n".join(lines) + "\n"


def accuracy_table(study) -> str:
    naive = study["accuracy"].sel({"method": "naive", "prompt": UNSEEN}).sel(size_gap=0.4)
    runs = [(g, s) for g in naive["color_gap"].values for s in naive["seed"].values]
    head = " | ".join(f"dc {float(g):g} s{int(s)}" for g, s in runs)
    lines = [
        f"## Class {UNSEEN}'s naive accuracy per checkpoint (raw; valid x P(blue) x P(small))\n",
        f"| step | {head} |",
        "|---|" + "---|" * len(runs),
    ]
    for i, step in enumerate(naive["step"].values):
        cells = [f"{float(naive.sel(color_gap=g, seed=s)[i]):.2f}" for g, s in runs]
        lines.append(f"| {int(step)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


TERMS = ("gamma_0", "reconstruction", "diffusion")


def checkpoint_rows(config: dict, where: Layout, study) -> list[dict]:
    """Every checkpoint of every run, from its sidecar: the schedule's ends, the training
    loss and the validation ELBO's terms (bits/dim); class 11's scores where evaluated."""
    rows = []
    for run in runs_of(config):
        for step, path in where.checkpoints(run.id).items():
            try:
                metrics = json.loads(path.with_suffix(".json").read_text())["metrics"]
            except (OSError, ValueError, KeyError):
                continue
            terms = metrics.get("validation_terms") or {}
            row = {
                "run": run.id,
                "color_gap": run.color_gap,
                "seed": run.seed,
                "step": step,
                "gamma_0": metrics.get("gamma_0"),
                "gamma_1": metrics.get("gamma_1"),
                "train_loss": metrics.get("train_loss"),
                "validation_loss": terms.get("loss"),
                "reconstruction": terms.get("reconstruction"),
                "diffusion": terms.get("diffusion"),
                "prior": terms.get("prior"),
            }
            if step in study["step"].values:
                at = study.sel({"method": "naive", "prompt": UNSEEN, "step": step})
                at = at.sel(color_gap=run.color_gap, seed=run.seed, size_gap=run.size_gap)
                row["accuracy_11"] = float(at["accuracy"])
                row["color_accuracy_11"] = float(at["concept_accuracy"].sel(concept="color"))
                row["size_accuracy_11"] = float(at["concept_accuracy"].sel(concept="size"))
                row["valid_fraction_11"] = float(at["valid_fraction"])
            rows.append(row)
    return rows


def terms_table(rows: list[dict], runs) -> str:
    """gamma_0 and the validation ELBO's reconstruction and diffusion terms per
    checkpoint, for the seed-0 run of each gap (checkpoints.csv has every run)."""
    shown = [run for run in runs if run.seed == runs[0].seed]
    by = {(r["run"], r["step"]): r for r in rows}
    steps = sorted({r["step"] for r in rows})
    head = " | ".join(f"{t} dc {run.color_gap:g}" for run in shown for t in TERMS)
    lines = [
        "## gamma_0, reconstruction and diffusion terms per checkpoint\n",
        "The validation ELBO's terms in bits/dim (256 held-out images, the same noise at "
        f"every checkpoint) and gamma_0 = gamma(0), for the seed-{runs[0].seed} run of each "
        "gap; every run's, with gamma_1 and the training loss, in checkpoints.csv.\n",
        f"| step | {head} |",
        "|---|" + "---|" * (len(TERMS) * len(shown)),
    ]
    for step in steps:
        cells = []
        for run in shown:
            row = by.get((run.id, step), {})
            cells += [_num(row.get(t)) for t in TERMS]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _num(value: Any) -> str:
    if value is None or not math.isfinite(float(value)):
        return "—"
    return f"{float(value):.4g}"


def sample_sheets(config, where: Layout, steps, device, deadline, columns: int = 16) -> str:
    """The sample sheet of each gap's first-seed run, at up to ``columns`` checkpoints."""
    from conceptspace.evaluate import sample_checkpoints
    from conceptspace.figures.sheets import plot_sample_sheet
    from conceptspace.io import provenance
    from conceptspace.netcdf import open_samples

    sheet = config["figures"]["sample_sheet"]
    picked = sorted(
        {steps[round(i * (len(steps) - 1) / max(columns - 1, 1))] for i in range(columns)}
    )
    lines = ["## Sample sheets (in record.tar.gz: sheets/)\n"]
    first_seed = runs_of(config)[0].seed
    for run in [r for r in runs_of(config) if r.seed == first_seed]:
        if deadline is not None and time.monotonic() > deadline - 5:
            lines.append(f"- {run.id}: not drawn, the call's time was up")
            continue
        paths = [where.checkpoints(run.id)[s] for s in picked]
        samples = where.run_dir(run.id) / "samples.nc"
        sample_checkpoints(
            paths,
            evaluation_cfg=sampling_cfg(config),
            signal=run.signal,
            seed=run.seed,
            samples=int(sheet["samples"]),
            out_path=samples,
            device=device,
        )
        png = where.work / "sheets" / f"samples_{run.id}.png"
        png.parent.mkdir(exist_ok=True)
        title = f"Generations of {run.id} (naive prompting)"
        plot_sample_sheet(
            open_samples(samples), png, title, int(sheet["samples"]), record=provenance(sheet)
        )
        lines.append(f"- {run.id}: sheets/{png.name}, steps {', '.join(map(str, picked))}")
    return "\n".join(lines) + "\n"


def training_speed(where: Layout) -> str | None:
    """The training log's last progress line (steps/s of the pack)."""
    last = None
    for path in sorted(where.logs.glob("train*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if "steps/s" in line:
                last = line.strip()
    return last


def _write_csv(path: Path, rows: list[dict]) -> None:
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def _write_outputs(out: Path, where: Layout, sections: list[str], facts: dict, tiny: bool) -> None:
    sections.append(
        "## Timings and facts\n\n```json\n" + json.dumps(facts, indent=1, default=str) + "\n```\n"
    )
    (out / "README.md").write_text("\n".join(sections))
    (where.work / "facts.json").write_text(json.dumps(facts, indent=1, default=str))
    with tarfile.open(out / "record.tar.gz", "w:gz") as tar:
        for path in [where.work / "facts.json", where.probe_metrics, where.work / "claims.html"]:
            if path.exists():
                tar.add(path, arcname=path.name)
        for folder in ("logs", "sheets"):
            if (where.work / folder).exists():
                tar.add(where.work / folder, arcname=folder)
        for path in sorted(where.work.glob("runs/*/*.nc")):
            tar.add(path, arcname=f"runs/{path.parent.name}/{path.name}")
        for path in config_files(tiny):
            tar.add(path, arcname=f"config/{path.name}")
    log.info("wrote %s", ", ".join(sorted(p.name for p in out.iterdir())))


def cmd_finish(args: argparse.Namespace) -> None:
    """Gather a work folder again (after a cut, or to redo the report)."""
    out, config, where = _begin(args)
    facts = (
        json.loads((where.work / "facts.json").read_text())
        if (where.work / "facts.json").exists()
        else {}
    )
    finish(config, where, out, facts, args.tiny, device=args.device)


# ----------------------------------------------------------------------------- record


def cmd_record(args: argparse.Namespace) -> None:
    """A docs/calibration/ folder from a call's OUTDIR: README.md (with the command),
    study.nc, claims.json, checkpoints.csv, the sample sheets and the logs."""
    source, out = Path(args.outdir), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    readme = (source / "README.md").read_text()
    title, _, rest = readme.partition("\n")
    head = (
        f"{title}\n\nWhat: `benchmarks/gpu_color_sweep.sh` (config.yaml with "
        "`benchmarks/gpu_color_sweep/paper.yaml` over it: six runs as one pack, the probe and "
        "the evaluations in the same call), command:\n\n"
        f"    {args.command or 'benchmarks/gpu_color_sweep.sh $OUT'}\n\n"
        "## What it taught\n\n_(to write after reading the tables and the sample sheets)_\n"
    )
    for name in ("study.nc", "claims.json", "checkpoints.csv", "run.log"):
        if (source / name).exists():
            shutil.copyfile(source / name, out / name)
    sheets = []
    with tarfile.open(source / "record.tar.gz") as tar:
        for member in tar.getmembers():
            wanted = (
                member.name.startswith(("sheets/", "logs/")) or member.name == "probe_metrics.json"
            )
            if member.isfile() and (wanted or member.name in ("metrics.json", "facts.json")):
                target = out / Path(member.name).name
                with tar.extractfile(member) as handle:
                    target.write_bytes(handle.read())
                if member.name.startswith("sheets/"):
                    sheets.append(target.name)
    images = "".join(f"\n![{name}]({name})\n" for name in sorted(sheets))
    (out / "README.md").write_text(
        head + rest + ("\n## Sample sheets\n" + images if images else "")
    )
    print(out)


# ----------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p, device="cuda"):
        p.add_argument("--tiny", action="store_true", help="tiny model and data (a CPU check)")
        p.add_argument(
            "--work", type=Path, default=None, help="working folder (default: /dev/shm or results/)"
        )
        p.add_argument("--device", default=device)
        p.add_argument("--threads", type=int, default=2)

    p = sub.add_parser("run", help="the whole sweep under a time budget")
    common(p)
    p.add_argument("--out", required=True)
    p.add_argument("--budget-s", type=float, default=500.0, help="wall time of this command, s")
    p.add_argument("--finish-s", type=float, default=60.0, help="kept for gathering and the report")
    p.add_argument("--margin-s", type=float, default=10.0)
    p.add_argument("--eval-s", type=float, default=2.0, help="guess: s per checkpoint evaluation")
    p.add_argument("--eval-workers", type=int, default=2)
    p.add_argument("--eval-threads", type=int, default=2)
    p.add_argument("--train-threads", type=int, default=4)
    p.add_argument("--probe-threads", type=int, default=4)
    p.add_argument("--poll-s", type=float, default=1.0)
    p.add_argument("--simulate-pack-failure", action="store_true", help="test the fallback")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("train", help="(a worker) the pack")
    common(p)
    p.add_argument("--force-vmap", action="store_true", help="the vmapped pass on a CPU too")
    p.add_argument("--simulate-failure", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="(a worker) evaluate checkpoints as they appear")
    common(p)
    p.add_argument("--runs", nargs="+", required=True)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("finish", help="gather a work folder again into OUTDIR")
    common(p, device="cpu")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_finish)

    p = sub.add_parser("record", help="OUTDIR -> a docs/calibration/ folder")
    p.add_argument("outdir")
    p.add_argument("--out", required=True, help="docs/calibration/<name>-<date>")
    p.add_argument("--command", default=None, help="the command that ran, as the record shows it")
    p.set_defaults(func=cmd_record)

    args = parser.parse_args(argv)
    if args.command in ("train", "evaluate"):
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    args.func(args)


if __name__ == "__main__":
    main()
