"""Output: the files a run writes, their names, and publishing them all at once.

``layer_i.mp4`` have the input's frame count, size and (average) frame rate; H.264 4:2:0 for even sizes,
4:4:4 for odd ones (4:2:0 cannot store them without padding). Rotation metadata is applied on reading, so
outputs are upright and carry no rotation.

The output folder is locked for the run; all files are written into a hidden temporary folder and published
only after the whole run succeeded, by one rename of the whole folder (a new output folder) or with
``layers.json`` moved in last as the mark of a finished set (an existing folder, which keeps its identity:
inode, mode, owner, ACLs), so an interrupted run leaves no ``layer_*.mp4``, ``preview.mp4``, ``contact.png`` or
``layers.json`` behind (see :class:`Output` and docs/reliability.md). The input is only read, and a run that
would replace it is refused.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..checkpoint import fsync
from ..errors import CentrifugeError
from ..locks import hold_folder
from ..video_writer import VideoWriter

__all__ = ["LAYER_NAME", "PREVIEW_NAME", "CONTACT_NAME", "META_NAME", "CRF", "X264_PRESET", "Output", "LayerFiles",
           "file_names"]

LAYER_NAME = "layer_{}.mp4"
PREVIEW_NAME = "preview.mp4"
CONTACT_NAME = "contact.png"
META_NAME = "layers.json"
_TMP_PREFIX = ".separate-"
_TMP_SUFFIX = ".part"
#: The names of the files this tool writes into an output folder (the only ones --overwrite may replace).
_OUTPUT_RE = re.compile(r"layer_\d+\.mp4|preview\.mp4|contact\.png|layers\.json")
# H.264 settings of the outputs: visually lossless, and "veryfast" because n files are encoded per run.
CRF = 18
X264_PRESET = "veryfast"


def _slot_name(k: int) -> str:
    """The temporary name of model slot ``k``'s file (renamed to a ``layer_i.mp4`` at publishing, if chosen)."""
    return f"slot_{k}.mp4"


def file_names(names: list[str], writing: bool) -> dict[str, Any]:
    """``layers.json``'s ``files``: the layer files, the preview and the contact sheet (none without a folder)."""
    return {"layers": names if writing else [], "preview": PREVIEW_NAME if writing else None,
            "contact": CONTACT_NAME if writing else None}


