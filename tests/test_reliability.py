"""Reliability (docs/reliability.md): bad input gets one line and exit status 2 before any work, inputs are never
changed, outputs appear whole or not at all (also under SIGKILL), one run per folder, no NaN in any JSON."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_not_videos, make_video
from PIL import Image
from safetensors.torch import load_file

import centrifuge.monitor as monitor_module
from centrifuge.checkpoint import CONFIG, OPTIMIZER, WEIGHTS, save_checkpoint, save_weights
from centrifuge.cli import main
from centrifuge.config import TrainConfig
from centrifuge.model import ModelConfig, build_model
from centrifuge.sources import list_videos
from centrifuge.train import train
from centrifuge.training_step import make_optimizer
from centrifuge.video_writer import write_video

TINY = ModelConfig(n_layers=2, width=0.125, final_endpoint="Mixed_3c")
TINY_FLAGS = ["--frames", "4", "--size", "32", "--width", "0.125", "--layers", "2", "--final-endpoint", "Mixed_3c",
              "--batch-size", "2", "--workers", "0", "--no-progress", "--device", "cpu", "--no-compile-loss"]


def _model(path: Path, cfg: ModelConfig = TINY, nan: bool = False) -> Path:
    torch.manual_seed(0)
    model = build_model(cfg)
    if nan:
        with torch.no_grad():
            next(model.parameters())[0] = float("nan")
    save_weights(path, model, cfg)
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The inputs every case reads: videos, models, presets, a previous run's outputs and links to them."""
    root = tmp_path_factory.mktemp("corpus")
    for i in range(2):
        make_video(root / f"v{i}.mp4", frames=8, width=32, height=32, seed=i)
    write_video(root / "pixel.mp4", np.random.default_rng(0).integers(0, 256, (6, 1, 1, 3), dtype=np.uint8), 25)
    _model(root / "tiny.safetensors")
    _model(root / "nan.safetensors", nan=True)
    _model(root / "one.safetensors", ModelConfig(n_layers=1, width=0.125, final_endpoint="Mixed_3c"))
    presets = {"list": [1, 2], "null": {"model": None, "train": None}, "eight": {"train": {"batch_size": "eight"}},
               "two": {"model": {"n_layers": "two"}}, "typo": {"train": {"batch": 2}}, "bool": {"train": {"lr": True}}}
    for name, content in presets.items():
        (root / f"{name}.json").write_text(json.dumps(content))
    (root / "broken.json").write_text("{")
    prev = root / "prev"  # a finished output folder, and an input that is (a link to) one of its files
    prev.mkdir()
    (prev / "layer_0.mp4").write_bytes((root / "v0.mp4").read_bytes())
    (prev / "layers.json").write_text(json.dumps({"files": {"layers": ["layer_0.mp4"]}}))
    (root / "link.mp4").symlink_to(prev / "layer_0.mp4")
    os.link(prev / "layer_0.mp4", root / "hard.mp4")
    (root / "vids").mkdir()  # an experiment's data folder
    for i in range(3):
        make_video(root / "vids" / f"v{i}.mp4", frames=8, width=32, height=32, seed=i)
    (root / "photos").mkdir()  # synth's photos
    for i in range(2):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(
            root / "photos" / f"p{i}.png")
    make_not_videos(root / "not")  # notes.txt, still.png, still.jpg, one.mp4, one.gif, audio.m4a, subs.srt
    (root / "not" / "notes.mp4").write_bytes((root / "not" / "still.png").read_bytes())  # an image named .mp4
    (root / "exp").mkdir()  # an experiment's data folder: one video and a text file named as one
    make_video(root / "exp" / "v0.mp4", frames=8, width=32, height=32)
    (root / "exp" / "v1.mp4").write_bytes((root / "not" / "notes.txt").read_bytes())
    return root


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def _cases() -> list[tuple[str, list[str], str]]:
    """(command line with {c} for the corpus and {o} for an output path that must not appear, expected words)"""
    v, m, nan = "{c}/v0.mp4 {c}/v1.mp4", "--model {c}/tiny.safetensors", "--model {c}/nan.safetensors"
    train = f"train {v} --out {{o}} " + " ".join(TINY_FLAGS)
    sep = "separate {c}/v0.mp4 -o {o} --no-progress --device cpu"
    ev = f"evaluate {v} --device cpu --json {{o}}"
    table = [
        # presets: the field named
        (f"{train} --preset {{c}}/list.json", "expected a JSON object"),
        (f"{train} --preset {{c}}/null.json", "model must be a JSON object"),
        (f"{train} --preset {{c}}/eight.json", 'train.batch_size must be a whole number, got "eight"'),
        (f"{train} --preset {{c}}/two.json", 'model.n_layers must be a whole number, got "two"'),
        (f"{train} --preset {{c}}/typo.json", "unknown train keys: batch"),
        (f"{train} --preset {{c}}/bool.json", "train.lr must be a number"),
        (f"{train} --preset {{c}}/broken.json", "preset"),
        # training flags that cannot work
        (f"{train} --iterations 0", "--iterations 0"),
        (f"{train} --iterations -1", "--iterations -1"),
        (f"{train} --ckpt-every 0", "--ckpt-every 0"),
        (f"{train} --log-every 0", "--log-every 0"),
        (f"{train} --frames 0", "--frames 0"),
        (f"{train} --frames -1", "--frames -1"),
        (f"{train} --alpha 2", "--alpha 2"),
        (f"{train} --batch-size -1", "--batch-size -1"),
        (f"{train} --lr nan", "--lr nan"),
        (f"{train} --momentum 1", "--momentum"),
        (f"{train} --layers 0", "n_layers"),
        (f"{train} --init {{c}}/nan.safetensors", "non-finite weights"),
        (f"{train} --init {{c}}/one.safetensors", "this model has 1 output layer, but training separates blends "
                                                 "of 2 videos into one layer each; start from a model with at least 2"),
        (f"{train} --layers 1", "the model needs at least 2 output layers"),
        (f"{train} --size 100000", "needs at least"),  # memory: refused before a step, whatever the machine
        (f"{train} --frames 10000000", "needs at least"),
        # evaluate
        (f"{ev} {m} --frames 0", "--frames"),
        (f"{ev} {m} --frames -1", "--frames"),
        (f"{ev} {m} --pairs 0", "--pairs"),
        (f"{ev} {m} --batch-size -1", "--batch-size"),
        (f"{ev} {m} --size 1", "--size"),
        (f"{ev} {m} --frames 100000", "needs at least"),
        (f"{ev} {nan}", "non-finite weights"),
        # separate
        (f"{sep} {m} --size 100000", "needs at least"),
        (f"{sep} {m} --size 1", "--size"),
        (f"{sep} {m} --window 0", "--window"),
        (f"{sep} {nan}", "non-finite weights"),
        (f"separate {{c}}/link.mp4 -o {{c}}/prev --overwrite {m} --no-progress", "is the output"),
        (f"separate {{c}}/hard.mp4 -o {{c}}/prev --overwrite {m} --no-progress", "is the output"),
        # what a video is (centrifuge.video.check_video): every command that reads videos
        ("separate {c}/not/notes.txt -o {o} --no-progress", "is text"),
        ("separate {c}/not/still.png -o {o} --no-progress", "still image (PNG)"),
        ("separate {c}/not/still.jpg -o {o} --no-progress", "still image (JPEG)"),
        ("separate {c}/not/notes.mp4 -o {o} --no-progress", "still image (PNG)"),
        ("separate {c}/not/one.mp4 -o {o} --no-progress", "only 1 frame"),
        ("separate {c}/not/one.gif -o {o} --no-progress", "only 1 frame"),
        ("separate {c}/not/audio.m4a -o {o} --no-progress", "only audio"),
        ("separate {c}/not/subs.srt -o {o} --no-progress", "subtitles"),
        (f"evaluate {{c}}/v0.mp4 {{c}}/not/still.png {m} --json {{o}}", "still image (PNG)"),
        (f"evaluate {{c}}/v0.mp4 {{c}}/not/notes.txt {m} --json {{o}}", "is text"),
        (f"train {{c}}/v0.mp4 {{c}}/not/notes.txt --out {{o}} {' '.join(TINY_FLAGS)}", "is text"),
        (f"{train} --val-data {{c}}/v0.mp4 {{c}}/not/audio.m4a", "only audio"),
        ("prepare {c}/not/still.jpg --out {o}", "still image (JPEG)"),
        ("prepare {c}/not/one.mp4 --out {o}", "only 1 frame"),
        (f"experiment baselines --data {{c}}/exp --out {{o}} {m} --frames 4 --size 32 --device cpu",
         "fewer than 2 evaluation videos"),
        # synth and experiment
        ("synth {c}/photos -o {o} --frames 1", "--frames"),
        ("synth {c}/photos -o {o} --n 0", "--n"),
        (f"experiment baselines --data {{c}}/vids --out {{o}} {m} --pairs 0", "--pairs"),
        # bench, prepare, demo
        ("bench --peak-seconds -1 --json {o}", "--peak-seconds"),
        ("bench --frames 0 --json {o}", "--frames"),
        ("bench --batch 0 --json {o}", "--batch"),
        ("prepare {c} --out {o} --size 33", "--size"),
        ("prepare {c} --out {o} --workers -1", "--workers"),
        (f"demo --out {{o}} {nan} --no-progress", "non-finite weights"),
    ]
    return [(f"{line.split()[0]}: {words}", line, words) for line, words in table]


