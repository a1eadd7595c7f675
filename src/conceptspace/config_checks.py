"""The config checks that relate keys to each other, all of them, in this one module.

The JSON schema (workflow/schemas/config.schema.yaml) fixes each key's type and range;
``relation_problems`` adds every rule that needs several keys at once: checkpoints within
training (in ``training`` and in each study's overlay), batches within their training
sets, networks that fit the image, patching donors that are checkpoints of each study's
own runs, gaps within their limits and printable in run ids, and figure settings that name
levels, sweeps and runs of the study. ``config.validate_config`` calls it once every key
is sound on its own; each message names the key, the problem and the fix.

A study's own checks are functions here too, which its registry entry names
(``studies.Study.problems_of``): studies.py imports this module, so the checks are given
the studies (``study``, ``studies``: ``studies.Study`` objects) rather than importing them.
Evaluation and the figures repeat two checks on what they are given at run time
(``method_problems``, ``figure_level_problems``).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from conceptspace.io import ConceptspaceError
from conceptspace.methods import FINAL_DONOR
from conceptspace.runs import (
    GAP_DECIMALS,
    MAX_BACKGROUND_GAP,
    MAX_COLOR_GAP,
    MAX_SIZE_GAP,
    checkpoint_steps,
    same_gap,
)


def relation_problems(config: dict, studies: Iterable) -> Iterable[str]:
    """Every problem between keys of ``config``, whose keys are each sound (the schema);
    ``studies``: the registry (``studies.STUDIES.values()``), on and off."""
    studies = list(studies)
    on = [study for study in studies if study.section(config) is not None]
    training = list(_training_problems(config["training"], "training"))
    for study in studies:  # a study's runs may train longer, even one that is off
        overlay = _training_overlay(config, study)
        if overlay:
            key = f"studies.{study.name}.training"
            training += _training_problems(study.training(config), key, "steps" in overlay)
    yield from training
    yield from _h_init_problems(config, on)
    yield from _model_problems(config)
    for study in on:
        yield from _batch_problems(config, study)
    if training:  # the checks below read the checkpoint steps, which need sound checkpoints
        return
    yield from _donor_problems(config, on)
    yield from _sample_count_problems(config)
    for study in on:
        yield from study.problems(config)


def _training_overlay(config: dict, study) -> dict:
    """The study's own ``training`` overlay ({} when it has none)."""
    return ((config.get("studies") or {}).get(study.name) or {}).get("training") or {}


# ----------------------------------------------------------------------------- training


def _training_problems(training: dict, key: str, own_steps: bool = True) -> Iterable[str]:
    """Checkpoints within training, and loss reports within it; ``key`` names the section
    (a study's overlay; ``own_steps``: it sets its own steps)."""
    if own_steps and training["log_every"] > training["steps"]:
        yield (
            f"config key 'training.log_every' ({training['log_every']}) is above "
            f"'{key}.steps' ({training['steps']}): training would report its loss only at "
            "its last step, and the divergence monitor (training.divergence) would never "
            f"judge it; make log_every <= steps (e.g. {max(1, training['steps'] // 100)})"
        )
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
    if checkpoints["count"] > span > 0:  # span <= 0: first is after last, said above
        yield (
            f"config key '{key}.checkpoints.count' ({checkpoints['count']}) asks for more "
            f"checkpoints than there are steps between first and last ({span})"
        )


def _kept(images: int, validation_fraction: float) -> int:
    """Training images of one class once its validation share is held out (render.py
    holds out round(fraction * n) of each class)."""
    return images - int(round(validation_fraction * images))


def _batch_problems(config: dict, study) -> Iterable[str]:
    """A batch larger than the training set it is drawn from: training would draw the
    same images over and over (the VDM) or fail (the probe), so it is refused. (A study's
    training overlay cannot set its own batch: the schema allows steps and checkpoints.)"""
    data_fraction = ("data.validation_fraction", float(config["data"]["validation_fraction"]))
    probe_fraction = ("probe.validation_fraction", float(config["probe"]["validation_fraction"]))
    section = study.section(config)
    trained, classes = study.classes
    if study.renders:
        train_set = ("data.images_per_class", config["data"]["images_per_class"])
        train_set += data_fraction
        probe_set = ("probe.images_per_class", config["probe"]["images_per_class"])
        probe_set += probe_fraction
    else:  # sets prepared from a folder, sized by the study's section
        key = f"studies.{study.name}"
        train_set = (f"{key}.per_class", section["per_class"], *data_fraction)
        probe_set = (f"{key}.probe_per_class", section["probe_per_class"], *data_fraction)
    yield from _batch_problem(
        "training.batch_size",
        config["training"]["batch_size"],
        f"the {study.name} study's training set of a run",
        trained,
        train_set,
    )
    yield from _batch_problem(
        "probe.batch_size",
        config["probe"]["batch_size"],
        f"the {study.name} study's probe training set",
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


# ----------------------------------------------------------------------------- networks


def _model_problems(config: dict) -> Iterable[str]:
    """The diffusion model's noise schedule and data range, and both networks' widths and
    levels against their groups, heads and the image size."""
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
        yield from _image_size_problems(
            config, section, "data.image_size", config["data"]["image_size"]
        )
    low, high = config["data"]["background_train"]
    if low > high:
        yield "config key 'data.background_train' must be [low, high] with low <= high"


def _image_size_problems(config: dict, networks: str, key: str, size: int) -> Iterable[str]:
    """The image size (config key ``key``) must halve once per level of ``networks``'
    channels."""
    downsamplings = len(config[networks]["channels"]) - 1
    if size % 2**downsamplings:
        yield (
            f"config key '{key}' ({size}) must be divisible by 2^{downsamplings} for the "
            f"{downsamplings + 1} levels of '{networks}.channels'"
        )


def _h_init_problems(config: dict, on: Sequence) -> Iterable[str]:
    """``model.h_init_fan_in`` draws h's first layer as for h padded to that many slots,
    so it cannot be below the slots of h of a study that is on (UNet refuses it, but only
    when the first training job starts)."""
    fan_in = config["model"].get("h_init_fan_in")
    if fan_in is None:
        return
    slots = {study.name: study.concept_layout(config).h_dim for study in on}
    short = {name: h_dim for name, h_dim in slots.items() if h_dim > fan_in}
    if short:
        most = max(short.values())
        studies = ", ".join(f"{name} {h_dim}" for name, h_dim in short.items())
        yield (
            f"config key 'model.h_init_fan_in' ({fan_in}) is below the slots of h of the "
            f"studies that are on ({studies}); it draws the embedding MLPs' first layer as "
            f"for h zero-padded to that many slots: use a value >= {most}, or null for "
            "PyTorch's default"
        )


# ----------------------------------------------------------------------------- evaluation


def _donor_problems(config: dict, on: Sequence) -> Iterable[str]:
    """Patching donors must be checkpoints of every study's runs: those of ``training``
    for the studies without an overlay, each overlay's own for a study with one."""
    methods = config["evaluation"]["methods"]
    plain = False
    for study in on:
        if not _training_overlay(config, study):
            plain = True
            continue
        for problem in method_problems(methods, study.steps(config)):
            yield f"{problem} (of the {study.name} study's runs, studies.{study.name}.training)"
    if plain:
        yield from method_problems(methods, checkpoint_steps(config["training"]))


def method_problems(methods_cfg: Mapping[str, Any], steps: Sequence[int]) -> Iterable[str]:
    """Relations the schema cannot check: donors must be checkpoint steps (or "final")
    and distinct. ``steps`` are the run's checkpoint steps; none (checkpoints first after
    last, which the config check names) leaves nothing to check them against."""
    if not steps:
        return
    donors = [str(d) for d in methods_cfg["patching"]["donors"]]
    for donor in donors:
        if donor == FINAL_DONOR:
            continue
        if not donor.isdigit() or int(donor) not in steps:
            yield (
                f"config key 'evaluation.methods.patching.donors': {donor} is not a checkpoint "
                f'step; use "final" or one of the steps training.checkpoints makes: '
                f"{', '.join(str(s) for s in steps)}"
            )
    if len(set(donors)) != len(donors) or (FINAL_DONOR in donors and str(steps[-1]) in donors):
        yield (
            "config key 'evaluation.methods.patching.donors' names a donor twice (\"final\" "
            f"is step {steps[-1]}); list each donor once"
        )


def _sample_count_problems(config: dict) -> Iterable[str]:
    """The sample sheets show samples the evaluation scored. (evaluation.authors.consecutive
    above a study's checkpoints is legitimate, a tiny run's: its authors' learning time is
    then the last step; the plan block says so, conceptspace.plan.notes.)"""
    shown = config["figures"]["sample_sheet"]["samples"]
    scored = config["evaluation"]["samples_per_prompt"]
    if shown > scored:
        yield (
            f"config key 'figures.sample_sheet.samples' ({shown}) is above "
            f"'evaluation.samples_per_prompt' ({scored}): a sample sheet shows the images "
            f"the evaluation scored, {scored} per prompt; make samples <= {scored}"
        )


# ----------------------------------------------------------------------------- gaps


COLOR_SIZE_LIMITS = (("color_gap", MAX_COLOR_GAP), ("size_gap", MAX_SIZE_GAP))


def gap_problems(
    section: dict, key: str, limits: Iterable[tuple[str, float]], in_run_ids: bool = True
) -> Iterable[str]:
    """Gaps within the image's range and, if run ids print them, with few decimals."""
    for concept, limit in limits:
        values = section[concept] if isinstance(section[concept], list) else [section[concept]]
        for value in values:
            if value > limit:
                yield (
                    f"config key '{key}.{concept}': {value} is above {limit}, where training "
                    "values would leave the image's range"
                )
            if in_run_ids:
                yield from _decimals_problems(f"{key}.{concept}", value)


def _decimals_problems(key: str, value: float) -> Iterable[str]:
    """A value a run id prints must fit its GAP_DECIMALS decimals, or two runs collide."""
    if round(value, GAP_DECIMALS) != value:
        yield (
            f"config key '{key}': {value} has more than {GAP_DECIMALS} decimals; round it "
            f"(run ids print {GAP_DECIMALS})"
        )


# ----------------------------------------------------------------------------- the studies


def signal_problems(config: dict, study) -> Iterable[str]:
    """The sweeps, and the figure settings that name the study's levels, runs and sweeps."""
    section = study.section(config)
    key = "studies.signal.sweeps"
    names = [sweep["name"] for sweep in section["sweeps"]]
    for name in sorted({n for n in names if names.count(n) > 1}):
        yield f"config key '{key}': the name '{name}' is used twice; names must be unique"
    for i, one in enumerate(section["sweeps"]):
        yield from gap_problems(one, f"{key}.{i}", COLOR_SIZE_LIMITS)
    runs = [(run.color_gap, run.size_gap, run.seed) for run in study.runs(config)]
    yield from sample_sheet_problems(config["figures"]["sample_sheet"], runs, study.steps(config))
    yield from figure_level_problems(config["figures"]["levels"], study.levels(config))
    yield from figure_sweep_problems(config["figures"]["signal"], section["sweeps"])


# fig_signal's sweeps and the gap each holds fixed: it plots the color sweep against the
# color gap at one size gap, and the size sweep against the size gap at one color gap.
FIGURE_SWEEPS = (("color_sweep", "size_gap"), ("size_sweep", "color_gap"))


def figure_sweep_problems(figure_cfg: Mapping[str, str], sweeps: list[dict]) -> Iterable[str]:
    """``figures.signal`` must name sweeps of the study, each holding its other gap fixed."""
    names = [sweep["name"] for sweep in sweeps]
    for figure_key, fixed in FIGURE_SWEEPS:
        wanted = figure_cfg[figure_key]
        if wanted not in names:
            yield (
                f"config key 'figures.signal.{figure_key}': no sweep is named '{wanted}'; "
                f"sweeps are: {', '.join(names)}"
            )
            continue
        values = sweeps[names.index(wanted)][fixed]
        if len(values) != 1:
            yield (
                f"config key 'figures.signal.{figure_key}': sweep '{wanted}' has {fixed} "
                f"{values}, and fig_signal plots it at one {fixed}; name a sweep that holds "
                f"{fixed} fixed (one value)"
            )


def sample_sheet_problems(
    sheet_cfg: Mapping[str, Any],
    runs: Sequence[tuple[float, float, int]],
    steps: Sequence[int],
) -> Iterable[str]:
    """``figures.sample_sheet`` must name a run of the study, (color gap, size gap, seed)
    one of ``runs``, and checkpoint steps."""
    level = (float(sheet_cfg["color_gap"]), float(sheet_cfg["size_gap"]))
    at_level = [seed for a, b, seed in runs if same_gap(level[0], a) and same_gap(level[1], b)]
    if not at_level:
        levels = sorted({(a, b) for a, b, _ in runs})
        yield (
            f"config key 'figures.sample_sheet': (color_gap, size_gap) = {level} is not a "
            f"signal level of the study; choose one of {', '.join(map(str, levels))}"
        )
    elif int(sheet_cfg["seed"]) not in at_level:
        yield (
            f"config key 'figures.sample_sheet.seed': {sheet_cfg['seed']} is not a seed of "
            f"the study at that level; choose one of {', '.join(map(str, at_level))}"
        )
    chosen = sheet_cfg["steps"]
    if chosen != "all":
        for step in chosen:
            if step not in steps:
                yield (
                    f"config key 'figures.sample_sheet.steps': {step} is not a checkpoint "
                    f"step; use \"all\" or steps from: {', '.join(str(s) for s in steps)}"
                )


def figure_level_problems(settings: list[dict], study_levels: list) -> Iterable[str]:
    """Each ``figures.levels`` entry must be a signal level of the study: a panel of the
    claim figures with no runs behind it would be empty."""
    for i, level in enumerate(settings):
        color_gap, size_gap = float(level["color_gap"]), float(level["size_gap"])
        if not any(same_gap(color_gap, dc) and same_gap(size_gap, ds) for dc, ds in study_levels):
            yield (
                f"config key 'figures.levels.{i}': (color_gap {color_gap:g}, size_gap "
                f"{size_gap:g}) is not a signal level of the study; choose from "
                + ", ".join(f"({dc:g}, {ds:g})" for dc, ds in study_levels)
            )


def underspecification_problems(config: dict, study) -> Iterable[str]:
    """Its gaps (not printed in its run ids), and masking ratios in [0, 1] that run ids
    can print."""
    section = study.section(config)
    key = "studies.underspecification"
    yield from gap_problems(section, key, COLOR_SIZE_LIMITS, in_run_ids=False)  # ids: ratios
    for i, ratio in enumerate(section["mask_ratios"]):
        if not 0 <= ratio <= 1:
            yield (
                f"config key '{key}.mask_ratios.{i}': {ratio} is outside [0, 1]; a masking "
                "ratio is the fraction of red triangles whose color is hidden: use values "
                "from 0 (none) to 1 (all)"
            )
        else:
            yield from _decimals_problems(f"{key}.mask_ratios.{i}", ratio)


def background_problems(config: dict, study) -> Iterable[str]:
    # grey 0.5 +- db/2, spread +- db/8: in [0, 1] up to the color gap's limit
    limits = COLOR_SIZE_LIMITS + (("background_gap", MAX_BACKGROUND_GAP),)
    yield from gap_problems(study.section(config), "studies.background", limits)


def celeba_problems(config: dict, study) -> Iterable[str]:
    """CelebA's folder must be there and loadable, said before planning (not by the first
    job), with the files torchvision expects; its image size must suit the networks."""
    from conceptspace.celeba import check_celeba_dir  # numpy and the renderer: only if on

    section = study.section(config)
    try:
        check_celeba_dir(section["root"], bool(section["verify_md5"]))
    except ConceptspaceError as err:
        yield f"config key 'studies.celeba.root' ({section['root']}): {err}"
    for networks in ("model", "probe"):
        yield from _image_size_problems(
            config, networks, "studies.celeba.image_size", section["image_size"]
        )
