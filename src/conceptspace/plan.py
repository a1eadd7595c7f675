"""What a run is about to do, said before it starts: the plan block.

The Snakefile prints :func:`plan_block` once, when it has read and checked the config,
in every run and every dry run (``snakemake -n``): the preset and why it was chosen, the
studies that are on with their runs, the jobs of the whole workflow, an estimate of the
compute and of the disk it takes. Before the first job of a real run, :func:`space_problem`
compares the disk the planned jobs write with the space free where the results go.

The compute estimate comes from the measured speeds of ``benchmarks/results/*.json``
(benchmarks/README.md): for training, the images per second of the measured U-Net nearest
in size to the config's (``REFERENCES``), scaled by the ratio of their multiply-adds per
image (:func:`unet_size`, counted from the architecture of ``unet.UNet``); for evaluation,
the seconds per sample and sampler step the same way. On a CPU the unit is core-hours (a
measurement's seconds times its threads), on a GPU GPU-hours of the H200 measured, where
a smaller model is taken to cost as much as the measured one (a small U-Net leaves the
GPU waiting on kernel launches). Rendering, the probes, gathering and the figures take
minutes and are left out. No torch here: it runs while Snakemake reads the workflow.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from conceptspace.runs import checkpoint_steps
from conceptspace.io import filesystem_of, free_bytes, megabytes
from conceptspace.methods import build_methods, sample_sheet_steps

SINUSOIDAL_DIM = 64  # unet.SINUSOIDAL_DIM (a test holds them equal)
IMAGE_CHANNELS = 3
FLOAT_BYTES = 4
RESUMABLE_CHECKPOINTS = 2  # train._RESUME_KEY: the optimizer state (two moments) in these
# What torch.save adds to a checkpoint's tensors (measured with torch 2.14): each record
# of the model's state (~345 B), each parameter's three of AdamW's state (exp_avg,
# exp_avg_sq, step: ~810 B), and the rest of the checkpoint (RNG state, config,
# provenance: ~12 KB).
BYTES_PER_MODEL_TENSOR = 350
BYTES_PER_OPTIMIZER_TENSOR = 820
CHECKPOINT_EXTRA_BYTES = 16_000
# Smaller files, as the smoke preset's run wrote them: a figure's PDF and PNG (up to
# 0.36 MB), a sample sheet (0.11 MB), a study's dataset, probe and logs (0.2 MB).
FIGURE_BYTES = 400_000
SHEET_BYTES = 200_000
STUDY_BYTES = 300_000
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


@dataclass(frozen=True)
class Reference:
    """One measured speed of benchmarks/results: the file, the case's name, and the image
    size of its model (training records do not hold it: the paper model is 32 px, the
    small one the preset given to benchmarks/run.py)."""

    file: str
    name: str
    image_size: int | None = None  # None: the record's data.image_size (evaluation)


REFERENCES = {
    ("train", "cpu"): (
        Reference("cpu-epyc-2core-quiet.json", "train/paper/cpu/conceptspace/default", 32),
        Reference("cpu-epyc-2core-quiet.json", "train/small/cpu/conceptspace/default", 16),
        Reference(
            "cpu-epyc-2core-32px-three-levels.json", "train/small/cpu/conceptspace/default", 32
        ),
    ),
    ("train", "cuda"): (
        Reference("gpu-h200-training.json", "train/paper/cuda/conceptspace/default", 32),
        Reference("gpu-h200-training.json", "train/small/cuda/conceptspace/default", 16),
    ),
    ("evaluate", "cpu"): (
        Reference("cpu-epyc-2core-evaluation-batch512.json", "evaluate/small/cpu"),
        Reference("cpu-epyc-2core-evaluation.json", "evaluate/small/cpu"),
    ),
    ("evaluate", "cuda"): (
        Reference("gpu-h200-evaluation-batch512.json", "evaluate/paper/cuda"),
        Reference("gpu-h200-evaluation-batch512.json", "evaluate/small/cuda"),
    ),
}


# ----------------------------------------------------------------------------- the model


def unet_size(model: Mapping[str, Any], h_dim: int, image_size: int) -> tuple[int, int, int]:
    """(parameters, multiply-adds of one forward pass per image, parameter tensors) of
    the VDM on ``unet.UNet`` built from ``model`` (multiply-adds: convolutions, linear
    layers and attention; norms and activations count in the parameters only). The VDM
    adds its schedule's two parameters."""
    channels = [int(c) for c in model["channels"]]
    blocks_per_level, time_dim = int(model["blocks_per_level"]), int(model["time_dim"])
    levels = len(channels)
    counted = {"params": 2, "macs": 0, "tensors": 2}  # the VDM's gamma_bias and gamma_slope

    def norm(width: int) -> None:
        counted["params"] += 2 * width
        counted["tensors"] += 2

    def dense(n_in: int, n_out: int, kernel: int = 1, resolution: int = 1) -> None:
        counted["params"] += n_in * n_out * kernel * kernel + n_out
        counted["tensors"] += 2
        counted["macs"] += n_in * n_out * kernel * kernel * resolution * resolution

    def mlp(n_in: int, n_out: int) -> None:
        dense(n_in, n_out)
        dense(n_out, n_out)

    def resolution(level: int) -> int:
        return image_size // 2**level

    residual = []  # (in, out, resolution) of every residual block, down, middle, up
    previous = channels[0]
    for level, width in enumerate(channels):
        residual += [(previous, width, resolution(level))]
        residual += [(width, width, resolution(level))] * (blocks_per_level - 1)
        previous = width
    lowest = channels[-1]
    residual += [(lowest, lowest, resolution(levels - 1))] * 2
    for level in reversed(range(levels)):
        width = channels[level]
        first = width if level == levels - 1 else 2 * width
        residual += [(first, width, resolution(level))]
        residual += [(width, width, resolution(level))] * (blocks_per_level - 1)

    mlp(SINUSOIDAL_DIM, time_dim)
    dense(IMAGE_CHANNELS, channels[0], 3, image_size)  # conv_in
    for level in range(levels - 1):  # downsamples: 2x2, stride 2
        dense(channels[level], channels[level], 2, resolution(level + 1))
    for level in reversed(range(1, levels)):  # upsamples: transposed 2x2, stride 2
        dense(channels[level], channels[level - 1], 2, resolution(level))
    norm(lowest)  # middle attention: its norm, qkv, projection
    dense(lowest, 3 * lowest, 1, resolution(levels - 1))
    dense(lowest, lowest, 1, resolution(levels - 1))
    counted["macs"] += 2 * resolution(levels - 1) ** 4 * lowest  # q.k and the weighted sum
    norm(channels[0])  # norm_out
    dense(channels[0], IMAGE_CHANNELS, 3, image_size)  # conv_out
    for n_in, n_out, at in residual:
        norm(n_in)
        norm(n_out)
        dense(n_in, n_out, 3, at)
        dense(n_out, n_out, 3, at)
        mlp(time_dim, n_out)
        mlp(h_dim, n_out)  # the block's embedding MLP of h
        if n_in != n_out:
            dense(n_in, n_out, 1, at)  # the skip
    return counted["params"], counted["macs"], counted["tensors"]


