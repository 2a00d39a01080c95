"""Copy a trained run's weights into the package as the default model, with its provenance in the metadata.

Usage: python scripts/export_default_model.py RUN_DIR "DATA DESCRIPTION" "HARDWARE DESCRIPTION"

A run started with ``--init OTHER_RUN`` (fine-tuning) counts the iterations and training time of the runs it
started from too, following the chain of ``init`` run folders; where the chain starts from a weights file
(``--init default``: the packaged model, or a ``.safetensors`` file), that model's recorded phases come first.
Export such a run once: a second export would read the packaged model it has just replaced. The preset
recorded is the shipped one the run follows (same model and the same clips, batch and optimizer), or ``custom``
where none does: a run folder keeps the settings a preset gave, not the preset's name.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from centrifuge.checkpoint import default_model_path, load_model, read_model_info, save_weights
from centrifuge.config import list_presets, load_preset
from centrifuge.evaluate import trained_clip_names
from centrifuge.model import ModelConfig

#: The training fields that tell the shipped presets apart (flags such as --iterations or --lr may change others).
PRESET_FIELDS = ("frames", "size", "batch_size", "optimizer")


def lineage(run_dir: Path) -> list[dict[str, Any]]:
    """The run's ``config.json`` state, preceded by those of the runs it was initialised from."""
    state = json.loads((run_dir / "config.json").read_text())
    init = state["train"].get("init")
    before = lineage(Path(init)) if init and (Path(init) / "config.json").is_file() else []
    return before + [state]


def run_preset(model: ModelConfig, train: dict[str, Any]) -> str:
    """The shipped preset whose model and :data:`PRESET_FIELDS` the run has, else ``"custom"``."""
    for name in list_presets():
        preset_model, preset_train = load_preset(name)
        if preset_model == model and all(getattr(preset_train, f) == train.get(f) for f in PRESET_FIELDS):
            return name
    return "custom"


def weights_before(chain: list[dict[str, Any]]) -> dict[str, Any]:
    """The recorded provenance of the weights file the chain's first run started from (``{}`` if none)."""
    init = chain[0]["train"].get("init")
    if not init or (Path(init) / "config.json").is_file():
        return {}
    return read_model_info(init)[1]


def main(run_dir: Path, data: str, hardware: str, out: Path | None = None) -> Path:
    """Write the run's weights and provenance to ``out`` (default: the packaged model); returns the path."""
    chain = lineage(run_dir)
    before = weights_before(chain)
    state = chain[-1]
    model, _ = load_model(run_dir)
    cfg, _, _ = read_model_info(run_dir)
    train = state["train"]
    phases = before.get("phases", []) + [
        {"run": Path(s["train"]["out"]).name, "iterations": s["step"], "lr": s["train"]["lr"],
         "augment": s["train"].get("augment", False)} for s in chain]
    info = {"step": before.get("step", 0) + sum(s["step"] for s in chain),
            "train": {"frames": train["frames"], "size": train["size"]},
            "preset": run_preset(cfg, train), "data": data, "hardware": hardware, "phases": phases,
            "wall_time_s": round(before.get("wall_time_s", 0) + sum(s.get("elapsed_s", 0.0) for s in chain)),
            "final_train_loss": state.get("loss"),
            # what `centrifuge evaluate --exclude-trained` leaves out (file names of every phase's videos)
            "trained_on": sorted(trained_clip_names(run_dir))}
    out = out or default_model_path()
    save_weights(out, model, ModelConfig.from_dict(cfg.to_dict()), info)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): {json.dumps(info)}")
    return out


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3])
