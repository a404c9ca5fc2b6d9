"""Where a report's numbers came from: the code versions its jobs ran, and what the report must
say about its jobs (``Suite.notices``). Every renderer prints these lines in its header."""
from __future__ import annotations

import json
from typing import Any

import pandas as pd


def code_versions(jobs: pd.DataFrame) -> dict[str, list[str]]:
    """Code version -> the cells (labels, in table order) with a job that ran on it."""
    out: dict[str, list[str]] = {}
    if "code_version" not in jobs.columns:
        return out
    envs = jobs["environment"] if "environment" in jobs.columns else [None] * len(jobs)
    for label, version, env in zip(jobs["label"], jobs["code_version"], envs):
        earlier = json.loads(env).get("earlier_code_versions", []) if isinstance(env, str) else []
        for v in [*earlier, version]:  # a resumed job's earlier epochs may have run other code
            if isinstance(v, str) and v and label not in out.setdefault(v, []):
                out[v].append(label)
    return out


def header_lines(res: Any) -> list[tuple[str, str]]:
    """(name, text) pairs for a report header: ``code``, and a ``warning`` per notice."""
    versions = code_versions(res.jobs)
    if not versions:
        lines = [("code", "not recorded (no job of this suite has started)")]
    elif len(versions) == 1:
        lines = [("code", next(iter(versions)))]
    else:
        per = "; ".join(f"{v}: {', '.join(cells)}" for v, cells in versions.items())
        lines = [("code", f"MIXED: this suite's jobs ran on {len(versions)} code versions ({per}); "
                          "numbers from different code may not be comparable")]
    return lines + [("warning", n) for n in res.suite.notices]
