"""Every file path and ``mmrlhf_ray.<module>`` the docs name exists: a move that forgets
a doc fails here (docs/*.md and README.md)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
PATH = re.compile(
    r"\b((?:mmrlhf_ray|actors|serve|harness|jobs|benchmarks|tests)/[\w/.-]+\.(?:py|yaml))"
)
MODULE = re.compile(r"\bmmrlhf_ray(?:\.\w+)+")


def _module_exists(dotted: str) -> bool:
    """The longest prefix of ``dotted`` below the package root is a module or package
    (the rest may be an attribute: ``mmrlhf_ray.core.stage.StageDir``)."""
    parts = dotted.split(".")
    for i in range(len(parts), 1, -1):
        base = ROOT.joinpath(*parts[:i])
        if base.with_suffix(".py").exists() or (base / "__init__.py").exists():
            return True
    return False


def test_paths_and_modules_named_in_docs_exist():
    missing = []
    for doc in DOCS:
        text = doc.read_text()
        missing += [(doc.name, p) for p in PATH.findall(text) if not (ROOT / p).exists()]
        missing += [(doc.name, m) for m in MODULE.findall(text) if not _module_exists(m)]
    assert sorted(set(missing)) == []
