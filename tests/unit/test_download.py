"""Tests for seesaw_lvis.data.download against a local HTTP server on 127.0.0.1 (no internet)."""
from __future__ import annotations

import hashlib
import http.server
import io
import json
import logging
import os
import re
import stat
import threading
import zipfile
from pathlib import Path

import pytest

from seesaw_lvis.data.download import (
    ChecksumError,
    DownloadError,
    UnsafeArchiveError,
    download,
    extract_zip,
    fetch_lvis_v1,
    parse_checksum,
)

_RANGE = re.compile(r"^bytes=(\d+)-$")


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files``; supports ``Range: bytes=N-``; can cut or ignore Range on demand."""

    def log_message(self, *args):  # keep pytest output quiet
        pass

    def do_GET(self):  # noqa: N802
        srv = self.server
        with srv.lock:
            srv.requests.append({"path": self.path, "range": self.headers.get("Range")})
            data = srv.files.get(self.path)
            cut = srv.cut_after.pop(self.path, None)  # first request only
            stall = srv.stall_after.pop(self.path, None)  # first request only
            ignore_range = srv.ignore_range
        if data is None:
            self.send_error(404)
            return
        start, status = 0, 200
        m = _RANGE.match(self.headers.get("Range") or "")
        if m and not ignore_range:
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if stall is not None:  # send some bytes, then go silent until the test ends
            self.wfile.write(body[:stall])
            self.wfile.flush()
            srv.release.wait(10)
            self.close_connection = True
            return
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True  # drop the connection mid-body
            return
        self.wfile.write(body)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.lock = threading.Lock()
    srv.files, srv.requests, srv.cut_after, srv.stall_after, srv.ignore_range = {}, [], {}, {}, False
    srv.release = threading.Event()
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def _serve(srv, path: str, data: bytes) -> str:
    srv.files[path] = data
    return srv.base + path


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


@pytest.fixture
def payload() -> bytes:
    return os.urandom(5000)


# --------------------------------------------------------------------------- parse_checksum


def test_parse_checksum():
    assert parse_checksum("SHA256:" + "AB" * 32) == ("sha256", "ab" * 32)
    assert parse_checksum("sha1:" + "0" * 40) == ("sha1", "0" * 40)
    assert parse_checksum("md5:" + "f" * 32) == ("md5", "f" * 32)
    # a published prefix (torch.hub's file names: resnet50-0676ba61.pth) of at least 8 digits
    assert parse_checksum("sha256:0676BA61") == ("sha256", "0676ba61")
    for bad in ("sha256", "crc32:1234", "md5:xyz", "sha1:" + "0" * 41, "sha256:0676ba6", ""):
        with pytest.raises(ValueError, match=re.escape(repr(bad))):
            parse_checksum(bad)


def test_params_files_are_well_formed(default_params):
    files = default_params["lvis_v1"]["files"]
    names = {Path(f["url"]).name: f for f in files}
    assert set(names) == {"lvis_v1_train.json.zip", "lvis_v1_val.json.zip", "train2017.zip", "val2017.zip"}
    for f in files:
        assert parse_checksum(f["checksum"])[0] == "sha256"
    assert names["train2017.zip"]["extract_to"] == "." and names["lvis_v1_val.json.zip"]["extract_to"] == "annotations"


# --------------------------------------------------------------------------- download


def test_full_download_then_up_to_date(server, tmp_path, payload, capsys):
    url = _serve(server, "/blob.bin", payload)
    dest = tmp_path / "dl" / "blob.bin"
    assert download(url, dest, _sha256(payload), progress=True, chunk_size=1000) == dest
    assert dest.read_bytes() == payload
    assert _leftovers(dest.parent) == ["blob.bin"]  # no .part left behind
    assert "blob.bin" in capsys.readouterr().err  # the tqdm bar went to stderr
    assert len(server.requests) == 1 and server.requests[0]["range"] is None

    download(url, dest, _sha256(payload), progress=False)
    assert len(server.requests) == 1  # up to date: no new request


def test_interrupted_download_resumes_next_call(server, tmp_path, payload):
    url = _serve(server, "/blob.bin", payload)
    server.cut_after["/blob.bin"] = 1500
    dest = tmp_path / "blob.bin"
    part = tmp_path / "blob.bin.part"

    with pytest.raises(DownloadError, match="blob.bin"):
        download(url, dest, _sha256(payload), progress=False, retries=0)
    assert not dest.exists()
    assert part.stat().st_size == 1500
    assert _leftovers(tmp_path) == ["blob.bin.part"]

    download(url, dest, _sha256(payload), progress=False, retries=0)
    assert [r["range"] for r in server.requests] == [None, "bytes=1500-"]
    assert dest.read_bytes() == payload
    assert not part.exists()


def test_retries_resume_within_one_call(server, tmp_path, payload):
    url = _serve(server, "/blob.bin", payload)
    server.cut_after["/blob.bin"] = 2048
    dest = tmp_path / "blob.bin"
    download(url, dest, _sha256(payload), progress=False, retries=2, backoff=0)
    assert dest.read_bytes() == payload
    assert [r["range"] for r in server.requests] == [None, "bytes=2048-"]
    assert _leftovers(tmp_path) == ["blob.bin"]


def test_socket_timeout_is_retried_and_resumed(server, tmp_path, payload):
    url = _serve(server, "/blob.bin", payload)
    server.stall_after["/blob.bin"] = 3000
    dest = tmp_path / "blob.bin"
    download(url, dest, _sha256(payload), progress=False, timeout=0.3, retries=1, backoff=0)
    assert dest.read_bytes() == payload
    assert [r["range"] for r in server.requests] == [None, "bytes=3000-"]


def test_server_ignoring_range_restarts_cleanly(server, tmp_path, payload):
    url = _serve(server, "/blob.bin", payload)
    server.cut_after["/blob.bin"] = 1000
    server.ignore_range = True
    dest = tmp_path / "blob.bin"
    download(url, dest, _sha256(payload), progress=False, retries=1, backoff=0)
    assert server.requests[1]["range"] == "bytes=1000-"  # asked to resume, got a full 200 body
    assert dest.read_bytes() == payload  # not 1000 stale bytes + the whole file
    assert _leftovers(tmp_path) == ["blob.bin"]


def test_complete_part_is_promoted(server, tmp_path, payload):
    """A .part that already holds everything (killed before the rename) needs no new bytes."""
    url = _serve(server, "/blob.bin", payload)
    (tmp_path / "blob.bin.part").write_bytes(payload)
    dest = download(url, tmp_path / "blob.bin", _sha256(payload), progress=False, retries=0)
    assert dest.read_bytes() == payload
    assert [r["range"] for r in server.requests] == [f"bytes={len(payload)}-"]
    assert _leftovers(tmp_path) == ["blob.bin"]


def test_wrong_checksum_leaves_nothing(server, tmp_path, payload):
    url = _serve(server, "/blob.bin", payload)
    dest = tmp_path / "blob.bin"
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as err:
        download(url, dest, "sha256:" + wrong, progress=False)
    msg = str(err.value)
    assert str(dest) in msg and url in msg and "sha256" in msg
    assert wrong in msg and hashlib.sha256(payload).hexdigest() in msg
    assert isinstance(err.value, ValueError)
    assert _leftovers(tmp_path) == []


def test_published_prefix_verifies_and_a_wrong_one_fails(server, tmp_path, payload):
    """Weight files publish the first 8 sha256 digits in their names (torch.hub convention)."""
    url = _serve(server, "/weights-abc.pth", payload)
    digest = hashlib.sha256(payload).hexdigest()
    dest = tmp_path / "ok" / "weights.pth"
    assert download(url, dest, "sha256:" + digest[:8], progress=False).read_bytes() == payload
    wrong = format((int(digest[:8], 16) + 1) % 16 ** 8, "08x")
    with pytest.raises(ChecksumError, match=wrong):
        download(url, tmp_path / "bad" / "weights.pth", "sha256:" + wrong, progress=False)
    assert _leftovers(tmp_path / "bad") == []


def test_corrupt_existing_dest_is_replaced(server, tmp_path, payload):
    url = _serve(server, "/blob.bin", payload)
    dest = tmp_path / "blob.bin"
    dest.write_bytes(b"garbage")
    download(url, dest, _sha256(payload), progress=False)
    assert dest.read_bytes() == payload and len(server.requests) == 1


def test_no_checksum_warns_with_sha256(server, tmp_path, payload, caplog):
    url = _serve(server, "/blob.bin", payload)
    with caplog.at_level(logging.WARNING, logger="seesaw_lvis.data.download"):
        download(url, tmp_path / "blob.bin", None, progress=False)
    assert hashlib.sha256(payload).hexdigest() in caplog.text and url in caplog.text
    assert (tmp_path / "blob.bin").read_bytes() == payload


def test_http_error_names_url(server, tmp_path):
    with pytest.raises(DownloadError, match=r"missing\.zip.*404"):
        download(server.base + "/missing.zip", tmp_path / "missing.zip", None, progress=False, retries=0)
    assert _leftovers(tmp_path) == []


# --------------------------------------------------------------------------- extract_zip


def _zip(path: Path, entries: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


@pytest.mark.parametrize(
    "bad",
    [
        {"entries": {"ok.txt": b"1", "../evil.txt": b"x"}, "name": "../evil.txt"},
        {"entries": {"ok.txt": b"1", "/ABS/evil.txt": b"x"}, "name": "/ABS/evil.txt"},
        {"entries": {"ok.txt": b"1", "a/../../evil.txt": b"x"}, "name": "a/../../evil.txt"},
        {"entries": {"ok.txt": b"1"}, "links": {"link": "/etc/passwd"}, "name": "link"},
    ],
    ids=["dotdot", "absolute", "nested-dotdot", "symlink"],
)
def test_unsafe_zip_is_refused_before_writing(tmp_path, bad):
    # the absolute entry points into tmp_path, so a wrongly-written file would be seen below
    abs_evil = str(tmp_path / "evil_abs.txt")
    entries = {k.replace("/ABS/evil.txt", abs_evil): v for k, v in bad["entries"].items()}
    name = bad["name"].replace("/ABS/evil.txt", abs_evil)
    archive = _zip(tmp_path / "bad.zip", entries, bad.get("links"))
    target = tmp_path / "work" / "target"
    with pytest.raises(UnsafeArchiveError) as err:
        extract_zip(archive, target, progress=False)
    assert repr(name) in str(err.value) and "bad.zip" in str(err.value)
    assert not (tmp_path / "work").exists()  # nothing inside, nothing next to the target
    assert _leftovers(tmp_path) == ["bad.zip"]  # in particular no evil.txt / evil_abs.txt


def test_extract_layout_marker_and_skip(tmp_path, monkeypatch):
    archive = _zip(tmp_path / "imgs.zip", {"train2017/": b"", "train2017/a.jpg": b"A", "train2017/sub/b.jpg": b"B"})
    target = tmp_path / "out"
    (target / "train2017").mkdir(parents=True)
    (target / "train2017" / "keep.jpg").write_bytes(b"K")  # merged into, not wiped

    files = extract_zip(archive, target, progress=False)
    assert sorted(files) == [target / "train2017" / "a.jpg", target / "train2017" / "sub" / "b.jpg"]
    assert (target / "train2017" / "sub" / "b.jpg").read_bytes() == b"B"
    assert (target / "train2017" / "keep.jpg").read_bytes() == b"K"
    marker = json.loads((target / ".extracted-imgs.zip.json").read_text())
    assert marker["size"] == archive.stat().st_size and marker["entries"] == 3
    assert _leftovers(tmp_path) == ["imgs.zip", "out"]  # the temp dir next to the target is gone

    def boom(*a, **k):
        raise AssertionError("extracted again")

    monkeypatch.setattr(zipfile.ZipFile, "extract", boom)
    assert extract_zip(archive, target, progress=False) == files  # marker: skipped


def test_interrupted_extraction_leaves_target_untouched(tmp_path, monkeypatch):
    archive = _zip(tmp_path / "imgs.zip", {f"val2017/{i}.jpg": bytes([i]) * 10 for i in range(5)})
    target = tmp_path / "out"
    real_extract, calls = zipfile.ZipFile.extract, []

    def flaky(self, member, path=None, pwd=None):
        calls.append(member)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_extract(self, member, path, pwd)

    monkeypatch.setattr(zipfile.ZipFile, "extract", flaky)
    with pytest.raises(KeyboardInterrupt):
        extract_zip(archive, target, progress=False)
    assert _leftovers(target) == [] and _leftovers(tmp_path) == ["imgs.zip", "out"]

    monkeypatch.setattr(zipfile.ZipFile, "extract", real_extract)
    extract_zip(archive, target, progress=False)
    assert len(list((target / "val2017").iterdir())) == 5


# --------------------------------------------------------------------------- fetch_lvis_v1


def _zip_bytes(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_fetch_lvis_v1_layout(server, tmp_path):
    archives = {
        "/LVIS/lvis_v1_train.json.zip": _zip_bytes({"lvis_v1_train.json": b'{"images": []}'}),
        "/LVIS/lvis_v1_val.json.zip": _zip_bytes({"lvis_v1_val.json": b'{"images": []}'}),
        "/zips/train2017.zip": _zip_bytes({"train2017/": b"", "train2017/000000000001.jpg": b"\xff\xd8jpg"}),
        "/zips/val2017.zip": _zip_bytes({"val2017/000000000002.jpg": b"\xff\xd8jpg2"}),
    }
    files = []
    for path, data in archives.items():
        extract_to = "annotations" if "LVIS" in path else "."
        checksum = None if path.startswith("/LVIS/lvis_v1_val") else _sha256(data)
        files.append({"url": _serve(server, path, data), "checksum": checksum, "extract_to": extract_to})
    out, downloads = tmp_path / "lvis_v1", tmp_path / "downloads"

    fetch_lvis_v1(files, out, downloads, progress=False)
    assert json.loads((out / "annotations" / "lvis_v1_train.json").read_text()) == {"images": []}
    assert (out / "annotations" / "lvis_v1_val.json").is_file()
    assert (out / "train2017" / "000000000001.jpg").read_bytes() == b"\xff\xd8jpg"
    assert (out / "val2017" / "000000000002.jpg").read_bytes() == b"\xff\xd8jpg2"
    assert _leftovers(downloads) == sorted(Path(p).name for p in archives)
    assert _leftovers(tmp_path) == ["downloads", "lvis_v1"]

    n = len(server.requests)
    fetch_lvis_v1(files, out, downloads, progress=False)  # everything in place: no network, no extraction
    assert len(server.requests) == n


def test_fetch_lvis_v1_rejects_escaping_extract_to(tmp_path):
    with pytest.raises(ValueError, match=r"\.\./x"):
        fetch_lvis_v1([{"url": "http://127.0.0.1:9/a.zip", "checksum": None, "extract_to": "../x"}],
                      tmp_path / "out", tmp_path / "dl", progress=False)
