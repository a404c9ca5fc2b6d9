"""Epoch checkpoints: what they hold, whose they are, and how they are read safely.

A checkpoint belongs to one job of one database (DESIGN.md "Identity and provenance"): it carries
its ``Owner`` (the database's UUID, the job's id and its stored key), and a run only resumes from a
checkpoint whose owner is exactly its own, so a fresh database never replays another database's
results. Files are read with ``torch.load(weights_only=True)``: tensors and plain Python values
only, so a planted pickle payload cannot run code.

Format versions: 1 (release 0.1.0) had the key but no owner; ``runner.job`` adopts such a file only
when the database holds the epochs it claims (``adoptable``), and rewrites it as version 2.

Written atomically (temp file + rename), so a kill mid-write leaves the last good one.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from benchmark.vocabulary import TEST_ERROR, TRAIN_LOSS


VERSION = 2
LEGACY_VERSION = 1  # release 0.1.0: no owner


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: corrupt, of an unknown format, or another job's."""


@dataclass(frozen=True)
class Owner:
    database: str  # Store.database_id
    job_id: int
    key: str  # the job's key as stored in the database (never recomputed)

    def describe(self) -> str:
        return f"job {self.job_id} (key {self.key}) of database {self.database}"


def save(path: Path, payload: Mapping[str, Any], owner: Owner | None) -> None:
    """Write ``payload`` (model and optimiser state dicts, counters, history) with its owner."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {**payload, "version": VERSION, "owner": asdict(owner) if owner is not None else None}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(data, tmp)
    os.replace(tmp, path)


def read(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    """The checkpoint's contents, any known version; ``CheckpointError`` when it is unreadable."""
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated, corrupt, or holding objects weights_only refuses
        raise CheckpointError(f"checkpoint {path} is corrupt or not a bench checkpoint "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(payload, dict) or payload.get("version") not in (LEGACY_VERSION, VERSION):
        version = payload.get("version") if isinstance(payload, dict) else None
        raise CheckpointError(f"checkpoint {path} has format version {version!r}; this bench reads "
                              f"{LEGACY_VERSION} and {VERSION}")
    return payload


def owner_of(payload: Mapping[str, Any]) -> Owner | None:
    """The owner a checkpoint names; None for a legacy (version 1) checkpoint."""
    o = payload.get("owner")
    if not isinstance(o, dict):
        return None
    try:
        return Owner(database=str(o["database"]), job_id=int(o["job_id"]), key=str(o["key"]))
    except (KeyError, TypeError, ValueError):
        return None


def adoptable(payload: Mapping[str, Any], key: str, stored: Sequence[Mapping[str, float]]) -> bool:
    """Whether a legacy checkpoint is this job's: its key is the job's stored key, and the database
    already holds at least one of its epochs, with the very values the checkpoint's history has
    (``stored``: the job's recorded metrics of epochs 1, 2, ...). A fresh database holds none, so
    it never adopts another database's legacy checkpoint."""
    history = payload.get("history") or []
    if payload.get("key") != key or not stored or not history:
        return False
    shared = min(len(stored), len(history))
    return all(stored[i].get(name) == value
               for i in range(shared) for name, value in history[i].items()
               if name in (TRAIN_LOSS, TEST_ERROR))
