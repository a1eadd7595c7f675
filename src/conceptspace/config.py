"""Loading and checking the study configuration.

The JSON schema (workflow/schemas/config.schema.yaml) fixes keys, types and ranges; the
rules that relate several keys are all in ``conceptspace.config_checks``. Every problem is reported at once,
each naming the key and the fix, before Snakemake plans a single job.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import yaml

from conceptspace.config_checks import relation_problems
from conceptspace.io import ConfigError
from conceptspace.runs import merge
from conceptspace.studies import STUDIES


def select(config: dict, keys: Iterable[str]) -> dict:
    """The part of ``config`` under ``keys``: sections ("data") or keys inside one
    ("figures.levels"), nested as in the config."""
    chosen: dict = {}
    for key in keys:
        *parents, last = key.split(".")
        source, target = config, chosen
        for part in parents:
            source, target = source[part], target.setdefault(part, {})
        target[last] = source[last]
    return chosen


def load_config(*paths: str | Path) -> dict:
    """Read config.yaml and any presets laid over it, in order."""
    config: dict = {}
    for path in paths:
        config = merge(config, read_layer(Path(path)))
    return config


def read_layer(path: Path, within: tuple[Path, ...] = ()) -> dict:
    """One config file. A preset that says ``extends: NAME`` is laid over the preset
    NAME.yaml beside it (and that one over its own), so that a larger preset states only
    what it adds."""
    try:
        layer = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist")
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}")
    if not isinstance(layer, dict):
        raise ConfigError(layer_problem(path, layer))
    if "extends" not in layer:
        return layer
    base = path.parent / f"{layer.pop('extends')}.yaml"
    chain = within + (path.resolve(),)
    if base.resolve() in chain:
        names = " -> ".join(p.stem for p in chain + (base,))
        raise ConfigError(f"config file {path}: key 'extends' makes a cycle ({names}); remove one")
    if not base.is_file():
        raise ConfigError(
            f"config file {path}: key 'extends' names {base.stem}, but {base} does not exist; "
            "name a preset in the same folder"
        )
    return merge(read_layer(base, chain), layer)


def layer_problem(path: Path, layer: Any) -> str:
    """What is wrong with a config file that holds no mapping of keys (an overlay that is
    empty, a YAML list or a scalar), naming the file and the fix."""
    what = "is empty" if layer is None else f"holds a YAML {type(layer).__name__}, not keys"
    return (
        f"config file {path} {what}; a config file (or preset) is a mapping of config keys "
        "at its top level, e.g. `training: {steps: 1000}`: write its keys, or leave the file "
        "out of --configfile"
    )


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


# JSON Schema counts 1.0 as an integer; Python does not (range(1.0), a run id "seed1.0"),
# so the schema's "integer" is refused a float here, as the config checks would.
_TYPE_CHECKER = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
    "integer", lambda checker, value: isinstance(value, int) and not isinstance(value, bool)
)
Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator, type_checker=_TYPE_CHECKER
)


def validate_config(config: dict, schema_path: str | Path) -> None:
    """Raise ConfigError listing every problem of ``config``; return None if it is valid."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = Validator(schema)
    problems = list(non_finite_numbers(config))
    problems += [_describe(error) for error in validator.iter_errors(config)]
    if not problems:  # relations between keys only make sense once each key is sound
        problems = list(relation_problems(config, STUDIES.values()))
        problems += _results_problems(config["results"])
    if problems:
        raise ConfigError(
            "invalid configuration:\n"
            + "\n".join(f"  - {p}" for p in sorted(problems))
            + "\nFix these in config.yaml or in the preset given with --configfile."
        )


def _describe(error: jsonschema.ValidationError) -> str:
    """The key, jsonschema's statement of the problem and the fix."""
    key = ".".join(str(part) for part in error.absolute_path) or "(top level)"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        return f"config key '{key}': {error.message}; allowed keys here: {', '.join(allowed)}"
    fix = _SCHEMA_FIXES.get(str(error.validator))
    fix = f"; {fix(error.validator_value, error.instance)}" if fix else ""
    if error.validator == "maximum" and error.schema.get("description"):
        fix += f" ({' '.join(error.schema['description'].split())})"
    return f"config key '{key}': {error.message}{fix}"


def _integer(value: Any) -> str:
    return f" ({int(value)})" if isinstance(value, float) and value.is_integer() else ""


# The fix for each kind of schema error (the validator's value, the value given).
_SCHEMA_FIXES = {
    "type": lambda expected, value: (
        f"write it as {' or '.join(expected) if isinstance(expected, list) else expected}"
        + _integer(value)
    ),
    "minimum": lambda bound, value: f"set it to {bound} or more",
    "exclusiveMinimum": lambda bound, value: f"set it above {bound}",
    "maximum": lambda bound, value: f"set it to {bound} or less",
    "exclusiveMaximum": lambda bound, value: f"set it below {bound}",
    "minItems": lambda bound, value: f"give at least {bound}",
    "maxItems": lambda bound, value: f"give at most {bound}",
    "uniqueItems": lambda unique, value: "list each entry once",
    "enum": lambda allowed, value: "use one of " + ", ".join(map(str, allowed)),
    "required": lambda names, value: "add it (config.yaml has every key, with its meaning)",
}


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
