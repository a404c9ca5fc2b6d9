"""The trainer: determinism, exact resume, schedules, warm-up, divergence, checkpoints."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest

from benchmark.config import DataConfig, JobSpec, ModelConfig, OptimConfig, RuntimeConfig, ScheduleConfig
from benchmark.train import CheckpointError, _length, _lr, _optimizer, _State, train
from benchmark.models import build_model
from benchmark.vocabulary import ALPHA_PREFIX, EPOCH_METRICS, TAU, VAL_METRICS, JobState, is_known_metric

TINY = JobSpec(
    model=ModelConfig(depth=8),
    data=DataConfig(dataset="synthetic", synthetic_train=256, synthetic_test=64),
    optim=OptimConfig(batch_size=64, lr=0.1),
    schedule=ScheduleConfig(unit="epoch", length=3, milestones=(2,)),
    seed=3,
)
REQUIRED = {"train_loss", "train_error", "test_loss", "test_error", "lr", "seconds", "images_per_second", "iterations"}
TIMING = {"seconds", "images_per_second"}


def deterministic(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in m.items() if k not in TIMING} for m in history]


def test_metrics_every_epoch_and_same_seed_same_numbers():
    seen = []
    a = train(TINY, on_epoch=lambda e, m: seen.append(e))
    b = train(TINY)
    assert a.status == "done" and seen == [1, 2, 3]
    assert REQUIRED <= set(a.history[0])
    assert deterministic(a.history) == deterministic(b.history)
    c = train(replace(TINY, seed=4))
    assert deterministic(c.history) != deterministic(a.history)


def test_resume_from_checkpoint_matches_uninterrupted_run(tmp_path):
    ckpt = tmp_path / "job.pt"
    straight = train(TINY)
    first = train(TINY, checkpoint=ckpt, max_epochs=1)
    assert first.status == "stopped" and first.epochs_done == 1 and ckpt.exists()
    replayed = []
    rest = train(TINY, checkpoint=ckpt, on_epoch=lambda e, m: replayed.append(e))
    assert rest.status == "done"
    assert replayed == [1, 2, 3]  # epoch 1 is replayed to the store (idempotent upsert), then 2 and 3
    assert deterministic(rest.history) == deterministic(straight.history)


def test_bf16_channels_last_is_deterministic_and_resumes_exactly(tmp_path):
    """The smoke suite's runtime (the CI gate compares its numbers exactly on one machine)."""
    fast = replace(TINY, runtime=RuntimeConfig(channels_last=True, precision="bf16"))
    straight = train(fast)
    assert deterministic(straight.history) == deterministic(train(fast).history)
    assert deterministic(straight.history) != deterministic(train(TINY).history)  # bf16 moves the numbers
    ckpt = tmp_path / "job.pt"
    assert train(fast, checkpoint=ckpt, max_epochs=2).status == "stopped"
    assert deterministic(train(fast, checkpoint=ckpt).history) == deterministic(straight.history)


def test_should_stop_leaves_last_epoch_checkpoint(tmp_path):
    ckpt = tmp_path / "job.pt"
    calls = {"n": 0}

    def stop() -> bool:  # stop in the middle of epoch 2
        calls["n"] += 1
        return calls["n"] > 7

    result = train(TINY, checkpoint=ckpt, should_stop=stop)
    assert result.status == "stopped" and result.epochs_done == 1
    resumed = train(TINY, checkpoint=ckpt)
    assert deterministic(resumed.history) == deterministic(train(TINY).history)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    ckpt = tmp_path / "job.pt"
    ckpt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="job.pt.*corrupt"):
        train(TINY, checkpoint=ckpt)
    other = tmp_path / "other.pt"
    train(replace(TINY, seed=9), checkpoint=other, max_epochs=1)
    with pytest.raises(CheckpointError, match="belongs to no database .key .*, not to a run outside any database"):
        train(TINY, checkpoint=other)


def test_nan_loss_ends_as_diverged_not_a_crash():
    spec = replace(TINY, model=ModelConfig(depth=8, norm="none", residual_scale="tau", tau=1.0),
                   optim=OptimConfig(batch_size=64, lr=1e6))
    result = train(spec)
    assert result.status == "diverged"
    assert "epoch 1" in result.message
    assert not math.isfinite(result.history[-1]["train_loss"])


def test_iteration_schedule_ends_mid_epoch():
    spec = replace(TINY, schedule=ScheduleConfig(unit="iteration", length=10, milestones=(5,)))
    result = train(spec)  # 256 / 64 = 4 iterations per epoch -> epochs of 4, 4, 2
    assert [m["iterations"] for m in result.history] == [4, 8, 10]
    assert _length(spec.schedule, 4) == (10, 3)
    assert result.history[0]["lr"] == pytest.approx(0.1) and result.history[-1]["lr"] == pytest.approx(0.01)


def test_validation_split_adds_val_metrics():
    spec = replace(TINY, data=replace(TINY.data, val_size=64), schedule=replace(TINY.schedule, length=1, milestones=()))
    result = train(spec)
    assert {"val_loss", "val_error"} <= set(result.history[0])



