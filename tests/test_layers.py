"""The package layers: `merges/` and `tasks/` at the bottom, `harness/` above them, `leaderboard/` on top.

The bottom packages import nothing from the project above them, so the merge library and the
lm-eval tasks work without the application; the leaderboard reads the store and the task naming
but no command module (every module `harness.cli` dispatches to, and the CLI itself).
"""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import SUBCOMMANDS
from tasks.suite import DATA_DIR_ENV

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BOTTOM_PACKAGES = ("merges", "tasks")
COMMAND_MODULES = ("harness.cli", *sorted(module for module, _help in SUBCOMMANDS.values()))


def imported_modules(source: str) -> set[str]:
    """Every module a source file imports, at the top or inside functions (absolute imports).

    `from harness import tasklist` counts as `harness` and `harness.tasklist`: the name may be
    a module, and over-counting only makes the checks stricter.
    """
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def is_within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == package or module.startswith(package + ".") for package in packages)


def package_imports(package: str) -> dict[str, set[str]]:
    """{file relative to the project: the modules it imports} for every .py file of a package."""
    files = sorted((PROJECT_ROOT / package).rglob("*.py"))
    assert files, f"no Python files under {package}/"
    return {path.relative_to(PROJECT_ROOT).as_posix(): imported_modules(path.read_text(encoding="utf-8"))
            for path in files}


def violations(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return [f"{path} imports {module}" for path, modules in package_imports(package).items()
            for module in sorted(modules) if is_within(module, forbidden)]


def test_imports_are_found_wherever_they_are_written():
    source = "import os\nfrom harness import tasklist\n\ndef f():\n    import merges.engine\n"
    assert imported_modules(source) == {"os", "harness", "harness.tasklist", "merges.engine"}
    assert is_within("harness.zoo.build", ("harness.zoo",)) and not is_within("harness.zoology", ("harness.zoo",))


@pytest.mark.parametrize("package", BOTTOM_PACKAGES)
def test_bottom_packages_import_nothing_above_them(package):
    assert violations(package, ("harness", "leaderboard")) == []


def test_the_leaderboard_imports_no_command_module():
    assert "harness.tasklist" in COMMAND_MODULES  # the list is read from the CLI, not empty
    assert violations("leaderboard", COMMAND_MODULES) == []


def run_without_the_app(code: str, **env: str) -> subprocess.CompletedProcess:
    """Run Python code from the project root with harness, leaderboard and merges not importable."""
    blocked = "import sys\nfor name in ('harness', 'leaderboard', 'merges'):\n    sys.modules[name] = None\n"
    return subprocess.run([sys.executable, "-c", blocked + code], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


def test_tasks_import_without_the_app():
    result = run_without_the_app("import tasks.utils, tasks.suite, tasks.languages, tasks.errors\n")
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_bottom_layer_imports_without_the_app_or_its_libraries():
    """`import merges, tasks` as a library user does, where neither the application nor the
    libraries only it needs (Streamlit, lm-eval, pandas, SQLAlchemy) can be imported."""
    code = ("import sys\n"
            "for name in ('harness', 'leaderboard', 'streamlit', 'lm_eval', 'pandas', 'sqlalchemy'):\n"
            "    sys.modules[name] = None\n"
            "import merges, tasks, merges.engine, merges.kernels.ties_cpu, tasks.suite, tasks.utils, tasks.averages\n"
            "print(sorted(merges.METHODS))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ties_sv" in result.stdout


def test_lm_eval_loads_a_task_from_the_folder_without_the_app(tmp_path):
    """`lm_eval --include_path tasks` as a user runs it: the task's loader reads local data."""
    mgsm = tmp_path / "mgsm" / "mgsm_te.tsv"
    mgsm.parent.mkdir()
    mgsm.write_text("".join(f"question {i}\t{i}\n" for i in range(10)), encoding="utf-8")
    code = ("from lm_eval.tasks import TaskManager\n"
            "task = TaskManager(include_path='tasks').load(['lrm_mgsm_tel_test'])['tasks']['lrm_mgsm_tel_test']\n"
            "print(len(list(task.test_docs())))\n")
    result = run_without_the_app(code, **{DATA_DIR_ENV: str(tmp_path)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "8"  # MGSM's test side: 8 of 10 rows (dev is a fifth)