def image_size_of(study, config: dict) -> int:
    return int((study.section(config) or {}).get("image_size") or config["data"]["image_size"])


def conditions(study, config: dict) -> tuple[int, int]:
    """(methods, method x prompt conditions) one evaluation of a checkpoint samples."""
    final = checkpoint_steps(study.training(config))[-1]
    methods = build_methods(config["evaluation"]["methods"], final, study.concept_layout(config))
    return len(methods), sum(len(method.prompts) for method in methods)


# ----------------------------------------------------------------------------- the jobs


def sampled_runs(study, config: dict) -> list:
    """The runs of a study whose samples files are made (rule sample_images)."""
    runs = []
    if study.name == "signal":
        sheet = config["figures"]["sample_sheet"]
        runs += [
            run
            for run in study.runs(config)
            if (run.color_gap, run.size_gap, run.seed)
            == (sheet["color_gap"], sheet["size_gap"], sheet["seed"])
        ]
    if any("samples" in figure.inputs for figure in study.figures if figure.wanted(config)):
        runs += [run for run in study.runs(config) if run.seed == study.first_seed(config)]
    return list({run.id: run for run in runs}.values())


def job_counts(config: dict) -> dict[str, int]:
    """The jobs of the whole workflow from scratch (rule all), by rule: what Snakemake's
    "Job stats" of a dry run in an empty folder counts. Training runs in packs of
    compute.pack runs, cut from each study's runs as the workflow cuts them
    (``pack_plan.form_packs``): one train_vdm and one evaluate_pack job a pack, one
    run_manifest and one gather_run job a run."""
    from conceptspace.pack_plan import form_packs
    from conceptspace.studies import figures_of, on_studies

    pack = int(config["compute"].get("pack", 1) or 1)

    jobs: dict[str, int] = {}

    def add(rule: str, count: int) -> None:
        if count:
            jobs[rule] = jobs.get(rule, 0) + count

    for study in on_studies(config):
        run_ids = [run.id for run in study.runs(config)]
        runs = len(run_ids)
        if study.renders:
            add("render_training_set", runs)
        else:
            add("prepare_celeba", runs)
            add("prepare_celeba_probe_set", 1)
        packs = len(form_packs(run_ids, pack))
        add("train_vdm", packs)
        add("run_manifest", runs)
        add("train_probe", 1)
        add("evaluate_pack", packs)
        add("gather_run", runs)
        add("gather_study", 1)
        add("sample_images", len(sampled_runs(study, config)))
        if study.name == "signal":
            add("sample_sheet", 1)
            add("claims", 1)
    for _, figure in figures_of(config):
        add(f"fig_{figure.name}", 1)
    add("all", 1)
    return jobs