class Output:
    """Where a run's files are made until :meth:`publish` publishes them all at once.

    The output folder is locked for the whole run (``centrifuge.locks``), so temporary folders of other runs
    found in it are stale (their runs were killed) and are removed. A new output folder is built whole beside
    it, in ``.NAME.separate-*.part``, and :meth:`commit` renames that folder over the empty one this run made: a
    reader sees all the outputs or none. An existing folder (empty, or not empty with ``overwrite``) is the
    user's: it is written into, never replaced. Files are made in a hidden ``.separate-*.part`` folder inside
    it, and :meth:`commit` removes the old ``layers.json`` first and moves the new one in last, so
    ``layers.json`` marks a finished set. Only the tool's own files are replaced or removed: the names written
    now, and the outputs the previous ``layers.json`` lists. An existing folder this user may not write into
    is refused before any work.
    """

    def __init__(self, out_dir: str | os.PathLike[str], overwrite: bool, input_path: Path | None):
        # the folder itself is replaced at the commit, so work on the real path, not on a link to it
        self.dir = Path(os.path.realpath(out_dir))
        if self.dir.exists() and not self.dir.is_dir():
            raise CentrifugeError(f"output path exists and is not a folder: {out_dir}")
        existed = self.dir.is_dir()
        if existed and not os.access(self.dir, os.W_OK | os.X_OK):
            raise CentrifugeError(f"cannot write into the output folder {out_dir}: permission denied")
        self._hold = contextlib.ExitStack()
        try:
            self._hold.enter_context(hold_folder(self.dir, "output folder", remove_if_empty=True))
            self._remove_stale()
            entries = list(self.dir.iterdir())
            if entries and not overwrite:
                raise CentrifugeError(f"output folder is not empty: {out_dir} (pass --overwrite to replace)")
            self.previous = _listed_outputs(self.dir)
            if input_path is not None:
                self._refuse_input(input_path)
            # one rename publishes a folder this run made; an existing one keeps its identity
            self.whole = not existed and not os.path.ismount(self.dir) and os.access(self.dir.parent, os.W_OK)
            prefix = f".{self.dir.name}{_TMP_PREFIX}" if self.whole else _TMP_PREFIX
            self.tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=_TMP_SUFFIX,
                                             dir=self.dir.parent if self.whole else self.dir))
        except OSError as e:
            self._hold.close()
            raise CentrifugeError(f"cannot write to the output folder {out_dir}: {e.strerror or e}") from e
        except BaseException:
            self._hold.close()
            raise

    def _remove_stale(self) -> None:
        """Temporary folders of killed runs (a live run would hold the lock we hold)."""
        stale = [*self.dir.glob(f"{_TMP_PREFIX}*{_TMP_SUFFIX}"),
                 *self.dir.parent.glob(f".{glob.escape(self.dir.name)}{_TMP_PREFIX}*{_TMP_SUFFIX}")]
        for path in stale:
            shutil.rmtree(path, ignore_errors=True)

    def _refuse_input(self, input_path: Path) -> None:
        """The input must not be (a link to) a file this run may replace or remove."""
        for path in self.dir.iterdir():
            if (path.name in self.previous or _OUTPUT_RE.fullmatch(path.name)) and path.is_file() \
                    and os.path.samefile(path, input_path):
                raise CentrifugeError(f"the input {input_path} is the output {path}; choose another -o")

    def path(self, name: str) -> Path:
        """Where the file ``name`` is made during the run."""
        return self.tmp / name

    def slot_path(self, k: int) -> Path:
        """Where model slot ``k``'s layer file is made during the run."""
        return self.path(_slot_name(k))

    def _write_json(self, name: str, data: Any) -> None:
        try:
            text = json.dumps(data, indent=2, allow_nan=False)
        except ValueError as e:  # a NaN figure is a bug upstream; refuse rather than write invalid JSON
            raise CentrifugeError(f"refusing to write {name}: a figure is not finite") from e
        self.path(name).write_text(text + "\n")

    def publish(self, meta: dict[str, Any], layers: dict[int, str]) -> dict[str, Path]:
        """Write ``layers.json``, publish it with the layer files (``{slot: final name}``), the preview and the
        contact sheet, and release the folder; returns the final paths."""
        self._write_json(META_NAME, meta)
        moves = {_slot_name(k): name for k, name in layers.items()}
        moves.update({PREVIEW_NAME: PREVIEW_NAME, META_NAME: META_NAME})
        if self.path(CONTACT_NAME).exists():
            moves[CONTACT_NAME] = CONTACT_NAME
        return self.commit(moves)

    def commit(self, names: dict[str, str]) -> dict[str, Path]:
        """Publish ``{temporary name: final name}`` (``layers.json`` among them) and release the folder."""
        for src in names:
            fsync(self.tmp / src)
        if self.whole:
            # final names inside the temporary folder first (no slot file has an output's name) ...
            for src, dst in names.items():
                os.rename(self.tmp / src, self.tmp / dst)
            for path in self.tmp.iterdir():
                if path.name not in names.values():
                    path.unlink()  # unchosen slots
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self.tmp, 0o777 & ~umask)  # mkdtemp makes 0700; the output folder gets the usual permissions
            fsync(self.tmp)
            # ... then one rename publishes them all
            os.rename(self.tmp, self.dir)  # over the empty folder this run made
        else:
            final = set(names.values())
            (self.dir / META_NAME).unlink(missing_ok=True)  # from here on the folder is not a finished set
            for old in self.previous - final:
                (self.dir / old).unlink(missing_ok=True)
            for src, dst in sorted(names.items(), key=lambda item: item[1] == META_NAME):
                os.replace(self.tmp / src, self.dir / dst)
            shutil.rmtree(self.tmp, ignore_errors=True)
        fsync(self.dir.parent if self.whole else self.dir)
        self._hold.close()
        return {dst: self.dir / dst for dst in names.values()}

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        self._hold.close()  # also removes the folder if this run made it and it is still empty


def _listed_outputs(folder: Path) -> set[str]:
    """The output files a previous run's ``layers.json`` lists (only names this tool writes)."""
    try:
        files = json.loads((folder / META_NAME).read_text()).get("files") or {}
        names = [*files.get("layers", []), files.get("preview"), files.get("contact"), META_NAME]
    except (OSError, ValueError, AttributeError, TypeError):
        return set()
    return {n for n in names if isinstance(n, str) and _OUTPUT_RE.fullmatch(n)}


class LayerFiles:
    """Encode: one H.264 file per model slot of ``slots``, made in the output's temporary folder."""

    def __init__(self, output: Output, slots: list[int], rate: float, width: int, height: int,
                 stack: contextlib.ExitStack):
        # 4:2:0 chroma needs even sizes; 4:4:4 keeps an odd-sized input's exact size (but fewer players take it).
        pix_fmt = "yuv444p" if width % 2 or height % 2 else "yuv420p"
        self.writers = {k: stack.enter_context(VideoWriter(output.slot_path(k), rate, width, height, crf=CRF,
                                                           preset=X264_PRESET, pix_fmt=pix_fmt)) for k in slots}

    def add(self, start: int, video: np.ndarray, layers: np.ndarray, slots: list[int]) -> None:
        """``layers``: ``uint8 [k, c, H, W, 3]`` of ``slots``, the frames after those already written."""
        for layer, k in zip(layers, slots, strict=True):
            self.writers[k].write(layer)

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
