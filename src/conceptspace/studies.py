"""The studies of the pipeline, one ``Study`` each, in one registry.

A study is a section ``studies.<name>`` of the config (null switches it off), a concept
layout, a grid of training runs, the signal levels its probe pools, its figures and the
checks of its section (functions of ``conceptspace.config_checks``, the home of every check
between config keys). The workflow (workflow/rules/), the config checks and the command
line read the studies from here. Adding a study is an entry in ``STUDIES``, a figure module
under ``conceptspace.figures`` (with its caption, workflow/report/fig_<name>.rst) and a
section of workflow/schemas/config.schema.yaml (tests/test_studies.py adds a toy study).

Runs are listed from the config once (``run_table``) and looked up by id: an id names a
run's folder, it is never parsed back into the run's fields.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from conceptspace.concepts import LAYOUTS, Layout, Signal, celeba_layout
from conceptspace.config_checks import (
    background_problems,
    celeba_problems,
    figure_level_problems,
    figure_sweep_problems,
    signal_problems,
    underspecification_problems,
)
from conceptspace.io import ConceptspaceError, ConfigError
from conceptspace.netcdf import open_samples
from conceptspace.runs import (
    RUN_FIELDS,
    SIGNAL_GRID,
    checkpoint_steps,
    masked_run_id,
    merge,
    run_id,
)


@dataclass(frozen=True)
class Run:
    """One training run of a study: its id (also its folder) and the fields it is trained
    and evaluated with. Fields a study does not vary stay None (CelebA has no gaps)."""

    study: str
    id: str
    seed: int
    color_gap: float | None = None
    size_gap: float | None = None
    mask_ratio: float | None = None
    background_gap: float | None = None

    @property
    def signal(self) -> Signal:
        return Signal.of_run(self.color_gap, self.size_gap, self.background_gap)

    @property
    def fields(self) -> dict[str, float | int]:
        """The fields it has: seed, gaps, and its masking ratio or background gap."""
        return {name: getattr(self, name) for name in RUN_FIELDS if getattr(self, name) is not None}

    @property
    def args(self) -> str:
        """The run's options of the `render` and `sample` commands."""
        args = ""
        if self.color_gap is not None:
            args += f"--color-gap {self.color_gap} --size-gap {self.size_gap} "
        args += f"--seed {self.seed}"
        if self.mask_ratio is not None:
            args += f" --mask-ratio {self.mask_ratio}"
        if self.background_gap is not None:
            args += f" --background-gap {self.background_gap}"
        return args


# ----------------------------------------------------------------------------- figures


@dataclass(frozen=True)
class FigureInput:
    """What `conceptspace figure` gives a plot besides the study: ``build(settings,
    given)`` makes the plot's keyword arguments from the config keys ``keys`` (the
    workflow passes a figure rule those keys only, so it is redrawn when they change) and
    from what the command line ``option`` was given (None: not given, or no option)."""

    keys: tuple[str, ...]
    build: Callable[[dict, list[str] | None], dict[str, Any]]
    option: str | None = None  # a command-line option taking one or more values
    help: str = ""


def _levels_input(settings: dict, given: None) -> dict[str, Any]:
    """figures.levels, each of which must be a signal level of the study (the config
    check says so before planning; --settings may come from elsewhere)."""
    _refuse(
        figure_level_problems(settings["figures"]["levels"], STUDIES["signal"].levels(settings))
    )
    chosen = settings["figures"]["levels"]
    return {"levels": [(float(level["color_gap"]), float(level["size_gap"])) for level in chosen]}


def _refuse(problems: Iterable[str]) -> None:
    """Stop a figure whose settings have these problems (each names the key and the fix)."""
    problems = list(problems)
    if problems:
        raise ConceptspaceError("; ".join(problems))


def _sweeps_input(settings: dict, given: None) -> dict[str, Any]:
    """The fixed gap of each sweep that fig_signal plots along (figures.signal), which
    the config check has checked (--settings may come from elsewhere)."""
    figure_cfg = settings["figures"]["signal"]
    _refuse(figure_sweep_problems(figure_cfg, STUDIES["signal"].section(settings)["sweeps"]))
    return {
        "color_sweep_size_gap": float(sweep(settings, figure_cfg["color_sweep"])["size_gap"][0]),
        "size_sweep_color_gap": float(sweep(settings, figure_cfg["size_sweep"])["color_gap"][0]),
    }


def _methods_input(settings: dict, given: list[str] | None) -> dict[str, Any]:
    return {"methods": given or hidden_methods(settings)}


def _samples_input(settings: dict, given: list[str] | None) -> dict[str, Any]:
    return {"samples": [open_samples(path) for path in given or []]}


FIGURE_INPUTS = {
    "levels": FigureInput(("figures.levels", "studies.signal"), _levels_input),
    "sweeps": FigureInput(("figures.signal", "studies.signal"), _sweeps_input),
    "methods": FigureInput(
        ("evaluation.methods",),
        _methods_input,
        option="--methods",
        help="hidden: methods to draw, naive first (default: those on)",
    ),
    "samples": FigureInput(
        (),  # the samples files of the first seed's runs, one per run, given by the rule
        _samples_input,
        option="--samples-of",
        help="underspec: samples files of one seed's runs, one per ratio",
    ),
}


def _always(config: dict) -> bool:
    return True


@dataclass(frozen=True)
class Figure:
    """One figure of a study, declared here only: `conceptspace figure <name>` draws
    results/figures/fig_<name>.pdf (and .png) from the study's dataset with ``plot``
    (``module:function``, called as ``function(study, out_pdf, **inputs, record=...)``),
    captioned in the report by workflow/report/<caption>. ``inputs`` names what else the
    plot is given (FIGURE_INPUTS); ``wanted`` says whether the config builds it. The rules
    (workflow/rules/figures.smk) and the command line read these declarations."""

    name: str
    plot: str
    inputs: tuple[str, ...] = ()
    wanted: Callable[[dict], bool] = _always

    @property
    def caption(self) -> str:
        """Its caption's file in workflow/report/."""
        return f"fig_{self.name}.rst"

    @property
    def settings_keys(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(k for i in self.inputs for k in FIGURE_INPUTS[i].keys))

    def inputs_of(self, settings: dict, given: dict[str, list[str] | None]) -> dict[str, Any]:
        """The plot's keyword arguments besides the study; ``given``: each command-line
        option's values (by FigureInput.option)."""
        kwargs: dict[str, Any] = {}
        for name in self.inputs:
            declared = FIGURE_INPUTS[name]
            kwargs.update(declared.build(settings, given.get(declared.option)))
        return kwargs


@dataclass(frozen=True)
class Study:
    """One study: results/<name>/, its runs and dataset, its figures.

    Given its section (when it is on): ``runs_of`` lists its runs, ``levels_of`` the
    signal levels (color gap, size gap[, background gap]) its probe pools;
    ``problems_of(config, study)`` makes its own checks between keys (in
    conceptspace.config_checks, with the checks every study gets). ``grid``: the run
    fields spanning its dataset. ``classes``: (trained, all) classes of the layout, for the batch checks.
    ``renders``: its images are rendered from the layout (else prepared from a folder).
    ``switch``: the key of its section that must be set for it to be on, if any.
    ``layout_of``: its layout's name from its section, where the config chooses it
    (else ``layout``; see :meth:`layout_name`)."""

    name: str
    layout: str
    grid: tuple[str, ...]
    classes: tuple[int, int]
    runs_of: Callable[[dict], Iterable[Run]]
    levels_of: Callable[[dict], list]
    problems_of: Callable[[dict, Study], Iterable[str]]
    figures: tuple[Figure, ...] = ()
    renders: bool = True
    switch: str | None = None
    layout_of: Callable[[dict], str] | None = None

    def layout_name(self, config: dict) -> str:
        """The name of its concept layout (``concepts.LAYOUTS``, or "celeba", built from
        its section) under ``config``."""
        section = self.section(config)
        if self.layout_of is None or section is None:
            return self.layout
        return self.layout_of(section)

    def concept_layout(self, config: dict) -> Layout:
        """Its concept layout under ``config``: a named one, or CelebA's, built from the
        attributes and held-out class of its section."""
        name = self.layout_name(config)
        if name in LAYOUTS:
            return LAYOUTS[name]
        section = self.section(config)
        return celeba_layout(tuple(section["attributes"]), "".join(map(str, section["held_out"])))

    def section(self, config: dict) -> dict | None:
        """config studies.<name>, or None when the study is off."""
        section = (config.get("studies") or {}).get(self.name) or None
        if section is not None and self.switch is not None and not section.get(self.switch):
            return None
        return section

    def runs(self, config: dict) -> list[Run]:
        section = self.section(config)
        return list(self.runs_of(section)) if section is not None else []

    def levels(self, config: dict) -> list:
        section = self.section(config)
        return self.levels_of(section) if section is not None else []

    def training(self, config: dict) -> dict:
        """The training section of its runs: ``training`` with the study's own
        ``training`` overlay (e.g. the background study's 40k steps) laid over it."""
        section = (config.get("studies") or {}).get(self.name) or {}
        return merge(config["training"], section.get("training") or {})

    def steps(self, config: dict) -> list[int]:
        return checkpoint_steps(self.training(config))

    def first_seed(self, config: dict) -> int:
        """The seed of its one-off jobs (its probe, the samples of its figure): the first
        of its seeds as the config lists them."""
        return self.section(config)["seeds"][0]

    def problems(self, config: dict) -> Iterable[str]:
        return self.problems_of(config, self) if self.section(config) is not None else ()


