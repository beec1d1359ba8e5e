"""TFLOP/s and MFU of the throughput runs in accelerator_check.json files, recounted.

accelerator_check.py (and train_throughput.py) before the `step_flops` fix took a step's
FLOPs from the accelerator's compiled program, whose cuDNN convolutions XLA's cost
analysis does not count on NVIDIA GPUs: the H200 files in docs/benchmarks/h200/ report
MFU ~0.2% from FLOP counts ~66x too small. This script keeps their measured step times
and recounts the FLOPs with `train_throughput.step_flops` (the step lowered for the CPU,
same network, input size, batch and width), so it runs on any CPU. Prints one JSON
document: per run, the recounted FLOPs per step and image, TFLOP/s and MFU of phasejax
and of its PyTorch twin against the chip peak the check recorded.

    python experiments/benchmarks/check_mfu.py docs/benchmarks/h200/accelerator_check.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import train_throughput as T  # noqa: E402


def _rate(flops: float, step_ms: float | None, peak: float | None) -> dict[str, float | None]:
    if not step_ms:
        return {"tflops_per_s": None, "mfu": None}
    tflops = T.tflops_per_s(flops, step_ms)
    return {"tflops_per_s": round(tflops, 2), "mfu": round(tflops / peak, 4) if peak else None}


def recount(check: dict[str, Any]) -> list[dict[str, Any]]:
    result = check["stages"]["throughput"]["result"]
    settings = result["settings"]
    out = []
    for run in result["runs"]:
        batch = int(run["batch"])
        cfg = T._config(run["depth"], settings["width"], settings["size"], batch, run["dtype"])
        flops = T.step_flops(cfg, T.synthetic_batch(batch, settings["size"]))
        peak = run.get("peak_tflops")
        torch = run.get("torch") or {}
        out.append(
            {
                "depth": run["depth"],
                "dtype": run["dtype"],
                "batch": batch,
                "images_per_s": run["images_per_s"],
                "step_ms": run["step_ms"],
                "flops_per_step": flops,
                "gflops_per_image": round(flops / batch / 1e9, 2),
                "flops_per_step_reported": run.get("flops_per_step"),
                "peak_tflops": peak,
                "phasejax": _rate(flops, run["step_ms"], peak),
                "torch": {
                    "images_per_s": torch.get("images_per_s"),
                    "step_ms": torch.get("step_ms"),
                    **_rate(flops, torch.get("step_ms"), peak),
                },
            }
        )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checks", nargs="+", help="accelerator_check.json files")
    args = ap.parse_args()
    report = []
    for path in args.checks:
        check = json.loads(Path(path).read_text())
        report.append(
            {
                "check": path,
                "device_kind": check["stages"]["throughput"]["result"]["peak"]["device_kind"],
                "settings": check["stages"]["throughput"]["result"]["settings"],
                "runs": recount(check),
            }
        )
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
