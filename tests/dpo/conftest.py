"""Fixtures of the DPO tests (helpers: ``tests/dpo/helpers.py``)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def policy_dir(tiny_models):
    return tiny_models["policy"]
