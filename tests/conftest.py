from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# Two cores on the CI machine: more threads only add contention between test processes.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def shared_data() -> Path:
    """The real CIFAR mini subsets beside the repository; tests using them skip elsewhere."""
    if not (SHARED_DATA / "cifar-10-batches-py").is_dir():
        pytest.skip(f"real CIFAR images not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'results.sqlite'}"
