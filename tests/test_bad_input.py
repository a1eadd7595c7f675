"""Bad input, one test per kind: each is answered with a ConceptspaceError (a WorkflowError
at the Snakemake level) whose message names the problem and the fix, and leaves nothing
half-written behind. docs/trust.md lists the cases and where each is caught.

Config errors go through ``config.validate_config`` (what the Snakefile calls before
planning) and once through the real ``snakemake -n`` command line; file errors through
the ``python -m conceptspace`` commands the rules run, or the loader they call.
"""

import copy
import json
import logging
import os
import random

import pytest
import torch

from conceptspace import cli
from conceptspace.checkpoints import checkpoint_path, load_checkpoint
from conceptspace.concepts import COLOR_SHAPE, CONCEPTS, Signal
from conceptspace.config import ConfigError, load_config, validate_config
from conceptspace.io import ConceptspaceError
from conceptspace.netcdf import save_dataset_nc
from conceptspace.probe import ProbeNet, load_probe
from conceptspace.render import render_training_set
from conceptspace.train import train_run
from conceptspace.trajectories import gather_run
from conftest import REPO, SCHEMA, TINY_DATA, TINY_MODEL, snakemake

# The training tests' tiny run and its dataset fixture serve here too.
from test_train import SEED, TRAINING, dataset  # noqa: F401

# The reference run has the divergence monitor on, as the pipeline does, and reports often
# enough for it to arm (five intervals) and judge: a healthy run must not trip it.
GUARDED = {
    **TRAINING,
    "log_every": 2,
    "divergence": load_config(REPO / "config.yaml")["training"]["divergence"],
}

# torch at one thread for the whole module (conftest.one_torch_thread)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def paper():
    return load_config(REPO / "config.yaml")


@pytest.fixture(scope="module")
def finished_run(dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    train_run(TINY_MODEL, GUARDED, dataset, SEED, root / "run", root / "manifest.json")
    return root / "run"


def rejected(config) -> str:
    with pytest.raises(ConfigError) as caught:
        validate_config(config, SCHEMA)
    message = str(caught.value)
    assert "Fix these in config.yaml or in the preset" in message  # the fix, always
    return message


def changed(config, path, value):
    config = copy.deepcopy(config)
    target = config
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return config


def half_written(folder) -> list[str]:
    """Temporary files of atomic_path (".<name>.<random><suffix>") under ``folder``."""
    return [str(p) for p in folder.rglob(".*") if p.is_file()]


def run_cli(caplog, *argv) -> tuple[int, str]:
    """``python -m conceptspace ARGV`` in process: (exit status, the error it logged)."""
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="conceptspace"):
        status = cli.main([str(a) for a in argv])
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    return status, "\n".join(errors)


def train_cli(caplog, dataset, run_dir, training=TRAINING):
    settings = {"model": TINY_MODEL, "training": training}
    return run_cli(
        caplog, "train", "--settings", json.dumps(settings),
        "--data", dataset, "--seed", SEED, "--run-dir", run_dir,
        "--manifest", run_dir.parent / "manifest.json", "--device", "cpu", "--threads", 1,
    )  # fmt: skip


# ------------------------------------------------------------------- the config


def test_unknown_key_is_named_with_the_allowed_ones(paper):
    message = rejected(changed(paper, ("training", "learning_rate"), 0.1))
    assert "'training'" in message and "learning_rate" in message
    assert "allowed keys here:" in message and "lr" in message


def test_wrong_type_is_named(paper):
    message = rejected(changed(paper, ("training", "batch_size"), "64"))
    assert "training.batch_size" in message and "not of type 'integer'" in message


