"""Photo folders in object storage (s3://, gs://, file:// URIs) through pyarrow's file systems.

A photo's catalog path is its URI (`s3://bucket/trips/a.jpg`), so the plan, the catalog and the
incremental rules treat it like a local path; only listing and reading go through pyarrow. Light
on purpose (pyarrow, imported when a URI is met): decode workers read through here.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator

from indexer.errors import PixseekError, first_line
from indexer.library.paths import is_image_name

_URI = re.compile(r"^([a-z][a-z0-9+.-]*)://([^/]*)(.*)$")


def is_uri(path: str) -> bool:
    return _URI.match(str(path)) is not None


def normalise(uri: str) -> str:
    """The root as the catalog keeps it: no trailing slash, so `is_under` sees its files under it."""
    return uri.rstrip("/") if not uri.endswith("://") else uri


def check_root(uri: str) -> str:
    """`uri` normalised, once it is known to name a folder (a prefix holding objects) that can be listed."""
    from pyarrow.fs import FileType

    uri = normalise(uri)
    try:
        filesystem, path = _resolve(uri)
        kind = filesystem.get_file_info(path).type
    except (OSError, ValueError) as exc:
        raise PixseekError(f"cannot reach {uri}: {first_line(exc)}", "check the URI and your credentials") from None
    if kind == FileType.NotFound:
        raise PixseekError(f"folder not found: {uri}", "check the bucket and prefix")
    if kind != FileType.Directory:
        raise PixseekError(f"not a folder: {uri}", "pass the prefix that holds your photos")
    return uri


def list_files(uri: str) -> Iterator[tuple[str, int, int]]:
    """(URI, size, mtime in ns) of every image object under `uri`, sorted, hidden names left out."""
    from pyarrow.fs import FileSelector, FileType

    filesystem, path = _resolve(uri)
    scheme = _URI.match(uri).group(1)  # type: ignore[union-attr]
    infos = filesystem.get_file_info(FileSelector(path, recursive=True))
    for info in sorted(infos, key=lambda i: i.path):
        relative = info.path[len(path) :].lstrip("/")
        if info.type != FileType.File or any(part.startswith(".") for part in relative.split("/")):
            continue
        if is_image_name(info.base_name):
            yield f"{scheme}://{info.path}", int(info.size or 0), int(info.mtime_ns or 0)


def read_bytes(uri: str) -> bytes:
    """The whole object; OSError (FileNotFoundError when it is gone) like a local read."""
    filesystem, path = _resolve(uri)
    with filesystem.open_input_stream(path) as stream:
        return stream.read()


def _resolve(uri: str):
    """(pyarrow FileSystem, path inside it); one file system per bucket and process, so a worker
    resolves an S3 bucket's region once, not per photo."""
    scheme, bucket, rest = _URI.match(uri).groups()  # type: ignore[union-attr]
    filesystem, root = _filesystem(f"{scheme}://{bucket}")
    return filesystem, (root.rstrip("/") + rest) if rest else root


@functools.lru_cache(maxsize=64)
def _filesystem(base: str):
    from pyarrow.fs import FileSystem

    return FileSystem.from_uri(base + ("/" if base == "file://" else ""))
