"""Suite files: TOML -> defaults merged -> grid expanded -> validated jobs.

A suite file has five kinds of tables (see suites/smoke.toml for a small complete example):

    [suite]          name, title, description, source, protocol, tolerance, select, seeds
    [defaults]       model / data / optim / schedule / runtime tables applied to every entry
    [[entry]]        label template, overrides, an optional [entry.grid] and seeds
    [[published]]    a published number for one label, with its kind and source
    [[claim]]        a qualitative claim as a small expression (benchmark.claims, beside this module)

Merge order for one job, later wins: dataclass defaults < model preset (``model.preset``) <
[defaults] < entry < grid point. Every key is checked against the dataclasses in
``benchmark.config`` (their type hints are the schema), so a typo is an error that names the file,
the key path, the bad value and what is allowed, never a silent default.
"""
from __future__ import annotations

import ast
import itertools
import math
import re
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Sequence

from benchmark.claims import ClaimError, validate_claim
from benchmark.config import NUM_CLASSES, SECTIONS, DataConfig, JobSpec, ModelConfig, validate_data
from benchmark.errors import ConfigFileError
from benchmark.models import ModelConfigError, get_preset, tau_rule, validate
from benchmark.suite_types import Claim, Job, Published, Suite
from benchmark.validation import broken_rules, convert, did_you_mean, field_hints, is_int, is_number
from benchmark.vocabulary import KNOWN_METRICS, SELECTIONS, is_known_metric

TOP_LEVEL = ("suite", "defaults", "entry", "published", "claim")
SUITE_KEYS = ("name", "title", "description", "source", "protocol", "tolerance", "select", "seeds")
ENTRY_KEYS = ("label", "seeds", "grid", "note", *SECTIONS)


class SuiteError(ConfigFileError):
    """A suite file is wrong. The message names the file, each bad key path and what is allowed."""

    what = "suite file"


@dataclass
class _Problems:
    """Collects every problem in a file so the user fixes them all in one go."""

    items: list[str]

    def add(self, where: str, message: str) -> None:
        self.items.append(f"{where}: {message}" if where else message)


# ----------------------------------------------------------------------------------------------
# Entry points


MAX_SUITE_BYTES = 1 << 20  # a suite file is a page of TOML; anything larger is not one


def load_suite(path: str | Path) -> Suite:
    path = Path(path)
    try:
        if path.exists() and not path.is_file():  # a folder, /dev/zero, a FIFO: never read it
            raise SuiteError(str(path), ["not a regular file: give the path of a suite's .toml file"])
        with open(path, "rb") as f:
            raw = f.read(MAX_SUITE_BYTES + 1)
        if len(raw) > MAX_SUITE_BYTES:
            raise SuiteError(str(path), [f"larger than {MAX_SUITE_BYTES} bytes: not a suite file"])
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise SuiteError(str(path), ["file not found (suites live under suites/, e.g. suites/smoke.toml)"])
    except (OSError, UnicodeDecodeError) as e:
        raise SuiteError(str(path), [f"cannot read file: {e}"])
    return parse_suite(text, str(path))


def parse_suite(text: str, path: str) -> Suite:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SuiteError(path, [f"not valid TOML: {e}"])
    problems = _Problems([])
    suite = _parse(doc, path, text, problems)
    if problems.items:
        raise SuiteError(path, problems.items)
    assert suite is not None
    return suite


# ----------------------------------------------------------------------------------------------
# Parsing


# Limits (README "Limits and error codes"): what the database schema holds, and what stays quick to
# expand, store and report. A suite over a limit is refused with the number, never half-registered.
MAX_JOBS = 10_000  # per suite (He 2016's whole Table 6 with 5 seeds is 50)
MAX_NAME = 200  # characters of a suite name or a cell label: suites.name / jobs.label are String(200)
MAX_CLAIM = 2_000  # characters of one claim expression
MAX_CLAIM_DEPTH = 40  # nested parentheses/brackets in a claim expression


