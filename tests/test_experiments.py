"""`centrifuge experiment`: every experiment end to end on tiny generated videos (2 training iterations), the
report's structure, and its figures recomputed from the evaluation functions."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from helpers import make_video
from PIL import Image

from centrifuge.checkpoint import load_model
from centrifuge.cli import main
from centrifuge.data import window_starts
from centrifuge.errors import CentrifugeError
from centrifuge.evaluate import evaluate_clips
from centrifuge.experiments import EXPERIMENTS, Settings, run_experiment
from centrifuge.experiments.clips import ClipSet, choose_clip_pairs, load_clip_set
from centrifuge.experiments.scoring import _autocast, pearson
from centrifuge.experiments.settings import MIN_HELD_OUT_VIDEOS, Video
from centrifuge.frames import to_model
from centrifuge.model import build_model, conv_depth

TINY = {"frames": 4, "size": 32, "iterations": 2, "windows": 2}


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """Five tiny, different videos in a flat folder (one of them held out by the default split)."""
    root = tmp_path_factory.mktemp("videos")
    for i in range(5):
        make_video(root / f"v{i}.mp4", frames=12, width=48, height=40, seed=i)
    return root


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    """Shared by the whole module, so experiments reuse each other's models as they would in real use."""
    return tmp_path_factory.mktemp("models")


