"""Copy a trained run's weights into the package as the default model, with its provenance in the metadata.

Usage: python scripts/export_default_model.py RUN_DIR "DATA DESCRIPTION" "HARDWARE DESCRIPTION"
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from centrifuge.checkpoint import default_model_path, load_model, read_model_info, save_weights
from centrifuge.model import ModelConfig


def main(run_dir: Path, data: str, hardware: str) -> None:
    state = json.loads((run_dir / "config.json").read_text())
    model, _ = load_model(run_dir)
    cfg, _, _ = read_model_info(run_dir)
    train = state["train"]
    info = {"step": state["step"], "train": {"frames": train["frames"], "size": train["size"]},
            "preset": "cpu-small", "data": data, "hardware": hardware,
            "wall_time_s": round(state.get("elapsed_s", 0.0)), "final_train_loss": state.get("loss")}
    out = default_model_path()
    save_weights(out, model, ModelConfig.from_dict(cfg.to_dict()), info)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): {json.dumps(info)}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3])
