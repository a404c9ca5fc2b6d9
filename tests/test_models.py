"""benchmark.models: parameter counts against the papers, every preset, every knob."""
from __future__ import annotations

import copy
import inspect
import math
import re
from dataclasses import replace

import pytest
import torch
from torch import nn

from benchmark.config import ModelConfig
from benchmark.models import (PRESETS, ModelConfigError, build_model, count_params, get_preset, list_models,
                              num_blocks, residual_scales)
from benchmark.models import registry
from benchmark.models.blocks import ZeroPadShortcut

# Presets too big for a CPU forward pass in a unit test: only built and counted.
HUGE = {name for name, cfg in PRESETS.items() if cfg.depth > 200}
# Exact counts for the presets too deep for a forward pass in a unit test, so they are still checked.
HUGE_PARAMS = {
    "resnet1202": 19_421_274,  # He 2016 Table 6: 19.4M (and akamaster's count)
    "tau_resnet1202": 19_421_274 + 96,  # + BatchNorm on the two downsampling shortcuts (16 and 32 channels)
    "tau_resnet1202_nobn": 19_334_043,  # no BN; 4 scalar biases per block and one shared tau
    "preact_resnet1001": 10_327_706,  # He 2016b Table 4 prints 10.2M, counting without BN (see below)
}


def printed(n: int) -> float:
    """A parameter count at the precision papers print it: 0.27M below 1M, 1.7M / 19.4M above."""
    return round(n / 1e6, 2) if n < 1e6 else round(n / 1e6, 1)


# ----------------------------------------------------------------------------------------------
# Published parameter counts


@pytest.mark.parametrize("depth,published", [(20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85), (110, 1.7),
                                             (1202, 19.4)])
def test_he2016_table6_params(depth: int, published: float) -> None:
    model = build_model(get_preset(f"resnet{depth}"))
    assert printed(count_params(model)) == published


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_plain_net_has_exactly_its_residual_twins_params(depth: int) -> None:
    plain, res = get_preset(f"plain{depth}"), get_preset(f"resnet{depth}")
    assert replace(plain, shortcut="A") == res
    assert count_params(build_model(plain)) == count_params(build_model(res))


@pytest.mark.parametrize("depth,baseline", [(20, 272_474), (56, 855_770), (110, 1_730_714)])
def test_option_b_and_rezero_exact_counts(depth: int, baseline: int) -> None:
    """fabio-deep/ReZero-ResNet README (option B post-activation): 272,474 / 855,770; ReZero adds one
    alpha per block (272,483 / 855,797). For 110 the README prints 1,730,768 (baseline) and 1,730,714
    (ReZero): the two rows are swapped, 1,730,714 is the option-B baseline and ReZero is +54."""
    cfg = ModelConfig(depth=depth, shortcut="B")
    assert count_params(build_model(cfg)) == baseline
    rz = build_model(replace(cfg, residual_scale="rezero"))
    assert count_params(rz) == baseline + num_blocks(cfg)


def test_akamaster_exact_counts() -> None:
    # akamaster resnet.py (option A): 269,722 for ResNet-20 (README: 0.27M).
    assert count_params(build_model(get_preset("resnet20"))) == 269_722
    assert count_params(build_model(get_preset("resnet1202"))) == 19_421_274


def test_he2016b_table4_params() -> None:
    # ResNet-164 (pre-act, bottleneck): 1.7M.
    assert printed(count_params(build_model(get_preset("preact_resnet164")))) == 1.7
    # ResNet-1001: printed 10.2M; we count 10.33M. Without the BN affine parameters it is 10.18M, so the
    # paper probably did not count them (Table 6 did: 1202 is 19.4M only with BN). Checked to 2 %.
    n = count_params(build_model(get_preset("preact_resnet1001")))
    assert abs(n / 10.2e6 - 1) < 0.02


def test_kuangliu_preact18_count() -> None:
    # kuangliu PreActResNet18 has 11,171,146 parameters for 10 classes; the CIFAR-100 head adds 512*90+90.
    assert count_params(build_model(replace(get_preset("preact_resnet18"), num_classes=10))) == 11_171_146
    assert count_params(build_model(get_preset("preact_resnet18"))) == 11_171_146 + 512 * 90 + 90


