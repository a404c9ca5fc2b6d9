"""CIFAR readers on the real mini subsets in ../shared/data, the binary layout, and damaged files."""
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.data import DataError, read_cifar10, read_cifar100, resolve_data_dir
from benchmark.data.cifar import IMAGE_BYTES

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def shared():
    if not (SHARED / "cifar-10-batches-py").is_dir():
        pytest.skip(f"no real CIFAR subsets at {SHARED}")
    return SHARED


def write_cifar10_binary(x, y, path) -> None:
    """Write images and labels as one CIFAR-10 binary batch file: a label byte, then 3072 pixel bytes."""
    x = np.asarray(x, dtype=np.uint8).reshape(-1, IMAGE_BYTES)
    y = np.asarray(y, dtype=np.uint8).reshape(-1, 1)
    Path(path).write_bytes(np.concatenate([y, x], axis=1).tobytes())


@pytest.fixture(scope="module")
def c10(shared):
    return read_cifar10(shared, "train"), read_cifar10(shared, "test")


def raw(path, key="labels"):
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    return d[b"data"], d[key.encode()]


def test_cifar10_shapes_and_first_image(shared, c10):
    (x, y), (tx, ty) = c10
    assert x.shape == (5170, 3, 32, 32) and tx.shape == (1017, 3, 32, 32)
    assert x.dtype == torch.uint8 and y.dtype == torch.int64 and y.shape == (5170,) and ty.shape == (1017,)
    assert set(y.tolist()) == set(range(10)) and 0 <= ty.min() and ty.max() <= 9
    data, labels = raw(shared / "cifar-10-batches-py" / "data_batch_1")
    assert np.array_equal(x[0].numpy(), data[0].reshape(3, 32, 32))
    assert y[:5].tolist() == list(labels[:5])
    # second file starts right after the first one's 1102 images
    data2, labels2 = raw(shared / "cifar-10-batches-py" / "data_batch_2")
    assert np.array_equal(x[1102].numpy(), data2[0].reshape(3, 32, 32)) and y[1102] == labels2[0]
    tdata, tlabels = raw(shared / "cifar-10-batches-py" / "test_batch")
    assert np.array_equal(tx[-1].numpy(), tdata[-1].reshape(3, 32, 32)) and ty[-1] == tlabels[-1]


def test_cifar100_fine_labels(shared):
    x, y = read_cifar100(shared, "train")
    tx, ty = read_cifar100(shared, "test")
    assert x.shape == (486, 3, 32, 32) and tx.shape == (916, 3, 32, 32)
    assert y.dtype == torch.int64 and len(set(y.tolist())) == 99 and set(ty.tolist()) == set(range(100))
    data, fine = raw(shared / "cifar-100-python" / "train", "fine_labels")
    assert np.array_equal(x[0].numpy(), data[0].reshape(3, 32, 32)) and y.tolist() == list(fine)


def test_binary_layout_equals_pickle(tmp_path, shared, c10):
    (x, y), (tx, ty) = c10
    out = tmp_path / "cifar-10-batches-bin"
    out.mkdir()
    start = 0
    for i in range(1, 6):
        n = len(raw(shared / "cifar-10-batches-py" / f"data_batch_{i}")[1])
        write_cifar10_binary(x[start:start + n], y[start:start + n], out / f"data_batch_{i}.bin")
        start += n
    write_cifar10_binary(tx, ty, out / "test_batch.bin")
    bx, by = read_cifar10(tmp_path, "train")  # only the binary layout exists: auto falls back
    assert torch.equal(bx, x) and torch.equal(by, y)
    bx, by = read_cifar10(tmp_path, "test", layout="binary")
    assert torch.equal(bx, tx) and torch.equal(by, ty)


def test_python_layout_preferred(tmp_path, shared):
    shutil.copytree(shared / "cifar-10-batches-py", tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-bin").mkdir()
    write_cifar10_binary(torch.zeros(1, 3, 32, 32), torch.zeros(1), tmp_path / "cifar-10-batches-bin/test_batch.bin")
    assert len(read_cifar10(tmp_path, "test")[0]) == 1017


def test_missing_dataset_message(tmp_path):
    with pytest.raises(DataError) as e:
        read_cifar10(tmp_path, "train")
    msg = str(e.value)
    assert str(tmp_path) in msg and "cifar-10-batches-py" in msg and "bench data download cifar10" in msg
    with pytest.raises(DataError, match="cifar-100-python"):
        read_cifar100(tmp_path, "test")


def test_missing_file_named(tmp_path, shared):
    shutil.copytree(shared / "cifar-10-batches-py", tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3.*not found"):
        read_cifar10(tmp_path, "train")


def _one_file(tmp_path, name, content: bytes, folder="cifar-10-batches-py"):
    d = tmp_path / folder
    d.mkdir(exist_ok=True)
    (d / name).write_bytes(content)


def test_truncated_pickle(tmp_path, shared):
    blob = (shared / "cifar-10-batches-py" / "test_batch").read_bytes()
    _one_file(tmp_path, "test_batch", blob[: len(blob) // 2])
    with pytest.raises(DataError, match="test_batch.*truncated or corrupt"):
        read_cifar10(tmp_path, "test")


@pytest.mark.parametrize("content", [b"", b"not a pickle at all", pickle.dumps([1, 2, 3])])
def test_garbage_pickle(tmp_path, content):
    _one_file(tmp_path, "test", content, "cifar-100-python")
    with pytest.raises(DataError, match="cifar-100-python/test"):
        read_cifar100(tmp_path, "test")


def test_pickle_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    _one_file(tmp_path, "test_batch", pickle.dumps({"data": Evil(), "labels": []}))
    with pytest.raises(DataError, match="refusing to load global builtins.print"):
        read_cifar10(tmp_path, "test", layout="python")


@pytest.mark.parametrize("bad,match", [
    ({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}, "uint8 array N x 3072"),
    ({"data": np.zeros((2, 3072), np.float32), "labels": [0, 1]}, "uint8 array N x 3072"),
    ({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}, "2 images but 1 labels"),
    ({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}, r"labels must lie in 0..9"),
    ({"data": np.zeros((2, 3072), np.uint8)}, "expected keys"),
])
def test_bad_pickle_content(tmp_path, bad, match):
    _one_file(tmp_path, "test_batch", pickle.dumps(bad, protocol=2))
    with pytest.raises(DataError, match=match) as e:
        read_cifar10(tmp_path, "test", layout="python")
    assert "test_batch" in str(e.value)


def test_truncated_and_bad_binary(tmp_path):
    d = tmp_path / "cifar-10-batches-bin"
    d.mkdir()
    write_cifar10_binary(torch.zeros(2, 3, 32, 32), torch.tensor([1, 2]), d / "test_batch.bin")
    assert read_cifar10(tmp_path, "test")[1].tolist() == [1, 2]
    blob = (d / "test_batch.bin").read_bytes()
    (d / "test_batch.bin").write_bytes(blob[:-5])
    with pytest.raises(DataError, match=r"test_batch.bin: 6141 bytes .* 3073-byte records"):
        read_cifar10(tmp_path, "test")
    (d / "test_batch.bin").write_bytes(bytes([12]) + blob[1:])
    with pytest.raises(DataError, match=r"test_batch.bin: labels must lie in 0..9"):
        read_cifar10(tmp_path, "test")


def test_resolve_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir(None) == tmp_path / "env"
    monkeypatch.delenv("BENCH_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_dir() == tmp_path / "xdg" / "bench" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_dir() == tmp_path / "home" / ".cache" / "bench" / "data"