@pytest.mark.parametrize(
    "path, value",
    [
        (("studies", "signal", "sweeps", 0, "color_gap"), [-0.2]),  # a negative gap
        (("studies", "signal", "sweeps", 1, "size_gap"), []),  # an empty sweep
        (("studies", "signal", "seeds"), []),
        (("data", "validation_fraction"), 1.5),
        (("evaluation", "threshold"), 1.2),
        (("training", "precision"), "fp16"),
        (("training", "divergence", "mad_factor"), 1.0),  # would stop healthy runs
        (("training", "divergence", "min_rise"), 0.0),
        (("model", "data_range"), [1, 0]),  # lo must be below hi
        (("model", "data_range"), [0, 0.5, 1]),
        (("model", "h_init_fan_in"), 0),
    ],
)
def test_out_of_range_value_is_named(paper, path, value):
    assert ".".join(str(p) for p in path) in rejected(changed(paper, path, value))


def test_checkpoints_past_training_are_named_with_the_fix(paper):
    message = rejected(changed(paper, ("training", "checkpoints", "last"), 30000))
    assert "training.checkpoints.last" in message and "make last <= steps" in message


@pytest.mark.parametrize("section", ["training", "studies.background.training"])
def test_checkpoints_first_after_last_is_named_not_an_index_error(paper, section):
    """checkpoint_steps is empty then; the patching donor "final" used to be looked up in
    it first (an IndexError in methods.py), in training and in a study's overlay alike."""
    path = tuple(section.split(".")) + ("checkpoints",)
    bad = {"count": 3, "first": 50, "last": 20}
    config = changed(paper, path[:-1], {"checkpoints": bad}) if "studies" in section else None
    message = rejected(config or changed(paper, path, bad))
    assert f"'{section}.checkpoints.first' (50) is after '{section}.checkpoints.last'" in message
    assert "make first <= last" in message
    assert message.count("\n  - ") == 1, message  # no follow-on problem of the empty steps


# Values the schema's types and ranges let through, each named with its fix.
@pytest.mark.parametrize(
    "path, value, expected",
    [
        (
            ("evaluation", "samples_per_prompt"),
            100_000_000,
            ["'evaluation.samples_per_prompt': 100000000 is greater than the maximum of 4096",
             "set it to 4096 or less"],
        ),
        (
            ("model", "h_init_fan_in"),
            2,
            ["'model.h_init_fan_in' (2) is below the slots of h", "signal 4", "background 5",
             "use a value >= 5, or null"],
        ),
        (
            ("studies", "signal", "seeds"),
            [0, 1.0],
            ["'studies.signal.seeds.1': 1.0 is not of type 'integer'", "write it as integer (1)"],
        ),
        (
            ("training", "log_every"),
            30000,
            ["'training.log_every' (30000) is above 'training.steps' (20000)",
             "make log_every <= steps (e.g. 200)"],
        ),
        (
            ("figures", "sample_sheet", "samples"),
            33,
            ["'figures.sample_sheet.samples' (33) is above 'evaluation.samples_per_prompt' (32)",
             "make samples <= 32"],
        ),
        (
            ("figures", "levels"),
            [{"color_gap": 0.4, "size_gap": 0.4}, {"size_gap": 0.4, "color_gap": 0.4}],
            ["'figures.levels': ", "has non-unique elements; list each entry once"],
        ),
    ],
)  # fmt: skip
def test_a_value_the_schema_alone_let_through_is_named_with_its_fix(paper, path, value, expected):
    message = rejected(changed(paper, path, value))
    for part in expected:
        assert part in message, message


def test_the_limits_just_inside_are_accepted(paper):
    """Each refusal above is the first value past its limit: the limit itself passes."""
    for path, value in [
        (("evaluation", "samples_per_prompt"), 4096),
        (("model", "h_init_fan_in"), 5),
        (("training", "log_every"), 20000),
        (("figures", "sample_sheet", "samples"), 32),
    ]:
        validate_config(changed(paper, path, value), SCHEMA)


