"""Speed of conceptspace, measured side by side in one run, written to one JSON file.

    python benchmarks/run.py --out benchmarks/results/<machine>.json
    python benchmarks/run.py --tiny --out /tmp/bench.json      # wiring check, seconds

Measures (benchmarks/README.md explains each and gives the figures):
  training   images/s of the paper-size model and of a small model (``--small-preset``),
             through conceptspace's real training path (``train_run``) and through the
             baseline (benchmarks/baseline.py), on the CPU and on CUDA when there is one,
             plus the variants that decide the defaults (channels_last off, compile);
  evaluation the time to evaluate one checkpoint with naive prompting alone and with
             every method, when the evaluation offers methods;
  dry_run    seconds and job count of ``snakemake -n`` of the paper-scale study;
  memory     peak RSS (and peak CUDA memory) of each measurement.

Every measurement runs in a child process of its own, so its peak RSS (taken with
os.wait4) and its thread settings are its own. Ratios are taken between measurements of
the same run: the machine may be shared and loaded, so the load average is recorded at
the start, at the end and around each measurement.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import os
import platform
import re
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("benchmarks")

# The tiny mode's model and data: a wiring check that finishes in seconds.
TINY_MODEL = {"channels": [8, 16], "blocks_per_level": 1, "groups": 4, "attention_heads": 2}
TINY_DATA = {"image_size": 8, "images_per_class": 16}


# ----------------------------------------------------------------------------- configs


def load_config(preset: str | None = None) -> dict:
    from conceptspace.config import load_config as load

    paths = [ROOT / "config.yaml"] + ([ROOT / preset] if preset else [])
    return load(*paths)


def model_setups(args) -> dict[str, dict]:
    """name -> the model, training and data sections a training measurement uses."""
    from conceptspace.config import merge

    paper = load_config()
    small = load_config(args.small_preset)
    setups = {
        "paper": paper,
        "small": small,
    }
    if args.tiny:
        tiny = merge(paper, {"model": TINY_MODEL, "data": TINY_DATA})
        tiny["training"]["batch_size"] = 8
        setups = {"tiny": tiny}
    sections = ("model", "training", "data", "probe", "evaluation")
    return {name: {k: c[k] for k in sections} for name, c in setups.items()}


# ----------------------------------------------------------------------------- children


def run_child(case: dict, workdir: Path) -> dict:
    """Run one measurement in a fresh interpreter; add its peak RSS and the load average."""
    out = workdir / f"case_{abs(hash(json.dumps(case, sort_keys=True)))}.json"
    load_before = os.getloadavg()
    with open(workdir / "child.log", "a") as err:
        process = subprocess.Popen(
            [sys.executable, __file__, "--child", json.dumps(case), "--out", str(out)],
            stdout=err,
            stderr=err,
            cwd=ROOT,
        )
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    result = {**case}
    result.pop("dataset", None)
    if process.returncode != 0:
        result["error"] = f"exit {process.returncode}; see {workdir / 'child.log'}"
        log.warning("%s failed: %s", case.get("name"), result["error"])
        return result
    result.update(json.loads(out.read_text()))
    result["peak_rss_mb"] = usage.ru_maxrss / 1024  # KiB on Linux
    result["load_average"] = {"before": load_before, "after": os.getloadavg()}
    return result


def child_main(case: dict, out: Path) -> None:
    import torch

    torch.set_num_threads(case["threads"])
    kind = case["kind"]
    if kind == "train":
        result = measure_training(case)
    elif kind == "evaluate":
        result = measure_evaluation(case)
    else:
        raise ValueError(f"unknown case kind {kind!r}")
    result["torch_threads"] = torch.get_num_threads()
    if case.get("device", "cpu").startswith("cuda"):
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    out.write_text(json.dumps(result))


# ----------------------------------------------------------------------------- training


def measure_training(case: dict) -> dict:
    """Steps/s of one training path: 'conceptspace' (train_run, as the pipeline runs it)
    or 'baseline'. train_run is timed whole for two step counts after a warm-up call;
    the difference cancels what does not grow with steps (loading, building, the one
    validation and checkpoint at the end)."""
    import torch

    steps, warmup = case["steps"], case["warmup_steps"]
    if case["impl"] == "baseline":
        sys.path.insert(0, str(Path(__file__).parent))
        from baseline import train_baseline

        timing = train_baseline(
            case["model"], case["training"], case["dataset"], steps, warmup, case["device"]
        )
        return _rates(timing["seconds"], steps, case, mean_loss=timing["mean_loss"])

    import conceptspace.train as train

    if case.get("channels_last") is False:
        train._use_channels_last = lambda device, precision: False  # the NCHW variant
    workdir = Path(tempfile.mkdtemp(prefix="bench_train_"))

    def timed_run(n: int, name: str) -> float:
        training = dict(case["training"], steps=n, log_every=max(n, 1))
        training["checkpoints"] = {"count": 1, "first": n, "last": n}
        if case.get("precision"):
            training["precision"] = case["precision"]
        if case["device"].startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        train.train_run(
            case["model"],
            training,
            case["dataset"],
            seed=0,
            run_dir=workdir / name,
            manifest_path=workdir / name / "manifest.json",
            device=case["device"],
            **({"compile": True} if case.get("compile") else {}),
        )
        return time.perf_counter() - started

    first = timed_run(warmup, "warmup")  # primes kernels and caches (and compiles)
    short = timed_run(warmup, "short")
    long = timed_run(warmup + steps, "long")
    extra = {"first_call_s": first}
    if case.get("compile"):
        extra["compile_s_estimate"] = first - short  # the warm-up call's extra time
    if long <= short:  # the extra steps cost nothing measurable: noise swamped them
        raise RuntimeError(
            f"the {steps} measured steps took {long - short:.3f} s (the long run minus the "
            "short one): too few steps for a loaded machine; raise --small-steps or rerun "
            "on a quiet machine"
        )
    return _rates(long - short, steps, case, **extra)


def _rates(seconds: float, steps: int, case: dict, **extra) -> dict:
    batch = case["training"]["batch_size"]
    full_run = case["training"]["steps"]  # the configured run length (20k for the paper)
    return {
        "seconds": seconds,
        "steps_per_s": steps / seconds,
        "images_per_s": steps * batch / seconds,
        f"projected_minutes_per_{full_run}_step_run": full_run * seconds / steps / 60,
        **extra,
    }


def render_dataset(data_cfg: dict, path: Path) -> Path:
    from conceptspace.concepts import Signal
    from conceptspace.render import render_training_set, save_dataset

    dataset = render_training_set(data_cfg, Signal(0.4, 0.4), seed=0)
    save_dataset(path, dataset, dataset.metadata)
    return path


def training_cases(args, workdir: Path, devices: list[str]) -> list[dict]:
    cases = []
    for name, setup in model_setups(args).items():
        dataset = str(render_dataset(setup["data"], workdir / f"{name}.npz"))
        steps = args.paper_steps if name == "paper" else args.small_steps
        base = {
            "kind": "train",
            "model_name": name,
            "model": setup["model"],
            "training": setup["training"],
            "dataset": dataset,
            "steps": steps,
            "warmup_steps": 1,
            "threads": args.threads,
        }
        for device in devices:
            variants = [{"impl": "baseline"}, {"impl": "conceptspace"}]
            if not args.tiny:  # the tiny wiring check needs one conceptspace variant only
                if device == "cpu":
                    nchw = {"impl": "conceptspace", "variant": "nchw", "channels_last": False}
                    variants.append(nchw)
                variants.append({"impl": "conceptspace", "variant": "bf16", "precision": "bf16"})
            if args.compile and (device != "cpu" or name != "paper"):
                variants.append({"impl": "conceptspace", "variant": "compile", "compile": True})
            for variant in variants:
                case = {**base, "device": device, "variant": "default", **variant}
                case["name"] = f"train/{name}/{device}/{case['impl']}/{case['variant']}"
                cases.append(case)
    if args.only:
        cases = [case for case in cases if re.search(args.only, case["name"])]
    # compiling is slow: the other cases first, so a time limit cuts compile cases only
    return sorted(cases, key=lambda case: bool(case.get("compile")))


def measure_interleaved(cases: list[dict], args, workdir: Path, progress=None) -> list[dict]:
    """Each case ``--repeats`` times, in rounds (every case once, then again), so a change
    of the machine's load hits all cases alike; each case reports its best round (the
    least disturbed) and every round's images/s. ``progress(results)`` is called with
    the results so far after every measurement."""
    measured: list[list[dict]] = [[] for _ in cases]  # per case, one result per round
    for round_index in range(args.repeats):
        for case, rounds in zip(cases, measured):
            log.info("measuring %s (round %d/%d)", case["name"], round_index + 1, args.repeats)
            rounds.append(run_child(case, workdir))
            log.info("%s: %s images/s", case["name"], rounds[-1].get("images_per_s"))
            if progress:
                progress(best_rounds(measured))
    return best_rounds(measured)


def best_rounds(measured: list[list[dict]]) -> list[dict]:
    """Per case measured at least once: its fastest round, with every round's images/s."""
    results = []
    for rounds in filter(None, measured):
        done = [r for r in rounds if "images_per_s" in r]
        best = dict(max(done, key=lambda r: r["images_per_s"]) if done else rounds[0])
        best["images_per_s_rounds"] = [r.get("images_per_s") for r in rounds]
        results.append(best)
    return results


