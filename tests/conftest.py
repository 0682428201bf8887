"""Shared test set-up. Area-specific fixtures live in each area's own test modules."""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
SEEDS = ROOT.parent / "shared" / "seeds"
DOCS = ROOT.parent / "shared" / "docs"


@pytest.fixture
def specs_dir() -> Path:
    return SPECS
