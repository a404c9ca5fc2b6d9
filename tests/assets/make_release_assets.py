"""Write a small results database and its checkpoints with the bench release this runs under.

Kept as a test asset (Optuna's practice: test upgrades against databases written by old releases).
Run it from a checkout of the release, with that checkout's code first on the path::

    git worktree add /tmp/rel <release commit>
    PYTHONPATH=/tmp/rel .venv/bin/python tests/assets/make_release_assets.py tests/assets/release-0.1.0

It registers a tiny synthetic suite (2 jobs, 3 epochs each, a 4/8/16-wide ResNet-8), trains every job
for 2 epochs (``--max-epochs 2``), and leaves both queued with a checkpoint at epoch 2: a database an
upgrade must open, report and resume. The commit it ran from is written to ``RELEASE``.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

SUITE = """\
[suite]
name = "release-asset"
title = "Upgrade test asset"
tolerance = 50.0
seeds = [0, 1]

[defaults.data]
dataset = "synthetic"
synthetic_train = 256
synthetic_test = 128

[defaults.optim]
batch_size = 64

[defaults.schedule]
unit = "epoch"
length = 3
milestones = [2]

[[entry]]
label = "resnet-8"
model = { depth = 8, widths = [4, 8, 16] }

[[published]]
label = "resnet-8"
value = 80.0
kind = "single"
source = "made up for the upgrade test"
"""


def main(out: Path) -> None:
    import benchmark

    code = Path(benchmark.__file__).resolve().parents[1]
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / "suite.toml").write_text(SUITE)
    bench = [sys.executable, "-c", "from benchmark.cli import main; main()"]
    subprocess.run([*bench, "run", str(out / "suite.toml"), "--db", f"sqlite:///{out / 'results.sqlite'}",
                    "--devices", "cpu", "--max-epochs", "2", "--checkpoint-dir", str(out / "checkpoints")],
                   check=True, cwd=out)
    shutil.rmtree(out / "checkpoints" / "logs", ignore_errors=True)
    for p in out.glob("results.sqlite?*"):  # WAL, shared-memory and lock files
        p.unlink()
    commit = subprocess.run(["git", "-C", str(code), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    (out / "RELEASE").write_text(f"written by bench at commit {commit.strip()} ({code})\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