# ----------------------------------------------------------------------------- compute


def _record(benchmarks: Path, reference: Reference, kind: str) -> dict | None:
    try:
        document = json.loads((benchmarks / reference.file).read_text())
    except (OSError, ValueError):
        return None
    for record in document.get("training" if kind == "train" else "evaluation", []):
        if record.get("name") == reference.name:
            return record
    return None


@dataclass(frozen=True)
class Speed:
    """Seconds (times threads on a CPU) per multiply-add of the measured model, the
    model's multiply-adds, and where it was measured."""

    seconds_per_mac: float
    macs: int
    source: str

    def seconds(self, macs: float, gpu: bool) -> float:
        """Of ``macs`` multiply-adds of a model: a GPU runs a smaller model no faster."""
        return self.seconds_per_mac * (max(macs, self.macs) if gpu else macs)


def measured_speed(
    kind: str, device: str, macs: int, benchmarks: Path = BENCHMARKS
) -> Speed | None:
    """The measurement of ``kind`` (train: per image; evaluate: per sample and sampler
    step) on ``device`` whose model is nearest in multiply-adds to ``macs``."""
    best = None
    for reference in REFERENCES[(kind, device)]:
        record = _record(benchmarks, reference, kind)
        if record is None:
            continue
        size = reference.image_size or (record.get("data") or {}).get("image_size")
        model_macs = unet_size(record["model"], 4, int(size))[1]
        threads = 1 if device == "cuda" else int(record.get("threads") or 1)
        if kind == "train":
            seconds = threads / float(record["images_per_s"])
        else:
            work = int(record["all_methods_samples"]) * int(record["sampler_steps"])
            seconds = threads * float(record["all_methods_seconds"]) / work
        speed = Speed(seconds / model_macs, model_macs, f"{reference.file} ({reference.name})")
        if best is None or abs(math.log(model_macs / macs)) < abs(math.log(best.macs / macs)):
            best = speed
    return best


