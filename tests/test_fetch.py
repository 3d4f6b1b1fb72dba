"""fetch_movielens against a local HTTP server on 127.0.0.1 (no internet in tests)."""

import hashlib
import http.server
import io
import threading
import zipfile

import pytest

from fastmf.datasets import fetch_movielens

U_DATA = "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n"


def make_zip():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.writestr("ml-100k/u.data", U_DATA)
        bundle.writestr("ml-100k/README", "test archive")
    return buffer.getvalue()


class Server:
    """Serves a payload at any /*.zip path (and its MD5 at /*.zip.md5); loopback only."""

    def __init__(self, payload):
        self.payload, self.hits = payload, 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path.endswith(".md5"):
                    body = f"MD5 ({self.path}) = {hashlib.md5(outer.payload).hexdigest()}\n"
                    body = body.encode()
                else:
                    outer.hits += 1
                    body = outer.payload
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def archive():
    payload = make_zip()
    return payload, hashlib.md5(payload).hexdigest()


def test_download_once_then_cache_then_offline(tmp_path, archive):
    payload, md5 = archive
    server = Server(payload)
    try:
        data, timestamps = fetch_movielens(
            "100k", tmp_path, base_url=server.url, md5=md5, timeout=10
        )
        assert len(data.rows) == 3 and timestamps.tolist()[0] == 881250949
        assert server.hits == 1
        fetch_movielens("100k", tmp_path, base_url=server.url, md5=md5, timeout=10)
        assert server.hits == 1  # cache hit: no second download
    finally:
        server.stop()
    # Offline (server gone): the cached archive still loads.
    data, _ = fetch_movielens("100k", tmp_path, base_url=server.url, md5=md5, timeout=2)
    assert data.shape == (3, 3)


def test_corrupted_download_fails_clearly_and_caches_nothing(tmp_path, archive):
    payload, md5 = archive
    server = Server(payload[:-10] + b"corrupted!")
    try:
        with pytest.raises(ValueError, match="checksum mismatch.*Nothing was cached"):
            fetch_movielens("100k", tmp_path, base_url=server.url, md5=md5, timeout=10)
    finally:
        server.stop()
    assert list(tmp_path.iterdir()) == []  # no archive, no partial file


def test_cache_folder_from_environment_and_bad_variant(tmp_path, archive, monkeypatch):
    payload, md5 = archive
    monkeypatch.setenv("FASTMF_DATA", str(tmp_path / "cache"))
    server = Server(payload)
    try:
        fetch_movielens("100k", base_url=server.url, md5=md5, timeout=10)
    finally:
        server.stop()
    assert (tmp_path / "cache" / "ml-100k.zip").exists()
    with pytest.raises(ValueError, match="variant must be one of"):
        fetch_movielens("7m")


def test_published_md5_sidecar_is_used_when_no_checksum_is_pinned(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.writestr("ml-32m/ratings.csv", "userId,movieId,rating,timestamp\n1,2,4.5,1000\n")
    server = Server(buffer.getvalue())
    try:
        data, timestamps = fetch_movielens("32m", tmp_path, base_url=server.url, timeout=10)
    finally:
        server.stop()
    assert data.values.tolist() == [4.5] and timestamps.tolist() == [1000]
