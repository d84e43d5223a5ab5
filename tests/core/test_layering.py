"""The layers of ``mmrlhf_ray/`` as the packages' docstrings state them, read from the code.

Every import counts, lazy ones (inside functions) included, since a lazy import that
closes a circle is still a circle (only ``if TYPE_CHECKING:`` imports, which never run,
are left out):
- ``core`` imports no other package of ``mmrlhf_ray``;
- ``data`` imports only ``core``;
- no package but ``flows`` imports ``flows``;
- there is no import circle between modules anywhere;
- the package root holds no module (only ``__init__.py``): each module lives in its layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "mmrlhf_ray"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path, package: str = PACKAGE) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports (``from pkg import sub`` counts as
    ``pkg.sub`` when ``sub`` is a module, else as ``pkg``)."""
    files = {module_name(p, root): p for p in (root / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        targets: set[str] = set()
        tree = ast.parse(path.read_text(), str(path))
        type_only = {id(n) for n in _type_checking_imports(tree)}
        for node in ast.walk(tree):
            if id(node) in type_only:
                continue
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    targets.add(sub if sub in files else node.module)
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def _type_checking_imports(tree: ast.AST) -> list[ast.AST]:
    """The import nodes under ``if TYPE_CHECKING:`` (annotations only, never executed)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out += [n for b in node.body for n in ast.walk(b)]
    return out


def top(module: str) -> str:
    """The layer of a module: ``mmrlhf_ray.core.stage`` -> ``core``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, targets in sorted(graph.items()):
        for t in sorted(targets):
            src, dst = top(mod), top(t)
            if src == dst or dst == "":
                continue
            if src == "core":
                bad.append(f"{mod} -> {t}: core imports no other package")
            elif src == "data" and dst != "core":
                bad.append(f"{mod} -> {t}: data imports only core")
            elif dst == "flows":
                bad.append(f"{mod} -> {t}: only flows imports flows")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_layers_hold():
    assert layer_violations(import_graph(ROOT)) == []


def test_no_import_circle():
    assert cycles(import_graph(ROOT)) == []


def test_package_root_holds_only_packages():
    loose = sorted(p.name for p in (ROOT / PACKAGE).glob("*.py") if p.name != "__init__.py")
    assert loose == [], f"modules at the root of {PACKAGE}/: {loose}"


def test_every_package_says_what_it_holds_and_may_import():
    for init in sorted((ROOT / PACKAGE).glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert len(doc) > 60, f"{init.relative_to(ROOT)} has no paragraph saying what it holds"


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    """A tiny package with one violation of each kind."""
    files = {
        "core/__init__.py": "",
        "core/config.py": "from mmrlhf_ray.data import schemas\n",  # core -> data
        "data/__init__.py": "",
        "data/schemas.py": "def f():\n    from mmrlhf_ray.reward.model import m\n",  # lazy
        "reward/__init__.py": "",
        "reward/model.py": "from mmrlhf_ray.flows.rounds import run\n",  # -> flows
        "flows/__init__.py": "",
        "flows/rounds.py": "def g():\n    from mmrlhf_ray.reward import model\n",
    }
    for rel, text in files.items():
        path = tmp_path / PACKAGE / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_the_checks_catch_planted_violations(planted: Path):
    graph = import_graph(planted)
    assert layer_violations(graph) == [
        "mmrlhf_ray.core.config -> mmrlhf_ray.data.schemas: core imports no other package",
        "mmrlhf_ray.data.schemas -> mmrlhf_ray.reward.model: data imports only core",
        "mmrlhf_ray.reward.model -> mmrlhf_ray.flows.rounds: only flows imports flows",
    ]
    assert cycles(graph) == [["mmrlhf_ray.flows.rounds", "mmrlhf_ray.reward.model"]]


def test_no_job_imports_another_job_and_the_library_imports_no_adapter():
    """Jobs reach other stages through the stage table (``get_stage(name).run(cfg)``),
    never through another job's module; ``mmrlhf_ray/`` imports none of the thin layers."""
    bad = []
    for folder in ("jobs", "mmrlhf_ray", "actors", "serve", "harness"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                for name in names:
                    head = name.split(".")[0]
                    if head == "jobs" or (
                        folder == "mmrlhf_ray" and head in ("actors", "serve", "harness")
                    ):
                        bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert bad == []