def _settings(data: Path, out: Path, models_dir: Path, **kw) -> Settings:
    return Settings(data=str(data), out=str(out), models_dir=str(models_dir), **{**TINY, **kw})


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _table_rows(md: str) -> list[list[str]]:
    """Body rows of the first Markdown table."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def _num(x: str) -> float:
    return float(x) if x not in ("", "-") else math.nan


def _clip_set(summary: dict) -> ClipSet:
    videos = [Video(Path(v["path"]), v["held_out"], v["label"]) for v in summary["videos"]]
    return load_clip_set(videos, summary["frames"], summary["size"], summary["settings"]["windows"])


def _model(summary: dict, label: str) -> torch.nn.Module:
    record = next(m for m in summary["models"] if m["label"] == label)
    return load_model(record["path"])[0]


def _group_means(pairs: list[dict[str, str]], keys: tuple[str, ...], value: str = "loss") -> dict[tuple, float]:
    groups: dict[tuple, list[float]] = {}
    for p in pairs:
        groups.setdefault(tuple(p[k] for k in keys), []).append(float(p[value]))
    return {k: sum(v) / len(v) for k, v in groups.items()}


# ------------------------------------------------------------------------------------------------------------
# the pieces


def test_window_starts_are_spread_and_centred():
    assert window_starts(100, 10, 1) == [45]  # the centre window, as `centrifuge evaluate` uses
    starts = window_starts(100, 10, 3)
    assert len(starts) == 3 and starts == sorted(starts) and starts[0] >= 0 and starts[-1] <= 90
    assert window_starts(5, 10, 3) == [0]  # shorter than a clip: one (looped) window


def _fake_clips(held: list[bool], windows: int = 2, labels: list[str | None] | None = None) -> ClipSet:
    n = len(held)
    labels = labels or [None] * n
    vids = [Video(Path(f"v{i}.mp4"), h, lab) for i, (h, lab) in enumerate(zip(held, labels, strict=True))]
    video = [v for v in range(n) for _ in range(windows)]
    frames = torch.zeros(len(video), 1, 1, 1, 3, dtype=torch.uint8).numpy()
    return ClipSet(frames, video, [w for _ in range(n) for w in range(windows)], vids)


def test_pairs_follow_the_held_out_rule():
    few = _fake_clips([True, False, False, False])
    pairs = choose_clip_pairs(few, 1000, 0)
    assert pairs and all(few.held_out(a) or few.held_out(b) for a, b in pairs)
    assert all(few.video[a] != few.video[b] for a, b in pairs)
    many = _fake_clips([True] * MIN_HELD_OUT_VIDEOS + [False] * 3)
    pairs = choose_clip_pairs(many, 1000, 0)
    assert pairs and all(many.held_out(a) and many.held_out(b) for a, b in pairs)
    same = choose_clip_pairs(many, 1000, 0, "same-video")
    assert len(same) == MIN_HELD_OUT_VIDEOS and all(many.video[a] == many.video[b] for a, b in same)
    labelled = _fake_clips([True] * 4, labels=["a", "a", "b", None])
    assert {(labelled.label(a), labelled.label(b)) for a, b in choose_clip_pairs(labelled, 100, 0, "same-class")} \
        == {("a", "a")}
    subset = choose_clip_pairs(many, 7, 3)
    assert len(subset) == 7 and subset == choose_clip_pairs(many, 7, 3)


def test_pearson():
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))


# ------------------------------------------------------------------------------------------------------------
# every experiment end to end


def _check_baselines(out: Path, summary: dict, rows: list[dict], pairs: list[dict]) -> None:
    cs = _clip_set(summary)
    pair_idx = choose_clip_pairs(cs, summary["settings"]["pairs"], summary["settings"]["seed"])
    with _autocast(torch.device("cpu")):  # the experiment's own precision (bf16 on AMX CPUs)
        trained = evaluate_clips(_model(summary, "predictor (trained)"), to_model(cs.frames), pair_idx)
    assert float(rows[0]["loss"]) == pytest.approx(trained["identity_loss"], rel=1e-5)
    assert float(rows[2]["loss"]) == pytest.approx(trained["model_loss"], rel=1e-5)
    assert [r["model"] for r in rows][0] == "identity"
    assert {float(r["paper"]) for r in rows} == {0.361, 0.561, 0.187}
    best = min(rows, key=lambda r: float(r["loss"]))["model"]
    assert f"lowest loss: {best} " in (out / "results.md").read_text()


def _check_layers(out: Path, summary: dict, rows: list[dict], pairs: list[dict]) -> None:
    assert [(r["architecture"], int(r["layers"])) for r in rows] == [
        ("predictor", 2), ("predictor", 4), ("predictor", 8), ("predictor", 12),
        ("predictor-corrector", 2), ("predictor-corrector", 4)]
    cs = _clip_set(summary)
    pair_idx = choose_clip_pairs(cs, summary["settings"]["pairs"], summary["settings"]["seed"])
    with _autocast(torch.device("cpu")):
        again = evaluate_clips(_model(summary, "predictor-corrector, n = 4"), to_model(cs.frames), pair_idx)
    assert float(rows[5]["loss"]) == pytest.approx(again["model_loss"], rel=1e-5)
    configs = {(m["config"]["n_layers"], m["config"]["corrector"]) for m in summary["models"]}
    assert configs == {(2, False), (4, False), (8, False), (12, False), (2, True), (4, True)}


def _check_frozen(out: Path, summary: dict, rows: list[dict], pairs: list[dict]) -> None:
    assert [(r["train"], r["test"]) for r in rows] == [
        (t, s) for t in ("frozen", "normal") for s in ("2 frozen", "2 normal", "1 frozen 1 normal")]
    n = int(rows[1]["pairs"])
    assert [int(r["pairs"]) for r in rows] == [n, n, 2 * n] * 2
    # frozen clips are static: both layers of "2 frozen" pairs are named as frozen
    assert all(p["a"].endswith("(frozen)") and p["b"].endswith("(frozen)") for p in pairs if p["test"] == "2 frozen")
    assert any(m["source"] in ("trained", "reused") and "frozen" in m["path"] for m in summary["models"])


def _check_depth(out: Path, summary: dict, rows: list[dict], pairs: list[dict]) -> None:
    assert [r["endpoint"] for r in rows] == ["Mixed_3c", "Mixed_4f", "Mixed_5c"]
    for r in rows:
        cfg = next(m["config"] for m in summary["models"] if m["config"]["final_endpoint"] == r["endpoint"])
        assert int(r["depth"]) == conv_depth(build_model(cfg))
        assert cfg["n_layers"] == 2


def _check_colors(out: Path, summary: dict, rows: list[dict], pairs: list[dict]) -> None:
    assert [r["blend"] for r in rows] == [f"clip + {c}" for c in
                                          ("black", "white", "red", "green", "blue", "yellow", "cyan", "magenta")] \
        + ["real pairs"]
    easiest = min(rows[:-1], key=lambda r: float(r["loss"]))["blend"].removeprefix("clip + ")
    hardest = max(rows[:-1], key=lambda r: float(r["loss"]))["blend"].removeprefix("clip + ")
    md = (out / "results.md").read_text()
    assert f"easiest colour: {easiest} " in md and f"hardest colour: {hardest} " in md
    held = sum(v["held_out"] for v in summary["videos"]) * summary["settings"]["windows"]
    assert all(int(r["pairs"]) == held for r in rows[:-1])
    for name in ("colors.png", "colors-example.png"):
        with Image.open(out / name) as img:
            assert img.format == "PNG" and img.width > 100
        assert (out / name).stat().st_size < 200_000


def _check_diversity(out: Path, summary: dict, rows: list[dict], pairs: list[dict]) -> None:
    maxima: dict[tuple, float] = {}
    for p in pairs:
        key = (p["train"], p["test"])
        maxima[key] = max(maxima.get(key, -1.0), float(p["diversity"]))
    for r in rows:
        assert float(r["max_diversity"]) == pytest.approx(maxima[r["train"], r["test"]], rel=1e-6)
        assert 0 <= float(r["mean_diversity"]) <= float(r["max_diversity"])
    with Image.open(out / "diversity.png") as img:
        assert img.format == "PNG"


def _check_same_source(out: Path, summary: dict, rows: list[dict], pairs: list[dict]) -> None:
    assert [r["pairs_of"] for r in rows] == ["random pairs (two videos)", "two windows of one video"]
    same = [p for p in pairs if p["pairs_of"] == "two windows of one video"]
    assert same and all(p["a"].split("@")[0] == p["b"].split("@")[0] for p in same)
    assert all(p["a"].split("@")[0] != p["b"].split("@")[0] for p in pairs
               if p["pairs_of"] == "random pairs (two videos)")


def _check_feature_distance(out: Path, summary: dict, rows: list[dict], pairs: list[dict]) -> None:
    losses = [float(p["loss"]) for p in pairs]
    for r, level in zip(rows, ("low", "high"), strict=True):
        assert float(r["pearson_r"]) == pytest.approx(pearson(losses, [float(p[f"{level}_distance"]) for p in pairs]))
        assert -1 <= float(r["pearson_r"]) <= 1
    assert "Conv3d_2c_3x3" in rows[0]["features"] and "Mixed_5c" in rows[1]["features"]


CHECKS = {"baselines": _check_baselines, "layers": _check_layers, "frozen": _check_frozen, "depth": _check_depth,
          "colors": _check_colors, "diversity": _check_diversity, "same-source": _check_same_source,
          "feature-distance": _check_feature_distance}
#: Per-pair columns that group pairs.csv into results.csv rows whose mean is the row's loss.
GROUPS = {"baselines": ("model",), "layers": ("architecture", "layers"), "frozen": ("train", "test"),
          "depth": ("endpoint",), "colors": ("blend",), "same-source": ("pairs_of",)}


def test_every_experiment_is_checked():
    assert set(CHECKS) == set(EXPERIMENTS)


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_experiment_report(name, videos, models_dir, tmp_path):
    out = tmp_path / name
    report, written = run_experiment(name, _settings(videos, out, models_dir))
    for f in ("results.csv", "results.md", "results.json", "pairs.csv"):
        assert (out / f).is_file() and written[f] == out / f
    assert not list(out.glob(".*.part"))
    rows = _read_csv(out / "results.csv")
    assert list(rows[0]) == report.columns and len(rows) == len(report.rows) > 0
    table = _table_rows((out / "results.md").read_text())
    assert len(table) == len(rows)
    for row, cells in zip(rows, table, strict=True):
        assert cells[0] == row[report.columns[0]]
        for col, cell in zip(report.columns, cells, strict=True):
            if col in ("loss", "pearson_r", "mean_diversity") and cell != "-":
                assert float(cell) == pytest.approx(float(row[col]), abs=6e-5)
    for r in rows:
        for col in ("loss", "identity_loss", "pearson_r", "mean_diversity", "psnr_db"):
            if col in r:
                assert math.isfinite(float(r[col])), (col, r)
        assert int(r["pairs"]) > 0
    pairs = _read_csv(out / "pairs.csv")
    if name in GROUPS:
        means = _group_means(pairs, GROUPS[name])
        assert len(means) == len(rows)
        for r in rows:
            assert float(r["loss"]) == pytest.approx(means[tuple(r[k] for k in GROUPS[name])], rel=1e-6)
    summary = json.loads((out / "results.json").read_text())
    assert summary["experiment"] == name and summary["frames"] == TINY["frames"]
    assert not {v["path"] for v in summary["videos"] if v["held_out"]} & set(summary["train_videos"])
    CHECKS[name](out, summary, rows, pairs)


def test_models_are_reused_and_results_protected(videos, models_dir, tmp_path):
    out = tmp_path / "b"
    run_experiment("baselines", _settings(videos, out, models_dir))
    first = _read_csv(out / "results.csv")
    with pytest.raises(CentrifugeError, match="--overwrite"):
        run_experiment("baselines", _settings(videos, out, models_dir))
    run_experiment("baselines", _settings(videos, out, models_dir, overwrite=True))
    summary = json.loads((out / "results.json").read_text())
    assert next(m for m in summary["models"] if m["label"] == "predictor (trained)")["source"] == "reused"
    assert _read_csv(out / "results.csv") == first
    # other settings give another model, never the cached one
    run_experiment("baselines", _settings(videos, tmp_path / "c", models_dir, iterations=1))
    paths = {json.loads((tmp_path / d / "results.json").read_text())["models"][0]["path"] for d in ("b", "c")}
    assert len(paths) == 2


def test_kinetics_same_class(tmp_path, models_dir):
    root = tmp_path / "kinetics"
    rows = ["label,youtube_id,time_start,time_end,split"]
    for i, (label, split) in enumerate([("a", "train"), ("b", "train"), ("a", "train"), ("a", "validate"),
                                        ("a", "validate"), ("b", "validate"), ("b", "validate")]):
        folder = root / split / label
        folder.mkdir(parents=True, exist_ok=True)
        make_video(folder / f"yt{i:09d}_000000_000010.mp4", frames=12, width=48, height=40, seed=10 + i)
        rows.append(f"{label},yt{i:09d},0,10,{split}")
    (tmp_path / "k.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    report, _ = run_experiment("same-source", _settings(root, out, models_dir, kinetics_csv=[str(tmp_path / "k.csv")]))
    summary = json.loads((out / "results.json").read_text())
    assert len(summary["train_videos"]) == 3 and all("/train/" in p for p in summary["train_videos"])
    assert len(summary["videos"]) == 4 and all(v["held_out"] for v in summary["videos"])
    kinds = [r["pairs_of"] for r in report.rows]
    assert kinds[-1] == "two videos of one class"
    same_class = [p for p in _read_csv(out / "pairs.csv") if p["pairs_of"] == "two videos of one class"]
    label = {Path(v["path"]).name: v["label"] for v in summary["videos"]}
    assert same_class and all(label[p["a"].split("@")[0]] == label[p["b"].split("@")[0]] for p in same_class)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("centrifuge: error:"), err
    return err[0]


def test_cli(videos, models_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["experiment", "depth", "--data", str(videos), "--out", str(out), "--models-dir", str(models_dir),
            "--frames", "4", "--size", "32", "--iterations", "2", "--windows", "2"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| Mixed_3c |" in printed and (out / "results.md").is_file()
    assert main(args) == 2
    assert "--overwrite" in _one_error_line(capsys)
    assert main(["experiment", "baselines", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    assert "no such file or folder" in _one_error_line(capsys)
    # this run's own Mixed_5c model (the shared folder may hold others that earlier tests trained)
    model = Path(next(m["path"] for m in json.loads((out / "results.json").read_text())["models"]
                      if m["config"]["final_endpoint"] == "Mixed_5c")).parent
    assert model.parent == models_dir and model.name.startswith("p2-Mixed_5c-")
    assert main(["experiment", "layers", "--data", str(videos), "--out", str(tmp_path / "y"), "--model",
                 str(model), "--frames", "4", "--size", "32"]) == 2
    assert "--model" in _one_error_line(capsys)
    assert main(["experiment", "baselines", "--data", str(videos), "--out", str(tmp_path / "z"), "--pairs", "0"]) == 2
    assert "--pairs" in _one_error_line(capsys)
    # --model: a loaded model stands in for the trained one, held-out videos named on the command line
    assert main(["experiment", "baselines", "--data", str(videos), "--out", str(tmp_path / "m"), "--model",
                 str(model), "--frames", "4", "--size", "32", "--windows", "1", "--held-out", "v0.mp4", "v1.mp4"]) == 0
    summary = json.loads((tmp_path / "m" / "results.json").read_text())
    assert {Path(v["path"]).name for v in summary["videos"] if v["held_out"]} == {"v0.mp4", "v1.mp4"}
    assert summary["models"][0]["source"] == "loaded"
