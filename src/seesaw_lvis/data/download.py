"""Download and unpack the real LVIS v1 data (annotations + COCO 2017 images).

Guarantees, in the same spirit as :mod:`seesaw_lvis.io`:

* No half-written file ever sits at a final path. A download goes to ``<dest>.part`` and is
  moved onto ``<dest>`` with ``os.replace`` only after its checksum matched. An archive is
  extracted into a temporary directory next to the target and its entries are moved in only
  once every entry has been extracted (and CRC-checked by :mod:`zipfile`).
* Interrupted downloads resume: the ``.part`` stays on disk and the next attempt (inside the
  same call, after a back-off, or in a later call) asks for ``Range: bytes=<size>-``. A
  server that ignores ``Range`` (answers 200) makes us restart from zero, cleanly.
* Archives are checked before anything is written: absolute names, ``..`` components and
  symlink entries are refused (:class:`UnsafeArchiveError`).
* Re-runs are cheap: a verified ``dest`` is not fetched again, and an extracted archive
  leaves a marker ``<target>/.extracted-<zip>.json`` (size, entry count, top-level names)
  that makes the next extraction a no-op.

Layout produced by :func:`fetch_lvis_v1` with the files listed in ``params/pipeline.yaml``
(``lvis_v1.files``: official URLs and cited checksums), which is what mmdet's
``LVISV1Dataset`` expects with ``data_root=out_dir``)::

    out_dir/annotations/lvis_v1_train.json
    out_dir/annotations/lvis_v1_val.json
    out_dir/train2017/*.jpg
    out_dir/val2017/*.jpg

Only the standard library and tqdm are used. Not safe against two processes downloading or
extracting the *same* file at the same time.
"""
from __future__ import annotations

import hashlib
import http.client
import logging
import os
import posixpath
import re
import shutil
import stat
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

from tqdm import tqdm

from seesaw_lvis.io import read_json, write_json

__all__ = [
    "ChecksumError",
    "DownloadError",
    "UnsafeArchiveError",
    "parse_checksum",
    "file_digest",
    "download",
    "extract_zip",
    "fetch_lvis_v1",
]

log = logging.getLogger(__name__)

_HEX_LEN = {"sha256": 64, "sha1": 40, "md5": 32}
# HTTP statuses worth retrying; any other HTTP error is final.
_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_USER_AGENT = "seesaw-lvis-download/1 (+python urllib)"
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
_UNSATISFIED_RANGE = re.compile(r"^\s*bytes\s+\*/(\d+)\s*$", re.IGNORECASE)


class ChecksumError(ValueError):
    """A downloaded file does not have the expected digest."""


class DownloadError(OSError):
    """A download could not be completed (HTTP error, or retries exhausted)."""


class UnsafeArchiveError(ValueError):
    """An archive holds an entry that could write outside its target or create a symlink."""


# --------------------------------------------------------------------------- checksums


def parse_checksum(spec: str) -> tuple[str, str]:
    """``"sha256:<hex>"`` / ``"sha1:<hex>"`` / ``"md5:<hex>"`` -> ``(algorithm, lowercase hex)``."""
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"bad checksum spec {spec!r}: expected 'sha256:<hex>', 'sha1:<hex>' or 'md5:<hex>'")
    algo, _, hexdigest = spec.strip().partition(":")
    algo, hexdigest = algo.strip().lower(), hexdigest.strip().lower()
    if algo not in _HEX_LEN:
        raise ValueError(f"bad checksum spec {spec!r}: unknown algorithm {algo!r} (use one of {sorted(_HEX_LEN)})")
    # A prefix of at least MIN_PREFIX digits is what some publishers give: torch.hub's and
    # OpenMMLab's weight files carry the first 8 digits of their sha256 in their names
    # (resnet50-0676ba61.pth), and torch.hub verifies exactly that prefix.
    if not MIN_PREFIX <= len(hexdigest) <= _HEX_LEN[algo] or not re.fullmatch(r"[0-9a-f]+", hexdigest):
        raise ValueError(f"bad checksum spec {spec!r}: {algo} needs {_HEX_LEN[algo]} hex digits "
                         f"(or a published prefix of at least {MIN_PREFIX})")
    return algo, hexdigest