def device_of(config: dict, on_cluster: bool) -> str:
    """Where the jobs' models run: a GPU on a cluster (the rules ask Slurm for one), or
    compute.device here (auto: a GPU when nvidia-smi is found)."""
    device = str(config["compute"]["device"])
    if device.startswith("cuda") or (on_cluster and device == "auto"):
        return "cuda"
    if device == "auto" and shutil.which("nvidia-smi"):
        return "cuda"
    return "cpu"


def compute_hours(
    config: dict, device: str, benchmarks: Path = BENCHMARKS
) -> tuple[dict[str, float], list[str]]:
    """Estimated hours of training and of evaluation (with the sample sheets' sampling)
    of every run of the studies that are on: core-hours on a CPU, GPU-hours on a GPU;
    and the measurements they were scaled from. A stage with no measurement for the
    device is left out."""
    from conceptspace.studies import on_studies

    seconds = {"training": 0.0, "evaluation": 0.0}
    sources: dict[str, None] = {}
    gpu = device == "cuda"
    evaluation = config["evaluation"]
    for study in on_studies(config):
        runs = study.runs(config)
        training = study.training(config)
        macs = unet_size(
            config["model"], study.concept_layout(config).h_dim, image_size_of(study, config)
        )[1]
        train = measured_speed("train", device, macs, benchmarks)
        if train is not None:
            images = training["steps"] * training["batch_size"]
            seconds["training"] += len(runs) * images * train.seconds(macs, gpu)
            sources[train.source] = None
        sample = measured_speed("evaluate", device, macs, benchmarks)
        if sample is not None:
            _, n_conditions = conditions(study, config)
            steps = checkpoint_steps(training)
            work = len(steps) * n_conditions * evaluation["samples_per_prompt"]
            shown = config["figures"]["sample_sheet"]
            sheet_steps = len(sample_sheet_steps(shown, steps)) if study.name == "signal" else 1
            sampled = len(sampled_runs(study, config)) * sheet_steps * n_conditions
            work = len(runs) * work + sampled * shown["samples"]
            per_step = sample.seconds(macs, gpu) * evaluation["sampler_steps"]
            seconds["evaluation"] += work * per_step
            sources[sample.source] = None
    return {stage: value / 3600 for stage, value in seconds.items()}, list(sources)


# ----------------------------------------------------------------------------- disk


def disk_per_job(config: dict) -> dict[tuple[str, str], float]:
    """Bytes one job of (rule, study) writes: a training set, a run's checkpoints (the
    model in each, its optimizer state in the latest two), its evaluations (uncompressed),
    a samples file. Upper bounds where the files are compressed."""
    from conceptspace.studies import figures_of, on_studies

    sizes: dict[tuple[str, str], float] = {}
    evaluation = config["evaluation"]
    for study in on_studies(config):
        size = image_size_of(study, config)
        layout = study.concept_layout(config)
        image = IMAGE_CHANNELS * size * size  # uint8
        section = study.section(config)
        per_class = section.get("per_class") or config["data"]["images_per_class"]
        dataset = len(layout.training_classes) * per_class * (image + 64)
        sizes[("render_training_set", study.name) if study.renders else ("prepare_celeba", "")] = (
            dataset
        )
        sizes[("gather_study", study.name)] = STUDY_BYTES
        params, _, tensors = unet_size(config["model"], layout.h_dim, size)
        steps = checkpoint_steps(study.training(config))
        model = params * FLOAT_BYTES + tensors * BYTES_PER_MODEL_TENSOR + CHECKPOINT_EXTRA_BYTES
        optimizer = 2 * params * FLOAT_BYTES + tensors * BYTES_PER_OPTIMIZER_TENSOR
        sizes[("train_vdm", study.name)] = len(steps) * model + RESUMABLE_CHECKPOINTS * optimizer
        methods, _ = conditions(study, config)
        scores = methods * len(layout.classes) * (len(layout.concepts) + 1) * FLOAT_BYTES
        per_checkpoint = scores * evaluation["samples_per_prompt"] + 20_000
        sizes[("evaluate_pack", study.name)] = 2 * len(steps) * per_checkpoint  # + trajectory
        shown = config["figures"]["sample_sheet"]
        sheet_steps = len(sample_sheet_steps(shown, steps)) if study.name == "signal" else 1
        sampled = sheet_steps * methods * len(layout.classes) * shown["samples"] * (image + 1)
        sizes[("sample_images", study.name)] = sampled
    for _, figure in figures_of(config):
        sizes[(f"fig_{figure.name}", "")] = FIGURE_BYTES
    sizes[("sample_sheet", "")] = SHEET_BYTES
    return sizes