def test_authors_consecutive_above_the_checkpoints_is_legitimate_and_noted(paper):
    """A tiny run (2 checkpoints) with the authors' 3 in a row: accepted; the authors'
    learning time is then the last step ("never", their convention), and the plan block
    says so instead of passing it silently."""
    import xarray as xr

    from conceptspace.plan import plan_block
    from conceptspace.trajectories import learning_time_authors

    config = changed(paper, ("evaluation", "authors", "consecutive"), 61)
    validate_config(config, SCHEMA)  # 60 checkpoints: legitimate
    block = plan_block(config, "paper", None, False)
    assert (
        "note      evaluation.authors.consecutive (61) is above the 60 checkpoints of the "
        "signal study's runs: their authors' learning time is the last step"
    ) in block
    perfect = xr.DataArray([[1.0, 1.0]], dims=("concept", "step"), coords={"step": [20, 40]})
    times = learning_time_authors(perfect, threshold=0.9, sigma=0.0, consecutive=3)
    assert times.values.tolist() == [40.0] and times.attrs["consecutive"] == 3
    assert "note" not in plan_block(paper, "paper", None, False)  # 3 of 60: nothing to say


def test_log_every_is_checked_against_a_study_that_trains_shorter(paper):
    config = changed(paper, ("studies", "background", "training", "steps"), 1000)
    config["training"]["log_every"] = 2000
    config["training"]["checkpoints"] |= {"first": 100, "last": 1000}
    config["studies"]["background"]["training"]["checkpoints"] = {
        "count": 10, "first": 100, "last": 1000
    }  # fmt: skip
    message = rejected(config)
    assert "'training.log_every' (2000) is above 'studies.background.training.steps'" in message


