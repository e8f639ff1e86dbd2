"""The code's shape: dependencies point one way, no import cycle, modules of one job.

Layers, from the bottom: foundation (settings, storage, schemas, calendar, errors) -> library
(pure logic over DataFrames and paths) -> stages (the ``*_day`` entry points) -> pipeline (the
runner the DAG calls). The UI page reads published files through the library and never runs a
stage. Every import of the package counts, those inside functions too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "include" / "purchasing_power"
FOUNDATION = {"settings", "storage", "frames", "schemas", "calendar", "errors", "lease", "warehouse"}
#: Top-level parts of the package that are not library logic.
UPPER = {"stages", "pipeline", "ui", "cli", "executor"}
MAX_LINES = 500


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_imports(path: Path) -> set[str]:
    """Modules of ``purchasing_power`` that ``path`` imports (anywhere in the file)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    this = module_name(path)
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("purchasing_power"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = this.split(".")
                base = base if is_pkg else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("purchasing_power"):
                continue
            found.add(mod)
            for alias in node.names:  # `from purchasing_power import btyd` names a module
                found.add(f"{mod}.{alias.name}")
    modules = all_modules()
    return {m for m in found if m in modules and m != this}


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def import_graph() -> dict[str, set[str]]:
    return {name: package_imports(path) for name, path in all_modules().items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a list of modules, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def layer(module: str) -> str:
    part = module.split(".")[1] if "." in module else ""
    if part in FOUNDATION or module == "purchasing_power":  # the package itself holds no logic
        return "foundation"
    if part in UPPER:
        return part
    return "library"


def test_cycle_finder_finds_a_cycle_and_accepts_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 30  # the walk really saw the package
    # a package's __init__ re-exporting its submodules is not a cycle with them
    edges = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}
    assert find_cycle(edges) is None


ALLOWED = {
    "foundation": {"foundation"},
    "library": {"foundation", "library"},
    "stages": {"foundation", "library", "stages"},
    "pipeline": {"foundation", "stages"},
    "ui": {"foundation", "library", "ui"},
    "cli": {"foundation", "library"},
    "executor": {"foundation", "stages"},
}


@pytest.mark.parametrize("module", sorted(all_modules()))
def test_imports_point_down(module):
    if module == "purchasing_power":
        return
    mine = layer(module)
    wrong = sorted(d for d in package_imports(all_modules()[module]) if layer(d) not in ALLOWED[mine])
    assert not wrong, f"{module} ({mine}) imports {wrong}"


def test_nothing_in_the_runtime_package_imports_dev_tooling_or_airflow_wiring():
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        for bad in ("localairflow", "metadb", "import pytest", "from dags", "import purchasing_power_ui", "from purchasing_power_ui"):
            assert bad not in text, f"{path.relative_to(ROOT)} mentions {bad!r}"


def test_modules_do_one_job_within_the_size_limit():
    files = [*PACKAGE.rglob("*.py"), *(ROOT / "plugins").glob("*.py"), *(ROOT / "dags").glob("*.py"), *(ROOT / "tools").glob("*.py")]
    long = {str(p.relative_to(ROOT)): n for p in files if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_the_plugin_file_only_registers_the_page():
    text = (ROOT / "plugins" / "purchasing_power_ui.py").read_text()
    assert "AirflowPlugin" in text and len(text.splitlines()) < 60
    assert "<svg" not in text and "<html" not in text.lower()


def test_every_module_the_readme_names_exists():
    readme = (ROOT / "README.md").read_text()
    named = set(re.findall(r"`((?:stages|embedding|ui|btyd|demo)/[a-z_]+\.py|[a-z_]+\.py)`", readme))
    assert len(named) > 10
    missing = [n for n in sorted(named) if not ((PACKAGE / n).exists() or list(ROOT.glob(f"*/{n}")) or (ROOT / n).exists())]
    assert not missing, f"README names modules that do not exist: {missing}"
    stage_modules = {p.stem for p in (PACKAGE / "stages").glob("*.py") if p.stem != "__init__"}
    assert {f"stages/{m}.py" for m in stage_modules} <= named, "README's pipeline table must map every task to its stages/ module"
