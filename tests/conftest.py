"""Shared test setup: every test runs in its own folder, offline.

`.tunewise/` (the store) and `tunewise-runs/` are written relative to the working directory, so each
test gets a fresh tmp folder for them. TUNEWISE_CACHE is left alone on purpose: the converted model
cache (~/.cache/tunewise) is shared by all tests so each model is converted once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(autouse=True)
def isolated_user_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield tmp_path


@pytest.fixture
def shared_dir() -> Path:
    """../shared next to the repository (data too large or not ours to ship: banking77, ...)."""
    return SHARED


def banking77_or_skip() -> Path:
    """The BANKING77 folder, or skip the calling test with the reason."""
    folder = SHARED / "data" / "banking77"
    if not (folder / "train.csv").is_file():
        pytest.skip(f"banking77 not found at {folder}: the shared data folder is absent")
    return folder


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A tiny real run folder with every family saved (tests/tiny_run.py), shared by the tests of saved
    candidates, `tunewise serve` and `tunewise export`."""
    from tiny_run import make_tiny_run

    return make_tiny_run(tmp_path_factory.mktemp("tiny-run"))