@pytest.mark.parametrize(("line", "words"), [c[1:] for c in _cases()], ids=[c[0] for c in _cases()])
def test_refused_with_one_line_before_any_work(corpus, tmp_path, capfd, line, words):
    before = _snapshot(corpus)
    out = tmp_path / "out"
    rc = main(line.format(c=corpus, o=out).split())
    err = capfd.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and "error:" in err[0] and words in err[0], err
    assert not out.exists()  # nothing written, not even an empty folder
    assert _snapshot(corpus) == before  # inputs unchanged


# ---- degenerate but valid inputs: finite figures, valid JSON


def _strict_json(path: Path) -> dict:
    def refuse(constant: str) -> float:
        raise AssertionError(f"{path} holds {constant}")

    data = json.loads(path.read_text(), parse_constant=refuse)
    assert all(math.isfinite(x) for x in _numbers(data))
    return data


def _numbers(x):
    if isinstance(x, dict):
        x = list(x.values())
    if isinstance(x, list):
        for item in x:
            yield from _numbers(item)
    elif isinstance(x, float):
        yield x


@pytest.mark.parametrize("line", [
    "separate {c}/pixel.mp4 -o {o} {m} --no-progress --device cpu",
    "separate {c}/v0.mp4 -o {o} {m} --no-progress --device cpu --size 8 --window 1",
    "evaluate {c}/v0.mp4 {c}/v1.mp4 {m} --device cpu --frames 1 --size 8 --json {o}/e.json",
    "evaluate {c}/pixel.mp4 {c}/v1.mp4 {m} --device cpu --frames 1 --json {o}/e.json",
], ids=["1x1 video", "size 8 window 1", "frames 1", "1x1 frames 1"])
def test_degenerate_inputs_give_finite_figures(corpus, tmp_path, line):
    out = tmp_path / "out"
    assert main(line.format(c=corpus, o=out, m=f"--model {corpus}/tiny.safetensors").split()) == 0
    data = _strict_json(out / ("layers.json" if line.startswith("separate") else "e.json"))
    if "pixel.mp4 -o" in line:  # a video below 8 pixels is enlarged for the model
        assert data["settings"]["inference_size"] == [8, 8]


