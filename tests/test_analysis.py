"""Judging apart from drawing: no module outside figures/ imports from it (the command
line excepted, which dispatches the figure commands), and what the claims read imports
no plotting library."""

import subprocess
import sys

import pytest

from conftest import PACKAGE, REPO, imported_modules

# The command line draws figures on request; it is the one caller of figures/ outside it.
DISPATCHES_FIGURES = {PACKAGE / "cli.py"}


def test_imported_modules_sees_what_a_module_imports():
    assert "conceptspace.analysis" in imported_modules(PACKAGE / "claims.py")
    assert "conceptspace.figures.sheets" in imported_modules(PACKAGE / "cli.py")


def test_no_module_outside_figures_imports_from_figures():
    offenders = {
        str(path.relative_to(REPO)): name
        for path in PACKAGE.rglob("*.py")
        if "figures" not in path.relative_to(PACKAGE).parts and path not in DISPATCHES_FIGURES
        for name in imported_modules(path)
        if name == "conceptspace.figures" or name.startswith("conceptspace.figures.")
    }
    assert not offenders, f"modules outside figures/ import from it: {offenders}"


@pytest.mark.parametrize("module", ["conceptspace.analysis", "conceptspace.claims"])
def test_judging_imports_no_plotting(module):
    check = f"import sys, {module}; assert 'matplotlib' not in sys.modules, '{module}'"
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