# ----------------------------------------------------------------------------------------------
# Every preset


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_builds_and_trains_one_step(name: str) -> None:
    cfg = get_preset(name)
    torch.manual_seed(0)
    model = build_model(cfg)
    if name in HUGE:
        assert count_params(model) == HUGE_PARAMS[name]  # a forward pass is too slow for a unit test
        return
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, cfg.num_classes)
    out.logsumexp(1).mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_list_models_and_registry() -> None:
    rows = {r["name"]: r for r in list_models()}
    assert set(rows) == set(PRESETS)
    for key in ("name", "depth", "params", "block", "order", "shortcut", "residual_scale"):
        assert all(key in r for r in rows.values())
    assert rows["resnet110"]["params"] == 1_727_962
    assert rows["preact_resnet50"]["num_classes"] == 100


# `bench models` before the registry became one function per preset (name, depth, params), in its
# order: nothing may be lost, renamed or changed.
BENCH_MODELS = [
    ('resnet20', 20, 269722),
    ('resnet32', 32, 464154),
    ('resnet44', 44, 658586),
    ('resnet56', 56, 853018),
    ('resnet110', 110, 1727962),
    ('resnet1202', 1202, 19421274),
    ('plain20', 20, 269722),
    ('plain32', 32, 464154),
    ('plain44', 44, 658586),
    ('plain56', 56, 853018),
    ('plain110', 110, 1727962),
    ('tau_resnet20', 20, 269818),
    ('tau_resnet32', 32, 464250),
    ('tau_resnet56', 56, 853114),
    ('tau_resnet110', 110, 1728058),
    ('tau_resnet1202', 1202, 19421370),
    ('tau_resnet20_nobn', 20, 268383),
    ('tau_resnet32_nobn', 32, 461943),
    ('tau_resnet56_nobn', 56, 849063),
    ('tau_resnet110_nobn', 110, 1720083),
    ('tau_resnet1202_nobn', 1202, 19334043),
    ('rezero_resnet20', 20, 269731),
    ('rezero_resnet56', 56, 853045),
    ('rezero_resnet110', 110, 1728016),
    ('preact_resnet110', 110, 1727962),
    ('preact_resnet164', 164, 1703258),
    ('preact_resnet1001', 1001, 10327706),
    ('preact_resnet18', 18, 11217316),
    ('rezero_preact_resnet18', 18, 11217324),
    ('tanh_rezero_preact_resnet18', 18, 11217324),
    ('preact_resnet50', 50, 23693476),
    ('rezero_preact_resnet50', 50, 23693492),
    ('tanh_rezero_preact_resnet50', 50, 23693492),
]


def test_registry_lists_what_bench_models_listed() -> None:
    assert list(PRESETS) == [name for name, _, _ in BENCH_MODELS]


@pytest.mark.parametrize("name,depth,params", BENCH_MODELS)
def test_every_preset_is_written_out(name: str, depth: int, params: int) -> None:
    rows = {r["name"]: r for r in list_models()}  # built and counted once (cached)
    assert (rows[name]["depth"], rows[name]["params"]) == (depth, params)
    source = inspect.getsource(registry)
    assert re.search(rf"^def {name}\(\) -> ModelConfig:", source, re.MULTILINE), f"grep {name} finds no function"


def test_get_preset_suggests() -> None:
    with pytest.raises(KeyError, match="did you mean .*resnet20"):
        get_preset("resnet21")


@pytest.mark.parametrize("name,L", [("resnet20", 9), ("resnet110", 54), ("resnet1202", 600),
                                    ("preact_resnet164", 54), ("preact_resnet18", 8), ("preact_resnet50", 16)])
def test_num_blocks(name: str, L: int) -> None:
    assert num_blocks(get_preset(name)) == L


def test_tau_resnet110_matches_readme() -> None:
    assert round(get_preset("tau_resnet110").tau, 3) == 0.136  # tau-ResNet README: --tau 0.136


# ----------------------------------------------------------------------------------------------
# Knobs


def small(**kw) -> ModelConfig:
    """Two blocks per stage: ResNet-14 (basic) or ResNet-20 (bottleneck)."""
    return ModelConfig(depth=kw.pop("depth", 14 if kw.get("block") != "bottleneck" else 20), **kw)