MIN_PREFIX = 8


def checksum_matches(actual: str, expected: str) -> bool:
    """The full digest, or the published prefix of it (see :func:`parse_checksum`)."""
    return actual.startswith(expected)


def file_digest(path: Path, algo: str = "sha256", *, chunk_size: int = 1 << 20, progress: bool = False) -> str:
    """Hex digest of ``path``, streamed in ``chunk_size`` blocks."""
    path = Path(path)
    h = hashlib.new(algo)
    with path.open("rb") as f, tqdm(
        total=path.stat().st_size, unit="B", unit_scale=True, unit_divisor=1024,
        desc=f"{algo} {path.name}", file=sys.stderr, disable=not progress, leave=False,
    ) as bar:
        while block := f.read(chunk_size):
            h.update(block)
            bar.update(len(block))
    return h.hexdigest()


# --------------------------------------------------------------------------- download


def download(
    url: str,
    dest: Path,
    checksum: str | None,
    *,
    progress: bool = True,
    chunk_size: int = 1 << 20,
    timeout: float = 60,
    retries: int = 3,
    backoff: float = 1.0,
) -> Path:
    """Fetch ``url`` to ``dest`` (resumable, verified, atomic). Returns ``dest``.

    ``checksum`` is ``"<algo>:<hex>"`` (see :func:`parse_checksum`) or None (allowed, but
    the computed sha256 is logged as a warning so it can be pinned). ``retries`` is the number
    of extra attempts after connection errors / truncated bodies / retryable HTTP statuses,
    each after ``backoff * 2**k`` seconds and each resuming from the ``.part`` on disk.
    """
    dest = Path(dest)
    expected = parse_checksum(checksum) if checksum is not None else None
    algo = expected[0] if expected else "sha256"

    if dest.is_file():
        if expected is None:
            log.warning("%s exists and no checksum is pinned for %s: keeping it UNVERIFIED", dest, url)
            return dest
        actual = file_digest(dest, algo, chunk_size=chunk_size, progress=progress)
        if checksum_matches(actual, expected[1]):
            log.info("%s is up to date (%s ok)", dest, algo)
            return dest
        log.warning("%s exists but its %s is %s, expected %s: removing it and downloading %s again",
                    dest, algo, actual, expected[1], url)
        dest.unlink()

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")

    last_exc: BaseException | None = None
    for attempt in range(retries + 1):
        if attempt:
            delay = backoff * 2 ** (attempt - 1)
            log.warning("%s: attempt %d/%d failed (%s); resuming from %d bytes in %.1f s",
                        url, attempt, retries + 1, last_exc, _size(part), delay)
            time.sleep(delay)
        try:
            _fetch_into(url, part, dest.name, progress=progress, chunk_size=chunk_size, timeout=timeout)
            break
        except urllib.error.HTTPError as e:
            if e.code not in _RETRY_STATUS:
                raise DownloadError(f"{url}: HTTP {e.code} {e.reason} (downloading to {dest})") from e
            last_exc = e
        except (http.client.HTTPException, urllib.error.URLError, ConnectionError, TimeoutError) as e:
            # IncompleteRead, RemoteDisconnected, ConnectionResetError, socket timeouts, refused ...
            last_exc = e
    else:
        raise DownloadError(
            f"{url}: download to {dest} failed after {retries + 1} attempt(s): {last_exc!r}; "
            f"{_size(part)} bytes kept in {part}, the next call resumes from there"
        ) from last_exc

    actual = file_digest(part, algo, chunk_size=chunk_size, progress=progress)
    if expected is None:
        log.warning(
            "\n%s\nNO CHECKSUM pinned for %s\n  file:   %s\n  sha256: %s\n"
            "Pin it: checksum='sha256:%s'\n%s",
            "!" * 78, url, dest, actual, actual, "!" * 78,
        )
    elif not checksum_matches(actual, expected[1]):
        part.unlink(missing_ok=True)
        raise ChecksumError(
            f"checksum mismatch for {dest} (from {url}): {algo} expected {expected[1]}, got {actual}; "
            "the download was deleted"
        )
    os.replace(part, dest)
    log.info("downloaded %s -> %s (%s ok)", url, dest, algo)
    return dest


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _open(url: str, offset: int, timeout: float) -> tuple[http.client.HTTPResponse | None, int, int | None]:
    """Open ``url`` asking for bytes from ``offset``.

    Returns ``(response, start, total)``: ``start`` is the offset the body begins at (0 when the
    server ignored the Range), ``total`` the full size if known. ``response`` is None when the
    server says the range is empty because ``offset`` already is the full size.
    """
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:
            m = _UNSATISFIED_RANGE.match(e.headers.get("Content-Range", "") or "")
            e.close()
            if m and int(m.group(1)) == offset:
                return None, offset, offset  # the .part already holds the whole file
            log.warning("%s: server refused Range bytes=%d- (416); restarting from zero", url, offset)
            return _open(url, 0, timeout)
        raise

    if resp.status == 206:
        m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", "") or "")
        if m and int(m.group(1)) == offset:
            total = None if m.group(3) == "*" else int(m.group(3))
            return resp, offset, total
        resp.close()
        if not offset:
            raise http.client.HTTPException(f"{url}: unexpected 206 {resp.headers.get('Content-Range')!r} to a plain GET")
        log.warning("%s: Content-Range %r does not start at %d; restarting from zero",
                    url, resp.headers.get("Content-Range"), offset)
        return _open(url, 0, timeout)
    if offset:
        log.warning("%s: server ignored Range (HTTP %d); restarting from zero", url, resp.status)
    length = resp.headers.get("Content-Length")
    return resp, 0, int(length) if length and length.isdigit() else None