def _parse(doc: dict[str, Any], path: str, text: str, problems: _Problems) -> Suite | None:
    _check_keys(doc, TOP_LEVEL, "", problems)
    head = doc.get("suite")
    if not isinstance(head, dict):
        problems.add("suite", "missing [suite] table (it needs at least name = \"...\")")
        return None
    _check_keys(head, SUITE_KEYS, "suite", problems)
    name = head.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name or "") or len(name) > MAX_NAME - 6:
        problems.add("suite.name", f"{name!r} is not allowed; use letters, digits, '_', '-' or '.', "
                                   f"at most {MAX_NAME - 6} characters")
        name = Path(path).stem
    select = head.get("select", "final")
    if select not in SELECTIONS:
        problems.add("suite.select", f"{select!r} is not allowed; expected one of {', '.join(map(repr, SELECTIONS))}")
    tolerance = head.get("tolerance", 1.0)
    if not is_number(tolerance) or not 0 <= tolerance < math.inf:
        problems.add("suite.tolerance", f"{tolerance!r} is not allowed; expected a finite number >= 0")
    default_seeds = _seeds(head.get("seeds", [0]), "suite.seeds", problems)
    for key in ("title", "description", "source", "protocol"):
        ok, _, expected = convert(head.get(key, ""), str)
        if not ok:
            problems.add(f"suite.{key}", f"{str(head[key])[:60]!r} is not allowed; expected {expected}")

    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict):
        problems.add("defaults", "must be a table")
        defaults = {}
    _check_keys(defaults, tuple(SECTIONS), "defaults", problems)

    entries = doc.get("entry", [])
    if not isinstance(entries, list) or not entries:
        problems.add("entry", "no [[entry]] tables: a suite needs at least one entry to run")
        entries = []

    jobs: list[Job] = []
    keys: set[str] = set()
    cells: dict[str, tuple[str, str]] = {}  # label -> (cell key, where it came from)
    for i, entry in enumerate(entries):
        where = f"entry[{i}]"
        if not isinstance(entry, dict):
            problems.add(where, "must be a table")
            continue
        for job in _expand_entry(entry, defaults, default_seeds, where, problems):
            seen = cells.setdefault(job.label, (job.spec.cell_key, where))
            if seen[0] != job.spec.cell_key:
                problems.add(
                    where,
                    f"label {job.label!r} is also produced by {seen[1]} with a different configuration; "
                    "make the label template name the field that differs, e.g. label = \"resnet-{depth}\"",
                )
            elif job.key not in keys:  # the same job from two entries is one job
                keys.add(job.key)
                jobs.append(job)

    if len(jobs) > MAX_JOBS:
        problems.add("entry", f"the suite expands to {len(jobs)} jobs; at most {MAX_JOBS} are allowed per suite: "
                              "split it into several suites")
    if select == "best_val":
        no_val = sorted({j.label for j in jobs if j.spec.data.val_size <= 0})
        if no_val:
            problems.add("suite.select", f"'best_val' selects on a validation split, but these cells have none "
                                         f"(data.val_size = 0): {', '.join(no_val)}")
    labels = list(cells)
    published = tuple(_parse_published(doc.get("published", []), labels, problems))
    claims = tuple(_parse_claims(doc.get("claim", []), labels, problems))
    if problems.items:
        return None
    return Suite(
        name=name,
        path=path,
        title=str(head.get("title", "")),
        description=str(head.get("description", "")),
        source=str(head.get("source", "")),
        protocol=str(head.get("protocol", "")),
        tolerance=float(tolerance),
        select=select,
        jobs=tuple(jobs),
        published=published,
        claims=claims,
        text=text,
    )


def _expand_entry(
    entry: dict[str, Any], defaults: dict[str, Any], default_seeds: list[int], where: str, problems: _Problems
) -> list[Job]:
    _check_keys(entry, ENTRY_KEYS, where, problems)
    template = entry.get("label")
    if not isinstance(template, str) or not template:
        problems.add(f"{where}.label", "missing; give a label template such as \"plain-{depth}\"")
        return []
    seeds = _seeds(entry["seeds"], f"{where}.seeds", problems) if "seeds" in entry else default_seeds
    grid = entry.get("grid", {})
    if not isinstance(grid, dict):
        problems.add(f"{where}.grid", "must be a table of key = [values]")
        grid = {}
    axes = _flatten(grid)
    for key, values in axes.items():
        if key.split(".")[0] not in SECTIONS or "." not in key:
            _suggest(key.split(".")[0], list(SECTIONS), f"{where}.grid.{key}", problems, "a section")
        if not isinstance(values, list) or not values:
            problems.add(f"{where}.grid.{key}", f"{values!r} is not allowed; expected a non-empty list of values")
    if any(not isinstance(v, list) or not v for v in axes.values()):
        return []
    count = math.prod(len(v) for v in axes.values()) * len(seeds)
    if count > MAX_JOBS:  # refuse before expanding: a grid of a million points would hang here
        problems.add(f"{where}.grid", f"expands to {count} jobs ({' x '.join(str(len(v)) for v in axes.values())} "
                                      f"grid points x {len(seeds)} seeds); at most {MAX_JOBS} are allowed per suite")
        return []

    jobs = []
    for point in itertools.product(*axes.values()):
        overrides = dict(zip(axes, point))
        spec = _resolve_spec(defaults, entry, overrides, where, problems)
        if spec is None:
            return []  # the problem is the same for every grid point: report it once
        label = _format_label(template, spec, f"{where}.label", problems)
        if label is None:
            return []
        if len(label) > MAX_NAME or not label.strip() or any(ord(c) < 32 for c in label):
            problems.add(f"{where}.label", f"{label[:60]!r}{'...' if len(label) > 60 else ''} is not allowed; a label "
                                           f"is 1 to {MAX_NAME} characters with no control characters")
            return []
        jobs.extend(Job(label=label, spec=replace(spec, seed=s)) for s in seeds)
    return jobs


