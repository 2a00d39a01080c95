"""`separate -o DIR`: a new folder is published by one rename; an existing folder keeps its identity (inode,
mode) and is written into; one the user may not write into is refused; a link to a folder is followed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from helpers import make_video

from centrifuge.checkpoint import save_weights
from centrifuge.cli import main
from centrifuge.model import ModelConfig, build_model
from centrifuge.separate import separate

OUTPUTS = {"layer_0.mp4", "layer_1.mp4", "preview.mp4", "contact.png", "layers.json"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("inputs")
    torch.manual_seed(0)
    cfg = ModelConfig(n_layers=2, width=0.125)
    save_weights(root / "tiny.safetensors", build_model(cfg), cfg)
    make_video(root / "v.mp4", frames=6, width=32, height=24)
    return str(root / "v.mp4"), str(root / "tiny.safetensors")


def _separate(inputs: tuple[str, str], out: Path) -> int:
    video, model = inputs
    return main(["separate", video, "-o", str(out), "--model", model, "--window", "4", "--no-progress",
                 "--device", "cpu"])


def _identity(folder: Path) -> tuple[int, int, int]:
    st = folder.stat()
    return st.st_dev, st.st_ino, st.st_mode


def _no_temporaries(folder: Path) -> bool:
    return not list(folder.glob(".separate-*")) and not list(folder.parent.glob(f".{folder.name}.separate-*"))


def test_existing_empty_folder_is_written_into(inputs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o751)  # not what a new folder would get
    before = _identity(out)
    assert _separate(inputs, out) == 0
    assert _identity(out) == before  # the same folder, its mode kept
    assert {p.name for p in out.iterdir()} == OUTPUTS
    assert _no_temporaries(out)


def test_new_folder_is_published_by_one_rename(inputs, tmp_path, monkeypatch):
    out = tmp_path / "new"
    renames: list[tuple[str, str]] = []
    rename = os.rename

    def recording(src, dst, *args, **kwargs):
        renames.append((str(src), str(dst)))
        return rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", recording)
    assert _separate(inputs, out) == 0
    src, dst = renames[-1]
    assert dst == str(out) and Path(src).parent == tmp_path  # the finished folder, renamed over the new one
    assert {p.name for p in out.iterdir()} == OUTPUTS
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask
    assert _no_temporaries(out)


def test_folder_the_user_may_not_write_into_is_refused(inputs, tmp_path, monkeypatch, capsys):
    out = tmp_path / "read-only"
    out.mkdir()
    out.chmod(0o555)
    before = _identity(out)
    if os.geteuid() == 0:  # root may write anywhere; the check asks os.access, as for any other user
        access = os.access

        def as_a_user(path, mode, **kwargs):
            return False if Path(path).resolve() == out.resolve() and mode & os.W_OK else access(path, mode, **kwargs)

        monkeypatch.setattr(os, "access", as_a_user)
    assert _separate(inputs, out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write into the output folder" in err[0], err
    assert _identity(out) == before and list(out.iterdir()) == []


def test_link_to_a_folder_is_followed(inputs, tmp_path):
    real, link = tmp_path / "real", tmp_path / "link"
    real.mkdir()
    link.symlink_to(real)
    before = _identity(real)
    assert _separate(inputs, link) == 0
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert _identity(real) == before
    assert {p.name for p in real.iterdir()} == OUTPUTS


def test_failed_run_leaves_an_existing_folder_as_it_was(inputs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o751)
    before = _identity(out)

    def stop(done: int, expected: int) -> None:
        raise KeyboardInterrupt

    video, model = inputs
    with pytest.raises(KeyboardInterrupt):
        separate(video, model=model, out_dir=out, window=4, progress=False, device="cpu", on_progress=stop)
    assert _identity(out) == before and list(out.iterdir()) == []
