"""Training throughput of phasejax's jit-compiled step vs a PyTorch reference, one run.

Prints one JSON document. For each ResNet depth: images/s of a full training step
(forward, backward, AdamW update with decoupled weight decay on kernels only,
BatchNorm in training mode) on a fixed synthetic batch already on the device, for

- phasejax: the real `phasejax.train.step.Trainer` step of a one-step classifier
  (the input pipeline is excluded; compare with pipeline_throughput.py), over a
  mesh of all local devices;
- torch: experiments/benchmarks/torch_reference.py's twin of the same network
  (identical layers and initial weights, copied) with torch.optim.AdamW and the
  same decay mask, `torch==2.13.0` CPU (or the GPU's torch when run there);

plus the FLOPs of one step from XLA's cost analysis of the same step lowered for the CPU
(`step_flops`), achieved TFLOP/s, and with --peak-tflops the model FLOP utilisation (MFU)
of both.

    /work/venv/bin/python experiments/benchmarks/train_throughput.py            # CPU, R18 + R50
    /work/venv/bin/python experiments/benchmarks/train_throughput.py --depth 18 --size 96 \
        --width 16 --batch 16                                                   # the quick config
    python3 experiments/benchmarks/train_throughput.py --bf16 --size 224 --batch 128 \
        --peak-tflops 989                                                       # one H100 (dense bf16)
    python3 experiments/benchmarks/train_throughput.py --depth 18 --size 224 \
        --dtype float32 bfloat16 --batch 64 128 256 --no-torch                  # a grid in one process

A "batch" is of series; each series is one 3-channel image (3 slices as channels),
so images/s = series/s. Times are the median of --repeats timed runs of --steps
steps each, after --warmup steps (compilation excluded, reported separately as
`compile_s`: lowering plus XLA compilation of the train step).

--depth, --dtype and --batch take several values; every combination is one entry of
`results` (keys depth, dtype, batch), also printed to stderr as one JSON line as soon
as it is measured, so a run stopped half-way still leaves the finished entries there
(experiments/accelerator_check.py reads them from there).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

NUM_CLASSES = 4


def _config(depth: str, width: int, size: int, batch: int, dtype: str):
    from phasejax.config import Config, DataConfig, ModelConfig, TrainConfig

    return Config(
        name=f"bench_r{depth}",
        data=DataConfig(image_size=size, num_slices=3, window="abdomen", slice_mode="channels"),
        model=ModelConfig(
            depth=depth,
            width=width,
            strategy="one_step",
            dtype=dtype,
        ),
        train=TrainConfig(
            batch_size=batch,
            optimizer="adamw",
            learning_rate=1e-3,
            warmup_steps=0,
            schedule="constant",
            weight_decay=1e-4,
        ),
    )


def _flops(compiled: Any) -> float | None:
    try:
        cost = compiled.cost_analysis()
    except Exception:  # some backends do not implement it
        return None
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    return float(cost["flops"])


def synthetic_batch(batch_size: int, size: int) -> dict[str, Any]:
    """The fixed batch every measurement uses: one 3-slice series per image."""
    import numpy as np

    rng = np.random.default_rng(0)
    return {
        "image": rng.uniform(0, 1, (batch_size, 3, size, size, 1)).astype(np.float32),
        "label": (np.arange(batch_size) % NUM_CLASSES).astype(np.int32),
        "weight": np.ones(batch_size, np.float32),
    }


def tflops_per_s(flops: float, step_ms: float) -> float:
    return flops / (step_ms / 1000.0) / 1e12


def step_flops(cfg: Any, batch_np: dict[str, Any]) -> float | None:
    """FLOPs of one train step: XLA's cost analysis of the step lowered for the CPU.

    Not the accelerator's compiled program: on NVIDIA GPUs its convolutions are cuDNN
    custom calls, which XLA's cost analysis does not count (an H200 run reported 0.37
    GFLOPs per ResNet-50 image at 224 px instead of ~25), and on a GPU the lowered
    program's cost analysis returned nothing. FLOPs do not depend on the device, and on
    the CPU the lowered and compiled counts agree within a few per cent.
    """
    import jax
    from flax import nnx

    from phasejax import parallel
    from phasejax.models import build_classifier
    from phasejax.train import optim
    from phasejax.train.step import Trainer

    cpu = jax.devices("cpu")[:1]
    with jax.default_device(cpu[0]):
        model = build_classifier(cfg, rngs=nnx.Rngs(0))
        mesh = parallel.make_mesh(cpu)
        trainer = Trainer(model, optim.create_optimizer(model, cfg.train), mesh)
        return _flops(trainer.lower_train(parallel.to_global(batch_np, mesh)))


def _median_rate(run_steps, steps: int, repeats: int, batch: int) -> dict[str, float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_steps(steps)
        times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    return {
        "step_ms": 1000.0 * t / steps,
        "images_per_s": batch * steps / t,
        "step_ms_runs": [round(1000.0 * x / steps, 3) for x in times],
    }


def bench_phasejax(cfg, args, batch_np) -> tuple[dict[str, Any], Any]:
    import jax
    from flax import nnx

    from phasejax import parallel
    from phasejax.models import build_classifier
    from phasejax.train import optim
    from phasejax.train.step import Trainer

    model = build_classifier(cfg, rngs=nnx.Rngs(0))
    mesh = parallel.make_mesh(jax.local_devices())
    trainer = Trainer(model, optim.create_optimizer(model, cfg.train), mesh)
    batch = parallel.to_global(batch_np, mesh)
    t0 = time.perf_counter()
    lowered = trainer.lower_train(batch)
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    # On the CPU the step just lowered is the one step_flops would build and lower again.
    on_cpu = jax.default_backend() == "cpu"
    flops = _flops(lowered) if on_cpu else step_flops(cfg, batch_np)
    flops_compiled = _flops(compiled)

    def run(n: int) -> None:
        m = None
        for _ in range(n):
            m = trainer.step(batch)
        jax.block_until_ready(m)

    run(args.warmup)
    out = _median_rate(run, args.steps, args.repeats, cfg.train.batch_size)
    out.update(
        compile_s=round(compile_s, 3),
        flops_per_step=flops,
        flops_per_step_compiled=flops_compiled,
        devices=mesh.devices.size,
        device_kind=jax.devices()[0].device_kind,
        jax=jax.__version__,
    )
    return out, model


def bench_torch(cfg, args, batch_np, nnx_model) -> dict[str, Any]:
    import numpy as np
    import torch
    from torch_reference import build_torch_resnet, copy_nnx_to_torch

    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu_torch else "cpu")
    net = build_torch_resnet(cfg.model.depth, 3, NUM_CLASSES, cfg.model.width)
    copy_nnx_to_torch(nnx_model.net, net)
    net = net.to(device).train()
    channels_last = device.type == "cuda"
    if channels_last:  # PyTorch's fast path for convolutions on GPUs
        net = net.to(memory_format=torch.channels_last)
    # Same decay mask as phasejax.train.optim.decay_mask: kernels only.
    decay = [p for p in net.parameters() if p.ndim > 1]
    no_decay = [p for p in net.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.train.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.train.learning_rate,
        eps=1e-8,
    )
    # [B, S, H, W, C] with S*C = 3 channels -> NCHW, the classifier's stacking order.
    b, s, h, w, c = batch_np["image"].shape
    x_np = batch_np["image"].transpose(0, 2, 3, 1, 4).reshape(b, h, w, s * c).transpose(0, 3, 1, 2)
    x = torch.from_numpy(np.ascontiguousarray(x_np)).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy(batch_np["label"].astype(np.int64)).to(device)
    loss_fn = torch.nn.CrossEntropyLoss()
    use_bf16 = cfg.model.dtype == "bfloat16"

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()

    def run(n: int) -> None:
        for _ in range(n):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    run(args.warmup)
    out = _median_rate(run, args.steps, args.repeats, cfg.train.batch_size)
    out.update(
        device=str(device),
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        channels_last=channels_last,
    )
    return out


def _measure(
    depth: str, dtype: str, batch_size: int, args: argparse.Namespace, peak: float | None
) -> dict[str, Any]:
    cfg = _config(depth, args.width, args.size, batch_size, dtype)
    batch = synthetic_batch(batch_size, args.size)
    entry: dict[str, Any] = {"depth": depth, "dtype": dtype, "batch": batch_size}
    pj, model = bench_phasejax(cfg, args, batch)
    entry["phasejax"] = pj
    if not args.no_torch:
        try:
            entry["torch"] = bench_torch(cfg, args, batch, model)
        except ImportError as e:
            entry["torch"] = {"error": f"torch not available ({e}); pip install torch==2.13.0"}
    flops = pj["flops_per_step"]
    for side in ("phasejax", "torch"):
        res = entry.get(side)
        if not res or "step_ms" not in res or not flops:
            continue
        tflops = tflops_per_s(flops, res["step_ms"])
        res["tflops_per_s"] = round(tflops, 4)
        if peak:
            res["mfu"] = round(tflops / peak, 4)
    if "step_ms" in entry.get("torch", {}):
        entry["ratio_images_per_s_phasejax_over_torch"] = round(
            pj["images_per_s"] / entry["torch"]["images_per_s"], 3
        )
    for res in (entry.get("phasejax"), entry.get("torch")):
        if res and "step_ms" in res:
            res["step_ms"] = round(res["step_ms"], 3)
            res["images_per_s"] = round(res["images_per_s"], 2)
    return entry


def _parse_peaks(
    values: list[str] | None, dtypes: list[str], ap: argparse.ArgumentParser
) -> dict[str, float]:
    """--peak-tflops values -> {dtype: TFLOP/s}; a bare number applies to every dtype."""
    peaks: dict[str, float] = {}
    for v in values or []:
        key, sep, num = v.rpartition("=")
        try:
            value = float(num)
        except ValueError:
            ap.error(f"--peak-tflops {v!r}: not a number")
        if not sep:
            peaks.update(dict.fromkeys(dtypes, value))
        elif key in ("float32", "bfloat16"):
            peaks[key] = value
        else:
            ap.error(f"--peak-tflops {v!r}: dtype must be float32 or bfloat16")
    return peaks


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--depth", nargs="+", default=["18", "50"])
    ap.add_argument("--size", type=int, default=128, help="input pixels per side")
    ap.add_argument(
        "--batch", type=int, nargs="+", default=[32], help="series per step (global); several ok"
    )
    ap.add_argument("--width", type=int, default=64, help="first-stage channels (64 = standard)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument(
        "--dtype",
        nargs="+",
        choices=("float32", "bfloat16"),
        default=None,
        help="compute dtype(s) (params stay float32); default float32",
    )
    ap.add_argument("--bf16", action="store_true", help="shorthand for --dtype bfloat16")
    ap.add_argument(
        "--peak-tflops",
        nargs="+",
        default=None,
        metavar="[DTYPE=]TFLOPS",
        help="chip peak for MFU: one number for every dtype, or per dtype "
        "(float32=495 bfloat16=989: float32 convolutions run as TF32 on recent NVIDIA GPUs)",
    )
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    ap.add_argument("--cpu-torch", action="store_true", help="run torch on CPU even with a GPU")
    args = ap.parse_args()
    dtypes = args.dtype or (["bfloat16"] if args.bf16 else ["float32"])
    if args.bf16 and args.dtype and "bfloat16" not in args.dtype:
        ap.error("--bf16 contradicts --dtype without bfloat16")

    peaks = _parse_peaks(args.peak_tflops, dtypes, ap)

    import jax

    report: dict[str, Any] = {
        "benchmark": "train_throughput",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "backend": jax.default_backend(),
            "device_kind": jax.devices()[0].device_kind,
            "local_devices": jax.local_device_count(),
        },
        "settings": {
            "size": args.size,
            # One value stays a number, as in the JSON kept in docs/benchmarks/.
            "batch": args.batch[0] if len(args.batch) == 1 else args.batch,
            "width": args.width,
            "dtype": dtypes[0] if len(dtypes) == 1 else dtypes,
            "steps": args.steps,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "peak_tflops": peaks or None,
        },
        "results": [],
    }
    for depth in args.depth:
        for dtype in dtypes:
            for batch_size in args.batch:
                entry = _measure(depth, dtype, batch_size, args, peaks.get(dtype))
                report["results"].append(entry)
                # Progress, one line per entry: what a stopped run still leaves behind.
                print(json.dumps(entry), file=sys.stderr, flush=True)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