@pytest.mark.workflow
def test_snakemake_names_h_init_fan_in_and_an_overlays_checkpoints_before_planning(tmp_path):
    """Before, h_init_fan_in 2 passed the dry run and failed each training job (three
    attempts), and the overlay's checkpoints raised an IndexError."""
    overlay = tmp_path / "bad.yaml"
    overlay.write_text(
        "model: {h_init_fan_in: 2}\n"
        "studies: {underspecification: {training: {checkpoints: {count: 3, first: 50, last: 20}}}}\n"
    )
    result = snakemake(tmp_path, "-n", configs=(REPO / "config.yaml", overlay), check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "'model.h_init_fan_in' (2) is below the slots of h" in output, output
    assert "'studies.underspecification.training.checkpoints.first' (50) is after" in output
    assert "Traceback" not in output and "IndexError" not in output
    assert "Job stats" not in output  # stopped before planning


def test_gap_that_leaves_the_color_range_is_named(paper):
    config = changed(paper, ("studies", "signal", "sweeps", 0, "color_gap"), [0.9])
    assert "studies.signal.sweeps.0.color_gap.0': 0.9 is greater than the maximum of 0.8" in (
        rejected(config)
    )


def test_figure_must_name_an_existing_sweep(paper):
    message = rejected(changed(paper, ("figures", "signal", "color_sweep"), "nope"))
    assert "figures.signal.color_sweep" in message and "sweeps are: color_gap" in message


def test_results_under_a_file_is_refused(paper, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    message = rejected(changed(paper, ("results",), str(blocker / "results")))
    assert f"{blocker} is a file" in message and "set 'results' to a folder" in message
    assert list(tmp_path.iterdir()) == [blocker]  # checking creates nothing


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_results_is_refused(paper, tmp_path):
    tmp_path.chmod(0o500)
    try:
        message = rejected(changed(paper, ("results",), str(tmp_path / "results")))
    finally:
        tmp_path.chmod(0o700)
    assert "cannot write" in message and "set 'results' to a folder you can write" in message


@pytest.mark.workflow
def test_snakemake_names_an_unwritable_results_folder_before_any_job(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    overlay = tmp_path / "bad.yaml"
    overlay.write_text(f"results: {blocker / 'results'}\n")
    result = snakemake(tmp_path, "-n", configs=(REPO / "config.yaml", overlay), check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "config key 'results'" in output and "is a file" in output, output
    assert "Traceback" not in output  # the message alone explains it
    assert "Job stats" not in output  # stopped before planning
    assert blocker.read_text() == ""


# ------------------------------------------------------------------- damaged files


def test_a_truncated_dataset_stops_training_before_anything_is_written(dataset, tmp_path, caplog):
    truncated = tmp_path / "train.npz"
    content = dataset.read_bytes()
    truncated.write_bytes(content[: len(content) // 2])
    status, error = train_cli(caplog, truncated, tmp_path / "run")
    assert status == 1
    assert str(truncated) in error and "delete it" in error and "snakemake" in error
    assert not (tmp_path / "manifest.json").exists()
    assert not list((tmp_path).rglob("step_*")) and not half_written(tmp_path)


# Garbage whose seeds make torch.load fail each of the ways it can (UnpicklingError,
# IndexError, KeyError, UnicodeDecodeError, found by trying 200 seeds).
@pytest.mark.parametrize("damage", ["truncated", 0, 2, 20, 195, "foreign"])
def test_a_damaged_checkpoint_is_named_with_the_fix(finished_run, tmp_path, damage):
    good = checkpoint_path(finished_run, TRAINING["steps"])
    path = tmp_path / good.name
    if damage == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif isinstance(damage, int):
        path.write_bytes(random.Random(damage).randbytes(4096))
    else:  # a readable torch file that is no checkpoint
        torch.save({"model": {}}, path)
    with pytest.raises(ConceptspaceError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert str(path) in message and "truncated or corrupt" in message
    assert f"`rm -f {path}`, then rerun `snakemake`" in message  # outside a run: nothing else


def test_a_corrupt_evaluation_stops_gathering_without_output(tmp_path):
    corrupt = tmp_path / "step_000004.nc"
    corrupt.write_bytes(b"CDF\x01" + random.Random(0).randbytes(512))
    out = tmp_path / "trajectory.nc"
    with pytest.raises(ConceptspaceError) as caught:
        save_dataset_nc(gather_run([corrupt]), out)
    error = str(caught.value)
    assert str(corrupt) in error and "corrupt" in error and "snakemake" in error
    assert not out.exists() and not half_written(tmp_path)


def test_info_on_a_damaged_file_names_it(finished_run, tmp_path, caplog):
    damaged = tmp_path / "step_000012.pt"
    damaged.write_bytes(checkpoint_path(finished_run, 12).read_bytes()[:1000])
    status, error = run_cli(caplog, "info", damaged)
    assert status == 1 and str(damaged) in error and "delete it and rerun" in error


# ------------------------------------------------------------------- refusals


def test_resuming_under_a_changed_config_names_the_keys_and_leaves_the_run(
    finished_run, dataset, tmp_path, caplog
):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoints").mkdir()
    first = checkpoint_path(finished_run, 4)
    kept = checkpoint_path(run_dir, 4)
    kept.write_bytes(first.read_bytes())
    status, error = train_cli(caplog, dataset, run_dir, {**TRAINING, "lr": 0.005, "steps": 14})
    assert status == 1
    assert "training.lr (checkpoint 0.001, requested 0.005)" in error
    assert "training.steps (checkpoint 12, requested 14)" in error
    assert "restore these settings" in error and f"delete {run_dir}" in error
    assert kept.read_bytes() == first.read_bytes()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [kept.name]
    assert not (tmp_path / "manifest.json").exists() and not half_written(tmp_path)


def weak_probe(path, accuracy) -> None:
    """A probe file as train_probe writes it, with the held-out accuracy given."""
    config = {"image_size": 8, "channels": [8, 8], "groups": 4, "attention_heads": 2}
    torch.save(
        {
            "state_dict": ProbeNet(**config).state_dict(),
            "config": config,
            "accuracy": accuracy,
            "concepts": list(CONCEPTS),
        },
        path,
    )


def test_a_probe_below_its_floor_is_refused_naming_the_concept_and_the_fix(tmp_path):
    path = tmp_path / "probe.pt"
    weak_probe(path, {"color": 0.99, "size": 0.62})
    with pytest.raises(ConceptspaceError) as caught:
        load_probe(path, min_accuracy=0.95)
    message = str(caught.value)
    assert "size" in message and "0.62" in message and "0.95" in message
    assert "raise probe.steps" in message and "color" not in message
    assert load_probe(path, min_accuracy=0.6).accuracy["size"] == 0.62  # a floor it meets


def test_a_damaged_or_missing_probe_is_refused(tmp_path):
    path = tmp_path / "probe.pt"
    weak_probe(path, {"color": 1.0, "size": 1.0})
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(ConceptspaceError, match="truncated or corrupt: delete it"):
        load_probe(path, min_accuracy=0.5)
    with pytest.raises(ConceptspaceError, match="does not exist; run `snakemake`"):
        load_probe(tmp_path / "absent.pt", min_accuracy=0.5)


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(
    dataset, tmp_path, monkeypatch
):
    """A loss that climbs but stays finite: tests/test_divergence.py."""
    from conceptspace.vdm import VDM

    original, calls = VDM.loss, {"train": 0}

    def poisoned(self, *args, **kwargs):
        terms = original(self, *args, **kwargs)
        if self.training:
            calls["train"] += 1
            if calls["train"] >= 6:  # step 6: after the checkpoint at step 4
                terms = {**terms, "loss": terms["loss"] * float("nan")}
        return terms

    monkeypatch.setattr(VDM, "loss", poisoned)
    with pytest.raises(ConceptspaceError, match="training diverged") as caught:
        train_run(TINY_MODEL, GUARDED, dataset, SEED, tmp_path / "run", tmp_path / "m.json")
    message = str(caught.value)
    kept = checkpoint_path(tmp_path / "run", 4)
    assert "became NaN/inf between steps 5 and 6" in message
    assert (
        f"the last good checkpoint, {kept}, is kept" in message and "Lower training.lr" in message
    )
    vdm, metadata = load_checkpoint(kept)  # still loads
    assert metadata["step"] == 4
    assert all(torch.isfinite(p).all() for p in vdm.parameters())
    assert not checkpoint_path(tmp_path / "run", 7).exists()
    assert not (tmp_path / "m.json").exists() and not half_written(tmp_path)


# ------------------------------------------------------------------- underspecification


@pytest.mark.parametrize("ratio", [-0.25, 1.5])
def test_masking_ratio_outside_0_1_is_named_with_the_fix(paper, ratio):
    config = changed(paper, ("studies", "underspecification", "mask_ratios"), [0.0, ratio])
    message = rejected(config)
    assert "studies.underspecification.mask_ratios.1" in message
    assert "outside [0, 1]" in message and "use values from 0" in message
    # and the renderer, called directly, refuses it too
    with pytest.raises(ConceptspaceError, match=r"outside \[0, 1\]"):
        render_training_set(TINY_DATA, Signal(0.4, 0.4), 0, COLOR_SHAPE, ratio)


def test_celeba_study_without_its_folder_stops_before_planning(paper, tmp_path):
    """studies.celeba on (a root) with a folder torchvision cannot load: the config check
    names the key and every file torchvision expects where, before any job is planned."""
    root = tmp_path / "faces"
    (root / "celeba" / "img_align_celeba").mkdir(parents=True)  # images, no text files
    message = rejected(changed(paper, ("studies", "celeba", "root"), str(root)))
    assert f"studies.celeba.root' ({root})" in message
    for name in ("list_eval_partition.txt", "list_attr_celeba.txt", "identity_CelebA.txt"):
        assert str(root / "celeba" / name) in message
    overlay = tmp_path / "celeba.yaml"
    overlay.write_text(f"studies:\n  celeba:\n    root: {root / 'missing'}\n")
    result = snakemake(tmp_path, "-n", configs=(REPO / "config.yaml", overlay), check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "does not exist" in output
    assert "img_align_celeba" in output and "list_bbox_celeba.txt" in output
    assert "Job stats" not in output  # stopped before planning
