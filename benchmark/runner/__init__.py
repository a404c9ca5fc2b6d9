"""Running jobs: device discovery and slots (``devices``), runner profiles (``profile``), the worker
that runs each job in its own process (``worker``, ``child``), one job's glue to the store
(``job``), ``bench status`` (``status``) and Slurm submission (``slurm``)."""
from __future__ import annotations

from .profile import RunnerProfile, RunnerProfileError, load_profile

__all__ = ["RunnerProfile", "RunnerProfileError", "load_profile"]
