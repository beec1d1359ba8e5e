"""phasejax.train.children: how many trainings at once, and how far a child has got."""

import json

from phasejax.train.children import auto_jobs, last_logged_step


def test_auto_jobs_one_per_accelerator_at_most_one_per_training_one_on_a_cpu(monkeypatch):
    assert auto_jobs(5, {"JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": "0,1,2,3"}) == 1
    assert auto_jobs(5, {"CUDA_VISIBLE_DEVICES": "0,1,2"}) == 3
    assert auto_jobs(2, {"CUDA_VISIBLE_DEVICES": "0,1,2"}) == 2
    assert auto_jobs(3, {"CUDA_VISIBLE_DEVICES": "-1", "TPU_VISIBLE_CHIPS": "0,1,2,3"}) == 3
    # a host with neither (no nvidia-smi, no /dev/accel*)
    monkeypatch.setattr("phasejax.child_devices.visible_gpus", lambda env: [])
    monkeypatch.setattr("phasejax.child_devices.visible_tpu_chips", lambda env: [])
    assert auto_jobs(5, {}) == 1


def test_last_logged_step_reads_the_last_complete_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    assert last_logged_step(path) == 0  # not written yet
    rows = [{"step": s, "split": "train", "loss": 1.0 / s, "pad": "x" * 60} for s in range(1, 400)]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    path.write_text(text + '{"step": 400, "split": "tr')  # a line still being written
    assert len(text) > 4096  # the tail is read from the middle of the file
    assert last_logged_step(path) == 399
    path.write_text('{"step": 3')
    assert last_logged_step(path) == 0