def training_ratios(results: list[dict]) -> dict[str, float]:
    """images/s of each conceptspace variant over the baseline of the same model and
    device, measured in this run."""
    baselines = {
        (r["model_name"], r["device"]): r["images_per_s"]
        for r in results
        if r["impl"] == "baseline" and "images_per_s" in r
    }
    ratios = {}
    for r in results:
        key = (r["model_name"], r["device"])
        if r["impl"] == "conceptspace" and "images_per_s" in r and key in baselines:
            ratios[f"{r['model_name']}/{r['device']}/{r['variant']}"] = (
                r["images_per_s"] / baselines[key]
            )
    return ratios


# ----------------------------------------------------------------------------- evaluation


def measure_evaluation(case: dict) -> dict:
    """Seconds to evaluate one checkpoint (load, sample, score, write) with every method
    of evaluation.methods, and with naive prompting alone (every other method's list
    emptied), as ``evaluate_pack`` does for each checkpoint in the pipeline. The checkpoint and probe
    are trained for a step or two: sampling costs the same whatever the weights."""
    from conceptspace.concepts import Signal
    from conceptspace.evaluate import evaluate_checkpoint
    from conceptspace.probe import train_probe
    from conceptspace.checkpoints import checkpoint_path
    from conceptspace.train import train_run

    workdir = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    signal, device = Signal(0.4, 0.4), case["device"]
    training = dict(case["training"], steps=2, log_every=1)
    training["checkpoints"] = {"count": 2, "first": 1, "last": 2}  # step 1, donor "final" 2
    run_dir = workdir / "run"
    train_run(case["model"], training, case["dataset"], 0, run_dir, run_dir / "m.json", device)
    probe_cfg = dict(case["probe"], steps=1, images_per_class=8)
    probe = workdir / "probe.pt"
    train_probe(case["data"], probe_cfg, [signal], 0, probe, workdir / "probe.json", device)

    methods = case["evaluation"]["methods"]
    naive_only = {
        "overprompt": {**methods["overprompt"], "colors": []},
        "intervention": {**methods["intervention"], "alphas": []},
        "patching": {**methods["patching"], "donors": []},
    }

    def seconds(methods_cfg: dict, name: str) -> float:
        evaluation = dict(case["evaluation"], methods=methods_cfg)
        if device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
        started = time.perf_counter()
        evaluate_checkpoint(
            checkpoint_path(run_dir, 1),
            probe,
            evaluation_cfg=evaluation,
            min_accuracy=0.0,
            signal=signal,
            seed=0,
            out_path=workdir / name,
            device=device,
        )
        return time.perf_counter() - started

    seconds(naive_only, "warmup.nc")  # primes kernels and caches
    naive = seconds(naive_only, "naive.nc")
    every = seconds(methods, "all.nc")
    from conceptspace.evaluate import conditions_of, prepare_checkpoint

    prepared = prepare_checkpoint(checkpoint_path(run_dir, 1), methods, signal, 0, device)
    samples = int(case["evaluation"]["samples_per_prompt"])
    return {
        "naive_seconds": naive,
        "all_methods_seconds": every,
        "ratio_all_to_naive": every / naive,
        "naive_samples": 4 * samples,
        "all_methods_samples": len(conditions_of(prepared.methods)) * samples,
        "methods": [m.name for m in prepared.methods],
        "sampler_steps": int(case["evaluation"]["sampler_steps"]),
        "samples_per_prompt": samples,
    }


