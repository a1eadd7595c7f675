"""Run-steps per second of the pack trainer (conceptspace.pack) for packs of K runs, in
ONE call under a time budget: meant for a lent GPU (at most 8 minutes), tried on the CPU
with tiny settings first.

    python benchmarks/gpu_pack.py --out benchmarks/results/gpu-pack-<machine>.json
    python benchmarks/gpu_pack.py --tiny --device cpu --packs 1 4 --steps 3 --out /tmp/p.json
    python benchmarks/gpu_pack.py --device cpu --models cpu --packs 1 4 --precisions fp32 \
        --threads 1 --steps 6 --warmup 2 --out /tmp/cpu-pack.json       # this CPU's figure

Each case times the training step that ``train.train_pack`` runs (every run's batch,
times, noise and dropout masks drawn from its own generator, one stacked forward and
backward, per-run clipping, AdamW), on synthetic images (a step's cost does not depend on
what the images show), after a warm-up: K = 1 is today's trainer, one run per process, the
figure the others are compared with, measured in the same call. Cases: the paper's model
(config.yaml) and the cpu preset's (workflow/presets/cpu.yaml), at the preset's batch;
precision fp32 (as the pipeline runs), tf32 (fp32 with TF32 matmuls and convolutions
allowed, CUDA only) and bf16 (training.precision: bf16); K = 1, 4, 16, 64; mode vmap (the
runs' passes as one vmapped pass, what train_pack runs on a GPU) and, with --modes, loop
(each run's pass after another on its slice of the stack, what it runs on a CPU), and
graphs (vmap with the stacked forward and backward through
``torch.compile(mode="reduce-overhead")``, which on a GPU captures them as CUDA graphs and
replays them: issue 27, item 3; the pipeline does not use it until these figures say it
pays; its warm-up, compiling included, is reported as warmup_s). A case that runs
out of memory is recorded as such and the larger packs of its model and precision are
skipped; cases left when the budget is spent are recorded as skipped.

With --stage sample each case times instead the pack evaluator's sampler
(``vdm.sample_runs``, as ``evaluate.evaluate_pack`` draws a checkpoint's prompts): K runs'
ancestral sampler steps, each run's noise from its own per-sample generators, the
networks in one vmapped call (``stacked.StackedNetworks``, mode vmap; graphs: that call
compiled as above) or one after another (mode loop; K = 1 is a run alone, today's
evaluation); fp32 and tf32 only (the evaluation samples in fp32). A call holds the rows
evaluate_pack gives it: --sample-rows (evaluation.batch_size; default the model's
config) shared by a vmapped pack's runs, at most one checkpoint's samples per run. At the
config's 512 a vmapped pack of 4 draws 128 per run per call, so its checkpoint takes 4
calls, as 4 runs alone do; at 2,048 it takes one. So measure both: the rows a pack needs
(K x a checkpoint's samples) are what evaluation.batch_size must allow for packing to
pay in evaluation, and the report's GPU memory says whether a card holds them.

The report (JSON, rewritten after every case): the machine, each case's step time,
run-steps/s, images/s, time per image and peak GPU memory, each pack's run-steps/s
against K = 1 of the same model and precision, and for the paper's model the GPU-hours of
the paper's signal study (290 runs x 20,000 steps; with --stage sample, the sampling of its
evaluation: every checkpoint, condition and sample through every sampler step) that speed
implies.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

# The paper's signal study (config.yaml; tests/test_workflow.py counts its runs).
PAPER_STUDY_RUNS, PAPER_STEPS = 290, 20_000
TINY_MODEL = {"channels": [8, 16], "blocks_per_level": 1, "groups": 4, "attention_heads": 2}
IMAGES_PER_RUN = 512  # synthetic training images per run (held on the device)


def setups(args) -> dict[str, dict]:
    """name -> (model section, batch size, image size) of each model measured."""
    from conceptspace.config import load_config

    paper = load_config(ROOT / "config.yaml")
    cpu = load_config(ROOT / "config.yaml", ROOT / "workflow" / "presets" / "cpu.yaml")
    if args.tiny:
        tiny = {"model": {**paper["model"], **TINY_MODEL}, "batch": 8, "size": 8}
        return {"tiny": {**tiny, "sample_rows": 8, "checkpoint_samples": 8}}
    found = {
        name: {
            "model": config["model"],
            "batch": config["training"]["batch_size"],
            "sample_rows": config["evaluation"]["batch_size"],
            "checkpoint_samples": checkpoint_samples(config),
            "size": config["data"]["image_size"],
        }
        for name, config in (("paper", paper), ("cpu", cpu))
    }
    return {name: found[name] for name in args.models}


def fresh_device(device: torch.device, precision: str) -> bool:
    """On a GPU: TF32 allowed for the tf32 cases only, the cache emptied, the peak memory
    reset. Whether the device is a GPU."""
    if device.type != "cuda":
        return False
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    return True


def captured(fn):
    """``fn`` through torch.compile(mode="reduce-overhead"), CUDA graphs on a GPU; dynamo
    reset first, so each case compiles afresh (no recompile limit, no old graphs held)."""
    torch._dynamo.reset()
    return torch.compile(fn, mode="reduce-overhead")


def clock(warmup, timed, device: torch.device, cuda: bool) -> dict:
    """Seconds of ``warmup()`` (compiling included) and of ``timed()``, whose returned
    tensor is waited for; on a GPU its peak memory."""
    warming = time.perf_counter()
    warmup()
    if cuda:
        torch.cuda.synchronize(device)
    warmup_s = time.perf_counter() - warming
    began = time.perf_counter()
    timed().sum().item()  # waits for the device
    result = {"seconds": time.perf_counter() - began, "warmup_s": warmup_s}
    if cuda:
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


def measure(
    setup: dict, runs: int, precision: str, mode: str, device: torch.device, args, rows=None
):
    """Time ``args.steps`` pack steps of ``runs`` runs after ``args.warmup`` steps."""
    from conceptspace.pack import StackedModel, draw_batch, loss_template, mask_specs
    from conceptspace.checkpoints import build_vdm
    from conceptspace.train import _use_channels_last

    cuda = fresh_device(device, precision)
    network_precision = "bf16" if precision == "bf16" else "fp32"
    size, batch, h_dim = setup["size"], setup["batch"], 4
    vdm = build_vdm(setup["model"], h_dim, size).to(device)
    channels_last = _use_channels_last(device, network_precision)
    if channels_last:
        vdm = vdm.to(memory_format=torch.channels_last)
    vdm.net.set_precision(network_precision)
    template = loss_template(vdm)
    generators = [torch.Generator(device).manual_seed(seed) for seed in range(runs)]
    images = [torch.rand(IMAGES_PER_RUN, 3, size, size, device=device) for _ in range(runs)]
    h = [torch.rand(IMAGES_PER_RUN, h_dim, device=device) for _ in range(runs)]
    example = draw_batch(images[0], h[0], batch, torch.Generator(device), [], channels_last)
    masks = mask_specs(template, example)
    states = []
    for seed in range(runs):  # each run's own seeded initialisation, as train_pack does
        torch.manual_seed(seed)
        model = build_vdm(setup["model"], h_dim, size)
        states.append({k: v.to(device) for k, v in model.state_dict().items()})
    vmapped = mode in ("vmap", "graphs")
    stack = StackedModel(template, states, None, 1e-3, 0.01, 0.01, channels_last, vmapped)
    del states
    if mode == "graphs":  # forward and backward captured; clipping and AdamW stay eager
        stack.losses = captured(stack.losses)

    def step():
        batches = [
            draw_batch(images[k], h[k], batch, generators[k], masks, channels_last)
            for k in range(runs)
        ]
        return stack.step(batches)

    def steps(count):
        for _ in range(count):
            losses, _ = step()
        return losses

    timing = clock(lambda: steps(args.warmup), lambda: steps(args.steps), device, cuda)
    step_s = timing["seconds"] / args.steps
    return {
        "steps": args.steps,
        "step_ms": 1000 * step_s,
        "run_steps_per_s": runs / step_s,
        "images_per_s": runs * batch / step_s,
        "ms_per_image": 1000 * step_s / (runs * batch),
        "parameters_per_run": sum(p[0].numel() for p in stack.params.values()),
        **timing,
    }


def checkpoint_samples(config: dict) -> int:
    """Samples one evaluation of a signal-study checkpoint draws: conditions x samples."""
    from conceptspace.plan import conditions
    from conceptspace.studies import STUDIES

    _, n_conditions = conditions(STUDIES["signal"], config)
    return n_conditions * config["evaluation"]["samples_per_prompt"]


def rows_per_run(setup: dict, rows: int, runs: int, mode: str) -> int:
    """A run's rows in one sampler call, as ``evaluate.evaluate_pack`` cuts them: a vmapped
    pack's runs share the call's ``rows`` (evaluation.batch_size), a run alone or in a
    loop has them all; no run draws more than one checkpoint's samples at once."""
    from conceptspace.evaluate import rows_per_run as pipeline_rows_per_run

    share = pipeline_rows_per_run(rows, runs, vmapped=mode != "loop")
    return min(share, setup["checkpoint_samples"])


