import json

import pytest

from centrifuge.config import TrainConfig, list_presets, load_preset


def test_presets_load_and_paper_recipe():
    assert {"paper-112", "paper-224", "cpu-small"} <= set(list_presets())
    model, train = load_preset("paper-112")
    assert (train.frames, train.size, train.batch_size, train.iterations) == (32, 112, 10, 240_000)
    assert (train.optimizer, train.lr, train.momentum, train.weight_decay) == ("sgd", 0.1, 0.99, 0.0)
    assert model.width == 1.0 and model.final_endpoint == "Mixed_5c"
    model, train = load_preset("paper-224")
    assert (train.frames, train.size) == (64, 224)
    model, train = load_preset("cpu-small")
    assert model.width < 1


def test_paper_schedule_and_scaling():
    cfg = TrainConfig()
    lrs = [cfg.lr_at(s) for s in (0, 99_999, 100_000, 149_999, 150_000, 200_000, 239_999)]
    assert lrs == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.01, 0.01])
    short = TrainConfig(iterations=2400, lr=0.002)
    assert short.lr_at(999) == pytest.approx(0.002)
    assert short.lr_at(1000) == pytest.approx(0.001)
    assert short.lr_at(2000) == pytest.approx(0.0002)


def test_preset_from_file_and_unknown_keys(tmp_path):
    good = tmp_path / "mine.json"
    good.write_text(json.dumps({"model": {"n_layers": 3}, "train": {"frames": 8}}))
    model, train = load_preset(str(good))
    assert model.n_layers == 3 and train.frames == 8
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": {"frams": 8}}))
    with pytest.raises(ValueError, match="frams"):
        load_preset(str(bad))
    with pytest.raises(ValueError, match="unknown preset"):
        load_preset("no-such-preset")
