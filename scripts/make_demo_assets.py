"""Make the small demo clips shipped in ``centrifuge/assets`` from the project's development clips.

Usage: python scripts/make_demo_assets.py CLIPS_DIR

Each asset is a short excerpt, shortest side 128 px, re-encoded with H.264 (CRF 24) so the three together
stay well under a few hundred KB. Licences are those of the sources (see assets/ASSETS.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

from centrifuge.video import probe, read_video
from centrifuge.video_writer import write_video

# asset name: (source file, first frame, frames)
ASSETS = {
    "bikes.mp4": ("bikes.mp4", 60, 48),
    "office-window.mp4": ("office-window.mp4", 0, 36),
    "carphone.mp4": ("carphone.mp4", 0, 96),
}


def main(clips: Path) -> None:
    out = Path(__file__).resolve().parents[1] / "src" / "centrifuge" / "assets"
    for name, (src, start, frames) in ASSETS.items():
        info = probe(clips / src)
        video = read_video(clips / src, start=start, num_frames=frames, size=128)
        write_video(out / name, video, info.fps, crf=24)
        print(f"{name}: {video.shape} at {info.fps:.3f} fps, {(out / name).stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