def disk_bytes(config: dict, jobs: Iterable[tuple[str, str]]) -> float:
    """Bytes the (rule, study) jobs write, by :func:`disk_per_job`."""
    sizes = disk_per_job(config)
    return sum(sizes.get(job, 0.0) for job in jobs)


def planned_writes(jobs: Iterable[Any]) -> list[tuple[str, str]]:
    """(rule, study) of Snakemake's planned jobs (``workflow.dag.needrun_jobs()``); the
    study is "" for a rule without a {study} wildcard (figures, CelebA's preparation). A
    pack's training or evaluation job counts once for each run it holds (its inputs are
    its runs' datasets, or their manifests)."""
    writes = []
    for job in jobs:
        if job.rule.name == "train_vdm":
            times = max(1, len(job.input))
        elif job.rule.name == "evaluate_pack":
            times = max(1, len(job.input.manifests))
        else:
            times = 1
        writes += [(job.rule.name, getattr(job.wildcards, "study", ""))] * times
    return writes


def all_jobs(config: dict) -> list[tuple[str, str]]:
    """(rule, study) of every job of the whole workflow that writes a file
    :func:`disk_per_job` counts; train_vdm and evaluate_pack once a run, not a pack (their
    sizes there are one run's, as in :func:`planned_writes`)."""
    from conceptspace.studies import figures_of, on_studies

    jobs = []
    for study in on_studies(config):
        runs = len(study.runs(config))
        render = ("render_training_set", study.name) if study.renders else ("prepare_celeba", "")
        jobs += [render] * runs
        jobs += [("train_vdm", study.name), ("evaluate_pack", study.name)] * runs
        jobs += [("sample_images", study.name)] * len(sampled_runs(study, config))
        jobs += [("gather_study", study.name)]
    jobs += [(f"fig_{figure.name}", "") for _, figure in figures_of(config)]
    jobs += (
        [("sample_sheet", "")] if "signal" in {study.name for study in on_studies(config)} else []
    )
    return jobs


def space_problem(config: dict, jobs: Iterable[tuple[str, str]]) -> str | None:
    """None when the results folder's filesystem has room for what ``jobs`` write; else
    the message naming the filesystem, the need, what is free and the fix. An estimate
    that fails is said, and does not stop the run."""
    jobs = list(jobs)
    try:
        needed = disk_bytes(config, jobs)
    except Exception as err:  # noqa: BLE001 - a check, not a reason to stop
        print(
            f"conceptspace plan: disk space not checked ({type(err).__name__}: {err})",
            file=sys.stderr,
        )
        return None
    results = Path(config["results"])
    free = free_bytes(results)
    if needed <= free:
        return None
    return (
        f"no space left on {filesystem_of(results)}: {results} needs about "
        f"{megabytes(needed)} MB for the {len(jobs)} jobs to run (datasets, checkpoints, "
        f"evaluations, samples, figures), and {megabytes(free)} MB are free there; free space "
        "on it, or set config key 'results' to a folder on a larger filesystem"
    )


# ----------------------------------------------------------------------------- the block