def measure_sampling(setup: dict, runs: int, precision: str, mode: str, device, args, rows: int):
    """Time ``args.steps`` sampler steps of ``runs`` runs, ``rows`` rows per call (split
    over a vmapped pack's runs as the pipeline splits them), after ``args.warmup``
    untimed ones."""
    from conceptspace.checkpoints import build_vdm
    from conceptspace.stacked import StackedNetworks
    from conceptspace.vdm import sample_runs

    cuda = fresh_device(device, precision)
    size, batch, h_dim = setup["size"], rows_per_run(setup, rows, runs, mode), 4
    vdms = []
    for seed in range(runs):
        torch.manual_seed(seed)
        vdms.append(build_vdm(setup["model"], h_dim, size).to(device).eval())
    h = torch.rand(batch, h_dim, device=device)
    with torch.no_grad():
        embeddings = [vdm.net.embed(h) for vdm in vdms]
    network = None
    if mode == "graphs" or (mode == "vmap" and runs > 1):
        network = StackedNetworks([v.net for v in vdms])
    if mode == "graphs":
        network = captured(network)

    def sample(steps):
        generators = [
            [torch.Generator(device).manual_seed(1000 * k + i) for i in range(batch)]
            for k in range(runs)
        ]
        return sample_runs(vdms, steps, generators, embeddings, network)

    timing = clock(lambda: sample(args.warmup), lambda: sample(args.steps)[-1], device, cuda)
    step_s = timing["seconds"] / args.steps
    return {
        "rows_per_run": batch,
        "steps": args.steps,
        "sampler_step_ms": 1000 * step_s,
        "sample_steps_per_s": runs * batch / step_s,
        "ms_per_sample_step": 1000 * step_s / (runs * batch),
        **timing,
    }


