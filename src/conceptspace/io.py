"""Atomic file writes and provenance shared by every stage.

Every file the pipeline writes goes through :func:`atomic_path`: it is written to a
temporary name in the same folder and renamed into place only when complete, so a job
killed mid-write never leaves a file that looks finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pickle
import platform
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)

# What torch.load raises on a truncated, corrupt or foreign file.
DAMAGED_TORCH_FILE_ERRORS = (
    OSError,
    EOFError,
    RuntimeError,
    LookupError,  # KeyError, and IndexError from some garbage
    TypeError,
    ValueError,
    zipfile.BadZipFile,
    pickle.UnpicklingError,
)

PROVENANCE_PACKAGES = ("torch", "torchvision", "numpy", "xarray", "netCDF4", "matplotlib")


class ConceptspaceError(RuntimeError):
    """An error a user can fix: its message names the problem and the fix."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The temporary file keeps the final suffix (libraries such as netCDF4 or matplotlib
    choose their format from it). On an exception the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=suffix or "".join(path.suffixes)
    )
    os.close(fd)
    tmp = Path(tmp)
    # mkstemp makes the file private (0600); outputs are shared results, so give them the
    # permissions an ordinary file would get under the user's umask.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_stale_temporaries(folder: Path, name_glob: str = "step_*") -> None:
    """A job killed inside an atomic write (SIGKILL, a Slurm time limit) leaves
    :func:`atomic_path`'s hidden temporary file behind; remove those of ``name_glob``."""
    for path in Path(folder).glob(f".{name_glob}"):
        log.info("removing %s, left by a write that was interrupted", path)
        path.unlink(missing_ok=True)


def eta(done: float, total: float, elapsed: float) -> str:
    """Time left as H:MM:SS at the average rate so far ('?' before any progress): the one
    format of every progress line (training, probe, evaluation)."""
    if done <= 0 or elapsed <= 0:
        return "?"
    seconds = int(round((total - done) * elapsed / done))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConceptspaceError(f"{path} does not exist; run the stage that writes it first")
    except json.JSONDecodeError as err:
        raise ConceptspaceError(
            f"{path} is not valid JSON ({err}); delete it and rerun the stage that writes it"
        )


def json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def config_hash(config: Any) -> str:
    """A short, stable hash of a (JSON-serialisable) config."""
    text = json.dumps(config, sort_keys=True, default=json_default)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def git_commit() -> str:
    """The commit of the conceptspace checkout, with '-dirty' if it has changes."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "conceptspace": _version("conceptspace")}
    for name in PROVENANCE_PACKAGES:
        versions[name] = _version(name)
    return versions


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def provenance(config: Any, seed: int | None = None, **extra: Any) -> dict[str, Any]:
    """What every output carries: config hash, git commit, package versions, seed."""
    record = {
        "config_hash": config_hash(config),
        "git_commit": git_commit(),
        "versions": package_versions(),
        "seed": seed,
        "host": platform.node(),
        "command": " ".join(sys.argv),
    }
    record.update(extra)
    return record