def notes(config: dict) -> list[str]:
    """Settings that are legitimate but make a measure degenerate, said in the block:
    evaluation.authors.consecutive above a study's checkpoints (a tiny run's) gives every
    run of it the authors' learning time "never" (its last step)."""
    from conceptspace.studies import on_studies

    said = []
    consecutive = config["evaluation"]["authors"]["consecutive"]
    for study in on_studies(config):
        count = len(checkpoint_steps(study.training(config)))
        if consecutive > count:
            said.append(
                f"evaluation.authors.consecutive ({consecutive}) is above the {count} "
                f"checkpoints of the {study.name} study's runs: their authors' learning time "
                "is the last step (never learned); lower it or add checkpoints to measure it"
            )
    return said


def preset_reason(requested: str, preset: str, executor: str | None, on_cluster: bool) -> str:
    """Why ``preset`` runs: config key ``preset`` as given (auto, or a name)."""
    if requested != "auto":
        return f"named by config key 'preset' ({requested})"
    if on_cluster:
        return (
            f"preset auto, and jobs go to a cluster (executor {executor}): config.yaml at the "
            "paper's scale"
        )
    return (
        "preset auto, and jobs run on this machine; --config preset=paper (or cpu, ...) "
        "chooses another"
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _hours(hours: float) -> str:
    return f"{hours:,.1f}" if hours < 100 else f"{hours:,.0f}"


def plan_block(*args: Any, **kwargs: Any) -> str:
    """:func:`make_plan_block`, or a line saying why it could not be made: the block
    informs, it never stops a run."""
    try:
        return make_plan_block(*args, **kwargs)
    except Exception as err:  # noqa: BLE001
        return f"conceptspace plan: not made ({type(err).__name__}: {err})"


def make_plan_block(
    config: dict,
    requested: str,
    executor: str | None,
    on_cluster: bool,
    benchmarks: Path = BENCHMARKS,
) -> str:
    """The block printed at the start of every run (README "Quickstart")."""
    from conceptspace.studies import STUDIES, on_studies

    preset = str(config.get("preset", requested))
    on = on_studies(config)
    studies = ", ".join(f"{study.name} ({_count(len(study.runs(config)), 'run')})" for study in on)
    off = [name for name in STUDIES if name not in {study.name for study in on}]
    jobs = job_counts(config)
    total = sum(jobs.values())
    shown = ("train_vdm", "evaluate_pack", "train_probe", "sample_images")
    by_rule = ", ".join(f"{rule} {jobs[rule]}" for rule in shown if rule in jobs)
    device = device_of(config, on_cluster)
    hours, sources = compute_hours(config, device, benchmarks)
    unit = "GPU-hours (an H200)" if device == "cuda" else "core-hours"
    if sources:
        compute = (
            f"about {_hours(sum(hours.values()))} {unit}: training {_hours(hours['training'])}, "
            f"evaluation {_hours(hours['evaluation'])}; scaled from benchmarks/results/: "
            + ", ".join(sources)
        )
    else:
        compute = f"no measured speed for {device} in benchmarks/results/"
    sizes = disk_per_job(config)
    writes = all_jobs(config)
    checkpoints = sum(sizes.get(job, 0.0) for job in writes if job[0] == "train_vdm")
    results = Path(config["results"])
    lines = [
        f"preset    {preset}: {preset_reason(requested, preset, executor, on_cluster)}",
        f"studies   {studies or 'none'}" + (f"; off: {', '.join(off)}" if off else ""),
        f"jobs      {total} for everything from scratch ({by_rule}); Snakemake's job "
        "stats count those left to run",
        f"compute   {compute}",
        f"disk      about {megabytes(disk_bytes(config, writes))} MB under {results}/ "
        f"(checkpoints {megabytes(checkpoints)} MB); {megabytes(free_bytes(results))} MB free "
        f"on {filesystem_of(results)}",
    ]
    lines += [f"note      {note}" for note in notes(config)]
    rule = "-" * 24
    return "\n".join([f"{rule} conceptspace plan {rule}", *lines, "-" * 66])
