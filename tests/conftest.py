import ast
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conceptspace.config import load_config

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
SMOKE = REPO / "workflow" / "presets" / "smoke.yaml"
PACKAGE = REPO / "src" / "conceptspace"

# The tiny images and model of the tests that train in process (training, packing,
# evaluation): 8 px, two levels, a few seconds a run on one CPU thread.
TINY_DATA = {
    "image_size": 8,
    "images_per_class": 8,
    "validation_fraction": 0.25,
    "blur_sigma_px": 1.0,
    "noise_std": 0.001,
    "position_range": 0.5,
    "background_train": [0.8, 1.0],
    "background_test": 0.9,
}
TINY_MODEL = {
    "channels": [8, 16],
    "blocks_per_level": 1,
    "groups": 4,
    "attention_heads": 2,
    "dropout": 0.1,  # dropout on: its random numbers must be restored on resume too
    "time_dim": 16,
    "gamma_min": -5.0,
    "gamma_max": 10.0,
    "reconstruction_sigma": 0.001,
}


def imported_modules(path):
    """Every module ``path`` imports, absolute names (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names += [base] + [f"{base}.{alias.name}" for alias in node.names]
    return names


def every_sample_valid(p_target: np.ndarray) -> np.ndarray:
    """The ``valid`` (method, prompt, sample) of an evaluation whose samples all hold one
    object: 1 where ``p_target`` (method, prompt, concept, sample) has a value, NaN where
    the method does not prompt the class."""
    return np.where(np.isnan(p_target).any(axis=2), np.nan, 1.0)


def venv_tool(name: str) -> str:
    """A command installed beside the running Python (the project's virtual environment)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; run scripts/setup.sh")
    return found


def snakemake(workdir, *args, configs=(REPO / "config.yaml",), check=True, timeout=900):
    """Run snakemake on the repository's Snakefile in ``workdir`` with the given configs
    (config.yaml first: the configfile directive only finds it from the repository)."""
    command = [
        venv_tool("snakemake"),
        "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir),
        *args,
        "--configfile", *map(str, configs),
    ]  # fmt: skip
    # Rules call `python -m conceptspace`: put this interpreter's folder first on PATH.
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    if check and result.returncode != 0:
        pytest.fail(f"snakemake {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def planned_jobs(output: str) -> dict[str, int]:
    """Job counts per rule from `snakemake -n --quiet rules`."""
    counts = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    return counts


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """The smoke preset run once per test session through Snakemake on 2 cores: (workdir,
    config). Shared by every test that reads its outputs (workflow, report, provenance)."""
    workdir = tmp_path_factory.mktemp("smoke")
    snakemake(workdir, "--cores", "2", configs=(REPO / "config.yaml", SMOKE))
    return workdir, load_config(REPO / "config.yaml", SMOKE)


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch at one CPU thread for a module whose tests compare trainings bit for bit: the
    rules pass every job its thread count, and float sums differ (~1e-7) between thread
    counts, so a training redone after a test that changed the count would not match.
    Tiny models run fastest on one thread anyway."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------- recovery, done literally


def workflow_run(run_dir, manifest, tmp_path, run="r"):
    """A finished run copied into the workflow's layout (``<study>/runs/<run>``), with the
    run's manifest and its pack's (rule train_vdm's output), and a pack-mate's pack beside
    it: (study, run folder)."""
    study = tmp_path / "results" / "study"
    copy = study / "runs" / run
    shutil.copytree(run_dir, copy)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    (study / "packs").mkdir()
    (study / "packs" / "pack000.json").write_text(json.dumps({"runs": {run: manifest}}))
    (study / "packs" / "pack001.json").write_text(json.dumps({"runs": {"other": manifest}}))
    return study, copy


def do_what_it_says(message: str) -> None:
    """Run the command the message gives, as a user would paste it."""
    commands = re.findall(r"`(rm [^`]+)`", message)
    assert len(commands) == 1, message
    subprocess.run(shlex.split(commands[0]), check=True)
    assert "then rerun `snakemake`" in message


def rerun_snakemake(study, model, training, dataset, seed, run="r", device="auto") -> None:
    """What `snakemake` does to the training of ``workflow_run``'s run: rule train_vdm for
    its pack if the pack's manifest (the rule's output) is gone, rule run_manifest if the
    run's manifest is gone. The pack-mate's pack is never deleted, so never trained."""
    from conceptspace.pack_plan import write_run_manifest
    from conceptspace.train import PackRun, train_pack

    pack = study / "packs" / "pack000.json"
    if not pack.exists():
        runs = [PackRun(dataset, seed, study / "runs" / run)]
        manifests = train_pack(model, training, runs, device=device)
        pack.write_text(json.dumps({"runs": {run: manifests[0]}}))
    if not (study / "runs" / run / "manifest.json").exists():
        write_run_manifest(pack, run, study / "runs" / run / "manifest.json")
