"""Importing trl through the training job leaves the process's vLLM logging level alone."""

from __future__ import annotations

import importlib
import os
import sys

import pytest


@pytest.mark.parametrize("before", [None, "DEBUG"], ids=["unset", "set"])
def test_importing_trl_keeps_the_vllm_logging_level(monkeypatch, before):
    """trl's import sets VLLM_LOGGING_LEVEL=ERROR process-wide when vLLM is installed; the
    training job's import keeps what the process had (unset stays unset)."""
    from loradock.training.session import import_trl

    # setenv first: monkeypatch then restores the variable afterwards, also when trl set it
    monkeypatch.setenv("VLLM_LOGGING_LEVEL", before or "unused")
    if before is None:
        monkeypatch.delenv("VLLM_LOGGING_LEVEL")
    for name in [m for m in sys.modules if m == "trl" or m.startswith("trl._compat")]:
        monkeypatch.delitem(sys.modules, name)  # a fresh import runs trl's patch again
    trl = import_trl()
    assert importlib.import_module("trl") is trl
    assert os.environ.get("VLLM_LOGGING_LEVEL") == before


def test_trl_itself_sets_it_where_vllm_is_installed(monkeypatch):
    """Why import_trl exists: a plain import changes the process's environment. If a trl
    release stops doing so, this fails and import_trl can go."""
    pytest.importorskip("vllm")
    monkeypatch.setenv("VLLM_LOGGING_LEVEL", "unused")  # restored afterwards, see above
    monkeypatch.delenv("VLLM_LOGGING_LEVEL")
    for name in [m for m in sys.modules if m == "trl" or m.startswith("trl._compat")]:
        monkeypatch.delitem(sys.modules, name)
    importlib.import_module("trl")
    assert os.environ.get("VLLM_LOGGING_LEVEL") == "ERROR"
