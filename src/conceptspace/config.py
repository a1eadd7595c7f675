"""Loading and checking the study configuration.

The JSON schema (workflow/schemas/config.schema.yaml) fixes keys, types and ranges; the
checks below add the rules that relate several keys. Every problem is reported at once,
each naming the key and the fix, before Snakemake plans a single job.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import yaml

from conceptspace.concepts import Signal, run_id
from conceptspace.io import ConceptspaceError

# Colors stay inside [0, 1] when 0.5 + dc/2 + dc/8 <= 1; discs stay inside the image
# when the largest radius 0.45 + ds/2 + 3ds/8 stays below 1.
MAX_COLOR_GAP = 0.8
MAX_SIZE_GAP = 0.6
GAP_DECIMALS = 3  # run ids print gaps with 3 decimals; finer values would collide


class ConfigError(ConceptspaceError):
    """The configuration is invalid; the message lists every problem found."""


@dataclass(frozen=True, order=True)
class Run:
    """One training run of the study: a signal level and a seed."""

    color_gap: float
    size_gap: float
    seed: int

    @property
    def signal(self) -> Signal:
        return Signal(self.color_gap, self.size_gap)

    @property
    def id(self) -> str:
        return run_id(self.color_gap, self.size_gap, self.seed)


@dataclass(frozen=True, order=True)
class MaskedRun:
    """One run of the underspecification study: a masking ratio and a seed (the color
    and size gaps are the study's)."""

    mask_ratio: float
    seed: int

    @property
    def id(self) -> str:
        return f"p{self.mask_ratio:.3f}_seed{self.seed}"


@dataclass(frozen=True, order=True)
class BackgroundRun:
    """One run of the 2x2x2 background study: a seed at the study's three gaps."""

    seed: int
    color_gap: float
    size_gap: float
    background_gap: float

    @property
    def signal(self) -> Signal:
        return Signal(self.color_gap, self.size_gap, self.background_gap)

    @property
    def id(self) -> str:
        return run_id(self.color_gap, self.size_gap, self.seed, self.background_gap)


def study_section(config: dict, name: str) -> dict | None:
    """config studies.<name>, or None when that study is off (null or absent)."""
    return (config.get("studies") or {}).get(name) or None


def study_training(config: dict, name: str) -> dict:
    """The training section of a study's runs: ``training`` with the study's own
    ``training`` overlay (e.g. the background study's 40k steps) laid over it."""
    section = study_section(config, name) or {}
    return merge(config["training"], section.get("training") or {})


def background_runs(config: dict) -> list[BackgroundRun]:
    """Every run of the background study: its seeds at one signal level (none when off)."""
    study = study_section(config, "background")
    if study is None:
        return []
    gaps = (float(study[key]) for key in ("color_gap", "size_gap", "background_gap"))
    color_gap, size_gap, background_gap = gaps
    return sorted(
        BackgroundRun(int(seed), color_gap, size_gap, background_gap) for seed in study["seeds"]
    )


def celeba_study(config: dict) -> dict | None:
    """The studies.celeba section when the study is on (a root is set), else None."""
    study = study_section(config, "celeba")
    return study if study and study.get("root") else None


@dataclass(frozen=True, order=True)
class CelebaRun:
    """One run of the CelebA study: a seed (the data are the config's)."""

    seed: int

    @property
    def id(self) -> str:
        return f"seed{self.seed}"


def celeba_runs(config: dict) -> list[CelebaRun]:
    study = celeba_study(config)
    return sorted(CelebaRun(int(seed)) for seed in study["seeds"]) if study else []


def underspecification(config: dict) -> dict | None:
    """The studies.underspecification section, or None when the study is off."""
    return study_section(config, "underspecification")


def underspecification_runs(config: dict) -> list[MaskedRun]:
    """Every run of the underspecification study: mask ratios x seeds (none when off)."""
    study = underspecification(config)
    if study is None:
        return []
    return sorted(
        MaskedRun(float(ratio), int(seed))
        for ratio in study["mask_ratios"]
        for seed in study["seeds"]
    )


def merge(base: dict, overlay: dict) -> dict:
    """Overlay one config on another the way Snakemake does: dicts merge, lists replace."""
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_config(*paths: str | Path) -> dict:
    """Read config.yaml and any presets laid over it, in order."""
    config: dict = {}
    for path in paths:
        try:
            layer = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist")
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}")
        config = merge(config, layer)
    return config


