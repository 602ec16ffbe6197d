"""The repository's layout rules, checked: the Beam boundary is a folder, modules stay small, the wheel is whole."""

from __future__ import annotations

import ast
import concurrent.futures
import re
import shutil
import subprocess
import sys
import zipfile

import pytest

from helpers import REPO

PACKAGES = ("beam_pipeline", "transforms")
MAX_MODULE_LINES = 500


def _modules(package: str) -> list[str]:
    """Dotted names of every module of `package`, subpackages included."""
    names = []
    for path in sorted((REPO / package).rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _beam_free_modules() -> list[str]:
    """Every module outside transforms/beam/ and beam_pipeline/: none may import Beam."""
    return [name for name in _modules("transforms") if not (name + ".").startswith("transforms.beam.")]


_IMPORTS_BEAM = (
    "import importlib, sys; importlib.import_module(sys.argv[1]); "
    "print(any(m.split('.')[0] == 'apache_beam' for m in sys.modules))"
)


def test_no_module_outside_transforms_beam_and_beam_pipeline_imports_beam():
    """Each module alone, in a fresh interpreter: importing it must not pull in apache_beam, even indirectly."""
    modules = _beam_free_modules()
    assert "transforms.core.matching" in modules and "transforms.formats.parquet" in modules  # the walk finds them

    def imports_beam(module: str) -> str:
        result = subprocess.run(
            [sys.executable, "-c", _IMPORTS_BEAM, module], cwd=REPO, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, f"{module} does not import: {result.stderr[-2000:]}"
        return result.stdout.strip()

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        found = dict(zip(modules, pool.map(imports_beam, modules), strict=True))
    assert [module for module, answer in found.items() if answer != "False"] == []


def test_the_boundary_check_catches_a_module_that_imports_beam():
    """The same probe on a module that does import Beam answers True: the test above can fail."""
    result = subprocess.run(
        [sys.executable, "-c", _IMPORTS_BEAM, "transforms.beam.sink"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stdout.strip() == "True", result.stderr


@pytest.mark.parametrize(
    "path", sorted(p.relative_to(REPO) for p in (REPO / "transforms").rglob("__init__.py")), ids=str
)
def test_transforms_packages_import_nothing(path):
    """Importing `transforms` (or a subpackage) must never pull in anything, least of all Beam: no re-exports."""
    tree = ast.parse((REPO / path).read_text())
    assert not [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))], path


def test_no_module_is_over_500_lines():
    long = {
        str(p.relative_to(REPO)): n
        for package in (*PACKAGES, "benchmarks", "tests", "templates")
        for p in (REPO / package).rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_the_wheel_holds_every_module(tmp_path):
    """Dataflow workers install the package: a subpackage left out of setup.py fails only there."""
    # Built from a copy of what setup.py reads, so that no build/ folder lands in the checkout.
    source = tmp_path / "source"
    for name in ("setup.py", "requirements.txt", "README.md", "MANIFEST.in"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, source / name)
    for package in PACKAGES:
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "dist").glob("balancebeam-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name for name in archive.namelist() if name.endswith(".py")}
    sources = {str(p.relative_to(REPO)) for package in PACKAGES for p in (REPO / package).rglob("*.py")}
    assert sources - shipped == set()


def test_the_readmes_map_names_every_package_and_module():
    """README.md's Repository table has a row per package folder naming each of its modules."""
    readme = (REPO / "README.md").read_text()
    rows = dict(re.findall(r"^\| `([a-z_/]+)/` \| (.*) \|$", readme, re.M))
    for package in PACKAGES:
        for init in sorted((REPO / package).rglob("__init__.py")):
            folder = init.parent
            modules = sorted(p.stem for p in folder.glob("*.py") if p.stem not in ("__init__", "__main__"))
            if not modules:
                continue
            name = str(folder.relative_to(REPO))
            assert name in rows, f"README.md's map has no row for {name}/"
            assert [m for m in modules if f"`{m}`" not in rows[name]] == [], f"README.md's {name}/ row misses modules"