ONE_EPOCH = replace(TINY.schedule, length=1, milestones=())


@pytest.mark.parametrize("model,val_size,scales", [
    (ModelConfig(depth=8), 0, set()),
    (ModelConfig(depth=8, residual_scale="rezero"), 64, {f"{ALPHA_PREFIX}stage{i}.block0" for i in (1, 2, 3)}),
    (ModelConfig(depth=8, norm="none", residual_scale="tau", tau=0.5, tau_mode="shared_learnable"), 0, {TAU}),
])
def test_train_emits_exactly_the_declared_metrics(model, val_size, scales):
    """Every name train records is one benchmark.vocabulary declares: what the reporter, the claims
    and the suite parser read."""
    spec = replace(TINY, model=model, data=replace(TINY.data, val_size=val_size), schedule=ONE_EPOCH)
    recorded = []
    result = train(spec, on_epoch=lambda e, m: recorded.append(set(m)))
    expected = set(EPOCH_METRICS) | (set(VAL_METRICS) if val_size else set()) | scales
    assert recorded == [expected] and set(result.history[0]) == expected
    assert all(is_known_metric(name) for name in expected)


def test_a_diverged_epoch_records_only_declared_metrics():
    spec = replace(TINY, model=ModelConfig(depth=8, norm="none", residual_scale="tau", tau=1.0),
                   optim=OptimConfig(batch_size=64, lr=1e6))
    result = train(spec)
    assert result.status == JobState.DIVERGED
    assert set(result.history[-1]) <= set(EPOCH_METRICS)

@pytest.mark.parametrize(
    "schedule, state, per_epoch, expected",
    [
        # He 2016 §4.2: 0.1, divided by 10 at 32k and 48k iterations
        (ScheduleConfig(unit="iteration", length=64000, milestones=(32000, 48000)), _State(iteration=31999), 391, 0.1),
        (ScheduleConfig(unit="iteration", length=64000, milestones=(32000, 48000)), _State(iteration=32000), 391, 0.01),
        (ScheduleConfig(unit="iteration", length=64000, milestones=(32000, 48000)), _State(iteration=48000), 391, 0.001),
        # tau-ResNet code: epochs, /10 at 100 and /100 at 150 (MultiStepLR stepped per epoch)
        (ScheduleConfig(unit="epoch", length=200, milestones=(100, 150)), _State(epoch=99, iteration=10**6), 391, 0.1),
        (ScheduleConfig(unit="epoch", length=200, milestones=(100, 150)), _State(epoch=100), 391, 0.01),
        (ScheduleConfig(unit="epoch", length=200, milestones=(100, 150)), _State(epoch=150), 391, 0.001),
        # He 2016b: 0.01 for the first 400 iterations
        (ScheduleConfig(warmup="constant", warmup_length=400), _State(iteration=399), 391, 0.01),
        (ScheduleConfig(warmup="constant", warmup_length=400), _State(iteration=400), 391, 0.1),
        # He 2016 ResNet-110: 0.01 until the training error is below 80 %
        (ScheduleConfig(warmup="until_error"), _State(iteration=5000, warming=True), 391, 0.01),
        (ScheduleConfig(warmup="until_error"), _State(iteration=5, warming=False), 391, 0.1),
        # ReZero-Cifar100: linear from 0 over the first epoch
        (ScheduleConfig(unit="epoch", warmup="linear", warmup_length=391), _State(iteration=0), 391, 0.0),
        (ScheduleConfig(unit="epoch", warmup="linear", warmup_length=391), _State(iteration=195), 391, 0.1 * 195 / 391),
    ],
)
def test_learning_rate_schedule(schedule, state, per_epoch, expected):
    spec = replace(TINY, schedule=schedule, optim=OptimConfig(lr=0.1))
    assert _lr(spec, state, per_epoch) == pytest.approx(expected)


def test_until_error_warmup_switches_back_once_training_error_drops():
    spec = replace(TINY, schedule=ScheduleConfig(unit="epoch", length=4, milestones=(), warmup="until_error",
                                                 warmup_until_error=0.8, warmup_lr=0.01),
                   data=replace(TINY.data, synthetic_train=512), optim=OptimConfig(batch_size=16, lr=0.1))
    result = train(spec)
    lrs = [m["lr"] for m in result.history]
    assert lrs[0] == pytest.approx(0.01) and lrs[-1] == pytest.approx(0.1)


def test_parameter_groups_encode_weight_decay_and_scalar_lr():
    spec = replace(TINY, model=ModelConfig(depth=8, norm="none", residual_scale="tau", tau=0.5, tau_mode="shared_learnable"),
                   optim=OptimConfig(weight_decay=1e-4, weight_decay_on="weights_only", scalar_lr_scale=0.1))
    opt = _optimizer(build_model(spec.model), spec)
    for group in opt.param_groups:
        scalar = all(p.numel() == 1 for p in group["params"])
        assert group["lr_scale"] == (0.1 if scalar else 1.0)
        assert group["weight_decay"] == (1e-4 if all(p.ndim > 1 for p in group["params"]) else 0.0)