# ----------------------------------------------------------------------------- signal


def _signal_levels(section: dict) -> list[tuple[float, float]]:
    """The distinct (color gap, size gap) pairs of the sweeps, sorted."""
    return sorted(
        {
            (float(dc), float(ds))
            for sweep in section["sweeps"]
            for dc in sweep["color_gap"]
            for ds in sweep["size_gap"]
        }
    )


def _signal_points(section: dict) -> list[tuple[float, float, int]]:
    """The (color gap, size gap, seed) of every run: the union over the sweeps of each
    sweep's grid x its seeds (the study's seeds unless the sweep names its own, so that
    the levels a claim's test needs more runs at can have them)."""
    return sorted(
        {
            (float(dc), float(ds), int(seed))
            for sweep in section["sweeps"]
            for dc in sweep["color_gap"]
            for ds in sweep["size_gap"]
            for seed in sweep.get("seeds", section["seeds"])
        }
    )


def _signal_runs(section: dict) -> Iterable[Run]:
    for dc, ds, seed in _signal_points(section):
        yield Run("signal", run_id(dc, ds, seed), seed, color_gap=dc, size_gap=ds)


def sweep(config: dict, name: str) -> dict[str, Any]:
    """The signal study's sweep of that name."""
    section = STUDIES["signal"].section(config)
    for candidate in section["sweeps"] if section else []:
        if candidate["name"] == name:
            return candidate
    raise ConfigError(f"no sweep named '{name}' in studies.signal.sweeps")


def hidden_methods(config: dict) -> list[str]:
    """fig_hidden's methods: naive, then overprompting and latent intervention if on."""
    methods = config["evaluation"]["methods"]
    kinds = (("overprompt", methods["overprompt"]["colors"]),)
    kinds += (("intervention", methods["intervention"]["alphas"]),)
    return ["naive"] + [kind for kind, variants in kinds if variants]


# ----------------------------------------------------------------------------- the others


def _masked_runs(section: dict) -> Iterable[Run]:
    """Masking ratios x seeds at the study's gaps."""
    dc, ds = float(section["color_gap"]), float(section["size_gap"])
    grid = {(float(r), int(s)) for r in section["mask_ratios"] for s in section["seeds"]}
    for ratio, seed in sorted(grid):
        yield Run("underspecification", masked_run_id(ratio, seed), seed, dc, ds, mask_ratio=ratio)


BACKGROUND_GAPS = ("color_gap", "size_gap", "background_gap")


def _background_runs(section: dict) -> Iterable[Run]:
    """The seeds at the study's one signal level."""
    dc, ds, db = (float(section[key]) for key in BACKGROUND_GAPS)
    for seed in sorted(int(s) for s in section["seeds"]):
        yield Run("background", run_id(dc, ds, seed, db), seed, dc, ds, background_gap=db)


def _celeba_runs(section: dict) -> Iterable[Run]:
    for seed in sorted(int(s) for s in section["seeds"]):
        yield Run("celeba", f"seed{seed}", seed)


def celeba_options(config: dict, per_class: int) -> str:
    """`conceptspace celeba` options from studies.celeba, ``per_class`` images a class."""
    study = STUDIES["celeba"].section(config)
    options = f"--root {shlex.quote(study['root'])} --attributes {' '.join(study['attributes'])}"
    options += f" --held-out {' '.join(map(str, study['held_out']))}"
    options += f" --image-size {study['image_size']} --per-class {per_class}"
    options += f" --split {study['split']}"
    options += f" --validation-fraction {config['data']['validation_fraction']}"
    options += f" --crop {study['crop']}" if study["crop"] else ""
    return options + ("" if study["verify_md5"] else " --no-verify-md5")