def _resolve_spec(
    defaults: dict[str, Any], entry: dict[str, Any], grid_point: dict[str, Any], where: str, problems: _Problems
) -> JobSpec | None:
    """Merge the layers for one grid point and build a validated JobSpec."""
    before = len(problems.items)
    layers: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    origin: dict[str, str] = {}  # key path -> where it was written, for error messages
    for layer_where, layer in (("defaults", defaults), (where, entry)):
        for section in SECTIONS:
            table = layer.get(section, {})
            if not isinstance(table, dict):
                problems.add(f"{layer_where}.{section}", "must be a table")
                continue
            for k, v in table.items():
                layers[section][k] = v
                origin[f"{section}.{k}"] = f"{layer_where}.{section}.{k}"
    for dotted, v in grid_point.items():
        section, _, k = dotted.partition(".")
        layers[section][k] = v
        origin[dotted] = f"{where}.grid.{dotted}"

    # A preset names a registered architecture (benchmark.models) as the starting point.
    model_base = ModelConfig()
    preset = layers["model"].pop("preset", None)
    if preset is not None:
        try:
            model_base = get_preset(preset)
        except KeyError as e:
            problems.add(origin["model.preset"], str(e.args[0]) if e.args else f"unknown preset {preset!r}")
    # tau may be a rule such as "1/sqrt(L)": resolved once the architecture is known.
    tau = layers["model"].pop("tau", None)

    built = {}
    for section, cls in SECTIONS.items():
        base = model_base if section == "model" else cls()
        built[section] = _build(cls, base, layers[section], section, origin, problems)
    if len(problems.items) > before:
        return None

    model: ModelConfig = built["model"]
    data: DataConfig = built["data"]
    if "num_classes" not in layers["model"]:
        model = replace(model, num_classes=NUM_CLASSES[data.dataset])
    if tau is not None:
        value = _resolve_tau(tau, model, origin.get("model.tau", where), problems)
        if value is None:
            return None
        model = replace(model, tau=value)
    spec = JobSpec(model=model, data=data, optim=built["optim"], schedule=built["schedule"],
                   runtime=built["runtime"])
    return _check_spec(spec, where, problems)


def _check_spec(spec: JobSpec, where: str, problems: _Problems) -> JobSpec | None:
    """Cross-field rules: the model must build, and the schedule must make sense."""
    try:
        validate(spec.model)
    except ModelConfigError as e:
        problems.add(f"{where}.model", str(e))
        return None
    # Each section's own rules (benchmark.config, beside its dataclass); data's are the rules the
    # pipeline relies on, checked before any job runs.
    for section in ("schedule", "data", "optim"):
        for key, message in getattr(spec, section).check():
            problems.add(f"{where}.{section}.{key}", message)
    return spec


def _resolve_tau(tau: Any, model: ModelConfig, where: str, problems: _Problems) -> float | None:
    """A float, or "c/sqrt(L)" with L the number of residual blocks (tau-ResNet README)."""
    if is_number(tau):
        return float(tau)
    m = re.fullmatch(r"\s*([0-9.]*)\s*/\s*sqrt\(\s*L\s*\)\s*", str(tau))
    if not m:
        problems.add(where, f"{tau!r} is not allowed; expected a number or a rule like \"1/sqrt(L)\" or \"0.5/sqrt(L)\"")
        return None
    return tau_rule(model, float(m.group(1) or 1.0))


def _build(cls: type, base: Any, values: dict[str, Any], section: str, origin: dict[str, str],
           problems: _Problems) -> Any:
    """Validate ``values`` against the dataclass ``cls`` and return ``base`` updated with them."""
    hints = field_hints(cls)
    allowed = list(hints)
    updates = {}
    for key, value in values.items():
        where = origin.get(f"{section}.{key}", f"{section}.{key}")
        if key not in hints:
            _suggest(key, allowed + (["preset", "tau"] if section == "model" else []), where, problems,
                     f"a {section} field")
            continue
        ok, converted, expected = convert(value, hints[key])
        if not ok:
            problems.add(where, f"{value!r} is not allowed; expected {expected}")
            continue
        updates[key] = converted
    return replace(base, **updates)


