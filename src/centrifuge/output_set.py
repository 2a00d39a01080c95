"""A set of output files published into a user's folder as one unit (``synth`` clips, ``experiment`` reports).

* The folder is held (``centrifuge.locks``) for the whole run: a second run into it stops at once. Staging
  folders of killed runs found in it (hidden ``.TOOL-*.part``) are removed: a live run would hold the lock.
* Before any work, a folder holding a file of the tool's names is refused unless ``overwrite``: a user's file is
  never replaced without being asked.
* Files are made in a hidden staging folder inside the output folder, so the folder itself keeps its identity
  (mode, owner, ACLs, a link to it stays a link) and a folder the user may not write into is refused at once.
* :meth:`OutputSet.commit` removes the previous set's marker first (from then on the folder is not a finished
  set), then the files the previous marker lists that this run does not write, moves the new files in and the
  marker **last**: the marker marks a finished set. Only names matching the tool's pattern are ever removed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from .checkpoint import fsync
from .errors import CentrifugeError
from .locks import hold_folder

_SUFFIX = ".part"


class OutputSet:
    """Stage files with :meth:`path`, publish them with :meth:`commit` (or drop them with :meth:`abort`).

    Args:
        folder: the output folder (created if missing; removed again by :meth:`abort` if this run made it).
        tool: the command's name, for the staging folder's name.
        pattern: the names the tool writes (``re.fullmatch``): the only files refused, replaced or removed.
        marker: the file moved in last (one of ``pattern``'s names).
        listed: the names a previous set lists, read from the folder (its marker); filtered by ``pattern``.
        overwrite: allow a folder already holding files of the tool's names.
    """

    def __init__(self, folder: str | os.PathLike[str], tool: str, pattern: re.Pattern[str], marker: str,
                 listed: Callable[[Path], list[str]], overwrite: bool):
        self.dir, self.pattern, self.marker = Path(folder), pattern, marker
        self._prefix = f".{tool}-"
        if self.dir.exists() and not self.dir.is_dir():
            raise CentrifugeError(f"output path exists and is not a folder: {folder}")
        with contextlib.ExitStack() as hold:  # released here if a check fails, else kept until commit/abort
            hold.enter_context(hold_folder(self.dir, "output folder", remove_if_empty=True))
            try:
                self.stage = self._prepare(overwrite, listed)
            except OSError as e:
                raise CentrifugeError(f"cannot write to the output folder {folder}: {e.strerror or e}") from e
            self._hold = hold.pop_all()

    def _prepare(self, overwrite: bool, listed: Callable[[Path], list[str]]) -> Path:
        """Remove dead runs' staging folders, refuse the tool's files unless ``overwrite``, make the staging folder."""
        for stale in self.dir.glob(f"{self._prefix}*{_SUFFIX}"):
            shutil.rmtree(stale, ignore_errors=True)
        ours = sorted(p.name for p in self.dir.iterdir() if self.pattern.fullmatch(p.name))
        if ours and not overwrite:
            raise CentrifugeError(f"{self.dir / ours[0]} exists (pass --overwrite to replace this tool's files "
                                  f"in {self.dir}, or choose another folder)")
        self.previous = {n for n in _safe(listed, self.dir) if self.pattern.fullmatch(n)}
        return Path(tempfile.mkdtemp(prefix=self._prefix, suffix=_SUFFIX, dir=self.dir))

    def path(self, name: str) -> Path:
        """Where to make the file ``name`` (in the staging folder)."""
        if not self.pattern.fullmatch(name):
            raise ValueError(f"{name} is not one of this tool's names")
        return self.stage / name

    def commit(self) -> dict[str, Path]:
        """Publish every staged file (the marker last) and release the folder; returns the final paths."""
        names = sorted((p.name for p in self.stage.iterdir()), key=lambda n: n == self.marker)
        if self.marker not in names:
            raise ValueError(f"nothing marks the set as finished: {self.marker} was not written")
        umask = os.umask(0)
        os.umask(umask)
        for name in names:
            os.chmod(self.stage / name, 0o666 & ~umask)  # mkstemp-style 0600 files get the usual permissions
            fsync(self.stage / name)
        (self.dir / self.marker).unlink(missing_ok=True)  # from here on the folder is not a finished set
        for old in self.previous - set(names):
            (self.dir / old).unlink(missing_ok=True)
        for name in names:
            os.replace(self.stage / name, self.dir / name)
        fsync(self.dir)
        self.abort()
        return {name: self.dir / name for name in names}

    def abort(self) -> None:
        """Drop the staged files and release the folder (removed if this run made it and it is empty)."""
        shutil.rmtree(self.stage, ignore_errors=True)
        self._hold.close()


def _safe(listed: Callable[[Path], list[str]], folder: Path) -> list[str]:
    """``listed(folder)``, or nothing when the previous marker is unreadable or malformed."""
    try:
        names = listed(folder)
    except (OSError, ValueError, AttributeError, TypeError, KeyError):
        return []
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []
