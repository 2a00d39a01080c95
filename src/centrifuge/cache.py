"""A pre-transcoded, low-resolution copy of a video dataset, so that training decodes small files.

``prepare_cache(src, out, size=128)`` writes every video of ``src`` (a folder, or the clips of a Kinetics
CSV found under it) to ``out`` at shortest side ``size``, keeping the relative paths and file stems (so
``load_kinetics(csv, out)`` finds them) and the frame rate, and writes a manifest. The result is an ordinary
folder of videos: point ``centrifuge train`` at it (with ``--kinetics-csv`` for Kinetics).

Format: H.264 (CRF 18, ``tune=fastdecode``, a keyframe every 32 frames) in MP4. Decoding a random 32-frame
window of such a file is about 4x faster than of the original clips and 15x slower than slicing raw
``uint8`` arrays, but the raw arrays take about 75x the disk space (a 10 s Kinetics clip: ~0.4 MB against
~30 MB), which does not fit Kinetics on a normal disk; see ``docs/performance.md``.

Resumable: finished files are written under a temporary name and renamed, so an existing output is
complete and is skipped on the next run. Videos that fail are counted, listed in ``failures.csv`` and
retried next time; they never stop the run.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, fields
from fractions import Fraction
from multiprocessing import get_context
from pathlib import Path

import av
import av.error

from .video import VideoError, check_video, iter_frames, probe

__all__ = [
    "MANIFEST",
    "FAILURES",
    "SETTINGS",
    "CacheEntry",
    "PrepareResult",
    "transcode",
    "prepare_cache",
    "read_manifest",
    "cached_videos",
    "is_cache",
]

log = logging.getLogger("centrifuge")

MANIFEST = "manifest.csv"
FAILURES = "failures.csv"
SETTINGS = "cache.json"

#: x264 settings: near-transparent quality; ``fastdecode`` (no CABAC, no deblocking) and short GOPs make a
#: random window cheap to decode.
DEFAULT_CRF = 18
DEFAULT_GOP = 32


@dataclass
class CacheEntry:
    """One manifest row. ``path`` is relative to the cache folder; ``source`` is as given to prepare."""

    source: str
    path: str
    frames: int
    fps: float
    width: int
    height: int
    label: str = ""
    split: str = ""


@dataclass
class PrepareResult:
    """What :func:`prepare_cache` did: ``transcoded`` now, ``skipped`` (already there), ``failed``."""

    total: int
    transcoded: int
    skipped: int
    failed: list[tuple[str, str]] = field(default_factory=list)
    manifest: Path | None = None
    entries: list[CacheEntry] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------------
# one video


def _even(n: int) -> int:
    return n - n % 2


def transcode(src: str | os.PathLike[str], dst: str | os.PathLike[str], size: int, crf: int = DEFAULT_CRF,
              gop: int = DEFAULT_GOP, preset: str = "medium") -> dict[str, float | int]:
    """Write ``src`` to ``dst`` (H.264 MP4) with its shortest side scaled to ``size``, frames upright.

    A long side of odd length loses its last column (4:2:0 H.264 needs even sizes). The file appears at
    ``dst`` only when complete. Returns ``frames``, ``fps``, ``width``, ``height`` of the result. Raises
    :class:`~centrifuge.video.VideoError` when ``src`` cannot be decoded or ``dst`` written.
    """
    if size < 2 or size % 2:
        raise ValueError(f"size must be an even number >= 2 (H.264 needs even sizes), got {size}")
    src, dst = Path(src), Path(dst)
    info = check_video(src)
    rate = Fraction(info.fps).limit_denominator(1001)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.stem}.part.mp4")  # hidden: list_videos never picks it up
    frames = 0
    width = height = 0
    try:
        with av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
            stream = None
            for batch in iter_frames(src, size=size, batch=16):
                if stream is None:
                    height, width = _even(batch.shape[1]), _even(batch.shape[2])
                    stream = container.add_stream("libx264", rate=rate, options={
                        "crf": str(crf), "preset": preset, "tune": "fastdecode", "g": str(gop),
                        "keyint_min": str(min(gop, 25))})
                    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
                    stream.codec_context.time_base = 1 / rate
                for rgb in batch[:, :height, :width]:
                    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                    frame.pts = frames
                    frame.time_base = 1 / rate
                    container.mux(stream.encode(frame))
                    frames += 1
            if stream is None:
                raise VideoError(f"no decodable frames in {src}")
            container.mux(stream.encode(None))
        os.replace(tmp, dst)
    except (av.error.FFmpegError, OSError) as e:
        raise VideoError(f"cannot transcode {src}: {e}") from e
    finally:
        tmp.unlink(missing_ok=True)
    return {"frames": frames, "fps": float(rate), "width": width, "height": height}


def _probe_cached(path: Path) -> dict[str, float | int]:
    info = probe(path)
    return {"frames": info.num_frames, "fps": info.fps, "width": info.width, "height": info.height}


def _job(src: str, dst: str, size: int, crf: int, gop: int) -> tuple[dict[str, float | int] | None, str]:
    """Worker body: never raises, so one bad file cannot take the pool down."""
    try:
        return transcode(src, dst, size, crf, gop), ""
    except Exception as e:  # noqa: BLE001 - reported per file, the run goes on
        return None, f"{type(e).__name__}: {e}".splitlines()[0]


# --------------------------------------------------------------------------------------------------------
# manifest


def read_manifest(cache_dir: str | os.PathLike[str]) -> list[CacheEntry]:
    """The rows of ``cache_dir/manifest.csv`` (empty when there is none)."""
    path = Path(cache_dir) / MANIFEST
    if not path.exists():
        return []
    types = {f.name: f.type for f in fields(CacheEntry)}
    entries = []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            values = {k: row.get(k, "") for k in types}
            entries.append(CacheEntry(**{
                k: int(v) if types[k] == "int" else float(v) if types[k] == "float" else v
                for k, v in values.items()
            }))
    return entries


def _write_csv(path: Path, header: list[str], rows: Iterable[list[object]]) -> None:
    tmp = path.with_name(f".{path.name}.part")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(tmp, path)


def _write_manifest(cache_dir: Path, entries: list[CacheEntry]) -> Path:
    names = [f.name for f in fields(CacheEntry)]
    path = cache_dir / MANIFEST
    _write_csv(path, names, ([getattr(e, n) for n in names] for e in sorted(entries, key=lambda e: e.path)))
    return path


def is_cache(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder made by :func:`prepare_cache`."""
    return (Path(path) / MANIFEST).is_file()


def cached_videos(cache_dir: str | os.PathLike[str]) -> list[Path]:
    """The cached video files listed in the manifest that exist, sorted."""
    root = Path(cache_dir)
    return sorted(p for p in (root / e.path for e in read_manifest(root)) if p.is_file())


# --------------------------------------------------------------------------------------------------------
# a dataset


@dataclass
class _Item:
    source: Path
    rel: Path  # output path relative to the cache folder
    label: str
    split: str


def _items(src: Path, kinetics_csv: str | None, split: str | None) -> list[_Item]:
    from .sources import list_videos, load_kinetics

    if kinetics_csv:
        entries, _ = load_kinetics(kinetics_csv, src, split=split)
        items = [_Item(e.path, e.path.relative_to(src).with_suffix(".mp4"), e.label, e.split)
                 for e in entries if e.path is not None]
    elif src.is_file():
        items = [_Item(src, Path(src.name).with_suffix(".mp4"), "", "")]
    else:
        items = []
        for p in list_videos(src):
            rel = p.relative_to(src)
            items.append(_Item(p, rel.with_suffix(".mp4"), rel.parent.name if rel.parent != Path(".") else "", ""))
    # Two sources that differ only by extension would land on the same file: keep the first.
    seen: dict[Path, _Item] = {}
    for item in items:
        if item.rel in seen:
            log.warning("%s and %s map to the same cached file; keeping the first", seen[item.rel].source,
                        item.source)
            continue
        seen[item.rel] = item
    return list(seen.values())


def _check_settings(out: Path, settings: dict[str, int]) -> None:
    path = out / SETTINGS
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("size") != settings["size"]:
            raise ValueError(f"{out} holds a cache made with size {old.get('size')}, not {settings['size']}: "
                             "choose another --out")
    else:
        tmp = path.with_name(f".{path.name}.part")
        tmp.write_text(json.dumps(settings, indent=2) + "\n")
        os.replace(tmp, path)


