"""Downloads against a local HTTP server on 127.0.0.1: MD5 good, MD5 bad, server down."""

import dataclasses
import functools
import http.server
import threading

import pytest

from conftest import make_idx_dataset
from normlab.data import catalog, load_dataset
from normlab.data.sources import cache_dir, md5sum
from normlab.errors import UserError


@pytest.fixture
def server(tmp_path):
    root = make_idx_dataset(tmp_path / "served", n_train=50, n_test=20)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


def served_catalog(monkeypatch, root, bad: str | None = None):
    """MNIST's catalog entry with the served files' MD5s (one spoiled if ``bad``), no real mirrors."""
    info = catalog.DATASETS["mnist"]
    remote = tuple(catalog.RemoteFile(f.name, "0" * 32 if f.name == bad else md5sum(root / f.name)) for f in info.remote)
    monkeypatch.setitem(catalog.DATASETS, "mnist", dataclasses.replace(info, remote=remote, mirrors=()))


def test_download_with_good_checksums(server, monkeypatch):
    root, url = server
    served_catalog(monkeypatch, root)
    monkeypatch.setenv("NORMLAB_MIRROR", url)
    monkeypatch.delenv("NORMLAB_OFFLINE")
    ds = load_dataset("mnist", "train")
    assert len(ds) == 50
    assert (cache_dir() / "mnist" / "train-images-idx3-ubyte.gz").read_bytes() == (root / "train-images-idx3-ubyte.gz").read_bytes()
    # Found in the cache next time: no server needed.
    monkeypatch.setenv("NORMLAB_OFFLINE", "1")
    assert len(load_dataset("mnist", "test")) == 20


def test_bad_checksum_is_refused_and_deleted(server, monkeypatch):
    root, url = server
    served_catalog(monkeypatch, root, bad="t10k-images-idx3-ubyte.gz")
    monkeypatch.setenv("NORMLAB_MIRROR", url)
    monkeypatch.delenv("NORMLAB_OFFLINE")
    with pytest.raises(UserError, match=r"t10k-images-idx3-ubyte.gz but its MD5 is [0-9a-f]{32}, expected 0{32}; the file was deleted"):
        load_dataset("mnist", "train")
    folder = cache_dir() / "mnist"
    assert not (folder / "t10k-images-idx3-ubyte.gz").exists()
    assert not [p for p in folder.iterdir() if p.name.endswith(".part")]


def test_unreachable_mirror_says_offline(monkeypatch, tmp_path):
    info = catalog.DATASETS["mnist"]
    monkeypatch.setitem(catalog.DATASETS, "mnist", dataclasses.replace(info, mirrors=()))
    monkeypatch.setenv("NORMLAB_MIRROR", "http://127.0.0.1:9/")   # the discard port: connection refused
    monkeypatch.delenv("NORMLAB_OFFLINE")
    with pytest.raises(UserError, match="MNIST not found: offline or the mirrors failed .*127.0.0.1:9"):
        load_dataset("mnist", "train")


def test_bad_checksum_through_the_command_line(server, monkeypatch, tmp_path, capsys):
    from conftest import run_cli
    root, url = server
    served_catalog(monkeypatch, root, bad="train-labels-idx1-ubyte.gz")
    monkeypatch.setenv("NORMLAB_MIRROR", url)
    monkeypatch.delenv("NORMLAB_OFFLINE")
    out = tmp_path / "run"
    assert run_cli("compare", "--dataset", "mnist", "--epochs", "1", "--out", out) == 2
    # stderr also holds the local server's request log and the download bar; the error is the last line.
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("normlab compare: error: downloaded ") and "Traceback" not in err
    assert "train-labels-idx1-ubyte.gz but its MD5 is" in last and "the file was deleted" in last and "$NORMLAB_MIRROR" in last
    folder = cache_dir() / "mnist"
    assert not (folder / "train-labels-idx1-ubyte.gz").exists() and not list(folder.glob(".*.part"))
    assert not out.exists()


def test_a_corrupt_file_in_the_cache_is_fetched_again(server, monkeypatch):
    root, url = server
    served_catalog(monkeypatch, root)
    monkeypatch.setenv("NORMLAB_MIRROR", url)
    monkeypatch.delenv("NORMLAB_OFFLINE")
    folder = cache_dir() / "mnist"
    folder.mkdir(parents=True)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(b"half a download from an old version")
    assert len(load_dataset("mnist", "test")) == 20
    assert md5sum(folder / "t10k-labels-idx1-ubyte.gz") == md5sum(root / "t10k-labels-idx1-ubyte.gz")