def mask_encoding(config: dict, study: str) -> dict:
    """{"mask_value": v} for a study whose section names how a masked concept is encoded
    in h (studies.underspecification.mask_value), else {}: extra render settings."""
    section = config["studies"].get(study) or {}
    return {"mask_value": section["mask_value"]} if "mask_value" in section else {}


# ----------------------------------------------------------------------------- the registry

STUDIES: dict[str, Study] = {}


def register(study: Study) -> Study:
    """Add a study to the registry (a name once)."""
    if study.name in STUDIES:
        raise ValueError(f"a study named {study.name} is registered already")
    STUDIES[study.name] = study
    return study


register(
    Study(
        # the 2x2 color x size study (claims 1-4), runs dc<gap>_ds<gap>_seed<seed>
        "signal",
        layout="color_size",
        grid=SIGNAL_GRID,
        classes=(3, 4),
        runs_of=_signal_runs,
        levels_of=_signal_levels,
        problems_of=signal_problems,
        figures=(
            Figure("signal", "conceptspace.figures.signal:plot_signal", ("sweeps",)),
            Figure("trajectories", "conceptspace.figures.trajectories:plot_trajectories", ("levels",)),  # fmt: skip
            Figure(
                "hidden",
                "conceptspace.figures.hidden:plot_hidden",
                ("levels", "methods"),
                wanted=lambda config: len(hidden_methods(config)) > 1,
            ),
            Figure(
                "patching",
                "conceptspace.figures.patching:plot_patching",
                ("levels",),
                wanted=lambda config: bool(config["evaluation"]["methods"]["patching"]["donors"]),
            ),
        ),
    )
)
register(
    Study(
        # color x shape with prompt masking (claim 5), runs p<ratio>_seed<seed>
        "underspecification",
        layout="color_shape",
        # shape in one slot (0 disc, 1 triangle), or one-hot as the authors' code writes it
        layout_of=lambda section: (
            "color_shape_one_hot" if section.get("shape_encoding") == "one_hot" else "color_shape"
        ),
        grid=("seed", "mask_ratio"),
        classes=(3, 4),
        runs_of=_masked_runs,
        levels_of=lambda section: [(section["color_gap"], section["size_gap"])],
        problems_of=underspecification_problems,
        figures=(Figure("underspec", "conceptspace.figures.underspec:plot_underspec", ("samples",)),),  # fmt: skip
    )
)
register(
    Study(
        # 2x2x2 color x size x background grey, runs dc<gap>_ds<gap>_db<gap>_seed<seed>
        "background",
        layout="color_size_background",
        grid=("seed",),
        classes=(4, 8),
        runs_of=_background_runs,
        levels_of=lambda section: [[section[key] for key in BACKGROUND_GAPS]],
        problems_of=background_problems,
        figures=(Figure("background", "conceptspace.figures.background:plot_background"),),
    )
)
register(
    Study(
        # two CelebA attributes, one class held out; on when its root is set; runs
        # seed<seed>, trained on sets prepared from the user's folder. Its layout is built
        # from the prepared sets' attributes (concepts.celeba_layout); its probe trains on
        # a prepared set, so it pools no signal levels.
        "celeba",
        layout="celeba",
        grid=("seed",),
        classes=(3, 4),
        runs_of=_celeba_runs,
        levels_of=lambda section: [],
        problems_of=celeba_problems,
        figures=(Figure("celeba", "conceptspace.figures.celeba:plot_celeba"),),
        renders=False,
        switch="root",
    )
)


def on_studies(config: dict) -> list[Study]:
    """The studies the config switches on, in registry order."""
    return [study for study in STUDIES.values() if study.section(config) is not None]


def run_table(config: dict) -> dict[str, dict[str, Run]]:
    """study name -> run id -> run, for every study that is on."""
    return {study.name: {run.id: run for run in study.runs(config)} for study in on_studies(config)}


def figures_of(config: dict) -> list[tuple[Study, Figure]]:
    """The figures the config builds: those of the studies that are on, if wanted."""
    return [
        (study, figure)
        for study in on_studies(config)
        for figure in study.figures
        if figure.wanted(config)
    ]


def figure_named(name: str) -> Figure:
    for study in STUDIES.values():
        for figure in study.figures:
            if figure.name == name:
                return figure
    raise ConceptspaceError(f"no figure named {name}; figures are: {', '.join(figure_names())}")


def figure_names() -> list[str]:
    return [figure.name for study in STUDIES.values() for figure in study.figures]
