"""A command whose optional extra is missing says, in one line, which extra to install."""

import subprocess
import sys

import pytest

from digitlab.extras import PROVIDERS

# Runs the CLI with some modules made unimportable, as in an install without that extra: a finder
# ahead of the others refuses them (and their submodules) as the import system does a module it
# cannot find. test_wheel_without_torch does the same with a real install.
BLOCKED_RUN = """
import sys
blocked = set(sys.argv[1].split(","))

class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, Absent())
from digitlab.cli import main
sys.exit(main(sys.argv[2:]))
"""


def run_without(modules: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKED_RUN, modules, *argv], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize(("blocked", "argv", "package", "extra"), [
    ("torch", ["train", "cnn"], "torch", "train"),
    ("sklearn", ["train", "mlp-sklearn"], "scikit-learn", "train"),
    ("sklearn", ["train", "knn"], "scikit-learn", "train"),
    ("safetensors", ["train", "fast"], "safetensors", "train"),
    ("torch", ["finetune", "bundled", "--images", "nowhere"], "torch", "train"),
    ("torch", ["export", "runs/some-model"], "torch", "train"),
    ("matplotlib", ["report", "bundled"], "matplotlib", "report"),
    ("uvicorn", ["serve"], "uvicorn", "serve"),
    ("fastapi,starlette", ["serve"], "fastapi", "serve"),
])
def test_missing_extra_is_one_line_naming_it(tmp_path, blocked, argv, package, extra):
    result = run_without(blocked, *argv)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    what = " ".join(argv[:2]) if argv[0] == "train" else argv[0]
    assert lines == [f'digitlab: error: {what} needs {package}, which is not installed: '
                     f'pip install "digitlab[{extra}]"'], result.stderr
    assert result.stdout == ""


def test_every_extra_module_names_an_extra_in_pyproject():
    import tomllib
    from pathlib import Path

    extras = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    for module, (extra, package) in PROVIDERS.items():
        assert any(req.startswith(package) for req in extras[extra]), (module, extra, package)
    assert set(extras["all"][0].split("[")[1].rstrip("]").split(",")) == {"train", "report", "serve"}


def test_a_module_of_no_extra_keeps_its_traceback():
    from digitlab.extras import missing_extra

    assert missing_extra(ModuleNotFoundError("x", name="numpy"), "predict") is None