def _fetch_into(url: str, part: Path, name: str, *, progress: bool, chunk_size: int, timeout: float) -> None:
    """One attempt: append to (or restart) ``part``; raise IncompleteRead when the body is short."""
    resp, start, total = _open(url, _size(part), timeout)
    if resp is None:
        return
    with resp, part.open("ab" if start else "wb") as f, tqdm(
        total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
        desc=name, file=sys.stderr, disable=not progress,
    ) as bar:
        try:
            # read1: return what has arrived (<= chunk_size) instead of blocking for a full
            # chunk, so bytes received before a stall/timeout reach the disk and are resumable.
            while block := resp.read1(chunk_size):
                f.write(block)
                bar.update(len(block))
        finally:  # keep what arrived, for the next attempt to resume from
            f.flush()
            os.fsync(f.fileno())
        have = f.tell()
    if total is not None and have != total:
        # http.client returns b"" (no exception) when a Content-Length body ends early.
        raise http.client.IncompleteRead(b"", max(total - have, 0))


# --------------------------------------------------------------------------- extraction


def _entry_parts(zip_path: Path, info: zipfile.ZipInfo) -> list[str]:
    """Path components of a zip entry, or UnsafeArchiveError if it could escape / is a link."""
    name = info.filename
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        raise UnsafeArchiveError(f"{zip_path}: refusing absolute entry {name!r}")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"{zip_path}: refusing entry {name!r}: '..' could escape the target")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise UnsafeArchiveError(f"{zip_path}: refusing symlink entry {name!r}")
    return parts


def _move_into(src: Path, dst: Path) -> None:
    """Move ``src`` onto ``dst``, merging directories; every step is one atomic rename."""
    if dst.is_dir():
        if src.is_dir() and not src.is_symlink():
            for child in src.iterdir():
                _move_into(child, dst / child.name)
            src.rmdir()
            return
        shutil.rmtree(dst)
    elif src.is_dir() and (dst.exists() or dst.is_symlink()):
        dst.unlink()
    os.replace(src, dst)