def test_psnr_of_identical_images_is_capped_not_infinite():
    from centrifuge.separation.stats import quality

    assert quality(0.0, 0.0, 100)["psnr_db"] == 100.0


# ---- folders: links followed once


def test_link_loops_are_walked_once(tmp_path):
    loop, twice = tmp_path / "loop", tmp_path / "twice"
    (loop / "sub").mkdir(parents=True)
    make_video(loop / "a.mp4", frames=4, width=16, height=16)
    make_video(loop / "sub" / "b.mp4", frames=4, width=16, height=16)
    (loop / "sub" / "up").symlink_to(loop)  # a loop
    assert list_videos(loop) == [loop / "a.mp4", loop / "sub" / "b.mp4"]
    (twice / "real").mkdir(parents=True)
    make_video(twice / "real" / "c.mp4", frames=4, width=16, height=16)
    (twice / "link").symlink_to(twice / "real")  # a second way to one folder
    assert list_videos(twice) in ([twice / "link" / "c.mp4"], [twice / "real" / "c.mp4"])


# ---- prepare: failures in the exit status


def test_prepare_exit_status_counts_failures(tmp_path, capfd):
    src = tmp_path / "src"
    src.mkdir()
    (src / "bad.mp4").write_text("not a video")
    assert main(["prepare", str(src), "--out", str(tmp_path / "c1"), "--size", "16", "--workers", "0",
                 "--no-progress"]) == 2  # none succeeded
    assert "all of 1 videos failed" in capfd.readouterr().err.strip().splitlines()[-1]
    make_video(src / "good.mp4", frames=4, width=16, height=16)
    assert main(["prepare", str(src), "--out", str(tmp_path / "c2"), "--size", "16", "--workers", "0",
                 "--no-progress"]) == 1  # some did
    assert "1 of 2 videos failed" in capfd.readouterr().err.strip().splitlines()[-1]


