"""Data configs that could only fail once a job runs are refused when the suite is parsed."""
import pytest

from benchmark.suite import SuiteError, parse_suite

SUITE = """
[suite]
name = "t"
seeds = [0]
[defaults.data]
{data}
[defaults.schedule]
unit = "epoch"
length = 2
milestones = [1]
[[entry]]
label = "r8"
model.depth = 8
"""

BAD = [
    ("pad", 'pad = -1'),
    ("pad", 'pad = 32\npad_mode = "reflect"'),
    ("flip_p", "flip_p = 1.5"),
    ("affine_p", "affine_p = -0.1"),
    ("shift", "shift = -0.1"),
    ("scale", "scale = -0.1"),
    ("rotate", "rotate = -1.0"),
    ("mean", 'normalize = "per_pixel_mean"\nmean = [0.5, 0.5, 0.5]'),
    ("std", 'normalize = "channel_mean"\nstd = [0.5, 0.5, 0.5]'),
    ("mean", 'normalize = "channel_mean"\nmean = [0.5, 0.5]'),
    ("std", 'normalize = "channel_mean_std"\nmean = [0.5, 0.5, 0.5]\nstd = [0.5]'),
    ("mean", 'normalize = "channel_mean_std"\nmean = [0.5, 0.5, 0.5]'),
    ("val_size", 'dataset = "synthetic"\nsynthetic_train = 100\nval_size = 100'),
    ("val_size", 'dataset = "cifar10"\nval_size = 50000'),
    ("train_size", "train_size = 0"),
    ("test_size", "test_size = 0"),
    ("train_size", 'dataset = "synthetic"\nsynthetic_train = 100\nval_size = 10\ntrain_size = 91'),
]


def parse(data: str):
    return parse_suite(SUITE.format(data=data), "suites/test.toml")


@pytest.mark.parametrize("key,data", BAD, ids=[d.replace("\n", ",") for _, d in BAD])
def test_bad_data_config_is_refused_naming_the_key(key, data):
    with pytest.raises(SuiteError, match=rf"data\.{key}:"):
        parse(data)


def test_good_edge_values_pass():
    parse('pad = 31\npad_mode = "reflect"\nflip_p = 1.0\naffine_p = 0.0')
    parse('dataset = "synthetic"\nsynthetic_train = 100\nval_size = 99\ntrain_size = 1')
