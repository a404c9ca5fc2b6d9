"""benchmark.vocabulary: the words the database holds. Renaming one would orphan every stored job
or metric under the old word, so the strings are pinned here."""
from __future__ import annotations

import json

from benchmark.vocabulary import FINAL_STATES, KNOWN_METRICS, JobState, is_known_metric, is_scale_metric


def test_job_states_are_the_stored_strings() -> None:
    assert [s.value for s in JobState] == ["queued", "running", "done", "diverged", "failed"]
    assert [s for s in JobState if s.is_finished()] == list(FINAL_STATES) == ["done", "diverged", "failed"]
    # A StrEnum member is its string wherever it goes: SQL parameters, JSON, f-strings, dict keys.
    assert json.dumps({JobState.DONE: [JobState.FAILED]}) == '{"done": ["failed"]}'
    assert f"{JobState.QUEUED}" == "queued" and {"queued": 1}[JobState.QUEUED] == 1


def test_metric_names() -> None:
    assert KNOWN_METRICS == ("train_loss", "train_error", "test_loss", "test_error", "val_loss", "val_error",
                             "lr", "seconds", "images_per_second", "iterations", "tau")
    assert is_scale_metric("alpha.stage1.block0") and is_scale_metric("tau")
    assert not is_scale_metric("alpha.") and not is_known_metric("test_eror")
