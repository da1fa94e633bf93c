"""Checkpoint downloads: resumable (HTTP Range), verified before first use, written atomically.

A download lands in `<name>.<url hash>.part` and becomes `<name>` only once its checksum holds, so a
partial or corrupt file is never used. A part belongs to its URL and is resumed only with the
validator (ETag or Last-Modified) of the response that began it, sent as `If-Range`: a server whose
file changed since sends it whole, and two files never splice into one. Where no checksum is published, the sha256 of the first download is
recorded beside the file (`<name>.sha256`), shown, and every later use is checked against it; the
URL it came from is recorded too (`<name>.url`), so two files of one name from two URLs never mix.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlparse

from tqdm import tqdm

from benchmark.formats.checkpoint import CheckpointError, file_digest

CHUNK = 1 << 20


def is_url(text: str) -> bool:
    return urlparse(str(text)).scheme in ("http", "https")


def _offline_hint(url: str, dest: Path) -> str:
    return (f"download {url} by hand and put it at {dest}, or pass model.checkpoint=/path/to/"
            f"{dest.name}")


def _verify(path: Path, url: str, md5: str | None) -> str:
    """Checks `path` against the published md5, or against the sha256 recorded at its first
    download; returns its sha256."""
    sha256 = file_digest(path, "sha256")
    if md5:
        actual = file_digest(path, "md5")
        if actual != md5.lower():
            raise CheckpointError(f"{path}: md5 {actual} does not match the published {md5} for {url}")
        return sha256
    recorded = path.with_name(path.name + ".sha256")
    if recorded.is_file():
        expected = recorded.read_text().split()[0]
        if expected != sha256:
            raise CheckpointError(f"{path}: sha256 {sha256} differs from {expected}, recorded in {recorded} "
                                  f"at its first download from {url}")
    return sha256


def _part(folder: Path, name: str, url: str) -> Path:
    import hashlib

    return folder / f"{name}.{hashlib.sha256(url.encode()).hexdigest()[:12]}.part"


def _transfer(url: str, part: Path, timeout: float, progress: bool) -> None:
    """Fetches `url` into `part`, resuming from its current size where the server allows and the
    file is still the one the part began with (If-Range); a part without a validator starts over."""
    validator_file = part.with_name(part.name + ".validator")
    validator = validator_file.read_text().strip() if validator_file.is_file() else ""
    have = part.stat().st_size if part.exists() and validator else 0
    headers = {"Range": f"bytes={have}-", "If-Range": validator} if have else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the part file already holds everything
            return
        raise
    with response:
        resumed = response.status == 206
        if not resumed:
            have = 0  # the server sent the whole file: start over, remembering which file it is
            validator = response.headers.get("ETag") or response.headers.get("Last-Modified") or ""
            if validator:
                validator_file.write_text(validator + "\n")
            else:
                validator_file.unlink(missing_ok=True)
        length = response.headers.get("Content-Length")
        total = have + int(length) if length else None
        with open(part, "ab" if resumed else "wb") as out, \
                tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=part.name[:-5],
                     disable=not progress, file=sys.stderr) as bar:
            while block := response.read(CHUNK):
                out.write(block)
                bar.update(len(block))
        if total is not None and part.stat().st_size != total:
            raise urllib.error.URLError(f"connection closed after {part.stat().st_size} of {total} bytes")


def fetch(url: str, folder: Path, md5: str | None = None, progress: bool = True,
          timeout: float = 60.0, retries: int = 3) -> Path:
    """The file at `url`, downloaded into `folder` unless already there, checksum verified."""
    name = Path(unquote(urlparse(url).path)).name
    if not name:
        raise CheckpointError(f"{url}: the URL names no file")
    top = Path(folder).expanduser()
    dest = _destination(top, name, url)
    if dest.is_file():
        _verify(dest, url, md5)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part(top, name, url)
    print(f"downloading {url} to {dest}", file=sys.stderr)
    for attempt in range(1, retries + 1):
        try:
            _transfer(url, part, timeout, progress)
            break
        except urllib.error.HTTPError as e:  # the server answered: retrying will not help
            raise CheckpointError(f"cannot download {url}: HTTP {e.code} {e.reason}; "
                                  f"{_offline_hint(url, dest)}") from e
        except (urllib.error.URLError, OSError) as e:
            if attempt == retries:
                reason = getattr(e, "reason", e)
                raise CheckpointError(f"cannot download {url}: {reason}; {_offline_hint(url, dest)} "
                                      f"(the {part.stat().st_size if part.exists() else 0} bytes "
                                      f"fetched so far stay in {part} and the next try resumes)") from e
            print(f"download interrupted ({getattr(e, 'reason', e)}); resuming", file=sys.stderr)
    try:
        sha256 = _verify(part, url, md5)
    except CheckpointError:
        part.unlink()  # a corrupt download is not kept
        part.with_name(part.name + ".validator").unlink(missing_ok=True)
        raise
    if not md5:
        recorded = dest.with_name(name + ".sha256")
        recorded.write_text(f"{sha256}  {name}\n")
        print(f"no checksum is published for {url}; sha256 of this download: {sha256} "
              f"(recorded in {recorded})", file=sys.stderr)
    dest.with_name(name + ".url").write_text(url + "\n")
    os.replace(part, dest)
    part.with_name(part.name + ".validator").unlink(missing_ok=True)
    return dest


def _destination(folder: Path, name: str, url: str) -> Path:
    """`folder/name`, unless a file of that name came from another URL (MLPerf's opset-8 and opset-11
    ONNX models share a name): then a subfolder named after this URL's hash."""
    import hashlib

    dest = folder / name
    source = dest.with_name(name + ".url")
    if dest.is_file() and source.is_file() and source.read_text().strip() != url:
        return folder / hashlib.sha256(url.encode()).hexdigest()[:12] / name
    return dest
