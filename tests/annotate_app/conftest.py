"""Fixtures of the annotation-app tests (helpers: ``tests/annotate_app/helpers.py``)."""

from __future__ import annotations

import pytest

from tests.annotate_app.helpers import make_run


@pytest.fixture
def run_dir(tmp_path) -> str:
    return make_run(str(tmp_path / "run"))
