"""Where a report's numbers came from: the database, the code versions its jobs ran, what they ran
on (torch, CUDA, device, host), and what the report must say about its jobs (``Suite.notices``).
Every renderer prints these lines in its header."""
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
    """(name, text) pairs for a report header: ``database`` (when known), ``code``, ``environment``,
    and a ``warning`` per notice."""
    db = [("database", res.database)] if getattr(res, "database", "") else []
    versions = code_versions(res.jobs)
    if not versions:
        lines = [("code", "not recorded (no job of this suite has started)")]
    elif len(versions) == 1:
        lines = [("code", next(iter(versions)))]
    else:
        per = "; ".join(f"{v}: {', '.join(cells)}" for v, cells in versions.items())
        lines = [("code", f"MIXED: this suite's jobs ran on {len(versions)} code versions ({per}); "
                          "numbers from different code may not be comparable")]
    envs = environments(res.jobs)
    if len(envs) == 1:
        lines.append(("environment", next(iter(envs))))
    elif envs:
        lines.append(("environment", "; ".join(f"{e}: {', '.join(cells)}" for e, cells in envs.items())))
    return db + lines + [("warning", n) for n in res.suite.notices]


def _environment_text(env: dict[str, Any], device: Any) -> str:
    """e.g. "torch 2.13.0, CUDA 12.4, NVIDIA H200 (cuda:0), host gpu1"; what a job's numbers ran on."""
    parts = [f"torch {env['torch']}" if env.get("torch") else "torch not recorded",
             f"CUDA {env['cuda']}" if env.get("cuda") else "no CUDA"]
    dev = device if isinstance(device, str) and device else env.get("device")
    gpu = env.get("gpu")
    parts.append(f"{gpu} ({dev})" if gpu and dev else str(gpu or dev or "device not recorded"))
    if env.get("host"):
        parts.append(f"host {env['host']}")
    return ", ".join(parts)


def environments(jobs: pd.DataFrame) -> dict[str, list[str]]:
    """Environment (torch, CUDA, device, host) -> the cells (labels, in table order) with a job on it.
    Jobs that never started (no environment recorded) are left out."""
    out: dict[str, list[str]] = {}
    if "environment" not in jobs.columns:
        return out
    devices = jobs["device"] if "device" in jobs.columns else [None] * len(jobs)
    for label, env, device in zip(jobs["label"], jobs["environment"], devices):
        if not isinstance(env, str) or not env:
            continue
        text = _environment_text(json.loads(env), device)
        if label not in out.setdefault(text, []):
            out[text].append(label)
    return out
