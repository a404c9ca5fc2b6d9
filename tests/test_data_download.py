"""Download from a loopback HTTP server: checksum, safe extraction, locking. Never the internet."""
import functools
import hashlib
import http.server
import io
import pickle
import tarfile
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.data import DataError, download, read_cifar10
from benchmark.data.download import check_members


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """(base_url, served folder, list of requested paths) for a thread-run server on 127.0.0.1."""
    root = tmp_path / "www"
    root.mkdir()
    hits = []

    class Handler(_Quiet):
        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", root, hits
    finally:
        httpd.shutdown()
        httpd.server_close()
        t.join(5)


def _pickle_batch(n, seed):
    rng = np.random.default_rng(seed)
    d = {"batch_label": "tiny", "labels": rng.integers(0, 10, n).tolist(),
         "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
    return pickle.dumps(d, protocol=2)


def _add(tar, name, data=b"", **attrs):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in attrs.items():
        setattr(info, k, v)
    tar.addfile(info, io.BytesIO(data) if data else None)


def make_archive(path: Path, extra=()) -> str:
    """A tiny cifar-10-python.tar.gz in the official layout (3 images per file); returns its MD5."""
    with tarfile.open(path, "w:gz") as tar:
        _add(tar, "cifar-10-batches-py", type=tarfile.DIRTYPE, mode=0o755)
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        for i, name in enumerate(names):
            _add(tar, f"cifar-10-batches-py/{name}", _pickle_batch(3, i))
        _add(tar, "cifar-10-batches-py/batches.meta", pickle.dumps({"label_names": list("abcdefghij")}))
        for e in extra:
            _add(tar, **e)
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_download_extract_and_read(server, tmp_path):
    url, www, hits = server
    md5 = make_archive(www / "cifar-10-python.tar.gz")
    data = tmp_path / "data"
    seen = []
    folder = download("cifar10", data, base_url=url, md5=md5, progress=lambda d, t: seen.append((d, t)))
    assert folder == data / "cifar-10-batches-py"
    x, y = read_cifar10(data, "train")
    assert x.shape == (15, 3, 32, 32) and x.dtype == torch.uint8
    size = (www / "cifar-10-python.tar.gz").stat().st_size
    assert seen[-1] == (size, size)
    assert sorted(p.name for p in data.iterdir()) == [".cifar10.lock", "cifar-10-batches-py"]  # no temp left
    download("cifar10", data, base_url=url, md5=md5)  # already there: no second request
    assert hits == ["/cifar-10-python.tar.gz"]


def test_base_url_from_env(server, tmp_path, monkeypatch):
    url, www, hits = server
    md5 = make_archive(www / "cifar-10-python.tar.gz")
    monkeypatch.setenv("BENCH_DATA_URL", url)
    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "envdata"))
    download("cifar10", md5=md5)
    assert (tmp_path / "envdata" / "cifar-10-batches-py" / "test_batch").is_file()


def test_bad_md5_rejected(server, tmp_path):
    url, www, _ = server
    make_archive(www / "cifar-10-python.tar.gz")  # the official md5 is expected: mismatch
    data = tmp_path / "data"
    with pytest.raises(DataError, match="MD5 .* does not match the expected c58f30108f718f92721af3b95e74349a"):
        download("cifar10", data, base_url=url)
    assert [p.name for p in data.iterdir()] == [".cifar10.lock"]


def test_http_error(server, tmp_path):
    url, _, _ = server
    with pytest.raises(DataError, match="HTTP 404"):
        download("cifar100", tmp_path / "data", base_url=url)


def test_unreachable(tmp_path):
    with pytest.raises(DataError, match="download failed"):
        download("cifar10", tmp_path / "data", base_url="http://127.0.0.1:9/", timeout=5)


def test_archive_missing_files(server, tmp_path):
    url, www, _ = server
    with tarfile.open(www / "cifar-10-python.tar.gz", "w:gz") as tar:
        _add(tar, "cifar-10-batches-py/test_batch", _pickle_batch(2, 0))
    md5 = hashlib.md5((www / "cifar-10-python.tar.gz").read_bytes()).hexdigest()
    with pytest.raises(DataError, match="lacks cifar-10-batches-py/data_batch_1"):
        download("cifar10", tmp_path / "data", base_url=url, md5=md5)
    assert not (tmp_path / "data" / "cifar-10-batches-py").exists()


ABS = f"/tmp/bench-evil-{uuid.uuid4().hex}"


@pytest.mark.parametrize("member", [
    dict(name="../evil", data=b"x"),
    dict(name="cifar-10-batches-py/../../evil", data=b"x"),
    dict(name=ABS, data=b"x"),
    dict(name="cifar-10-batches-py/link", type=tarfile.SYMTYPE, linkname="../../evil"),
    dict(name="cifar-10-batches-py/abslink", type=tarfile.SYMTYPE, linkname="/etc/passwd"),
    dict(name="cifar-10-batches-py/hard", type=tarfile.LNKTYPE, linkname="../evil"),
    dict(name="cifar-10-batches-py/dev", type=tarfile.CHRTYPE),
], ids=["dotdot", "nested-dotdot", "absolute", "symlink", "abs-symlink", "hardlink", "device"])
def test_unsafe_archive_rejected(server, tmp_path, member):
    url, www, _ = server
    md5 = make_archive(www / "cifar-10-python.tar.gz", extra=[member])
    data = tmp_path / "data"
    with pytest.raises(DataError, match="refusing to extract"):
        download("cifar10", data, base_url=url, md5=md5)
    assert not (tmp_path / "evil").exists() and not Path(ABS).exists()
    assert [p.name for p in data.iterdir()] == [".cifar10.lock"]  # nothing extracted, temp files gone


def test_safe_links_allowed():
    ok = tarfile.TarInfo("cifar-10-batches-py/alias")
    ok.type, ok.linkname = tarfile.SYMTYPE, "test_batch"
    check_members([ok], "a.tar.gz")


def test_concurrent_downloads_share_one_fetch(server, tmp_path):
    url, www, hits = server
    md5 = make_archive(www / "cifar-10-python.tar.gz")
    data = tmp_path / "data"
    errors = []

    def go():
        try:
            download("cifar10", data, base_url=url, md5=md5)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=go) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and hits == ["/cifar-10-python.tar.gz"]
    assert read_cifar10(data, "test")[0].shape == (3, 3, 32, 32)
