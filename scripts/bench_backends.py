"""PyTorch against ONNX Runtime on the CPU, side by side in one process: the model call that separation makes.

    python scripts/bench_backends.py                      # packaged model, one window of bikes.mp4 (16x192x452)
    python scripts/bench_backends.py --model runs/x --frames 32 --height 224 --width 224 --rounds 9

Both run in fp32 on the same number of threads (``--threads``, default: torch's); PyTorch through
``prepare_for_inference`` as ``centrifuge separate`` runs it (BatchNorm folded, channels-last, oneDNN units),
ONNX Runtime on a file exported from the same weights (``centrifuge.backends.OnnxRuntimeModel``). The two are
interleaved, their order rotating every round, so a machine shared with other work slows both alike;
the medians, their ratio and the median of each round's ratio are printed, with the two outputs' largest
difference and PSNR. On a CPU where separate's default precision (``auto``) is bf16 (AMX), that PyTorch path
runs alongside for reference.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from centrifuge.backends import OnnxRuntimeModel
from centrifuge.checkpoint import load_model
from centrifuge.devices import resolve_precision
from centrifuge.export import compare
from centrifuge.inference import prepare_for_inference


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="default", help="run folder, .safetensors or `default` (default)")
    p.add_argument("--frames", type=int, default=16, help="window length (default 16: the packaged model's)")
    p.add_argument("--height", type=int, default=192, help="default 192: separate's working size for 640x272")
    p.add_argument("--width", type=int, default=452)
    p.add_argument("--rounds", type=int, default=7, help="timed calls of each backend (default 7)")
    p.add_argument("--threads", type=int, help="threads for both (default: torch.get_num_threads())")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    model, _ = load_model(None if args.model == "default" else args.model)
    start = time.perf_counter()
    onnx = OnnxRuntimeModel.from_model(model, threads=threads)
    export_s = time.perf_counter() - start
    x = torch.rand(1, 3, args.frames, args.height, args.width, generator=torch.Generator().manual_seed(0)) * 2 - 1
    backends = {"pytorch": prepare_for_inference(model, "cpu", "fp32"), "onnxruntime": onnx}
    if resolve_precision("auto", "cpu") != torch.float32:  # what separate runs by default on this CPU, for reference
        backends["pytorch-auto"] = prepare_for_inference(model, "cpu", "auto")
    outputs = {name: run(x) for name, run in backends.items()}  # warm-up (weights packed, kernels chosen)
    times: dict[str, list[float]] = {name: [] for name in backends}
    for r in range(args.rounds):
        for name in list(backends)[r % len(backends):] + list(backends)[:r % len(backends)]:
            start = time.perf_counter()
            backends[name](x)
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    result = {"input": list(x.shape), "threads": threads, "rounds": args.rounds, "export_s": round(export_s, 1),
              "median_s": {k: round(v, 4) for k, v in medians.items()},
              "times_s": {k: [round(t, 4) for t in v] for k, v in times.items()},
              "onnxruntime_over_pytorch": round(medians["onnxruntime"] / medians["pytorch"], 3),
              # paired: each round's two calls ran back to back, so a busy moment slows both
              "onnxruntime_over_pytorch_per_round": round(statistics.median(
                  o / t for o, t in zip(times["onnxruntime"], times["pytorch"], strict=True)), 3),
              "parity": compare(outputs["pytorch"], outputs["onnxruntime"]),
              "versions": {"torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__,
                           "cpu": platform.processor() or platform.machine()}}
    for name, median in medians.items():
        print(f"{name:13s} median {median * 1000:8.1f} ms per window ({args.frames / median:6.1f} frames/s)  "
              f"runs: {', '.join(f'{t * 1000:.0f}' for t in times[name])} ms")
    print(f"onnxruntime / pytorch time: {result['onnxruntime_over_pytorch']:.3f} (ratio of medians), "
          f"{result['onnxruntime_over_pytorch_per_round']:.3f} (median of each round's ratio); "
          f"export {export_s:.1f} s; "
          f"outputs differ by at most {result['parity']['max_abs']:.2e}, PSNR {result['parity']['psnr_db']:.1f} dB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
