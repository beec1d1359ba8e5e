"""Device slots of child processes (`ablate --parallel`, `reproduce --jobs`) and stopping them."""

from __future__ import annotations

import pytest

from phasejax.child_devices import DeviceSlotError, device_slots, interrupt


def test_device_slots_pin_each_child_to_its_own_devices():
    gpu = device_slots(2, {}, cpus=range(8), gpus=["0", "1", "2", "3"], tpu_chips=[])
    assert [s.env for s in gpu] == [{"CUDA_VISIBLE_DEVICES": "0,1"},
                                    {"CUDA_VISIBLE_DEVICES": "2,3"}]  # fmt: skip
    assert [s.cpus for s in gpu] == [(0, 1, 2, 3), (4, 5, 6, 7)]
    # 3 children on 4 GPUs: one each, the fourth stays idle
    three = device_slots(3, {}, cpus=range(8), gpus=["4", "5", "6", "7"], tpu_chips=[])
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in three] == ["4", "5", "6"]
    with pytest.raises(DeviceSlotError, match="only 4 GPU"):
        device_slots(5, {}, cpus=range(8), gpus=["0", "1", "2", "3"], tpu_chips=[])

    tpu = device_slots(4, {}, cpus=range(8), gpus=[], tpu_chips=["0", "1", "2", "3"])
    assert [s.env["TPU_VISIBLE_CHIPS"] for s in tpu] == ["0", "1", "2", "3"]
    ports = {s.env["TPU_MESH_CONTROLLER_PORT"] for s in tpu}
    assert len(ports) == 4 and all(s.env["TPU_PROCESS_BOUNDS"] == "1,1,1" for s in tpu)
    with pytest.raises(DeviceSlotError, match="one process per chip"):
        device_slots(2, {}, cpus=range(8), gpus=[], tpu_chips=["0", "1", "2", "3"])

    # a CPU host: JAX_PLATFORMS=cpu wins over any GPU; one core each, single-threaded XLA
    cpu = device_slots(2, {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_dump_to=/tmp/x"},
                       cpus=[0, 1], gpus=["0", "1"])  # fmt: skip
    assert [s.cpus for s in cpu] == [(0,), (1,)]
    for s in cpu:
        assert "CUDA_VISIBLE_DEVICES" not in s.env and s.env["JAX_PLATFORMS"] == "cpu"
        assert s.env["XLA_FLAGS"].startswith("--xla_dump_to=/tmp/x ")
        assert "--xla_cpu_multi_thread_eigen=false" in s.env["XLA_FLAGS"]
        assert s.env["OMP_NUM_THREADS"] == s.env["OPENBLAS_NUM_THREADS"] == "1"
    # reproduce --jobs: the same limits, no affinity (a pinned child trains differently)
    free = device_slots(2, {"JAX_PLATFORMS": "cpu"}, cpus=[0, 1], gpus=["0"], pin_cpus=False)
    assert [s.cpus for s in free] == [(), ()]
    assert [s.env for s in free] == [{**s.env, "XLA_FLAGS": s.env["XLA_FLAGS"].split(" ", 1)[1]}
                                     for s in cpu]  # fmt: skip
    wide = device_slots(2, {"JAX_PLATFORMS": "cpu"}, cpus=range(8))
    assert [s.env["OMP_NUM_THREADS"] for s in wide] == ["4", "4"]
    assert "XLA_FLAGS" not in wide[0].env  # 4 cores each: XLA may use them


def test_interrupt_kills_a_child_that_ignores_sigint_after_the_grace():
    import signal
    import subprocess
    import sys
    import time

    code = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); print(1, flush=True); time.sleep(120)"  # noqa: E501
    stubborn = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    # Python's own handler set explicitly, as phasejax.child_cli does: a test run started in the
    # background of a script inherits SIGINT ignored, and so would a child that only imports time.
    polite_code = "import signal, time; signal.signal(signal.SIGINT, signal.default_int_handler); print(1, flush=True); time.sleep(120)"  # noqa: E501
    polite = subprocess.Popen([sys.executable, "-c", polite_code], stdout=subprocess.PIPE)
    for p in (stubborn, polite):
        assert p.stdout.readline() == b"1\n"  # started, its handlers in place
    t = time.monotonic()
    interrupt([stubborn, polite], grace_s=1.0)
    assert time.monotonic() - t < 30
    assert polite.returncode != 0 and polite.returncode != -signal.SIGKILL  # KeyboardInterrupt
    assert stubborn.returncode == -signal.SIGKILL


def test_ablate_parallel_beyond_the_gpus_is_a_usage_error(tmp_path, capsys, monkeypatch):
    """Three children on a host with two GPUs: exit 2 with the reason, nothing written."""
    from phasejax.cli import main

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    out = tmp_path / "abl"
    argv = ["ablate", "--suite", "strategy", "--budget", "smoke", "--out", str(out)]
    assert main([*argv, "--parallel", "3"]) == 2
    assert "phasejax ablate: 3 children, but only 2 GPU(s) visible" in capsys.readouterr().err
    assert not out.exists()
