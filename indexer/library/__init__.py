"""The library on disk, in one place: everything that reads or writes a library folder.

    paths.py       where its files live; the default folder ($PIXSEEK_LIBRARY)
    lock.py        one writer at a time
    storage.py     a failed write (disk full, read-only) as one sentence
    files.py       atomic, durable file writes
    rows.py        the image table, declared once (`ImageRow`), and how paths are stored
    schema.py      its migrations
    catalog.py     the SQLite catalog: every SQL statement, behind named methods
    filters.py     metadata filters the catalog applies
    settings.py    the settings table as one record; the model a library belongs to
    vectors.py     the float16 vector file, row = catalog id
    index_file.py  the ANN file's read side (indexer/ann.py writes it)

search/ reads libraries only through this package.
"""

from indexer.library.lock import write_lock
from indexer.library.paths import ENV_LIBRARY, LibraryPaths, default_library_dir
from indexer.library.storage import storage_errors

__all__ = ["ENV_LIBRARY", "LibraryPaths", "default_library_dir", "storage_errors", "write_lock"]