def evaluation_cases(args, workdir: Path, devices: list[str]) -> list[dict]:
    """The small model on the CPU (the paper model's 50-step sampling of 480 images takes
    most of an hour on two cores; ``--eval-models paper`` asks for it), every model on CUDA."""
    cases = []
    setups = model_setups(args)
    for device in devices:
        names = args.eval_models.split(",") if device == "cpu" else list(setups)
        for name in [n for n in names if n in setups] or list(setups)[-1:]:
            setup = setups[name]
            dataset = workdir / f"{name}.npz"
            if not dataset.exists():
                render_dataset(setup["data"], dataset)
            case = {
                "kind": "evaluate",
                "model_name": name,
                **setup,
                # the study's evaluation (config.yaml) whatever the model: 32 samples per
                # prompt, every method, the configured sampler steps
                "evaluation": {
                    **load_config()["evaluation"],
                    **({"batch_size": args.eval_batch} if args.eval_batch else {}),
                },
                "dataset": str(dataset),
                "device": device,
                "threads": args.threads,
            }
            case["name"] = f"evaluate/{name}/{device}"
            cases.append(case)
    return cases


# ----------------------------------------------------------------------------- dry run


def measure_dry_run(configfile: str | None) -> dict:
    """Wall time, job count and peak RSS of `snakemake -n` (the planning of the study)."""
    # The snakemake of this interpreter's environment, also when it is not on PATH
    # (.venv/bin/python benchmarks/run.py without activating the environment).
    beside = Path(sys.executable).with_name("snakemake")
    command = [str(beside) if beside.exists() else "snakemake", "-n", "--quiet", "rules"]
    if configfile:
        command += ["--configfile", configfile]
    load_before = os.getloadavg()
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    totals = re.findall(r"^total\s+(\d+)\s*$", output, flags=re.M)
    if process.returncode != 0 or not totals:
        return {"command": " ".join(command), "error": output[-2000:]}
    return {
        "command": " ".join(command),
        "seconds": seconds,
        "jobs": int(totals[-1]),
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "load_average": {"before": load_before, "after": os.getloadavg()},
    }


