"""Fixtures for training tests: the tiny base published in the (per-test) local registry."""

from __future__ import annotations

import pytest

from tests.helpers.training import TINY_BASE_ID, tiny_job


@pytest.fixture
def tiny_registry_base(registry, tiny_base) -> str:
    """The tiny random model published as a base in this test's registry; returns its id."""
    from loradock.registry.card import build_base_card

    registry.publish_base(tiny_base, TINY_BASE_ID, card=build_base_card())
    return TINY_BASE_ID


@pytest.fixture
def make_job(tmp_path):
    """``make_job(**section_overrides) -> dict``: a tiny job in this test's folder."""
    return lambda **overrides: tiny_job(tmp_path, **overrides)