def _already_done(items: list[_Item], out: Path) -> tuple[list[CacheEntry], list[_Item], list[tuple[str, str]]]:
    """``(entries, todo, failed)``: the cached files a previous run finished (from its manifest, or probed),
    the items left to transcode, and finished files that cannot be read."""
    known = {e.path: e for e in read_manifest(out)}
    entries: list[CacheEntry] = []
    todo: list[_Item] = []
    failed: list[tuple[str, str]] = []
    for item in items:
        rel = item.rel.as_posix()
        dst = out / item.rel
        if not dst.exists():
            todo.append(item)
            continue
        entry = known.get(rel)
        if entry is None:  # finished but the run stopped before the manifest was written
            try:
                entry = CacheEntry(str(item.source), rel, **_probe_cached(dst), label=item.label, split=item.split)
            except VideoError as e:
                failed.append((str(item.source), str(e)))
                continue
        entries.append(entry)
    return entries, todo, failed


def _transcode(todo: list[_Item], out: Path, workers: int, settings: tuple[int, int, int],
               record: Callable[..., None]) -> None:
    """Transcode ``todo`` (``settings``: size, crf, gop), here or in ``workers`` processes; ``record`` each."""
    if workers <= 1:
        for item in todo:
            record(item, *_job(str(item.source), str(out / item.rel), *settings))
        return
    if not todo:
        return
    # spawn: FFmpeg and PyTorch threads do not survive a fork reliably.
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))
    try:
        pending: dict[Future, _Item] = {}
        queue = iter(todo)
        while True:
            # A bounded number in flight: Kinetics has ~500k videos.
            for item in queue:
                pending[pool.submit(_job, str(item.source), str(out / item.rel), *settings)] = item
                if len(pending) >= 4 * workers:
                    break
            if not pending:
                break
            finished_now, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished_now:
                record(pending.pop(future), *future.result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def prepare_cache(src: str | os.PathLike[str], out: str | os.PathLike[str], size: int = 128,
                  kinetics_csv: str | None = None, split: str | None = None, workers: int = 1,
                  crf: int = DEFAULT_CRF, gop: int = DEFAULT_GOP,
                  progress: Callable[[int, int], None] | None = None) -> PrepareResult:
    """Transcode every video of ``src`` into ``out`` (see the module docstring); resumable.

    Args:
        src: a folder (searched recursively), a single video, or the Kinetics root with ``kinetics_csv``.
        out: the cache folder (created).
        size: shortest side of the cached videos (even).
        kinetics_csv: official Kinetics CSV: only its clips, with their labels and splits.
        split: with ``kinetics_csv``, only the rows of this split (default: all).
        workers: processes transcoding in parallel (0 or 1: in this process).
        progress: called as ``progress(done, total)`` after each video.
    """
    src, out = Path(src), Path(out)
    if not src.exists():
        raise FileNotFoundError(f"no such file or folder: {src}")
    if size < 2 or size % 2:
        raise ValueError(f"size must be an even number >= 2 (H.264 needs even sizes), got {size}")
    items = _items(src, kinetics_csv, split)
    if not items:
        raise ValueError(f"no videos found in {src}")
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, {"size": size, "crf": crf, "gop": gop})

    entries, todo, failed = _already_done(items, out)
    skipped = len(items) - len(todo)

    def record(item: _Item, meta: dict[str, float | int] | None, error: str) -> None:
        if meta is None:
            failed.append((str(item.source), error))
            log.warning("failed: %s: %s", item.source, error)
        else:
            entries.append(CacheEntry(str(item.source), item.rel.as_posix(), **meta, label=item.label,
                                      split=item.split))
        finished = len(entries) + len(failed)
        if finished % 1000 == 0:  # a killed run loses at most this much bookkeeping (files are re-probed)
            _write_manifest(out, entries)
        if progress is not None:
            progress(finished, len(items))

    done_before = len(entries)
    if progress is not None:
        progress(len(entries) + len(failed), len(items))
    try:
        _transcode(todo, out, workers, (size, crf, gop), record)
    finally:
        # Written even when interrupted, so the next run knows what it finished.
        manifest = _write_manifest(out, entries)
        _write_csv(out / FAILURES, ["source", "error"], ([s, e] for s, e in failed))
    return PrepareResult(total=len(items), transcoded=len(entries) - done_before, skipped=skipped,
                         failed=failed, manifest=manifest, entries=entries)
