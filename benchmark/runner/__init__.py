"""Running jobs: the run engine ``bench run`` and ``bench worker`` call (``api``), device discovery
and slots (``devices``), runner profiles (``profile``), the worker that runs each job in its own
process (``worker``, ``child``) and the typed messages between them (``messages``), one job's glue to
the store and its heartbeat (``job``), ``bench status`` (``status``) and Slurm submission (``slurm``)."""
from __future__ import annotations

from .profile import RunnerProfile, RunnerProfileError, load_profile

__all__ = ["RunnerProfile", "RunnerProfileError", "load_profile"]