# A label template names config fields and nothing else: "{depth}", "{model.shortcut}". No
# attribute or index walking and no format specs (str.format would follow "{model.__class__...}"
# into module globals); "{{" and "}}" are literal braces.
_TEMPLATE_FIELD = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


def _format_label(template: str, spec: JobSpec, where: str, problems: _Problems) -> str | None:
    """Labels name a cell: "plain-{depth}" or "{model.residual_scale}-{depth}"."""
    values: dict[str, Any] = {}
    for section in SECTIONS:
        part = getattr(spec, section)
        for f in fields(part):
            values[f"{section}.{f.name}"] = getattr(part, f.name)
            values.setdefault(f.name, getattr(part, f.name))
    bad: list[str] = []

    def fill(m: re.Match) -> str:
        token = m.group(0)
        if token in ("{{", "}}"):
            return token[0]
        name = m.group(1)
        if name is None or name not in values:
            bad.append(token)
            return ""
        return str(values[name])

    label = _TEMPLATE_FIELD.sub(fill, template)
    if bad:
        problems.add(where, f"cannot fill label template {template!r}: {', '.join(map(repr, bad))} is not a "
                            "config field; write {field} or {section.field}, e.g. {depth} or {model.shortcut} "
                            "(no attributes, indexes or format specs; {{ and }} for literal braces)")
        return None
    return label


def _parse_published(items: Any, labels: list[str], problems: _Problems) -> list[Published]:
    out = _parse_records(items, "published", Published(label="", value=0.0), ("label", "value", "source"), problems)
    for i, p in enumerate(out):
        if p.label and p.label not in labels:
            _suggest(p.label, labels, f"published[{i}].label", problems, "a label of this suite")
        if not is_known_metric(p.metric):
            _suggest(p.metric, list(KNOWN_METRICS), f"published[{i}].metric", problems, "a metric bench records")
        for name, value, allowed in broken_rules(p, Published.RULES):
            problems.add(f"published[{i}].{name}", f"{value!r} is not allowed; expected {allowed}")
    return out


def _parse_claims(items: Any, labels: list[str], problems: _Problems) -> list[Claim]:
    out = _parse_records(items, "claim", Claim(name="", text="", expr=""), ("name", "text", "expr"), problems)
    for i, claim in enumerate(out):
        if not claim.expr.strip() and "expr" in (items[i] if isinstance(items[i], dict) else {}):
            problems.add(f"claim[{i}].expr", "is empty; write a comparison such as selected(\"plain-56\") > selected(\"plain-20\")")
        elif claim.expr:
            _validate_claim(claim.expr, labels, f"claim[{i}].expr", problems)
    return out


def _parse_records(items: Any, kind: str, empty: Any, required: tuple[str, ...], problems: _Problems) -> list[Any]:
    """[[published]] and [[claim]] tables: required keys present, every key a field of the dataclass."""
    if not isinstance(items, list):
        problems.add(kind, f"must be an array of tables: write [[{kind}]]")
        return []
    out = []
    for i, item in enumerate(items):
        where = f"{kind}[{i}]"
        if not isinstance(item, dict):
            problems.add(where, "must be a table")
            continue
        for key in required:
            if key not in item:
                problems.add(f"{where}.{key}", f"missing (every {kind} entry needs {', '.join(required)})")
        out.append(_build(type(empty), empty, item, kind, {f"{kind}.{k}": f"{where}.{k}" for k in item}, problems))
    return out


def _validate_claim(expr: str, labels: list[str], where: str, problems: _Problems) -> None:
    depth = deepest = 0
    for ch in expr:
        depth += (ch in "([{") - (ch in ")]}")
        deepest = max(deepest, depth)
    if len(expr) > MAX_CLAIM or deepest > MAX_CLAIM_DEPTH:
        problems.add(where, f"is too long or too deeply nested ({len(expr)} characters, {deepest} levels); at most "
                            f"{MAX_CLAIM} characters and {MAX_CLAIM_DEPTH} levels of brackets")
        return
    try:
        numbers = [n.value for n in ast.walk(ast.parse(expr, mode="eval")) if isinstance(n, ast.Constant)
                   and is_number(n.value)]
    except (SyntaxError, ValueError):
        numbers = []  # validate_claim says what is wrong with the syntax
    if any(not math.isfinite(v) or abs(v) > 1e15 for v in numbers):
        problems.add(where, "holds a number beyond +-1e15; claims compare errors, losses and counts")
        return
    try:
        validate_claim(expr, labels)
    except ClaimError as e:
        problems.add(where, str(e))


