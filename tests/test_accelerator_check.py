"""experiments/accelerator_check.py: its helpers, and the script itself in --dry-run.

The whole dry run (every stage, about 100 s of CPU) is marked slow; the default suite
runs the env, correctness and tests stages through the real command line, a stage
killed at its budget, and the pure helpers (peak table, pins, MFU, pipeline comparison,
budgets) in-process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from experiment_script import load_script

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "experiments" / "accelerator_check.py"
AC = load_script("experiments/accelerator_check.py")


def _run(tmp_path: Path, *args: str, timeout: float) -> tuple[subprocess.CompletedProcess, dict]:
    env = dict(os.environ)
    # conftest.py pins this test process to 8 fake CPU devices through jax.config, which
    # children do not inherit; JAX_PLATFORMS=cpu (also from conftest) they do.
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path / "out"), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    report = json.loads((tmp_path / "out" / AC.JSON_NAME).read_text())
    return proc, report


def _assert_documented(report: dict[str, Any], stage: str) -> dict[str, Any]:
    entry = report["stages"][stage]
    assert entry["status"] == "ok", (stage, entry.get("error"), entry.get("traceback"))
    assert entry["error"] is None
    assert isinstance(entry["elapsed_s"], float) and entry["elapsed_s"] > 0
    result = entry["result"]
    missing = [k for k in AC.RESULT_KEYS[stage] if k not in result]
    assert not missing, (stage, missing)
    return result


def _check_env(r: dict[str, Any]) -> None:
    assert r["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    import jax

    assert r["packages"]["jax"] == jax.__version__
    assert r["pins"]["jax"]["required"] == ">=0.10,<0.13"
    assert r["pins"]["jax"]["satisfied"] is True
    # Every absent pinned package, and only those, is listed as a difference.
    absent = {n for n, p in r["pins"].items() if p["installed"] == "absent"}
    assert {d.split(":")[0] for d in r["pin_differences"] if ": absent" in d} == absent
    assert r["jax"]["backend"] == "cpu" and r["jax"]["device_count"] >= 1
    imp = r["phasejax_import"]
    assert imp["ok"] and imp["failed"] == {} and imp["modules"] > 40
    assert r["torch"]["status"] in ("torch absent", "torch without CUDA", "torch with CUDA")


def _check_correctness(r: dict[str, Any], variants: tuple[str, ...]) -> None:
    assert r["same_device"] is True  # no accelerator here: both runs on the CPU
    assert set(r["variants"]) == set(variants)
    for name, v in r["variants"].items():
        assert v["rtol"] == AC.CORRECTNESS_VARIANTS[name][2]
        for side in ("accelerator", "cpu"):
            assert len(v[side]["loss"]) == r["model"]["steps"] == 2
            assert all(x > 0.1 for x in v[side]["loss"])
        # Same program on the same device from the same weights: bit-identical.
        assert v["loss_max_rel_diff"] == 0.0 and v["param_max_abs_diff"] == 0.0
        assert v["within_tolerance"] is True
        # The SGD step moved the loss: the second step saw updated weights.
        assert v["cpu"]["loss"][1] != v["cpu"]["loss"][0]
    assert r["within_tolerance"] is True


@pytest.mark.slow
def test_dry_run_every_stage(tmp_path: Path) -> None:
    t0 = time.monotonic()
    proc, report = _run(tmp_path, "--dry-run", timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert report["schema"] == AC.SCHEMA and report["mode"] == "dry-run"
    assert report["finished"] is True
    assert report["elapsed_s"] <= time.monotonic() - t0
    assert list(report["stages"]) == list(AC.STAGES)
    results = {s: _assert_documented(report, s) for s in AC.STAGES}

    _check_env(results["env"])
    _check_correctness(results["correctness"], AC.DRY.correctness_variants)

    t = results["tests"]
    assert t["passed"] is True and t["exit_code"] == 0 and t["counts"]["passed"] >= 5

    pipe = results["pipeline"]
    assert [r["workers"] for r in pipe["runs"]] == list(AC.DRY.pl_workers)
    assert all(r["series_per_s"] > 0 for r in pipe["runs"])
    assert pipe["input_shape"] == [5, 32, 32, 3]  # the paper preset's input at 32 px
    ref = pipe["reference_model"]["series_per_s"]
    assert pipe["keeps_up"] == {str(r["workers"]): r["series_per_s"] >= ref for r in pipe["runs"]}

    paper = results["paper"]
    assert paper["cohort"]["reduced"] is True
    assert paper["cohort"]["exams"] == AC.DRY.cohort["internal"]
    assert paper["cohort"]["series"] >= 4 * paper["cohort"]["exams"]  # 4+ phases per exam
    train = paper["train"]
    assert train["exit_code"] == 0 and train["steps"] == AC.DRY.train_steps
    assert train["steps_per_s"] == pytest.approx(train["images_per_s"] / 8, rel=1e-2)
    assert paper["paper_steps"] == 4000
    assert paper["extrapolated_train_s"] == pytest.approx(4000 / train["steps_per_s"], rel=1e-2)
    assert paper["extrapolated_full_s"] > paper["extrapolated_train_s"]

    pred = results["predict"]
    assert pred["device"] == "cpu"
    for label in ("cold", "warm"):
        run = pred["runs"][label]
        assert run["exit_code"] == 0 and run["series_ok"] == 12 and run["failed"] == 0
        assert run["wall_s"] > 0
    assert pred["same_predictions"] is True
    assert pred["cache_entries_after_cold"] > 0

    tp = results["throughput"]
    assert tp["missing"] == []
    assert {(r["dtype"], r["batch"]) for r in tp["runs"]} == {("float32", 8), ("bfloat16", 8)}
    for r in tp["runs"]:
        assert r["images_per_s"] > 0 and r["compile_s"] > 0 and r["flops_per_step"] > 0
        assert r["tflops_per_s"] > 0
        assert r["mfu"] is None  # no peak known for a CPU
    assert tp["peak"]["table_key"] is None

    summary = report["summary"]
    assert summary["statuses"] == dict.fromkeys(AC.STAGES, "ok")
    assert summary["correctness_ok"] is True and summary["tests_ok"] is True
    assert summary["predict_warm_s"] == pred["runs"]["warm"]["wall_s"]


def test_dry_run_env_correctness_tests(tmp_path: Path) -> None:
    proc, report = _run(
        tmp_path,
        "--dry-run",
        "--stages",
        "env,correctness,tests",
        "--correctness-variants",
        "float32",
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert report["finished"] is True
    _check_env(_assert_documented(report, "env"))
    _check_correctness(_assert_documented(report, "correctness"), ("float32",))
    tests = _assert_documented(report, "tests")
    assert tests["passed"] is True and tests["files"] == ["tests/test_parallel.py"]
    for stage in ("pipeline", "paper", "predict", "throughput"):
        assert report["stages"][stage]["status"] == "skipped"
        assert report["stages"][stage]["result"] is None
    assert report["summary"]["pipeline_keeps_up"] is None
    assert "env: start" in proc.stderr  # progress lines


def test_a_stage_over_budget_is_killed_and_recorded(tmp_path: Path) -> None:
    t0 = time.monotonic()
    proc, report = _run(
        tmp_path, "--dry-run", "--stages", "correctness", "--budget", "correctness=6", timeout=120
    )
    assert proc.returncode == 1
    entry = report["stages"]["correctness"]
    assert entry["status"] == "timeout"
    assert "killed after" in entry["error"]
    assert entry["result"]["missing_variants"] == list(AC.DRY.correctness_variants)
    assert report["finished"] is True
    assert time.monotonic() - t0 < 60  # the budget, the kill, start-up; not the child's run


def test_bad_usage_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert AC.main(["--stages", "env,gpu"]) == 2
    assert AC.main(["--budget", "nothing=5"]) == 2
    assert AC.main(["--correctness-variants", "float16"]) == 2
    assert AC.main(["--peak-tflops", "int8=2000"]) == 2
    assert "unknown" in capsys.readouterr().err


def test_peak_table_by_device_kind() -> None:
    assert AC.peak_for("NVIDIA H200")[1]["bfloat16"] == 989.0
    assert AC.peak_for("NVIDIA H100 80GB HBM3")[0] == "H100"
    # The PCIe part's lower clocks, not the SXM entry it also contains the name of.
    key, peaks = AC.peak_for("NVIDIA H100 PCIe")
    assert key == "H100 PCIe" and peaks["bfloat16"] < 989.0
    assert AC.peak_for("NVIDIA A100-SXM4-80GB")[0] == "A100"
    assert AC.peak_for("cpu") == (None, None)
    assert AC.parse_peak_override(["900"]) == {"bfloat16": 900.0, "float32": 900.0}
    assert AC.parse_peak_override(["bfloat16=900", "float32=450"]) == {
        "bfloat16": 900.0,
        "float32": 450.0,
    }
    with pytest.raises(ValueError):
        AC.parse_peak_override(["fp8=2000"])


def test_pins_are_read_from_pyproject() -> None:
    pins = AC.parse_pins(REPO / "pyproject.toml")
    assert pins["jax"] == {"spec": ">=0.10,<0.13", "group": "core"}
    assert pins["orbax-checkpoint"]["group"] == "core"
    assert pins["torch"] == {"spec": "==2.13.0", "group": "bench"}
    assert pins["pytest"]["group"] == "test"
    assert AC.satisfies("0.11.0", ">=0.10,<0.13") is True
    assert AC.satisfies("0.13.0", ">=0.10,<0.13") is False
    assert AC.satisfies("2.13.0+cu128", "==2.13.0") is True  # a CUDA build's local tag


def _tp_entry(depth: str, dtype: str, batch: int, images_per_s: float, tflops: float) -> dict:
    return {
        "depth": depth,
        "dtype": dtype,
        "batch": batch,
        "phasejax": {
            "images_per_s": images_per_s,
            "step_ms": 1000.0 * batch / images_per_s,
            "compile_s": 12.0,
            "flops_per_step": tflops * 1e12 * batch / images_per_s,
            "tflops_per_s": tflops,
        },
        "torch": {"error": "torch not available"},
    }


def test_throughput_rows_mfu_against_the_dtype_peak() -> None:
    _, peaks = AC.peak_for("NVIDIA H200")
    bf16 = AC._throughput_row(_tp_entry("18", "bfloat16", 128, 8000.0, 247.25), peaks)
    assert bf16["mfu"] == pytest.approx(247.25 / 989.0, abs=1e-4)
    assert bf16["peak_tflops"] == 989.0 and "mfu_vs_fp32_peak" not in bf16
    assert bf16["torch"] == {"status": "torch not available"}
    fp32 = AC._throughput_row(_tp_entry("50", "float32", 64, 1500.0, 99.0), peaks)
    assert fp32["mfu"] == pytest.approx(99.0 / 495.0, abs=1e-4)
    assert fp32["mfu_vs_fp32_peak"] == pytest.approx(99.0 / 67.0, abs=1e-4)
    unknown = AC._throughput_row(_tp_entry("18", "float32", 8, 100.0, 0.01), {})
    assert unknown["mfu"] is None and unknown["tflops_per_s"] == 0.01


def test_pipeline_is_compared_with_the_paper_model() -> None:
    runs = [{"workers": 0, "series_per_s": 500.0}, {"workers": 8, "series_per_s": 2500.0}]
    model = [
        {"depth": "50", "dtype": "float32", "batch": 128, "images_per_s": 900.0},
        {"depth": "18", "dtype": "bfloat16", "batch": 64, "images_per_s": 2000.0},
        {"depth": "18", "dtype": "bfloat16", "batch": 256, "images_per_s": 3000.0},
    ]
    report = {
        "stages": {
            "pipeline": {"result": {"runs": runs}},
            "throughput": {"result": {"runs": model}},
        }
    }
    AC.compare_pipeline(report)
    pipe = report["stages"]["pipeline"]["result"]
    # The fastest ResNet-18 bfloat16 run is the reference, not the slower ResNet-50.
    assert pipe["reference_model"]["batch"] == 256
    assert pipe["keeps_up"] == {"0": False, "8": False}
    assert pipe["keeps_up_any"] is False
    per = {(m["depth"], m["batch"]): m["keeps_up"] for m in pipe["per_model"]}
    assert per[("50", 128)] == {"0": False, "8": True}
    assert per[("18", 64)] == {"0": False, "8": True}


def test_budgets_reserve_later_stages_and_throughput_takes_the_rest(tmp_path: Path) -> None:
    budgets = {"env": 10.0, "pipeline": 20.0, "paper": 30.0, "throughput": 5.0}
    ck = AC.Check(
        plan=AC.DRY,
        out_path=tmp_path / "x.json",
        work=tmp_path,
        time_limit_s=100.0,
        budgets={**dict.fromkeys(AC.STAGES, 0.0), **budgets},
        selected=("env", "pipeline", "paper", "throughput"),
        peak_override={},
        predict_paths=(),
    )
    assert ck.allowance("env") == 10.0
    assert ck.allowance("paper") == 30.0
    # Elastic: all that the stages after it (none) leave of the ~100 s.
    assert 95.0 < ck.allowance("throughput") <= 100.0
    ck.time_limit_s = 50.0  # later stages keep their reservation when time is short
    assert ck.allowance("env") == pytest.approx(50.0 - 55.0, abs=0.5)  # < 0: skipped


def test_docstring_documents_every_result_key() -> None:
    doc = AC.__doc__
    for stage, keys in AC.RESULT_KEYS.items():
        block = doc.split(f"stages.{stage}.result", 1)[1].split("stages.", 1)[0]
        missing = [k for k in keys if k not in block]
        assert not missing, (stage, missing)