def paper_evaluation_sample_steps() -> float:
    """Samples times sampler steps of the paper signal study's evaluation (config.yaml):
    every run, checkpoint, condition and sample."""
    from conceptspace.config import load_config
    from conceptspace.runs import checkpoint_steps
    from conceptspace.studies import STUDIES

    config = load_config(ROOT / "config.yaml")
    study = STUDIES["signal"]
    per_run = len(checkpoint_steps(study.training(config))) * checkpoint_samples(config)
    samples = len(study.runs(config)) * per_run
    return float(samples * config["evaluation"]["sampler_steps"])


def machine(device: torch.device, threads: int) -> dict:
    facts = {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": threads,
        "device": str(device),
    }
    if device.type == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(device)
        facts["gpu_memory_gb"] = torch.cuda.get_device_properties(device).total_memory / 2**30
    return facts


def summarize(report: dict) -> None:
    """Each pack against K = 1 of its model and precision; the paper study's GPU-hours."""
    speed = "sample_steps_per_s" if report["stage"] == "sample" else "run_steps_per_s"
    work = (
        paper_evaluation_sample_steps()
        if report["stage"] == "sample"
        else float(PAPER_STUDY_RUNS * PAPER_STEPS)
    )
    # today's one run per process: K = 1 without graph capture (compiled cases compare
    # with it too, so x_one_run of a graphs case holds the capture's gain)
    alone = {
        (c["model"], c["precision"]): c[speed]
        for c in report["cases"]
        if c["runs"] == 1 and c["mode"] != "graphs" and speed in c
    }
    for case in report["cases"]:
        base = alone.get((case["model"], case["precision"]))
        if speed not in case:
            continue
        if base:
            case["x_one_run"] = case[speed] / base
        if case["model"] == "paper":
            case["paper_study_gpu_hours"] = work / case[speed] / 3600


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda")
    parser.add_argument("--models", nargs="+", default=["paper", "cpu"], choices=["paper", "cpu"])
    parser.add_argument("--packs", nargs="+", type=int, default=[1, 4, 16, 64])
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=["fp32", "tf32", "bf16"],
        choices=["fp32", "tf32", "bf16"],
    )
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["vmap"],
        choices=["vmap", "loop", "graphs"],
        help="a pack's forward passes: one vmapped pass (the GPU's default), each run's "
        "after another (the CPU's), or vmapped and captured as CUDA graphs (graphs)",
    )
    parser.add_argument(
        "--stage",
        default="train",
        choices=["train", "sample"],
        help="time the pack trainer's step, or the pack evaluator's sampler step",
    )
    parser.add_argument(
        "--sample-rows",
        nargs="+",
        type=int,
        help="--stage sample: rows per sampler call, as evaluation.batch_size (default: "
        "each model's); a vmapped pack's runs share them, as in evaluate_pack",
    )
    parser.add_argument("--steps", type=int, default=20, help="timed steps per case")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before them")
    parser.add_argument("--threads", type=int, default=4, help="torch CPU threads")
    parser.add_argument("--budget-s", type=float, default=420, help="no case starts after it")
    parser.add_argument("--tiny", action="store_true", help="a tiny model: a wiring check")
    args = parser.parse_args(argv)

    from conceptspace.device import resolve_device

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    precisions = [p for p in args.precisions if p != "tf32" or device.type == "cuda"]
    if args.stage == "sample":  # the evaluation samples in fp32
        precisions = [p for p in precisions if p != "bf16"]
    timed = measure_sampling if args.stage == "sample" else measure
    report = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(device, args.threads),
        "stage": args.stage,
        "load_average_start": os.getloadavg(),
        "graph_capture": "mode graphs: torch.compile(mode='reduce-overhead') of the stacked "
        "forward (and backward); CUDA graphs on a GPU only",
        "cases": [],
    }
    began = time.monotonic()
    # mode-major: every plain case before any that compiles (graphs: a minute or more each)
    groups = [
        (name, setup, precision, mode, rows)
        for mode in args.modes
        for name, setup in setups(args).items()
        for precision in precisions
        for rows in (
            (args.sample_rows or [setup["sample_rows"]]) if args.stage == "sample" else [None]
        )
    ]
    measured = set()  # (model, precision, mode, K, rows per run) of the sampler calls timed
    for name, setup, precision, mode, rows in groups:
        too_big = False
        for runs in sorted(args.packs):
            if runs == 1 and mode == "loop" and "vmap" in args.modes:
                continue  # a pack of one runs without vmap in both: measured once
            case = {"model": name, "precision": precision, "mode": mode, "runs": runs}
            if rows is None:
                case["batch"] = setup["batch"]
            else:
                call = (name, precision, mode, runs, rows_per_run(setup, rows, runs, mode))
                if call in measured:
                    continue  # more rows than this pack's runs can fill: measured already
                measured.add(call)
                case["sample_rows"] = rows
            if time.monotonic() - began > args.budget_s:
                case["skipped"] = "time budget spent"
            elif too_big:
                case["skipped"] = "a smaller pack ran out of memory"
            else:
                try:
                    case.update(timed(setup, runs, precision, mode, device, args, rows))
                except torch.OutOfMemoryError as err:
                    too_big = True
                    case["error"] = f"out of memory: {str(err).splitlines()[0]}"
                finally:
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
            report["cases"].append(case)
            summarize(report)
            report["load_average_end"] = os.getloadavg()
            report["seconds"] = time.monotonic() - began
            Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
            print(json.dumps(case), flush=True)


if __name__ == "__main__":
    main()