def _seeds(value: Any, where: str, problems: _Problems) -> list[int]:
    """``seeds = 3`` means [0, 1, 2]; ``seeds = [0, 7]`` lists them."""
    if is_int(value) and 0 < value <= MAX_JOBS:
        return list(range(value))
    if isinstance(value, list) and value and all(is_int(s) for s in value):
        if len(set(value)) != len(value):
            problems.add(where, f"{value!r} repeats a seed")
        return list(dict.fromkeys(value))
    problems.add(where, f"{value!r} is not allowed; expected a positive count or a list of integer seeds")
    return [0]


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _check_keys(table: dict[str, Any], allowed: tuple[str, ...], where: str, problems: _Problems) -> None:
    for key in table:
        if key not in allowed:
            _suggest(key, list(allowed), f"{where}.{key}" if where else key, problems, "a key here")


def _suggest(key: str, allowed: list[str], where: str, problems: _Problems, what: str) -> None:
    close = did_you_mean(key, allowed)
    hint = f"; {close}" if close else ""
    problems.add(where, f"{key!r} is not {what}{hint} (allowed: {', '.join(allowed)})")


# ----------------------------------------------------------------------------------------------
# Quick variant: the same suite shrunk to a plumbing check


QUICK_TRAIN_IMAGES = 256
QUICK_TEST_IMAGES = 128
QUICK_BATCH = 32
QUICK_ITERATIONS = 4


def quick(suite: Suite) -> Suite:
    """Every cell of ``suite`` (first seed only) for a few iterations on a small subset.

    Checks a suite end to end on a CPU in minutes before GPU hours are spent on it: every model is
    built, the data is read with the suite's normalisation and augmentation, the schedule and its
    warm-up run, metrics reach the database. Named ``<name>-quick`` so its jobs never mix with the
    real ones in a shared database.
    """
    jobs, seen = [], set()
    for job in suite.jobs:
        if job.label in seen:
            continue
        seen.add(job.label)
        s = job.spec
        val_size = min(s.data.val_size, 64)
        data = replace(s.data, train_size=QUICK_TRAIN_IMAGES, test_size=QUICK_TEST_IMAGES, val_size=val_size)
        if data.dataset == "synthetic":
            # The validation split is carved first, so only synthetic_train - val_size images are left
            # for training (at least 1: the suite itself passed validate_data, so val_size < synthetic_train).
            data = replace(data, train_size=min(QUICK_TRAIN_IMAGES, s.data.synthetic_train - val_size),
                           test_size=min(QUICK_TEST_IMAGES, s.data.synthetic_test))
        validate_data(data)  # a quick run never makes a config the real suite would not pass
        schedule = replace(s.schedule, unit="iteration", length=QUICK_ITERATIONS, milestones=(QUICK_ITERATIONS - 1,),
                           warmup_length=min(s.schedule.warmup_length, 1))
        optim = replace(s.optim, batch_size=min(s.optim.batch_size, QUICK_BATCH))
        jobs.append(Job(job.label, replace(s, data=data, schedule=schedule, optim=optim)))
    return replace(suite, name=f"{suite.name}-quick", jobs=tuple(jobs), quick=True)


def job_differences(expanded: Sequence[Job], stored: Sequence[Job]) -> str:
    """Which cells' jobs differ between a suite's text (``expanded``) and the database (``stored``),
    as one clause; "" when they are the same jobs."""
    def cells(jobs: Sequence[Job]) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for j in jobs:
            out.setdefault(j.label, set()).add(j.key)
        return out

    new, old = cells(expanded), cells(stored)
    added = [c for c in new if c not in old]
    removed = [c for c in old if c not in new]
    changed = [c for c in new if c in old and new[c] != old[c]]
    if not (added or removed or changed):
        return ""
    parts = []
    if changed:
        parts.append(f"changed configuration or seeds in {', '.join(changed)}")
    if added:
        parts.append(f"cells not registered yet: {', '.join(added)} (`bench run` registers them)")
    if removed:
        parts.append(f"registered cells it no longer has: {', '.join(removed)}")
    return "; ".join(parts)


def parse_registered(name: str, text: str, path: str) -> Suite:
    """A suite as the database holds it: the TOML text it was registered with. A quick variant is
    registered as ``<name>-quick`` with its parent's text, so it is rebuilt the same way."""
    suite = parse_suite(text, path)
    return quick(suite) if name == f"{suite.name}-quick" else suite
