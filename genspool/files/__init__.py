"""Files: records in the store's :class:`~genspool.core.roles.FileStore` role, bytes in a blob
store chosen by URL, and the :class:`Files` service over both that the Files API and
genspool's own code use.

Modules: :mod:`.blobs` (the blob store interface and the URL table), :mod:`.directory`,
:mod:`.postgres`, :mod:`.memory` (the blob stores), :mod:`.service` (:class:`Files`).
"""

from __future__ import annotations

from collections.abc import Callable

from genspool.core.roles import FileObject, FileStore
from genspool.exceptions import ConfigError
from genspool.files.blobs import BlobStore, BlobWriter, blob_store_from_url
from genspool.files.service import (
    PURPOSES,
    UPLOAD_PURPOSES,
    FilePage,
    Files,
    FileWriter,
)

__all__ = [
    "DEFAULT_MAX_FILE_BYTES",
    "PURPOSES",
    "UPLOAD_PURPOSES",
    "BlobStore",
    "BlobWriter",
    "FileObject",
    "FilePage",
    "FileWriter",
    "Files",
    "blob_store_from_url",
    "open_files",
]

#: The default size limit of one file (GENSPOOL_MAX_FILE_BYTES).
DEFAULT_MAX_FILE_BYTES = 512 * 1024 * 1024


def open_files(
    store: FileStore,
    *,
    url: str | None = None,
    max_bytes: int = DEFAULT_MAX_FILE_BYTES,
    clock: Callable[[], float] | None = None,
) -> Files:
    """The files of ``store``, their bytes at ``url`` or, when None, where the store keeps
    them by default (:meth:`~genspool.core.roles.FileStore.blob_home`)."""
    home = url or store.blob_home()
    if home is None:
        raise ConfigError(
            f"{type(store).__name__} names no blob store for file contents; set"
            " GENSPOOL_FILES_URL (file:///dir or postgresql://...)"
        )
    blobs = blob_store_from_url(home)
    if clock is None:
        return Files(store, blobs, max_bytes=max_bytes)
    return Files(store, blobs, max_bytes=max_bytes, clock=clock)