def extract_zip(zip_path: Path, target_dir: Path, *, progress: bool = True) -> list[Path]:
    """Safely extract ``zip_path`` into ``target_dir``; return the extracted file paths.

    All entries are validated before anything is written. Extraction happens in a temporary
    directory next to ``target_dir``; the top-level entries are moved in at the end. The marker
    ``target_dir/.extracted-<zip name>.json`` makes a repeated call a no-op.
    """
    zip_path = Path(zip_path)
    target_dir = Path(os.path.abspath(target_dir))
    if not zip_path.is_file():
        raise FileNotFoundError(f"{zip_path}: archive not found")
    try:
        zf = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as e:
        raise ValueError(f"{zip_path}: not a valid zip archive ({e})") from None

    with zf:
        infos = zf.infolist()
        rel = [_entry_parts(zip_path, i) for i in infos]  # raises before anything is written
        files = [target_dir.joinpath(*p) for i, p in zip(infos, rel) if p and not i.is_dir()]
        tops = sorted({p[0] for p in rel if p})
        stamp = {
            "zip": zip_path.name,
            "size": zip_path.stat().st_size,
            "entries": len(infos),
            "top_level": tops,
        }
        marker = target_dir / f".extracted-{zip_path.name}.json"
        if marker.is_file():
            try:
                done = read_json(marker) == stamp
            except ValueError:
                done = False
            if done and all((target_dir / t).exists() for t in tops):
                log.info("%s already extracted into %s (marker %s)", zip_path, target_dir, marker.name)
                return files
            marker.unlink()

        target_dir.mkdir(parents=True, exist_ok=True)
        tmp = target_dir.parent / f".{target_dir.name or 'root'}.{zip_path.name}.extracting"
        if tmp.exists():  # left by a killed earlier run
            shutil.rmtree(tmp)
        tmp.mkdir()
        try:
            for info in tqdm(infos, desc=f"extract {zip_path.name}", unit="file",
                             file=sys.stderr, disable=not progress):
                zf.extract(info, tmp)  # CRC-checked by zipfile
            for top in tops:
                _move_into(tmp / top, target_dir / top)
        except zipfile.BadZipFile as e:
            raise ValueError(f"{zip_path}: corrupt archive ({e})") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    write_json(marker, stamp)
    log.info("extracted %s (%d entries) into %s", zip_path, len(infos), target_dir)
    return files


# --------------------------------------------------------------------------- LVIS v1


def fetch_lvis_v1(
    files: list[dict[str, Any]],
    out_dir: Path,
    downloads_dir: Path,
    progress: bool = True,
) -> None:
    """Download each archive of ``files`` into ``downloads_dir`` and extract it under ``out_dir``.

    Each item is ``{"url": str, "checksum": str | None, "extract_to": str}`` with
    ``extract_to`` relative to ``out_dir`` (``"annotations"`` for the LVIS json zips, ``"."``
    for the COCO image zips, which hold a top folder ``train2017/`` / ``val2017/``). Pass
    ``lvis_v1.files`` of params/pipeline.yaml for the real data.
    """
    out_dir, downloads_dir = Path(out_dir), Path(downloads_dir)
    for item in files:
        url, rel = item["url"], item.get("extract_to", ".")
        parts = [p for p in Path(rel).parts if p != "."]
        if Path(rel).is_absolute() or ".." in parts:
            raise ValueError(f"{url}: extract_to {rel!r} must be a relative path inside {out_dir}")
        name = posixpath.basename(urllib.parse.urlsplit(url).path)
        if not name:
            raise ValueError(f"{url}: cannot derive a file name from the URL")
        zip_path = download(url, downloads_dir / name, item.get("checksum"), progress=progress)
        extract_zip(zip_path, out_dir.joinpath(*parts), progress=progress)
    log.info("LVIS v1 data ready under %s", out_dir)
