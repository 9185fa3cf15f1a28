"""Every example in the documentation runs: the README and docs/*.md, block by block, in order.

- ```python blocks run as scripts (each on its own); they must exit 0.
- ```console blocks: each `$ command` runs in bash; it must exit 0, or with the code its comment
  names ("# exit code 1: ..."). Under `<!-- output checked -->` its stdout must be the lines shown
  under it, exactly.
- `<!-- not run: why -->` before a block skips it (a training of minutes, a server that runs until
  stopped), and `./setup.sh` and `source .venv/bin/activate` are not run: this checkout, with the
  test's interpreter first on PATH, is the set-up they make. ```bash blocks (installing, running the
  test suite) and blocks without a language (a directory tree) are not commands to check here.

Each file runs in a fresh folder holding the example images (`digitlab data examples`), with links to
`scripts/` and `benchmarks/`, reading MNIST from $DIGITLAB_DATA and never downloading.
"""

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SET_UP = ("./setup.sh", "source .venv/bin/activate")


@dataclass
class Block:
    file: str
    line: int
    language: str
    code: str
    marker: str  # the HTML comment just before the block, "" if none


def blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = before[4:-3].strip() if before.startswith("<!--") and before.endswith("-->") else ""
        found.append(Block(path.name, i + 1, fence[1], "\n".join(lines[i + 1:end]), marker))
        i = end + 1
    return found


def commands(block: Block) -> list[tuple[str, list[str]]]:
    """(command, the output lines shown under it) for each `$ ` line of a console block."""
    out: list[tuple[str, list[str]]] = []
    for line in block.code.splitlines():
        if line.startswith("$ "):
            out.append((line[2:], []))
        elif out:
            out[-1][1].append(line)
    return out


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # digitlab, python
    env["PYTHONPATH"] = str(REPO / "src")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@pytest.fixture
def folder(tmp_path, data_root):
    from digitlab.data.examples import write_examples

    write_examples(tmp_path, data_root)
    for name in ("scripts", "benchmarks"):
        (tmp_path / name).symlink_to(REPO / name)
    return tmp_path


def run_block(block: Block, folder: Path) -> None:
    where = f"{block.file}:{block.line}"
    env = environment()
    if block.language == "python":
        script = folder / f"block-{block.line}.py"
        script.write_text(block.code + "\n", encoding="utf-8")
        done = subprocess.run([sys.executable, str(script)], cwd=folder, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, f"{where}: the python block failed:\n{done.stderr[-3000:]}"
        return
    for command, shown in commands(block):
        if command.startswith(SET_UP):
            continue
        code = re.search(r"exit code (\d+)", command)
        done = subprocess.run(["bash", "-c", command], cwd=folder, env=env, capture_output=True, text=True,
                              timeout=600)
        expected = int(code[1]) if code else 0
        assert done.returncode == expected, (f"{where}: `{command}` exited {done.returncode}, not {expected}:\n"
                                             f"{done.stderr[-3000:]}")
        if block.marker.startswith("output checked"):
            assert done.stdout.splitlines() == shown, f"{where}: `{command}` printed\n{done.stdout}"


@pytest.mark.slow  # every example: a few quick trainings, evaluations and reports, about 2-4 minutes in all
@pytest.mark.parametrize("path", DOCS, ids=[p.name for p in DOCS])
def test_every_example_runs(path, folder):
    ran = 0
    for block in blocks(path):
        if block.marker.startswith("not run") or block.language not in ("python", "console"):
            continue
        run_block(block, folder)
        ran += 1
    assert ran, f"{path.name}: no example ran"


def test_blocks_not_run_say_why_and_every_doc_has_examples():
    for path in DOCS:
        found = blocks(path)
        assert any(b.language in ("python", "console") for b in found), path.name
        for block in found:
            if block.marker.startswith("not run"):
                assert len(block.marker) > len("not run: ") + 10, f"{path.name}:{block.line}: say why it is not run"


def test_docs_link_to_files_that_exist():
    for path in DOCS:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", path.read_text(encoding="utf-8")):
            assert (path.parent / target).exists(), f"{path.name}: broken link {target}"
