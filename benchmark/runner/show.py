"""``bench show JOB``: everything bench knows about one job, for a person or (``--format json``) a
script: its configuration, environment and code provenance, attempts and timestamps, the last
error, the end of its log, and the uncommitted diff it ran with."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmark.store import Store

LOG_LINES = 20


def job_details(store: Store, job_id: int) -> dict[str, Any]:
    frame = store.jobs_frame()
    rows = frame[frame.job_id == job_id]
    if rows.empty:
        store.get_job(job_id)  # raises NotFound with the database named
    r = rows.iloc[0]
    env = json.loads(r.environment) if isinstance(r.environment, str) else None
    diff_sha = (env or {}).get("git_diff_sha256")
    diff = store.code_diff(diff_sha) if diff_sha else None
    log = (env or {}).get("log")
    return {
        "job_id": int(r.job_id), "suite": r.suite, "label": r.label, "seed": int(r.seed), "key": r.key,
        "state": r.state, "attempts": int(r.attempts), "epochs_done": int(r.epochs_done),
        "worker": r.worker, "device": r.device,
        **{c: (None if r[c] is None or r[c] != r[c] else r[c].isoformat())
           for c in ("created_at", "started_at", "heartbeat_at", "finished_at")},
        "error": r.error, "code_version": r.code_version,
        "diff": None if diff is None else {"sha256": diff_sha, "size": diff[0], "text": diff[1]},
        "config": json.loads(r.config), "environment": env,
        "log": log, "log_tail": log_tail(Path(log)) if log else None,
    }


TAIL_BYTES = 64 * 1024  # read only the end of a log: the HTML report reads one per job


def log_tail(path: Path, lines: int = LOG_LINES) -> str | None:
    """The last ``lines`` lines of a job's log (None where it cannot be read from here); also the
    HTML report's per-seed drill-down (benchmark.report.html)."""
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - TAIL_BYTES))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    return "\n".join(text.rstrip().splitlines()[-lines:])


def details_text(d: dict[str, Any], with_diff: bool = False) -> str:
    """The human view of ``job_details``."""
    head = [f"job {d['job_id']}: {d['suite']} / {d['label']} seed {d['seed']} (key {d['key']})",
            f"state {d['state']}, {d['epochs_done']} epoch(s) recorded, {d['attempts']} attempt(s)"
            + (f", on {d['device']} by {d['worker']}" if d["worker"] else "")]
    head += [f"{k.replace('_at', '')}: {d[k]}" for k in ("created_at", "started_at", "finished_at") if d[k]]
    code = d["code_version"] or "not recorded (the job has not started)"
    if d["diff"]:
        cut = "" if len(d["diff"]["text"].encode()) >= d["diff"]["size"] else ", stored cut short"
        code += f" (uncommitted diff of {d['diff']['size']} bytes{cut}; `bench show {d['job_id']} --diff` prints it)"
    out = head + [f"code: {code}", "", "config:", json.dumps(d["config"], indent=2, sort_keys=True)]
    if d["environment"]:
        out += ["", "environment:", json.dumps(d["environment"], indent=2, sort_keys=True)]
    if d["error"]:
        out += ["", "error:", d["error"].rstrip()]
    if d["log"]:
        out += ["", f"log {d['log']}" + (", last lines:" if d["log_tail"] else " (not readable from here)")]
        if d["log_tail"]:
            out.append(d["log_tail"])
    if with_diff and d["diff"]:
        out += ["", "uncommitted diff:", d["diff"]["text"]]
    return "\n".join(out)
