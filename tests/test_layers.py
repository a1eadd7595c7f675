"""The one-way flow between stages, read from the imports (docs/architecture.md): no
module imports one that imports it back; a run's identity (``conceptspace.runs``) is a
leaf; evaluation reads checkpoints through ``conceptspace.checkpoints`` and never reaches
the training code, nor the gathering code after it, so that they can change apart."""

from conftest import PACKAGE, imported_modules

# The training stage's modules: the loop, the stacked model of a pack, its divergence
# monitor. Checkpoint storage is not among them: training and evaluation both read it; nor
# is conceptspace.stacked, the stacking both the pack trainer and evaluator use.
TRAINING = {"conceptspace.train", "conceptspace.pack", "conceptspace.divergence"}
EVALUATION = "conceptspace.evaluate"
# Gathering: a run's evaluations into its trajectory, the runs into the study dataset.
GATHERING = "conceptspace.trajectories"


def module_name(path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Each module of the package: the modules of the package it imports (at any depth of
    its code, lazy imports inside functions included)."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {
        name: {imported for imported in imported_modules(path) if imported in modules} - {name}
        for name, path in modules.items()
    }


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for imported in graph[todo.pop()] - seen:
            seen.add(imported)
            todo.append(imported)
    return seen


def test_import_graph_sees_lazy_imports():
    graph = import_graph()
    assert "conceptspace.checkpoints" in graph[EVALUATION]  # at the top
    assert "conceptspace.probe" in graph[EVALUATION]  # inside a function


def test_evaluation_imports_no_training_module():
    reached = reachable(import_graph(), EVALUATION)
    assert "conceptspace.checkpoints" in reached
    assert not reached & TRAINING, f"evaluation reaches training: {sorted(reached & TRAINING)}"


def test_evaluation_imports_no_gathering_code():
    """Gathering a run is its own step after evaluation (the gather-run command, after
    evaluate-pack), so that each can change apart."""
    assert GATHERING not in reachable(import_graph(), EVALUATION)


def test_no_import_loop():
    graph = import_graph()
    loops = sorted(
        (name, imported)
        for name in graph
        for imported in graph[name]
        if name in reachable(graph, imported)
    )
    assert not loops, f"modules that reach themselves through these imports: {loops}"


def test_the_run_identity_is_a_leaf():
    assert import_graph()["conceptspace.runs"] == set()


def test_every_name_imported_from_the_package_exists():
    # Scripts and benchmarks import lazily, inside the functions a GPU call or a
    # calibration runs: a name moved between modules breaks them only when they run.
    import ast
    import importlib

    repo = PACKAGE.parent.parent
    files = [*PACKAGE.rglob("*.py"), *(repo / "benchmarks").glob("*.py")]
    files += [*(repo / "scripts").glob("*.py"), *(repo / "tests").glob("*.py")]
    missing = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if not (
                isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE.name)
            ):
                continue
            module = importlib.import_module(node.module)
            for alias in node.names:
                if not hasattr(module, alias.name):
                    try:  # a submodule: from conceptspace import checkpoints
                        importlib.import_module(f"{node.module}.{alias.name}")
                    except ModuleNotFoundError:
                        missing.append(f"{path.relative_to(repo)}: {node.module}.{alias.name}")
    assert not missing, "names imported from conceptspace that it does not have:\n" + "\n".join(
        missing
    )
