"""A wheel install works like the checkout.

The package is built into a wheel from a copy of only what the build reads (pyproject.toml,
README.md, LICENSE, phasejax/), installed with `pip install --no-deps --target SITE`, and the
installed `phasejax` script is run from a temporary directory outside the checkout, with
PYTHONPATH=SITE: the named configs and the ablation suites must come from the installed
package, not from a source tree next to it. The test venv's interpreter provides the
dependencies. The wheel is built without build isolation (the test extra has setuptools), so
this runs offline.

Timings on the 2-core VM under load: build + install about 5 s, each fast command 1-2 s,
`cohort generate --size tiny --format cache` about 15 s; a real `train --config smoke` takes
about 40 s more, so it is in the slow test.
"""

from __future__ import annotations

import email
import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

import phasejax

REPO = Path(__file__).resolve().parents[1]
BUILD_INPUTS = ("pyproject.toml", "README.md", "LICENSE")


@dataclass(frozen=True)
class Installed:
    wheel: Path
    site: Path  # the --target directory
    script: Path  # its bin/phasejax
    cwd: Path  # an empty directory outside the checkout

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(self.site)}
        return subprocess.run(
            [str(self.script), *args],
            cwd=self.cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "-q", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in BUILD_INPUTS:
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(
        REPO / "phasejax", src / "phasejax", ignore=shutil.ignore_patterns("__pycache__")
    )
    dist = root / "dist"
    _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src))
    (wheel,) = dist.glob("phasejax-*.whl")
    site = root / "site"
    _pip("install", "--no-deps", "--target", str(site), str(wheel))
    cwd = root / "elsewhere"
    cwd.mkdir()
    return Installed(wheel=wheel, site=site, script=site / "bin" / "phasejax", cwd=cwd)


def test_wheel_ships_configs_suites_license_and_metadata(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as z:
        names = set(z.namelist())
        (meta_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = email.message_from_bytes(z.read(meta_name))
    for config in ("debug", "smoke", "quick", "paper"):
        assert f"phasejax/configs/{config}.py" in names
    for suite in ("presets", "strategy", "depth", "robustness", "kvp"):
        assert f"phasejax/ablations/{suite}.toml" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    # the version is written once, in phasejax/__init__.py
    assert meta["Version"] == phasejax.__version__
    assert meta["License-Expression"] == "Apache-2.0"
    classifiers = meta.get_all("Classifier")
    assert "Topic :: Scientific/Engineering :: Medical Science Apps." in classifiers
    assert meta["Description-Content-Type"] == "text/markdown"
    assert "# phasejax" in meta.get_payload()
    extras = meta.get_all("Provides-Extra")
    assert "tensorboard" in extras
    # the default install stays free of the TensorBoard writer
    requires = meta.get_all("Requires-Dist")
    assert not [r for r in requires if r.startswith("tensorboardX") and "extra ==" not in r]


def test_installed_cli_finds_configs_and_suites_outside_the_checkout(
    installed: Installed, tmp_path: Path
) -> None:
    # the installed package shadows the checkout's editable install
    probe = subprocess.run(
        [sys.executable, "-c", "import phasejax.configs as c; print(c.__file__)"],
        cwd=installed.cwd,
        env={**os.environ, "PYTHONPATH": str(installed.site)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(probe.stdout.strip()).is_relative_to(installed.site)

    version = installed.run("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"phasejax {phasejax.__version__}"

    shown = installed.run("train", "--config", "smoke", "--print-config")
    assert shown.returncode == 0, shown.stderr
    cfg = json.loads(shown.stdout)
    assert cfg["name"] == "smoke" and cfg["model"]["depth"] == "tiny"

    missing = installed.run("train", "--config", "nope", "--out", str(tmp_path / "x"))
    assert missing.returncode == 2
    assert "['debug', 'paper', 'quick', 'smoke']" in missing.stderr

    # a config file of the user's own, given as a path
    mine = tmp_path / "mine.py"
    mine.write_text(
        "from phasejax.config import Config, ModelConfig\n"
        "def get_config():\n"
        "    return Config(name='mine', model=ModelConfig(depth='10'))\n"
    )
    own = installed.run("train", "--config", str(mine), "--print-config", "--set", "train.steps=7")
    assert own.returncode == 0, own.stderr
    assert json.loads(own.stdout)["model"]["depth"] == "10"
    assert json.loads(own.stdout)["train"]["steps"] == 7

    listed = installed.run("ablate", "list")
    assert listed.returncode == 0, listed.stderr
    assert "strategy (train; axis model.strategy" in listed.stdout
    assert "budget smoke: config smoke" in listed.stdout

    out = tmp_path / "abl"
    dry = installed.run(
        "ablate", "--suite", "strategy", "--budget", "smoke", "--dry-run", "--out", str(out)
    )
    assert dry.returncode == 0, dry.stderr
    assert "strategy/one_step/seed0" in dry.stdout
    assert "2 runs: 0 done, 0 partial (resumed), 2 to do" in dry.stdout


def test_installed_cohort_generate_writes_a_cache(installed: Installed, tmp_path: Path) -> None:
    out = tmp_path / "cohort"
    gen = installed.run("cohort", "generate", "--size", "tiny", "--out", str(out),
                        "--format", "cache")  # fmt: skip
    assert gen.returncode == 0, gen.stderr[-2000:]
    assert (out / "cache" / "manifest.csv").is_file()


def test_installed_train_smoke_runs_to_results(installed: Installed, tmp_path: Path) -> None:
    from fake_cache import make_fake_cache

    cache = make_fake_cache(tmp_path / "cache", patients=12, size=64, slices=12)
    workdir = tmp_path / "run"
    done = installed.run(
        "train", "--config", "smoke", "--out", str(workdir), "--cache", str(cache),
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((workdir / "results.json").read_text())
    assert results["train"]["steps"] == 6 and set(results["splits"]) >= {"test", "external"}
    assert str(workdir) in done.stdout  # the end-of-run summary says where the files are
