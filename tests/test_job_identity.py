"""Job keys never move as the code grows (config.py, THE RULE next to ``KEY_V1_FIELDS``).

The literal keys below were issued by bench before the rule existed; results in users' databases
and checkpoints on their disks are filed under them. If one of these tests fails, a change moved
existing keys: undo it (give the new field a default that means today's behaviour), never update
the literals.
"""
from __future__ import annotations

import json

from dataclasses import dataclass, field, fields, make_dataclass, replace

import pytest

from benchmark.config import KEY_V1_FIELDS, SECTIONS, JobSpec, ModelConfig, identity
from benchmark.suite import load_suite
from conftest import ROOT

GOLDEN = {
    # he2016_table: He 2016 Table 6 cells, seed 0, as bench 0.1.0 issued them. Issue 10 then changed
    # the suite on purpose (model.bn_splits = 2, "128 on two GPUs"), which is a new protocol and so
    # new jobs; the literals pin the 0.1.0 protocol, rebuilt below by undoing that one suite edit.
    ("he2016_table", "plain-20", 0): "a7f8fc6956003bc7",
    ("he2016_table", "plain-56", 0): "52a1bdf877774586",
    ("he2016_table", "resnet-20", 0): "e1f7c3113d934c1d",
    ("he2016_table", "resnet-56", 0): "61bf1cb84dccf082",
    ("he2016_table", "resnet-110", 0): "463a43cd7d95ed39",
}


@pytest.mark.parametrize("suite,label,seed", sorted(GOLDEN))
def test_golden_keys(suite, label, seed):
    jobs = {(j.label, j.seed): j for j in load_suite(ROOT / "suites" / f"{suite}.toml").jobs}
    spec = jobs[(label, seed)].spec
    assert spec.model.bn_splits == 2  # the suite as issue 10 left it
    as_issued = replace(spec, model=replace(spec.model, bn_splits=1))
    assert as_issued.key == GOLDEN[(suite, label, seed)]


def test_default_spec_key_is_pinned():
    assert JobSpec().key == "e1f7c3113d934c1d"  # the he2016 resnet-20 cell: today's defaults


def test_key_v1_fields_name_real_fields():
    """Every versioned name exists: a removed or renamed field would silently change keys."""
    names = set(f.name for f in fields(JobSpec))
    names |= {f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in fields(cls)}
    assert KEY_V1_FIELDS <= names


def _with_new_model_field(spec: JobSpec, default, value=None) -> JobSpec:
    """``spec`` with its model config extended by one new field (as a future knob would add)."""
    grown = make_dataclass("GrownModelConfig", [("bn_group", type(default), field(default=default))],
                           bases=(ModelConfig,), frozen=True)
    model = grown(**{f.name: getattr(spec.model, f.name) for f in fields(ModelConfig)},
                  **({} if value is None else {"bn_group": value}))
    return replace(spec, model=model)


def test_a_new_field_at_its_default_moves_no_key():
    for suite in ("he2016_table", "smoke", "tau_resnet", "rezero_cifar100"):
        for job in load_suite(ROOT / "suites" / f"{suite}.toml").jobs:
            assert _with_new_model_field(job.spec, default=0).key == job.key


def test_a_new_field_set_away_from_its_default_is_a_new_job():
    spec = JobSpec()
    assert _with_new_model_field(spec, default=0, value=64).key != spec.key
    assert identity(_with_new_model_field(spec, default=0, value=64))["model"]["bn_group"] == 64


def test_a_new_section_at_its_defaults_moves_no_key():
    @dataclass(frozen=True)
    class Extra:
        knob: int = 1

    grown = make_dataclass("GrownSpec", [("extra", Extra, field(default_factory=Extra))],
                           bases=(JobSpec,), frozen=True)
    spec = JobSpec(seed=3)
    assert grown(seed=3).key == spec.key
    assert grown(seed=3, extra=Extra(2)).key != spec.key


def test_versioned_fields_stay_in_the_key_even_at_their_defaults():
    """A v1 field at its default is still hashed: that is what keeps the v1 keys."""
    assert "depth" in identity(JobSpec())["model"]
    full = json.loads(JobSpec().canonical_json())
    v1 = {s: ({k: v for k, v in full[s].items() if f"{s}.{k}" in KEY_V1_FIELDS} if isinstance(full[s], dict) else full[s])
          for s in full if s in KEY_V1_FIELDS}
    assert identity(JobSpec()) == v1  # every v1 field, and no field added since (all at their defaults)
