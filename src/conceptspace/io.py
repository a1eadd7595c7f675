"""Atomic file writes and provenance shared by every stage.

Every file the pipeline writes goes through :func:`atomic_path`: it is written to a
temporary name in the same folder and renamed into place only when complete, so a job
killed mid-write never leaves a file that looks finished.
"""

from __future__ import annotations

import contextlib
import errno
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


class ConfigError(ConceptspaceError):
    """The configuration is invalid; the message lists every problem found."""


# errno of a write refused for lack of space (a full filesystem, a user's quota).
NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# A write that fails while less than this is free failed for lack of space, whatever the
# library says: torch.save reports a full disk as "RuntimeError: [enforce fail at
# inline_container.cc] ... unexpected pos N vs M", netCDF as an HDF error.
FULL_BELOW_BYTES = 4 * 2**20


def filesystem_of(path: str | os.PathLike) -> str:
    """The mount point holding ``path`` (or the folder it would be made in), with its
    type where /proc/mounts tells it: '/scratch (tmpfs)'."""
    folder = _existing(path)
    while not os.path.ismount(folder) and folder != folder.parent:
        folder = folder.parent
    fstype = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) > 2 and fields[1].replace("\\040", " ") == str(folder):
                fstype = fields[2]  # the last mount on a mount point is the one seen
    return f"{folder} ({fstype})" if fstype else str(folder)


def free_bytes(path: str | os.PathLike) -> int:
    """Bytes this user may still write on the filesystem of ``path`` (or of the folder it
    would be made in)."""
    stat = os.statvfs(_existing(path))
    return stat.f_bavail * stat.f_frsize


def _existing(path: str | os.PathLike) -> Path:
    folder = Path(path).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def megabytes(size: float) -> str:
    """Bytes as MB for a message: one decimal below 10 MB, whole numbers above."""
    return f"{size / 1e6:.1f}" if size < 1e7 else f"{size / 1e6:,.0f}"


def no_space_error(path: str | os.PathLike, needed: float, known: bool = True) -> ConceptspaceError:
    """The error of a write that did not fit: the filesystem, the file, what it needs
    (``known`` False: only a lower bound, what was written before the write failed)."""
    need = (
        f"needs about {megabytes(needed)} MB"
        if known
        else f"needs more than {megabytes(needed)} MB"
    )
    return ConceptspaceError(
        f"no space left on {filesystem_of(path)}: {path} {need} "
        f"({megabytes(free_bytes(path))} MB free there); free space on it, or set config key "
        "'results' to a folder on a larger filesystem, then rerun snakemake (finished files "
        "are kept)"
    )


def _sibling_size(path: Path) -> int:
    """The size of the largest file beside ``path`` with its suffix (the run's other
    checkpoints, evaluations): what a file of that kind takes."""
    with contextlib.suppress(OSError):
        sizes = [p.stat().st_size for p in path.parent.glob(f"[!.]*{path.suffix}")]
        return max(sizes, default=0)
    return 0


def lack_of_space(err: BaseException, folder: str | os.PathLike) -> bool:
    """Whether the write into ``folder`` that raised ``err`` failed for lack of space:
    ENOSPC or EDQUOT anywhere in its chain of causes, or (a library that reports it in
    its own words) any error other than a ConceptspaceError while the filesystem is full."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno in NO_SPACE_ERRNOS:
            return True
        cause = cause.__cause__ or cause.__context__
    if isinstance(err, ConceptspaceError):
        return False
    try:
        return free_bytes(folder) < FULL_BELOW_BYTES
    except OSError:
        return False


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike, suffix: str | None = None, size_hint: int = 0
) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The temporary file keeps the final suffix (libraries such as netCDF4 or matplotlib
    choose their format from it). On an exception the temporary file is removed. A write
    that fails for lack of space (:func:`lack_of_space`) raises a ConceptspaceError naming
    the filesystem and how much the file needs: about ``size_hint`` bytes or the size of
    the largest file with its suffix beside it (the run's other checkpoints), whichever is
    more, or, when neither reaches what was written before the write failed, more than that.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=suffix or "".join(path.suffixes)
        )
    except OSError as err:
        if lack_of_space(err, path.parent):
            needed = max(size_hint, _sibling_size(path))
            raise no_space_error(path, needed, known=needed > 0) from err
        raise
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
    except Exception as err:
        full = lack_of_space(err, path.parent)  # before the partial file is removed
        written = tmp.stat().st_size if full and tmp.exists() else 0
        tmp.unlink(missing_ok=True)
        if full:
            estimate = max(size_hint, _sibling_size(path))
            known = 0 < estimate >= written
            raise no_space_error(path, max(written, estimate), known) from err
        raise
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