# ----------------------------------------------------------------------------- machine


def machine_facts(threads: int) -> dict[str, Any]:
    import torch

    facts = {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "processor": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": threads,
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        facts["cuda_device"] = torch.cuda.get_device_name(0)
        facts["cuda_version"] = torch.version.cuda
    return facts


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# ----------------------------------------------------------------------------- summary


def summarize(report: dict) -> str:
    """The report as Markdown tables (benchmarks/README.md quotes them)."""
    lines = [
        f"`{report['command']}` on {report['machine']['processor']} "
        f"({report['machine']['cpu_count']} cores, {report['machine']['threads']} threads, "
        f"torch {report['machine']['torch']}"
        + (f", {report['machine']['cuda_device']}" if report["machine"].get("cuda") else "")
        + f"), {report['started']}; load average (1, 5, 15 min) at start "
        f"{_load(report['load_average_start'])}, at end {_load(report['load_average_end'])}."
        + ("" if report.get("complete", True) else " Incomplete: the run stopped early."),
    ]
    if "training" in report:
        lines += [
            "",
            "| training | images/s | steps/s | x baseline | min per full run | peak RSS MiB "
            "| load before/after |",
            "|---|---|---|---|---|---|---|",
        ]
        ratios = report["training_ratio_vs_baseline"]
        for r in report["training"]:
            if "error" in r:
                lines.append(f"| {r['name']} | failed: {r['error']} | | | | | |")
                continue
            minutes = next((v for k, v in r.items() if k.startswith("projected_m")), math.nan)
            key = f"{r['model_name']}/{r['device']}/{r['variant']}"
            ratio = f"{ratios[key]:.2f}" if r["impl"] == "conceptspace" and key in ratios else "1"
            compile_s = f" (compile ~{r['compile_s_estimate']:.0f} s)" if r.get("compile") else ""
            lines.append(
                f"| {r['name']}{compile_s} | {r['images_per_s']:.1f} | {r['steps_per_s']:.3f} "
                f"| {ratio} | {minutes:.1f} | {r['peak_rss_mb']:.0f} "
                f"| {_load(r['load_average']['before'][:1])}/"
                f"{_load(r['load_average']['after'][:1])} |"
            )
    if report.get("evaluation"):
        lines += [
            "",
            "| evaluation of one checkpoint | naive s | all methods s | all / naive "
            "| samples naive / all | peak RSS MiB |",
            "|---|---|---|---|---|---|",
        ]
        for r in report["evaluation"]:
            if "error" in r:
                lines.append(f"| {r['name']} | failed: {r['error']} | | | | |")
                continue
            lines.append(
                f"| {r['name']} ({r['sampler_steps']} sampler steps) | {r['naive_seconds']:.1f} "
                f"| {r['all_methods_seconds']:.1f} | {r['ratio_all_to_naive']:.2f} "
                f"| {r['naive_samples']} / {r['all_methods_samples']} | {r['peak_rss_mb']:.0f} |"
            )
    dry = report.get("dry_run")
    if dry:
        if "error" in dry:
            lines += ["", f"dry run `{dry['command']}` failed: {dry['error'][-300:]}"]
        else:
            lines += [
                "",
                f"dry run `{dry['command']}`: {dry['jobs']} jobs in {dry['seconds']:.1f} s, "
                f"peak RSS {dry['peak_rss_mb']:.0f} MiB, load "
                f"{_load(dry['load_average']['before'][:1])}/"
                f"{_load(dry['load_average']['after'][:1])}.",
            ]
    return "\n".join(lines)


def _load(values) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--tiny", action="store_true", help="a tiny model only: wiring check")
    parser.add_argument(
        "--small-preset",
        default="workflow/presets/cpu-16px.yaml",
        help="preset whose model is the 'small' model (default: %(default)s)",
    )
    parser.add_argument("--paper-steps", type=int, default=6, help="timed steps, paper model")
    parser.add_argument("--small-steps", type=int, default=40, help="timed steps, small model")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of training cases")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--devices", default="auto", help="'auto' or a list: cpu,cuda")
    parser.add_argument(
        "--skip", default="", help="comma-separated parts to skip: training,evaluation,dry_run"
    )
    parser.add_argument(
        "--eval-models", default="small", help="models whose evaluation is timed on the CPU"
    )
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile")
    parser.add_argument(
        "--only", help="training cases whose name matches this regex, e.g. 'paper/cuda'"
    )
    parser.add_argument(
        "--eval-batch", type=int, help="evaluation.batch_size (default: config.yaml's)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--summarize", action="store_true", help="print --out as Markdown")
    args = parser.parse_args(argv)
    if args.summarize:
        print(summarize(json.loads(Path(args.out).read_text())))
        return
    if args.child:
        child_main(json.loads(args.child), Path(args.out))
        return

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import torch

    from conceptspace.io import atomic_path, provenance

    if args.devices == "auto":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        devices = args.devices.split(",")
    skip = set(filter(None, args.skip.split(",")))
    report: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_facts(args.threads),
        "load_average_start": os.getloadavg(),
        "note": (
            "Wall-clock figures depend on the machine's load (see load averages); compare "
            "the ratios, taken between measurements of this same run."
        ),
    }
    report["provenance"] = provenance({"benchmark": report["command"]}, 0)

    def save(complete: bool = False) -> None:
        """Write the report so far: a run killed by a time limit keeps what it measured."""
        report["complete"] = complete
        report["load_average_end"] = os.getloadavg()
        with atomic_path(args.out) as tmp_out:
            tmp_out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")

    def training_progress(results: list[dict]) -> None:
        report["training"] = results
        report["training_ratio_vs_baseline"] = training_ratios(results)
        save()

    with tempfile.TemporaryDirectory(prefix="conceptspace_bench_") as tmp:
        workdir = Path(tmp)
        if "training" not in skip:
            cases = training_cases(args, workdir, devices)
            training_progress(measure_interleaved(cases, args, workdir, training_progress))
        if "evaluation" not in skip:
            report["evaluation"] = []
            for case in evaluation_cases(args, workdir, devices):
                log.info("measuring %s", case["name"])
                report["evaluation"].append(run_child(case, workdir))
                log.info("%s: %s", case["name"], report["evaluation"][-1])
                save()
        if "dry_run" not in skip:
            log.info("measuring the dry run")
            report["dry_run"] = measure_dry_run(
                "workflow/presets/smoke.yaml" if args.tiny else None
            )
            log.info("dry run: %s", report["dry_run"])
    save(complete=True)
    log.info("wrote %s\n%s", args.out, summarize(report))


if __name__ == "__main__":
    main()