# ---- one run per folder


def _hold_elsewhere(folder: Path) -> int:
    """Lock ``folder`` as another process would (a separate open file description)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def _synth(corpus: Path, out: Path, *more: str) -> list[str]:
    return ["synth", f"{corpus}/photos", "-o", str(out), "--n", "2", "--frames", "3", "--size", "16", *more]


def _experiment(corpus: Path, out: Path, *more: str) -> list[str]:
    return ["experiment", "baselines", "--data", f"{corpus}/vids", "--out", str(out), "--model",
            f"{corpus}/tiny.safetensors", "--frames", "4", "--size", "32", "--windows", "1", "--device", "cpu",
            "--held-out", "v0.mp4", "v1.mp4", *more]


@pytest.mark.parametrize("command", ["separate", "train", "synth", "experiment"])
def test_a_folder_in_use_is_refused(corpus, tmp_path, capfd, command):
    out = tmp_path / "busy"
    fd = _hold_elsewhere(out)
    try:
        if command == "separate":
            args = ["separate", f"{corpus}/v0.mp4", "-o", str(out), "--model", f"{corpus}/tiny.safetensors",
                    "--no-progress", "--device", "cpu"]
        elif command == "train":
            args = ["train", f"{corpus}/v0.mp4", f"{corpus}/v1.mp4", "--out", str(out), *TINY_FLAGS,
                    "--iterations", "1"]
        else:
            args = (_synth if command == "synth" else _experiment)(corpus, out)
        assert main(args) == 2
        err = capfd.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is in use by another centrifuge run" in err[0], err
        assert list(out.iterdir()) == []
    finally:
        os.close(fd)
    assert main(args) == 0  # free again once its holder is gone


def test_a_killed_holder_frees_the_folder(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from centrifuge.locks import hold_folder
        with hold_folder({str(out)!r}):
            print("held", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(Exception, match="in use"), _hold_in_this_process(out):
            pass
    finally:
        holder.kill()
        holder.wait()
    with _hold_in_this_process(out):
        pass


def _hold_in_this_process(folder: Path):
    from centrifuge.locks import hold_folder

    return hold_folder(folder)


# ---- separate --overwrite: exactly the tool's files


def test_overwrite_replaces_only_the_tools_files(corpus, tmp_path):
    three = _model(tmp_path / "three.safetensors", ModelConfig(n_layers=3, width=0.125, final_endpoint="Mixed_3c"))
    out = tmp_path / "out"
    common = ["--no-progress", "--device", "cpu"]
    assert main(["separate", f"{corpus}/v0.mp4", "-o", str(out), "--model", str(three), "--layers", "all",
                 *common]) == 0
    assert (out / "layer_2.mp4").exists()
    mine = {"layer_cake.mp4": b"cake", "layer_7.mp4": b"mine", "notes.txt": b"notes"}
    for name, data in mine.items():
        (out / name).write_bytes(data)
    assert main(["separate", f"{corpus}/v1.mp4", "-o", str(out), "--model", str(three), "--overwrite",
                 *common]) == 0
    names = {p.name for p in out.iterdir()}
    # layer_2.mp4 was the previous run's (its layers.json listed it); the user's files are untouched
    assert names == {"layer_0.mp4", "layer_1.mp4", "preview.mp4", "contact.png", "layers.json", *mine}
    assert all((out / name).read_bytes() == data for name, data in mine.items())
    assert json.loads((out / "layers.json").read_text())["input"]["path"].endswith("v1.mp4")


# ---- synth and experiment: a user's folder stays theirs


_TOOLS = {"synth": (_synth, {"synth_000.mp4", "synth_001.mp4", "contact.png", "synth.json"}, "synth.json"),
          "experiment": (_experiment, {"pairs.csv", "results.json", "results.md", "results.csv"}, "results.csv")}


@pytest.mark.parametrize("tool", list(_TOOLS))
def test_synth_and_experiment_write_into_a_users_folder_and_replace_only_their_files(corpus, tmp_path, capfd, tool):
    args, files, marker = _TOOLS[tool]
    out = tmp_path / "out"
    manifest = out / ("synth.json" if tool == "synth" else "results.json")
    out.mkdir()
    (out / "notes.txt").write_text("notes")
    inode = out.stat().st_ino
    assert main(args(corpus, out)) == 0  # none of the tool's names there: written into the folder, no --overwrite
    assert {p.name for p in out.iterdir()} == files | {"notes.txt"} and out.stat().st_ino == inode
    before = {name: (out / name).read_bytes() for name in files}
    capfd.readouterr()
    assert main(args(corpus, out)) == 2  # never replaced unasked
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite" in err[0], err
    assert {name: (out / name).read_bytes() for name in files} == before
    listed = json.loads(manifest.read_text())["files"]
    assert set(listed) == files
    # the previous set listed an extra file (as another experiment's figure would be); the user added files of the
    # tool's names that no set lists
    extra = "synth_005.mp4" if tool == "synth" else "extra.png"
    manifest.write_text(json.dumps({"files": [*listed, extra]}))
    (out / extra).write_bytes(b"from the previous set")
    mine = {"notes.txt": b"notes", "synth_009.mp4": b"mine", "old.png": b"a figure of mine"}
    for name, data in mine.items():
        (out / name).write_bytes(data)
    more = ["--n", "1"] if tool == "synth" else []  # synth_001.mp4, listed, is not written again
    assert main(args(corpus, out, "--overwrite", *more)) == 0
    names = {p.name for p in out.iterdir()}
    assert names == (files - {"synth_001.mp4"} if tool == "synth" else files) | set(mine)
    assert all((out / name).read_bytes() == data for name, data in mine.items())  # the user's files, untouched
    assert not list(out.glob(f".{tool}-*.part")) and out.stat().st_ino == inode


@pytest.mark.parametrize("tool", list(_TOOLS))
def test_synth_and_experiment_killed_in_their_commit_are_not_marked_finished(corpus, tmp_path, tool):
    args, files, marker = _TOOLS[tool]
    out = tmp_path / "out"
    assert main(args(corpus, out)) == 0
    first = sorted(files - {marker})[0]
    _run_killed(f"""
        kill_before(os, "replace", {first!r}, 1)
        from centrifuge.cli import main
        main({args(corpus, out, "--overwrite")!r})
        """)
    assert not (out / marker).exists()  # the mark of a finished set is gone first, comes back last
    assert list(out.glob(f".{tool}-*.part"))  # the dead run's staging folder, not yet cleaned
    assert main(args(corpus, out, "--overwrite")) == 0
    assert {p.name for p in out.iterdir()} == files and not list(out.glob(f".{tool}-*.part"))


# ---- kills inside the commit


_KILL_AT = textwrap.dedent("""
    import os, signal
    from pathlib import Path

    def kill_before(module, function, target, occurrence):
        # SIGKILL this process when module.function (os.rename, os.replace, torch.save) is about to write a path
        # named `target`, the `occurrence`-th time: a kill at an exact point inside a commit, without timing.
        seen = [0]
        original = getattr(module, function)

        def wrapper(*args, **kwargs):
            if Path(args[1]).name == target:
                seen[0] += 1
                if seen[0] == occurrence:
                    os.kill(os.getpid(), signal.SIGKILL)
            return original(*args, **kwargs)

        setattr(module, function, wrapper)
    """)


def _run_killed(code: str) -> None:
    proc = subprocess.run([sys.executable, "-c", _KILL_AT + textwrap.dedent(code)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]


@pytest.mark.parametrize("target", [
    "layer_0.mp4",  # naming the files in the temporary folder
    "out",  # the rename that publishes the folder
])
def test_separate_killed_in_its_commit_leaves_no_final_name(corpus, tmp_path, target):
    out = tmp_path / "out"
    _run_killed(f"""
        kill_before(os, "rename", {target!r}, 1)
        from centrifuge.cli import main
        main(["separate", "{corpus}/v0.mp4", "-o", "{out}", "--model", "{corpus}/tiny.safetensors", "--no-progress",
              "--device", "cpu"])
        """)
    assert list(out.iterdir()) == []  # no final name
    assert [p.name for p in tmp_path.glob(".out.separate-*.part")]  # the dead run's work, not yet cleaned
    assert main(["separate", f"{corpus}/v0.mp4", "-o", str(out), "--model", f"{corpus}/tiny.safetensors",
                 "--no-progress", "--device", "cpu"]) == 0
    assert not list(tmp_path.glob(".out.separate-*.part"))  # cleaned by the next run into this folder
    assert {p.name for p in out.iterdir()} == {"layer_0.mp4", "layer_1.mp4", "preview.mp4", "contact.png",
                                                "layers.json"}
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # the published folder is not the temporary one's 0700


def test_separate_killed_while_overwriting_is_not_marked_finished(corpus, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    args = ["separate", f"{corpus}/v0.mp4", "-o", str(out), "--model", f"{corpus}/tiny.safetensors", "--no-progress",
            "--device", "cpu", "--overwrite"]
    assert main(args) == 0
    _run_killed(f"""
        kill_before(os, "replace", "layer_1.mp4", 1)
        from centrifuge.cli import main
        main({args!r})
        """)
    assert not (out / "layers.json").exists()  # the mark of a finished set is gone first, comes back last
    assert (out / "notes.txt").read_text() == "mine"
    assert main(args) == 0
    assert not list(out.glob(".separate-*.part"))
    assert {p.name for p in out.iterdir()} == {"layer_0.mp4", "layer_1.mp4", "preview.mp4", "contact.png",
                                                "layers.json", "notes.txt"}


def _tiny_config(corpus: Path, out: Path, **kw) -> TrainConfig:
    values = dict(data=[str(corpus / "v0.mp4"), str(corpus / "v1.mp4")], frames=4, size=32, resize_factor=1.0,
                  batch_size=2, iterations=6, ckpt_every=2, optimizer="sgd", lr=0.02, momentum=0.9, preload=True,
                  workers=0, log_every=1, image_every=0, out=str(out), device="cpu", precision="fp32", seed=0,
                  compile_loss=False)
    values.update(kw)
    return TrainConfig(**values)


@pytest.fixture
def one_thread(monkeypatch):
    """One thread (bit-identical runs), and no peak-FLOP/s measurement (only for the log)."""
    monkeypatch.setattr(monitor_module, "measure_peak_flops", lambda *a, **k: 1.0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def uninterrupted(corpus, tmp_path_factory) -> Path:
    """The reference run, trained once per module into a folder of its own (never a leftover of another)."""
    run = tmp_path_factory.mktemp("uninterrupted") / "run"
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(monitor_module, "measure_peak_flops", lambda *a, **k: 1.0)
        torch.set_num_threads(1)
        try:
            train(TINY, _tiny_config(corpus, run), progress=False)
        finally:
            torch.set_num_threads(threads)
    assert json.loads((run / CONFIG).read_text())["step"] == 6
    return run


@pytest.mark.parametrize(("kill", "resumes_at"), [
    ('torch, "save", "optimizer.pt"', 2),  # inside the write: the weights are staged, the optimizer is not yet
    (f'os, "replace", "{WEIGHTS}"', 4),  # committed, nothing moved into place yet
    (f'os, "replace", "{CONFIG}"', 4),  # committed, weights and optimizer in place, config.json (the step) not yet
], ids=["writing", "committed", "half-moved"])
def test_training_killed_inside_a_checkpoint_write_resumes_bit_identically(
        corpus, tmp_path, uninterrupted, one_thread, caplog, kill, resumes_at):
    run = tmp_path / "run"
    cfg = _tiny_config(corpus, run)  # checkpoints at steps 2, 4 and 6: killed in the second one
    _run_killed(f"""
        import torch
        kill_before({kill}, 2)
        torch.set_num_threads(1)
        import centrifuge.monitor
        import centrifuge.train
        from centrifuge.config import TrainConfig
        from centrifuge.model import ModelConfig
        centrifuge.monitor.measure_peak_flops = lambda *a, **k: 1.0  # only for the log; seconds of a busy machine
        centrifuge.train.train(ModelConfig(**{TINY.to_dict()!r}), TrainConfig(**{cfg.__dict__!r}), progress=False)
        """)
    with caplog.at_level(logging.INFO, logger="centrifuge"):
        state = train(TINY, cfg, resume=True, progress=False)
    assert f"at step {resumes_at}" in caplog.text
    assert state["step"] == 6 and json.loads((run / CONFIG).read_text())["step"] == 6
    assert not (run / ".checkpoint.part").exists() and not (run / ".checkpoint.next").exists()
    a, b = load_file(str(uninterrupted / WEIGHTS)), load_file(str(run / WEIGHTS))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit-identical
    opt_a = torch.load(uninterrupted / OPTIMIZER, weights_only=True)["state"]
    opt_b = torch.load(run / OPTIMIZER, weights_only=True)["state"]
    assert opt_a.keys() == opt_b.keys()
    assert all(torch.equal(opt_a[i]["momentum_buffer"], opt_b[i]["momentum_buffer"]) for i in opt_a)


def test_old_layout_with_mixed_steps_is_refused(corpus, tmp_path, capfd):
    run = tmp_path / "run"
    cfg = _tiny_config(corpus, run)
    model = build_model(TINY)
    optimizer = make_optimizer(model, cfg)
    state = {"model": TINY.to_dict(), "train": cfg.__dict__, "step": 4}
    save_checkpoint(run, model, optimizer, TINY, state)
    (run / CONFIG).write_text(json.dumps({**state, "step": 2}))  # an earlier version killed between its files
    assert main(["train", "--out", str(run), "--resume", "--no-progress"]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.safetensors is of step 4 but config.json of step 2" in err[0], err
