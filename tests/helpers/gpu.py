"""Which device the ``gpu``-marked tests run on."""

from __future__ import annotations

import os


def gpu_test_device() -> str:
    """The device ``gpu`` tests run on: ``cuda``, or what ``LORADOCK_GPU_TEST_DEVICE`` names
    (``cpu`` runs their logic on a machine without a GPU, to check the tests themselves)."""
    return os.environ.get("LORADOCK_GPU_TEST_DEVICE", "cuda")
