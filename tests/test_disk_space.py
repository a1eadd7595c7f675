"""A write that fails for lack of space says so: "no space left on <filesystem>: <path>
needs about N MB", whatever the writing library reports (torch.save: "unexpected pos";
numpy, matplotlib, netCDF: their own words). Every writer goes through io.atomic_path,
which recognises it; these tests fill a real tmpfs where the machine lets the test mount
one (root) and simulate the error everywhere."""

import errno
import gc
import os
import subprocess

import numpy as np
import pytest
import torch
import xarray as xr

from conceptspace import io
from conceptspace.figures import new_figure, save_figure
from conceptspace.io import ConceptspaceError, atomic_path
from conceptspace.netcdf import save_dataset_nc
from conceptspace.render import save_dataset


def leftovers(folder) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


# ------------------------------------------------------------------- simulated


def test_an_enospc_inside_the_write_is_named_with_the_filesystem_and_size(tmp_path):
    target = tmp_path / "step_000100.pt"
    with pytest.raises(ConceptspaceError) as caught:
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"x" * 3_000_000)
            raise OSError(errno.ENOSPC, "No space left on device")
    message = str(caught.value)
    assert message.startswith(f"no space left on {io.filesystem_of(tmp_path)}: {target}")
    assert "needs more than 3.0 MB" in message and "MB free there" in message  # no estimate
    assert "set config key 'results' to a folder on a larger filesystem" in message
    assert not target.exists() and leftovers(tmp_path) == []


def test_torchs_unexpected_pos_is_recognised_by_the_free_space(tmp_path, monkeypatch):
    """torch.save reports a full disk as a RuntimeError without an errno: the filesystem's
    free space tells it apart from any other RuntimeError."""
    full = RuntimeError(
        "[enforce fail at inline_container.cc:672] . unexpected pos 906560 vs 906452"
    )

    def write(size_hint=0):
        with atomic_path(tmp_path / "step_000200.pt", size_hint=size_hint) as tmp:
            tmp.write_bytes(b"x" * 906_452)
            raise full

    with pytest.raises(RuntimeError, match="unexpected pos") as caught:  # space left: as is
        write()
    assert not isinstance(caught.value, ConceptspaceError)
    monkeypatch.setattr(io, "free_bytes", lambda path: 4096)  # the filesystem is full
    with pytest.raises(ConceptspaceError, match="needs more than 0.9 MB \\(0.0 MB free there\\)"):
        write()
    with pytest.raises(ConceptspaceError, match="needs about 12 MB"):
        write(size_hint=12_000_000)  # the writer's own estimate, when larger
    (tmp_path / "step_000100.pt").write_bytes(b"x" * 5_000_000)  # an earlier checkpoint
    with pytest.raises(ConceptspaceError, match="step_000200.pt needs about 5.0 MB"):
        write()
    assert leftovers(tmp_path) == []


def test_a_users_own_error_is_not_mistaken_for_a_full_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "free_bytes", lambda path: 0)
    with pytest.raises(ConceptspaceError, match="probe too weak"):
        with atomic_path(tmp_path / "probe.pt"):
            raise ConceptspaceError("probe too weak")


def test_filesystem_of_names_the_mount_point_and_its_type(tmp_path):
    name = io.filesystem_of(tmp_path / "not" / "made")
    mount = name.split(" (")[0]
    assert os.path.ismount(mount) and str(tmp_path).startswith(mount)


# ------------------------------------------------------------------- a real full tmpfs


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 1 MiB tmpfs, where mounting one is allowed (root); skipped elsewhere."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:  # lazily: a failed netCDF writer may hold a file open until the process ends
        subprocess.run(["umount", "--lazy", str(mount)], check=True)


def test_each_writer_on_a_full_tmpfs_names_the_filesystem(tiny_tmpfs):
    expected = f"no space left on {tiny_tmpfs} (tmpfs): "
    big = np.random.default_rng(0).random((700_000,)).astype(np.float32)  # 2.8 MB
    images = np.random.default_rng(0).random((1000, 3, 32, 32))  # 3.1 MB as uint8
    writers = {  # netCDF last: its failed writer keeps the file open until the process ends
        "step_000100.pt": lambda path: _torch_save({"model": torch.from_numpy(big)}, path),
        "train.npz": lambda path: save_dataset(path, {"images": images}, {"note": "test"}),
        "fig_signal.pdf": lambda path: save_figure(_noisy_figure(), path),
        "trajectory.nc": lambda path: save_dataset_nc(xr.Dataset({"p": ("x", big)}), path),
    }
    for name, write in writers.items():
        path = tiny_tmpfs / name
        with pytest.raises(ConceptspaceError) as caught:
            write(path)
            pytest.fail(f"{name} was written: {os.listdir(tiny_tmpfs)}")
        message = str(caught.value)
        del caught  # its traceback holds the writer, and the writer its open file
        gc.collect()
        assert message.startswith(expected + str(path).replace(".pdf", "")), message
        assert "MB free there" in message and "rerun snakemake" in message
        assert leftovers(tiny_tmpfs) == [], name  # nothing half-written is left
        for finished in tiny_tmpfs.iterdir():  # the figure's PDF fit; its PNG did not
            assert name == "fig_signal.pdf" and finished.name == name
            finished.unlink()
        if name != "trajectory.nc":  # and the space it took is free again
            assert io.free_bytes(tiny_tmpfs) > 900_000, name


def _torch_save(payload, path):
    """What checkpoints.save_checkpoint does with a checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _noisy_figure():
    figure = new_figure(4, 4)
    axes = figure.add_subplot()
    axes.imshow(np.random.default_rng(1).random((1200, 1200)), interpolation="nearest")
    return figure
