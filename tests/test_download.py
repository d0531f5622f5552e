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


def cut_reply_server(reply: bytes, reset: bool = False) -> str:
    """A one-shot server that sends ``reply`` and hangs up (with a TCP reset if ``reset``)."""
    import socket
    import struct
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def answer():
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(reply)
        if reset:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        listener.close()

    threading.Thread(target=answer, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}/"


@pytest.mark.parametrize("reply, reset, words", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100, False, "cut off after 100 of 1000 bytes"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n100\r\n" + b"x" * 50, False, r"cut off after 50 bytes \(IncompleteRead\)"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3000000\r\n\r\n" + b"x" * 100_000, True, "Connection reset by peer"),
], ids=["short-content-length", "cut-mid-chunk", "connection-reset"])
def test_a_reply_cut_off_is_one_line_and_leaves_no_partial_file(monkeypatch, tmp_path, capsys, reply, reset, words):
    from conftest import run_cli
    info = catalog.DATASETS["mnist"]
    monkeypatch.setitem(catalog.DATASETS, "mnist", dataclasses.replace(info, mirrors=()))
    monkeypatch.setenv("NORMLAB_MIRROR", cut_reply_server(reply, reset))
    monkeypatch.delenv("NORMLAB_OFFLINE")
    assert run_cli("train", "--norm", "bn", "--dataset", "mnist", "--epochs", "1", "--out", tmp_path / "run") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("normlab train: error: MNIST not found: offline or the mirrors failed")
    assert not any("Traceback" in line for line in err)
    assert __import__("re").search(words, err[-1]), err[-1]
    folder = cache_dir() / "mnist"
    assert not [p for p in folder.iterdir() if p.is_file()], "a partial download was left behind"


def test_a_mirror_without_a_scheme_says_how_to_write_it(monkeypatch, tmp_path, capsys):
    from conftest import run_cli
    monkeypatch.setenv("NORMLAB_MIRROR", "localhost:8000/")
    monkeypatch.delenv("NORMLAB_OFFLINE")
    assert run_cli("train", "--norm", "bn", "--dataset", "mnist", "--epochs", "1", "--out", tmp_path / "run") == 2
    err = capsys.readouterr().err.strip()
    assert err == ("normlab train: error: NORMLAB_MIRROR='localhost:8000/' is not a URL; "
                   "write it with its scheme, e.g. NORMLAB_MIRROR=http://localhost:8000/"), err


def test_an_archive_that_is_not_a_tar_is_one_line(tmp_path, capsys):
    from conftest import run_cli
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"<html>this is an error page, not an archive</html>")
    assert run_cli("train", "--norm", "bn", "--dataset", "cifar10", "--data-dir", tmp_path, "--epochs", "1",
                   "--out", tmp_path / "run") == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("cifar-10-python.tar.gz is not a tar archive (plain, gzip, bz2 or xz); delete it and download it again")
    assert "\n" not in err, err


def serve(folder, handler_class=None):
    handler = functools.partial(handler_class or http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.func.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/"


def test_a_mirror_with_a_wrong_file_is_passed_over_for_the_next(server, monkeypatch, tmp_path):
    """$NORMLAB_MIRROR serving another file stopped the download: the official mirror was never tried."""
    root, good = server
    (tmp_path / "wrong").mkdir()
    for path in root.iterdir():
        (tmp_path / "wrong" / path.name).write_bytes(b"<html>not the file</html>")
    httpd, wrong = serve(tmp_path / "wrong")
    try:
        served_catalog(monkeypatch, root)
        info = catalog.DATASETS["mnist"]
        monkeypatch.setitem(catalog.DATASETS, "mnist", dataclasses.replace(info, mirrors=(good,)))
        monkeypatch.setenv("NORMLAB_MIRROR", wrong)
        monkeypatch.delenv("NORMLAB_OFFLINE")
        assert len(load_dataset("mnist", "train")) == 50
    finally:
        httpd.shutdown()


def test_a_trickling_mirror_is_given_up(monkeypatch, tmp_path):
    """Each read had a timeout, the download none: a byte every few seconds held a run forever."""
    import time
    from normlab.data import sources

    class Trickle(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            try:
                for _ in range(200):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:
                pass

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(sources, "RATE_GRACE_S", 0.5)
        info = catalog.DATASETS["mnist"]
        monkeypatch.setitem(catalog.DATASETS, "mnist", dataclasses.replace(info, mirrors=()))
        monkeypatch.setenv("NORMLAB_MIRROR", f"http://127.0.0.1:{httpd.server_address[1]}/")
        monkeypatch.delenv("NORMLAB_OFFLINE")
        started = time.monotonic()
        with pytest.raises(UserError, match=r"offline or the mirrors failed .*too slow: \d+ bytes in 1 s, under 10 kB/s"):
            load_dataset("mnist", "train")
        assert time.monotonic() - started < 5
        assert not [p for p in (cache_dir() / "mnist").iterdir() if p.name.endswith(".part")]
    finally:
        httpd.shutdown()


def test_a_file_mirror_whose_file_is_a_pipe_is_refused(monkeypatch, tmp_path):
    import os
    (tmp_path / "mirror").mkdir()
    for f in catalog.DATASETS["mnist"].remote:
        os.mkfifo(tmp_path / "mirror" / f.name)
    info = catalog.DATASETS["mnist"]
    monkeypatch.setitem(catalog.DATASETS, "mnist", dataclasses.replace(info, mirrors=()))
    monkeypatch.setenv("NORMLAB_MIRROR", (tmp_path / "mirror").as_uri())
    monkeypatch.delenv("NORMLAB_OFFLINE")
    with pytest.raises(UserError, match="offline or the mirrors failed .*train-images-idx3-ubyte.gz is not a regular file"):
        load_dataset("mnist", "train")
