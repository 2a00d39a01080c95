"""One run per folder: an exclusive lock on the folder that dies with its process.

``separate`` holds its output folder and ``train`` its run folder for as long as they write there; a second run
into the same folder stops at once with one line instead of mixing its files with the first one's. The lock is
``flock`` on the folder itself (no lock file is left behind); the kernel drops it when the process ends, however
it ends, so a killed run never leaves a folder locked. Temporary files found in a folder while holding its
lock belong to dead runs and may be removed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import CentrifugeError

#: Folders this process holds, by (device, inode), with how many nested ``hold_folder`` calls hold each: the
#: command line takes a run folder's lock before it clears an old run, and the training it starts takes it again.
_held: dict[tuple[int, int], int] = {}


def _open_locked(folder: Path, what: str) -> tuple[int, tuple[int, int]]:
    for _ in range(10):  # the folder can be removed (by an empty run giving it up) between mkdir and open
        folder.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            continue
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino)
        if key in _held:
            return fd, key
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise CentrifugeError(f"{what} {folder} is in use by another centrifuge run") from None
            raise
        try:  # the folder we locked must still be the one at this path (not removed and made again meanwhile)
            same = os.path.samestat(os.stat(folder), st)
        except FileNotFoundError:
            same = False
        if same:
            return fd, key
        os.close(fd)
    raise CentrifugeError(f"cannot lock {what} {folder}: it keeps being removed")


@contextlib.contextmanager
def hold_folder(folder: str | os.PathLike[str], what: str = "folder", remove_if_empty: bool = False) -> Iterator[Path]:
    """Create ``folder`` if needed and hold its lock; :class:`CentrifugeError` if another process holds it.

    Nested calls in one process share the lock. ``remove_if_empty``: a folder this call created is removed on
    leaving if nothing was put in it (a run refused at its first check leaves nothing behind).
    """
    folder = Path(folder)
    created = not folder.exists()
    fd, key = _open_locked(folder, what)
    _held[key] = _held.get(key, 0) + 1
    try:
        yield folder
    finally:
        _held[key] -= 1
        if not _held[key]:
            del _held[key]
            if created and remove_if_empty:
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only when empty
        os.close(fd)  # releases the lock once no nested holder is left (each call opened its own descriptor)