def preset_file(config: dict, presets: Path, on_cluster: bool) -> tuple[str, Path | None]:
    """The preset a run uses, by config key ``preset``, and the file to lay over
    config.yaml (None: config.yaml as it is, the paper's scale). ``auto`` is ``paper``
    when jobs go to a cluster and ``smoke`` when they run on this machine; any other name
    is ``presets``/<name>.yaml."""
    name = str(config.get("preset", "paper"))
    if name == "auto":
        name = "paper" if on_cluster else "smoke"
    if name == "paper":
        return name, None
    path = presets / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in presets.glob("*.yaml"))
        raise ConfigError(
            f"config key 'preset': no preset named '{name}' ({path} does not exist); use "
            f"auto, paper or one of: {', '.join(known)}"
        )
    return name, path


def with_preset(
    base: Iterable[Path], preset: Path, overlays: Iterable[Path], overrides: dict
) -> dict:
    """The config of a run with a preset: config.yaml (``base``), the preset, then the
    command line's other config files and its --config values, so that a preset sits
    under whatever the user gives."""
    return merge(load_config(*base, preset, *overlays), overrides)


def non_finite_numbers(value: Any, key: str = "") -> Iterable[str]:
    """Keys whose value is NaN or infinite, anywhere in the config (YAML's .nan, .inf):
    JSON-schema ranges let NaN through, and training would run on it."""
    if isinstance(value, dict):
        for child, item in value.items():
            yield from non_finite_numbers(item, f"{key}.{child}" if key else str(child))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from non_finite_numbers(item, f"{key}.{i}")
    elif isinstance(value, float) and not math.isfinite(value):
        yield (
            f"config key '{key}' is {value}; every number of the config must be finite: "
            "set a number"
        )


