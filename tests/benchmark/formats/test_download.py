"""Checkpoint downloads against a real HTTP server on loopback, serving the real .tgz archives."""

import hashlib
import io
import json
import socket
import subprocess
import sys
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from benchmark.formats.checkpoint import CheckpointError, open_checkpoint
from benchmark.formats.download import fetch
from tests.helpers import ENV, SLIM_2017, need


class Server:
    """Serves `files` with HTTP Range support, an ETag per content and If-Range (a range of a file
    that changed since is answered with the whole file, as HTTP says); `cut` cuts the first response
    after that many bytes (a dropped connection)."""

    def __init__(self, files: dict[str, bytes], cut: int | None = None):
        self.files, self.cut, self.requests = files, cut, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404, "Not Found")
                    return
                start = 0
                etag = f'"{hashlib.sha256(data).hexdigest()[:16]}"'
                if_range = self.headers.get("If-Range")
                if self.headers.get("Range") and (if_range is None or if_range == etag):
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("ETag", etag)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if server.cut is not None and len(server.requests) == 1:
                    self.wfile.write(body[:server.cut])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)  # the connection drops mid-file
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def archive_bytes() -> tuple[str, bytes]:
    path = need(SLIM_2017 / "mobilenet_v1_0.25_128_frozen.tgz")
    return path.name, path.read_bytes()


@pytest.fixture
def served():
    servers = []

    def start(**kwargs):
        name, data = archive_bytes()
        server = Server({f"/files/{name}": data}, **kwargs)
        servers.append(server)
        return server, f"{server.url}/files/{name}", data

    yield start
    for s in servers:
        s.close()


def test_download_verify_and_reuse(served, tmp_path):
    server, url, data = served()
    md5 = hashlib.md5(data).hexdigest()
    path = fetch(url, tmp_path, md5=md5, progress=False)
    assert path.read_bytes() == data and not list(tmp_path.glob("*.part"))
    assert open_checkpoint(path).member == "mobilenet_v1_0.25_128/frozen_graph.pb"
    assert fetch(url, tmp_path, md5=md5, progress=False) == path
    assert len(server.requests) == 1  # the second use did not download again


def test_resume_after_a_cut_connection(served, tmp_path):
    server, url, data = served(cut=1_000_000)
    path = fetch(url, tmp_path, md5=hashlib.md5(data).hexdigest(), progress=False)
    assert path.read_bytes() == data
    assert server.requests[1][1] == "bytes=1000000-"  # the second request resumed where it broke


def test_checksum_mismatch_is_refused_and_not_kept(served, tmp_path):
    _, url, _ = served()
    with pytest.raises(CheckpointError, match="md5 .* does not match the published 0+"):
        fetch(url, tmp_path, md5="0" * 32, progress=False)
    assert not any(tmp_path.iterdir())


def test_without_published_checksum_the_first_sha256_is_recorded(served, tmp_path, capsys):
    _, url, data = served()
    path = fetch(url, tmp_path, progress=False)
    sha = hashlib.sha256(data).hexdigest()
    assert sha in capsys.readouterr().err
    assert (tmp_path / (path.name + ".sha256")).read_text().split()[0] == sha
    path.write_bytes(data[:-1] + b"x")  # the file changes afterwards
    with pytest.raises(CheckpointError, match="differs from .* recorded"):
        fetch(url, tmp_path, progress=False)


def test_http_error_and_server_down(served, tmp_path):
    server, url, _ = served()
    with pytest.raises(CheckpointError, match=r"cannot download .*/nothing.pb: HTTP 404.*put it at"):
        fetch(f"{server.url}/nothing.pb", tmp_path, progress=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    with pytest.raises(CheckpointError, match=r"cannot download http://127.0.0.1:\d+/m.tgz: .*by hand"):
        fetch(f"http://127.0.0.1:{port}/m.tgz", tmp_path, progress=False, timeout=2, retries=2)


def test_path_escaping_archive_is_refused(tmp_path):
    path = tmp_path / "evil.tgz"
    with tarfile.open(path, "w:gz") as tar:
        for name in ("frozen.pb", "../../etc/evil"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(CheckpointError, match="'../../etc/evil' escapes the archive's folder: refused"):
        open_checkpoint(path)


@pytest.mark.slow
def test_cli_runs_from_a_url(served, samples_dir, tmp_path):
    _, url, _ = served()
    results = tmp_path / "r.json"
    env = dict(ENV)
    proc = subprocess.run([sys.executable, "-m", "benchmark", f"model.checkpoint={url}",
                           f"dataset.root={samples_dir}", "dataset.limit=16", f"cache_dir={tmp_path}",
                           f"checkpoint_dir={tmp_path / 'ckpt'}", f"results_file={results}", "progress=false"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(results.read_text())
    assert r["checkpoint"]["path"] == str(tmp_path / "ckpt" / "mobilenet_v1_0.25_128_frozen.tgz")
    assert r["total"] == 16


def test_a_part_belongs_to_its_url_and_its_file(tmp_path):
    """MLPerf's opset-8 and opset-11 ResNet-50 ONNX share a file name and publish no checksum: an
    interrupted download of one, then the other, must not splice their bytes (whose sha256 would be
    recorded as trusted); nor may a part resume onto a file that changed on the server since."""
    first, second = bytes(range(256)) * 400, bytes(reversed(range(256))) * 500
    server = Server({"/8/resnet50_v1.onnx": first, "/11/resnet50_v1.onnx": second}, cut=30_000)
    try:
        with pytest.raises(CheckpointError, match="fetched so far stay in"):
            fetch(f"{server.url}/8/resnet50_v1.onnx", tmp_path, progress=False, retries=1)
        got = fetch(f"{server.url}/11/resnet50_v1.onnx", tmp_path, progress=False)
        assert got.read_bytes() == second
        again = fetch(f"{server.url}/8/resnet50_v1.onnx", tmp_path, progress=False)  # resumes its own part
        assert again.read_bytes() == first and again != got
        assert server.requests[-1] == ("/8/resnet50_v1.onnx", "bytes=30000-")
        assert not list(tmp_path.rglob("*.part*"))
        # the file changes on the server while a part of it waits: If-Range brings the whole new file
        server.requests.clear()
        server.files["/v/model.pb"] = first
        with pytest.raises(CheckpointError):
            fetch(f"{server.url}/v/model.pb", tmp_path, progress=False, retries=1)
        server.files["/v/model.pb"] = second
        assert fetch(f"{server.url}/v/model.pb", tmp_path, progress=False).read_bytes() == second
    finally:
        server.close()
