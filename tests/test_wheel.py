"""The wheel as a user installs it: `pip install digitlab` without extras predicts, and `train cnn`
says in one line which extra to install. Builds the wheel, installs it into a fresh virtualenv with
the reader's dependencies only (from PyPI or pip's cache; never torch), and runs the console script."""

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digitlab.testing.corpus import drawn_digit

REPO = Path(__file__).resolve().parents[1]


# what the user's shell would not have: this checkout on the path, the test suite's settings
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DIGITLAB_DATA", "DIGITLAB_OFFLINE")}


def run(*argv, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=900, env=CLEAN_ENV,
                          **kwargs)


def pinned_reader_dependencies() -> list[str]:
    """pyproject's dependencies at the versions installed here: the same wheels, no surprise upgrade."""
    requirements = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = [r.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip() for r in requirements]
    return [f"{name}=={importlib.metadata.version(name)}" for name in names]


@pytest.mark.slow  # builds a wheel and installs ~100 MB of dependencies (a minute or two on a cold cache)
def test_wheel_without_extras_predicts_and_names_the_train_extra(tmp_path):
    # built from a copy: setuptools writes its egg-info and build/ beside the sources it builds
    source = tmp_path / "source"
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    built = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist",
                source)
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "dist").glob("digitlab-*.whl"))
    assert wheel.name.startswith("digitlab-0.2.0-")

    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    python, digitlab = env / "bin" / "python", env / "bin" / "digitlab"
    installed = run(python, "-m", "pip", "install", "-q", "--no-deps", wheel)
    assert installed.returncode == 0, installed.stderr
    deps = run(python, "-m", "pip", "install", "-q", *pinned_reader_dependencies())
    assert deps.returncode == 0, deps.stderr
    # the fresh environment has the reader's stack and nothing of the extras
    present = run(python, "-c", "import importlib.util as u; print([m for m in ('torch', 'sklearn', 'matplotlib', "
                  "'fastapi', 'uvicorn') if u.find_spec(m)])")
    assert present.stdout.strip() == "[]", present.stdout + present.stderr

    image = tmp_path / "seven.png"
    ink = drawn_digit(7, 200, np.random.default_rng(0), width=0.1)
    Image.fromarray(((1 - ink) * 255).astype(np.uint8)).save(image)  # dark ink on white paper
    predicted = run(digitlab, "predict", image, cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    assert predicted.stdout.startswith(f"{image}: 7 ("), predicted.stdout

    version = run(digitlab, "--version")
    assert version.stdout.strip() == "digitlab 0.2.0"

    train = run(digitlab, "train", "cnn", cwd=tmp_path)
    assert train.returncode == 1 and train.stdout == ""
    assert train.stderr.splitlines() == [
        'digitlab: error: train cnn needs torch, which is not installed: pip install "digitlab[train]"']