def validate_config(config: dict, schema_path: str | Path) -> None:
    """Raise ConfigError listing every problem of ``config``; return None if it is valid."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    problems = list(non_finite_numbers(config))
    problems += [_describe(error) for error in validator.iter_errors(config)]
    if not problems:  # relations between keys only make sense once each key is sound
        problems = list(_cross_checks(config)) + list(_results_problems(config["results"]))
    if problems:
        raise ConfigError(
            "invalid configuration:\n"
            + "\n".join(f"  - {p}" for p in sorted(problems))
            + "\nFix these in config.yaml or in the preset given with --configfile."
        )


def _describe(error: jsonschema.ValidationError) -> str:
    key = ".".join(str(part) for part in error.absolute_path) or "(top level)"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        return f"config key '{key}': {error.message}; allowed keys here: {', '.join(allowed)}"
    if error.validator == "required":
        return f"config key '{key}': {error.message}"
    return f"config key '{key}': {error.message}"


def _results_problems(results: str) -> Iterable[str]:
    """The results folder must be writable, or creatable in a writable folder: said now,
    not as a traceback deep inside the first job. Nothing is created here (dry runs)."""
    folder = Path(results).absolute()
    existing = folder
    while not existing.exists():  # a path through a regular file "does not exist" either
        existing = existing.parent
    if not existing.is_dir():
        yield (
            f"config key 'results' ({results}): {existing} is a file, so the results folder "
            f"{folder} cannot be made; set 'results' to a folder path, or move the file"
        )
    elif not os.access(existing, os.W_OK | os.X_OK):
        what = "the results folder" if existing == folder else f"{folder} would be made in"
        yield (
            f"config key 'results' ({results}): {what} {existing}, which this user cannot "
            f"write to; set 'results' to a folder you can write (or fix its permissions)"
        )


def _cross_checks(config: dict) -> Iterable[str]:
    yield from _training_problems(config["training"], "training")
    for name in ("background", "celeba"):  # studies whose runs may train longer
        section = study_section(config, name)
        if section and section.get("training"):
            yield from _training_problems(study_training(config, name), f"studies.{name}.training")
    model = config["model"]
    if model["gamma_min"] >= model["gamma_max"]:
        yield "config key 'model.gamma_min' must be below 'model.gamma_max'"
    low, high = model["data_range"]
    if low >= high:
        yield "config key 'model.data_range' must be [lo, hi] with lo < hi, e.g. [0, 1]"
    for section in ("model", "probe"):
        for width in config[section]["channels"]:
            if width % config[section]["groups"]:
                yield (
                    f"config key '{section}.channels': {width} channels cannot be split into "
                    f"'{section}.groups' = {config[section]['groups']} GroupNorm groups"
                )
            if width % config[section]["attention_heads"]:
                yield (
                    f"config key '{section}.channels': {width} channels cannot be split into "
                    f"'{section}.attention_heads' = {config[section]['attention_heads']} heads"
                )
        downsamplings = len(config[section]["channels"]) - 1
        if config["data"]["image_size"] % 2**downsamplings:
            yield (
                f"config key 'data.image_size' ({config['data']['image_size']}) must be "
                f"divisible by 2^{downsamplings} for the {downsamplings + 1} levels of "
                f"'{section}.channels'"
            )
    low, high = config["data"]["background_train"]
    if low > high:
        yield "config key 'data.background_train' must be [low, high] with low <= high"

    yield from _evaluation_problems(config)
    yield from _batch_problems(config)
    yield from _signal_problems(config)
    yield from _underspecification_problems(config)
    yield from _background_problems(config)
    yield from _celeba_problems(config)


# (trained classes, classes) of each study's layout (conceptspace.concepts); CelebA's two
# attributes make four classes, one held out.
STUDY_CLASSES = {"signal": (3, 4), "underspecification": (3, 4), "background": (4, 8)}
STUDY_CLASSES["celeba"] = (3, 4)


def _kept(images: int, validation_fraction: float) -> int:
    """Training images of one class once its validation share is held out (render.py
    holds out round(fraction * n) of each class)."""
    return images - int(round(validation_fraction * images))


def _batch_problems(config: dict) -> Iterable[str]:
    """A batch larger than the training set it is drawn from: training would draw the
    same images over and over (the VDM) or fail (the probe), so it is refused."""
    data_fraction = ("data.validation_fraction", float(config["data"]["validation_fraction"]))
    probe_fraction = ("probe.validation_fraction", float(config["probe"]["validation_fraction"]))
    for study, (trained, classes) in STUDY_CLASSES.items():
        section = celeba_study(config) if study == "celeba" else study_section(config, study)
        if section is None:
            continue
        if study == "celeba":
            train_set = ("studies.celeba.per_class", section["per_class"], *data_fraction)
            probe_set = ("studies.celeba.probe_per_class", section["probe_per_class"])
            probe_set += data_fraction
        else:
            train_set = ("data.images_per_class", config["data"]["images_per_class"])
            train_set += data_fraction
            probe_set = ("probe.images_per_class", config["probe"]["images_per_class"])
            probe_set += probe_fraction
        own = (section.get("training") or {}).get("batch_size") is not None
        yield from _batch_problem(
            f"studies.{study}.training.batch_size" if own else "training.batch_size",
            study_training(config, study)["batch_size"],
            f"the {study} study's training set of a run",
            trained,
            train_set,
        )
        yield from _batch_problem(
            "probe.batch_size",
            config["probe"]["batch_size"],
            f"the {study} study's probe training set",
            classes,
            probe_set,
        )


def _batch_problem(key, batch, what, classes, images) -> Iterable[str]:
    count_key, count, fraction_key, fraction = images
    kept = _kept(int(count), fraction)
    if batch > classes * kept:
        yield (
            f"config key '{key}' ({batch}) is larger than {what}: {classes} classes x {kept} "
            f"images ({count_key} {count}, {fraction_key} {fraction}) = {classes * kept}; "
            f"lower the batch or raise {count_key}"
        )


def _signal_problems(config: dict) -> Iterable[str]:
    """The signal study's sweeps, and the figure settings that name its levels and sweeps
    (checked only when the study is on: its figures are built only then)."""
    study = signal_study(config)
    if study is None:
        return
    key = "studies.signal.sweeps"
    names = [sweep["name"] for sweep in study["sweeps"]]
    for name in sorted({n for n in names if names.count(n) > 1}):
        yield f"config key '{key}': the name '{name}' is used twice; names must be unique"
    for i, sweep in enumerate(study["sweeps"]):
        for concept, limit in (("color_gap", MAX_COLOR_GAP), ("size_gap", MAX_SIZE_GAP)):
            for value in sweep[concept]:
                if value > limit:
                    yield (
                        f"config key '{key}.{i}.{concept}': {value} is above {limit}, "
                        f"where training values would leave the image's range"
                    )
                if round(value, GAP_DECIMALS) != value:
                    yield (
                        f"config key '{key}.{i}.{concept}': {value} has more than "
                        f"{GAP_DECIMALS} decimals; round it (run ids print {GAP_DECIMALS})"
                    )
    from conceptspace.methods import sample_sheet_problems

    steps = checkpoint_steps(config["training"])
    yield from sample_sheet_problems(
        config["figures"]["sample_sheet"], signal_levels(config), study["seeds"], steps
    )
    yield from figure_level_problems(config["figures"]["levels"], signal_levels(config))
    for figure_key in ("color_sweep", "size_sweep"):
        wanted = config["figures"]["signal"][figure_key]
        if wanted not in names:
            yield (
                f"config key 'figures.signal.{figure_key}': no sweep is named '{wanted}'; "
                f"sweeps are: {', '.join(names)}"
            )


def _training_problems(training: dict, key: str) -> Iterable[str]:
    """Checkpoints within training; ``key`` names the section (a study's overlay)."""
    checkpoints = training["checkpoints"]
    if checkpoints["first"] > checkpoints["last"]:
        yield (
            f"config key '{key}.checkpoints.first' ({checkpoints['first']}) is after "
            f"'{key}.checkpoints.last' ({checkpoints['last']}); make first <= last"
        )
    if checkpoints["last"] > training["steps"]:
        yield (
            f"config key '{key}.checkpoints.last' ({checkpoints['last']}) is past the end of "
            f"training ('{key}.steps' = {training['steps']}); make last <= steps"
        )
    span = checkpoints["last"] - checkpoints["first"] + 1
    if checkpoints["count"] > span:
        yield (
            f"config key '{key}.checkpoints.count' ({checkpoints['count']}) asks for more "
            f"checkpoints than there are steps between first and last ({span})"
        )


def _background_problems(config: dict) -> Iterable[str]:
    study = study_section(config, "background")
    if study is None:
        return
    limits = (("color_gap", MAX_COLOR_GAP), ("size_gap", MAX_SIZE_GAP))
    # grey 0.5 +- db/2, spread +- db/8: in [0, 1] up to the color gap's limit
    for concept, limit in limits + (("background_gap", MAX_COLOR_GAP),):
        if study[concept] > limit:
            yield (
                f"config key 'studies.background.{concept}': {study[concept]} is above "
                f"{limit}, where training values would leave the image's range"
            )
        if round(study[concept], GAP_DECIMALS) != study[concept]:
            yield (
                f"config key 'studies.background.{concept}': {study[concept]} has more than "
                f"{GAP_DECIMALS} decimals; round it (run ids print {GAP_DECIMALS})"
            )
    from conceptspace.methods import method_problems

    steps = checkpoint_steps(study_training(config, "background"))
    for problem in method_problems(config["evaluation"]["methods"], steps):
        yield f"{problem} (of the background study's runs, studies.background.training)"


def _celeba_problems(config: dict) -> Iterable[str]:
    """CelebA's folder must be there and loadable, said before planning (not by the first
    job), with the files torchvision expects; its image size must suit the networks."""
    study = celeba_study(config)
    if study is None:
        return
    from conceptspace.celeba import check_celeba_dir

    try:
        check_celeba_dir(study["root"], bool(study["verify_md5"]))
    except ConceptspaceError as err:
        yield f"config key 'studies.celeba.root' ({study['root']}): {err}"
    for section in ("model", "probe"):
        downsamplings = len(config[section]["channels"]) - 1
        if study["image_size"] % 2**downsamplings:
            yield (
                f"config key 'studies.celeba.image_size' ({study['image_size']}) must be "
                f"divisible by 2^{downsamplings} for the {downsamplings + 1} levels of "
                f"'{section}.channels'"
            )


def figure_level_problems(
    settings: list[dict], study_levels: list[tuple[float, float]]
) -> Iterable[str]:
    """Each ``figures.levels`` entry must be a signal level of the study: a panel of the
    claim figures with no runs behind it would be empty."""
    for i, level in enumerate(settings):
        color_gap, size_gap = float(level["color_gap"]), float(level["size_gap"])
        if (color_gap, size_gap) not in study_levels:  # both are floats of the config
            yield (
                f"config key 'figures.levels.{i}': (color_gap {color_gap:g}, size_gap "
                f"{size_gap:g}) is not a signal level of the study; choose from "
                + ", ".join(f"({dc:g}, {ds:g})" for dc, ds in study_levels)
            )


def _underspecification_problems(config: dict) -> Iterable[str]:
    study = underspecification(config)
    if study is None:
        return
    key = "studies.underspecification"
    for concept, limit in (("color_gap", MAX_COLOR_GAP), ("size_gap", MAX_SIZE_GAP)):
        if study[concept] > limit:
            yield (
                f"config key '{key}.{concept}': {study[concept]} is above {limit}, where "
                "training values would leave the image's range"
            )
    for i, ratio in enumerate(study["mask_ratios"]):
        if not 0 <= ratio <= 1:
            yield (
                f"config key '{key}.mask_ratios.{i}': {ratio} is outside [0, 1]; a masking ratio "
                "is the fraction of red triangles whose color is hidden: use values from 0 "
                "(none) to 1 (all)"
            )
        elif round(ratio, GAP_DECIMALS) != ratio:
            yield (
                f"config key '{key}.mask_ratios.{i}': {ratio} has more than {GAP_DECIMALS} "
                f"decimals; round it (run ids print {GAP_DECIMALS})"
            )


def _evaluation_problems(config: dict) -> Iterable[str]:
    """Patching donors must be checkpoints of the runs."""
    from conceptspace.methods import method_problems

    yield from method_problems(
        config["evaluation"]["methods"], checkpoint_steps(config["training"])
    )


def signal_study(config: dict) -> dict | None:
    """The studies.signal section, or None when the signal study is off."""
    return study_section(config, "signal")


def study_runs(config: dict) -> list[Run]:
    """Every run of the signal study: seeds x the union of the sweeps' grids, sorted
    (none when the study is off)."""
    study = signal_study(config)
    if study is None:
        return []
    return sorted(
        {Run(dc, ds, seed) for dc, ds in signal_levels(config) for seed in study["seeds"]}
    )


def signal_levels(config: dict) -> list[tuple[float, float]]:
    """The distinct (color gap, size gap) pairs of the signal study's sweeps, sorted."""
    study = signal_study(config)
    return sorted(
        {
            (float(dc), float(ds))
            for sweep in (study["sweeps"] if study else [])
            for dc in sweep["color_gap"]
            for ds in sweep["size_gap"]
        }
    )


def sweep(config: dict, name: str) -> dict[str, Any]:
    study = signal_study(config)
    for candidate in study["sweeps"] if study else []:
        if candidate["name"] == name:
            return candidate
    raise ConfigError(f"no sweep named '{name}' in studies.signal.sweeps")


def checkpoint_steps(training: dict) -> list[int]:
    """Steps at which training saves a checkpoint: `count` steps from `first` to `last`,
    evenly spaced in sqrt(step), so early training, where concepts emerge, is sampled
    densely (the authors' quadratic schedule). A pure function of the config, so the DAG
    knows every evaluation job before training starts."""
    spec = training["checkpoints"]
    first, last, count = spec["first"], spec["last"], spec["count"]
    if count == 1:
        return [last]
    roots = [first**0.5 + (last**0.5 - first**0.5) * i / (count - 1) for i in range(count)]
    steps = sorted({round(r * r) for r in roots} | {first, last})
    return [s for s in steps if first <= s <= last]
