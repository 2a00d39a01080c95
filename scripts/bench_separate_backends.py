"""``centrifuge separate`` with each backend, side by side in one process: PyTorch fp32, ONNX Runtime (fp32), and
PyTorch at separate's default precision (``auto``: bf16 on CPUs with AMX).

    centrifuge export default -o /tmp/centrifuge.onnx          # once (about 100 s)
    python scripts/bench_separate_backends.py VIDEO --onnx /tmp/centrifuge.onnx --rounds 3

The whole command runs each time (decode, model, stitch, compose, encode, preview, ``layers.json``) into a
temporary folder, on the CPU, with ``--threads`` for both backends (default: torch's). The runs are
interleaved, their order rotating every round, so a machine shared with other work slows all alike; the
medians of the total and of the model's time (``layers.json``'s ``inference_s``), their ratios to PyTorch fp32,
and the median of each round's ratio are printed, with the chosen pair and its recomposition PSNR of each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch

from centrifuge.separate import separate

#: name -> (model, backend, precision); None: the packaged model
RUNS = {"pytorch-fp32": (None, "pytorch", "fp32"), "onnxruntime": ("onnx", "onnxruntime", "fp32"),
        "pytorch-auto": (None, "pytorch", "auto")}


def _once(video: str, onnx: str, name: str, folder: Path) -> dict:
    model, backend, precision = RUNS[name]
    result = separate(video, model=onnx if model == "onnx" else None, out_dir=folder / name, device="cpu",
                      precision=precision, backend=backend, progress=False)
    meta = result.metadata
    return {"total_s": meta["timings"]["total_s"], "inference_s": meta["timings"]["inference_s"],
            "compute_dtype": meta["settings"]["compute_dtype"], "chosen": list(result.chosen),
            "psnr_db": meta["recomposition"]["chosen_pair"]["psnr_db"]}


def _summary(runs: dict[str, list[dict]], key: str) -> dict:
    base = runs["pytorch-fp32"]
    med = {name: statistics.median(r[key] for r in rs) for name, rs in runs.items()}
    return {"median_s": med,
            "over_pytorch_fp32": {n: round(m / med["pytorch-fp32"], 3) for n, m in med.items()},
            "over_pytorch_fp32_per_round": {n: round(statistics.median(r[key] / b[key] for r, b in zip(rs, base,
                                                                                                      strict=True)), 3)
                                            for n, rs in runs.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("video")
    p.add_argument("--onnx", required=True, help="the packaged model written by `centrifuge export default -o`")
    p.add_argument("--rounds", type=int, default=3, help="runs of each (default 3)")
    p.add_argument("--threads", type=int, help="threads for both backends (default: torch.get_num_threads())")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = list(RUNS)
    runs: dict[str, list[dict]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="centrifuge-bench-") as tmp:
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                runs[name].append(_once(args.video, args.onnx, name, Path(tmp) / str(r)))
                print(f"round {r} {name:13s} {json.dumps(runs[name][-1])}", flush=True)
    result = {"video": args.video, "threads": torch.get_num_threads(), "rounds": args.rounds, "runs": runs,
              "total": _summary(runs, "total_s"), "inference": _summary(runs, "inference_s")}
    for key in ("total", "inference"):
        s = result[key]
        print(f"{key:9s} " + "; ".join(f"{n} median {s['median_s'][n]:.1f} s (x{s['over_pytorch_fp32'][n]:.3f}, "
                                       f"per round x{s['over_pytorch_fp32_per_round'][n]:.3f})" for n in names))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