def test_option_a_is_parameter_free_and_zero_pads() -> None:
    model = build_model(small(shortcut="A"))
    sc = model.stages[1][0].shortcut
    assert isinstance(sc, ZeroPadShortcut) and count_params(sc) == 0
    x = torch.randn(2, 16, 8, 8)
    y = sc(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2])  # akamaster: planes//4 zeros on each side
    assert y[:, :8].abs().sum() == 0 and y[:, 24:].abs().sum() == 0
    avg = build_model(small(shortcut="A", shortcut_pool="avg")).stages[1][0].shortcut
    assert torch.allclose(avg(x)[:, 8:24], nn.functional.avg_pool2d(x, 2))


def test_shortcut_norm_adds_bn_on_downsampling_shortcut_only() -> None:
    base, normed = build_model(small()), build_model(small(shortcut_norm=True))
    assert count_params(normed) - count_params(base) == 2 * (16 + 32)
    assert isinstance(normed.stages[0][0].shortcut, nn.Identity)


def test_option_b_projects_only_when_shape_changes() -> None:
    post = build_model(small(shortcut="B"))
    kinds = [type(u.shortcut).__name__ for u in post.units()]
    assert kinds == ["Identity", "Identity", "Sequential", "Identity", "Sequential", "Identity"]  # 1x1 conv+BN
    pre = build_model(small(shortcut="B", order="pre"))
    assert isinstance(pre.stages[1][0].shortcut, nn.Conv2d)  # no BN in pre-activation (kuangliu)
    bott = build_model(small(block="bottleneck", shortcut="B", order="pre"))
    assert isinstance(bott.stages[0][0].shortcut, nn.Conv2d)  # 16 -> 64 channels in stage 1


def test_plain_net_has_no_shortcut() -> None:
    model = build_model(small(shortcut="none"))
    assert all(u.shortcut is None for u in model.units())


def test_post_and_pre_structure() -> None:
    post, pre = build_model(small()), build_model(small(order="pre"))
    assert len(post.stem) == 3 and len(pre.stem) == 1  # conv-BN-ReLU vs a bare conv (He 2016b)
    assert isinstance(pre.head_norm, nn.Sequential)  # final BN-ReLU
    assert isinstance(build_model(small(order="pre", final_norm=False)).head_norm, nn.Identity)
    assert count_params(pre) == count_params(post)  # same BNs, moved


def test_bottleneck_shapes() -> None:
    model = build_model(small(block="bottleneck"))
    assert model.fc.in_features == 64 * 4
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("order", ["post", "pre"])
def test_fixed_tau_scales_the_branch(order: str) -> None:
    cfg = small(order=order, residual_scale="tau", tau=0.25)
    model = build_model(cfg).eval()
    unit = model.stages[0][1]  # keeps the shape, not the first unit
    x = torch.randn(2, 16, 8, 8)
    a = unit.preact(x) if unit.preact is not None else x
    expected = 0.25 * unit.branch(a) + x
    expected = torch.relu(expected) if order == "post" else expected
    assert torch.allclose(unit(x), expected)
    assert residual_scales(model) == {}


def test_shared_learnable_tau_gradient_is_averaged_over_blocks() -> None:
    cfg = small(residual_scale="tau", tau=0.3, tau_mode="shared_learnable")
    torch.manual_seed(0)
    model = build_model(cfg)
    L = num_blocks(cfg)
    assert sum(p is model.tau for p in model.parameters()) == 1 and count_params(model) == count_params(
        build_model(small())) + 1
    x = torch.randn(2, 3, 32, 32)
    model(x).square().mean().backward()
    averaged = model.tau.grad.clone()
    # Reference: the plain sum over blocks (tau used directly in every block).
    model.zero_grad()
    h = model.stem(x)
    for unit in model.units():
        h = unit(h, model.tau)
    model.fc(model.pool(h).flatten(1)).square().mean().backward()
    assert torch.allclose(averaged, model.tau.grad / L)
    assert averaged.abs().item() > 0
    assert residual_scales(model) == {"tau": pytest.approx(0.3)}
    # No hook to lose: a deep copy (EMA, checkpoint tooling) averages the same way.
    twin = copy.deepcopy(model)
    twin.zero_grad()
    twin(x).square().mean().backward()
    assert torch.allclose(twin.tau.grad, averaged)


