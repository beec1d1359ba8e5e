"""Two processes on localhost (4 CPU devices each) take the same step as one 8-device process.

The workers start jax.distributed through `parallel.maybe_initialize_distributed`
from the environment a launcher would set (JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES, JAX_PROCESS_ID), each feeds its half of the global batch with
`to_global`, and each process writes the loss, the updated parameters, the BatchNorm
statistics and the gathered eval log-probabilities (Trainer.predict and phasejax.infer).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from phasejax import parallel
from phasejax.config import Config, DataConfig, ModelConfig, TrainConfig
from phasejax.infer import Classifier
from phasejax.models import build_classifier
from phasejax.train import optim
from phasejax.train.step import Trainer

REPO = Path(__file__).resolve().parents[1]
B = 16

WORKER = textwrap.dedent(
    """
    import os, sys
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax
    jax.config.update("jax_num_cpu_devices", 4)
    from phasejax import parallel
    assert parallel.maybe_initialize_distributed() is True
    sys.path.insert(0, os.environ["PHASEJAX_TEST_DIR"])
    import numpy as np
    from test_multiprocess import global_batch, one_step
    p, n = jax.process_index(), jax.process_count()
    assert (n, jax.device_count(), jax.local_device_count()) == (2, 8, 4)
    batch = global_batch()
    local = {k: v[p * len(v) // n : (p + 1) * len(v) // n] for k, v in batch.items()}
    out = one_step(local)
    np.savez(sys.argv[1] + f".{p}.npz", **out)
    """
)


def _cfg() -> Config:
    return Config(
        data=DataConfig(image_size=32, num_slices=3),
        model=ModelConfig(depth="tiny", width=8, strategy="two_step"),
        train=TrainConfig(batch_size=B, optimizer="sgd", learning_rate=0.1, warmup_steps=0),
    )


def global_batch() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    label = np.arange(B, dtype=np.int32) % 4
    image = rng.normal(size=(B, 3, 32, 32, 1)).astype(np.float32) + label[:, None, None, None, None]
    return {"image": image, "label": label, "weight": np.ones(B, np.float32)}


def one_step(local_batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One train step over all devices of all processes, then an eval of the same batch."""
    cfg = _cfg()
    model = build_classifier(cfg, rngs=nnx.Rngs(0))
    trainer = Trainer(model, optim.create_optimizer(model, cfg.train), parallel.make_mesh())
    metrics = trainer.step(local_batch)
    out = {"loss": parallel.to_host(metrics["loss"])}
    out["log_probs"] = parallel.to_host(trainer.predict(local_batch["image"]))
    # phasejax.infer over the same mesh: each process gives its share and gets every row;
    # a short share is padded per process, and log_probs returns this process's own rows.
    clf = Classifier(trainer.model_def, trainer.model_state, trainer.mesh, batch_size=B)
    out["classifier_all"] = clf.log_probs_all(local_batch["image"])
    out["classifier_first3"] = clf.log_probs(local_batch["image"][:3])
    for i, leaf in enumerate(jax.tree.leaves(nnx.state(trainer.model_state, nnx.Param))):
        out[f"param_{i}"] = parallel.to_host(leaf)
    for i, leaf in enumerate(jax.tree.leaves(nnx.state(trainer.model_state, nnx.BatchStat))):
        out[f"stat_{i}"] = parallel.to_host(leaf)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_8_device_process(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    result = tmp_path / "mp"
    port = _free_port()
    procs = []
    for pid in range(2):
        env = {
            **os.environ,
            "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "PHASEJAX_TEST_DIR": str(Path(__file__).parent),
            "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
            "JAX_NUM_PROCESSES": "2",
            "JAX_PROCESS_ID": str(pid),
            "JAX_PLATFORMS": "cpu",
        }
        env.pop("XLA_FLAGS", None)
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), str(result)],
                env=env,
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    logs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=240)
            logs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]

    got, got1 = (dict(np.load(f"{result}.{p}.npz")) for p in (0, 1))
    want = one_step(global_batch())  # this process: 8 devices (conftest)
    assert set(got) == set(want)
    assert sum(k.startswith("stat_") for k in want) >= 4
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-5)
    # Row order survives the per-process assembly and the all-gather.
    np.testing.assert_allclose(got["log_probs"], want["log_probs"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["classifier_all"], want["log_probs"], rtol=1e-4, atol=1e-5)
    # process 1's own first rows are the global rows after process 0's share (8 rows)
    lp = want["log_probs"]
    np.testing.assert_allclose(got1["classifier_first3"], lp[8:11], rtol=1e-4, atol=1e-5)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5, err_msg=k)