@pytest.mark.parametrize("scale", ["rezero", "tanh_rezero"])
@pytest.mark.parametrize("order", ["post", "pre"])
def test_rezero_block_is_identity_at_init(scale: str, order: str) -> None:
    model = build_model(small(order=order, residual_scale=scale))
    unit = model.stages[0][1]
    x = torch.randn(2, 16, 8, 8)
    assert torch.equal(unit(x), x)
    scales = residual_scales(model)
    assert list(scales) == [f"alpha.stage{i}.block{j}" for i in (1, 2, 3) for j in (0, 1)]
    assert all(v == 0.0 for v in scales.values())
    with torch.no_grad():
        unit.alpha.fill_(1.0)
    expected = math.tanh(1.0) if scale == "tanh_rezero" else 1.0
    assert residual_scales(model)["alpha.stage1.block1"] == pytest.approx(expected)


def test_post_rezero_has_no_relu_after_addition() -> None:
    unit = build_model(small(residual_scale="rezero")).stages[0][1].eval()
    with torch.no_grad():
        unit.alpha.fill_(0.5)
    x = -torch.rand(2, 16, 8, 8)  # negative input survives: no ReLU after the addition
    assert torch.allclose(unit(x), 0.5 * torch.relu(unit.branch(x)) + x)


@pytest.mark.parametrize("shares", [True, False])
def test_first_preact_unit_shortcut_input(shares: bool) -> None:
    model = build_model(small(order="pre", residual_scale="rezero", first_unit_shares_preact=shares)).eval()
    unit = model.stages[0][0]
    x = torch.randn(2, 16, 8, 8)
    expected = unit.preact(x) if shares else x  # He 2016b vs kuangliu
    assert torch.equal(unit(x), expected)


def test_norm_none_is_tau_resnet_nobn() -> None:
    cfg = small(norm="none", residual_scale="tau", tau=0.5, tau_mode="shared_learnable")
    model = build_model(cfg)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    biases = [n for n, _ in model.named_parameters() if n.endswith("bias") and "bias" in n.split(".")[-2]]
    assert len(biases) == 4 * num_blocks(cfg)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_init_modes() -> None:
    torch.manual_seed(0)
    fan_out = build_model(ModelConfig(depth=20))
    w = fan_out.stages[2][1].branch.conv2.weight  # 64 -> 64, 3x3
    assert w.std().item() == pytest.approx(math.sqrt(2 / (9 * 64)), rel=0.05)
    w = build_model(ModelConfig(depth=20, init="he_fan_in")).stages[1][0].branch.conv1.weight  # 16 -> 32
    assert w.std().item() == pytest.approx(math.sqrt(2 / (9 * 16)), rel=0.05)
    biased = build_model(ModelConfig(depth=8, conv_bias=True, init="torch_default"))
    assert biased.stages[0][0].branch.conv1.bias is not None
    zg = build_model(small(zero_init_last_norm=True))
    assert all(u.branch.bn2.weight.abs().sum() == 0 for u in zg.units())
    assert all(u.branch.bn1.weight.eq(1).all() for u in zg.units())


def test_same_seed_same_weights() -> None:
    def weights(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        return build_model(ModelConfig(depth=20)).state_dict()

    a, b, c = weights(1), weights(1), weights(2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("kw,match", [
    (dict(depth=21), "valid nearby: 20, 26"),
    (dict(depth=21, block="bottleneck"), r"9n\+2.*valid nearby: 20, 29"),
    (dict(depth=2), "valid nearby: 8"),
    (dict(depth=18, stages=(2, 2, 2)), "does not match stages"),
    (dict(depth=18, stages=(2, 2), widths=(16, 32, 64)), "one positive block count per width"),
    (dict(residual_scale="tau"), "needs tau"),
    (dict(tau=0.1), "tau=0.1 is set"),
    (dict(tau_mode="shared_learnable"), "needs residual_scale='tau'"),
    (dict(residual_scale="rezero", shortcut="none"), "alpha=0"),
    (dict(residual_scale="rezero", norm="none"), "not implemented"),
    (dict(norm="none", order="pre"), "order='post'"),
    (dict(norm="none", shortcut_norm=True), "no BatchNorm"),
    (dict(shortcut="B", shortcut_norm=True), "needs shortcut='A'"),
    (dict(shortcut="B", shortcut_pool="avg"), "only applies to option A"),
    (dict(final_norm=False), "only applies to order='pre'"),
    (dict(init="torch_default", init_linear=True), "init_linear"),
])
def test_invalid_configs_raise(kw: dict, match: str) -> None:
    with pytest.raises(ModelConfigError, match=match):
        build_model(ModelConfig(**kw))
    assert issubclass(ModelConfigError, ValueError)
