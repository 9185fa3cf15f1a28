"""`digitlab predict` as users meet it: odd arguments, pipes, several digits, explain, worker processes,
and --out surviving a kill. Real runs: in-process through cli.main, or a real process where the
behaviour is about processes (pipes, signals)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digitlab import cli, reader
from digitlab.cli import read_commands

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src")}


def digit_png(image28: np.ndarray, path: Path, size: int = 56) -> Path:
    """An MNIST digit drawn dark on white, as a canvas export would be."""
    Image.fromarray(255 - image28).resize((size, size), Image.BILINEAR).save(path)
    return path


@pytest.fixture(scope="module")
def folder(mnist, tmp_path_factory) -> Path:
    """150 digit images (enough for the worker-process path), named index-label.png."""
    _, (x, y) = mnist
    root = tmp_path_factory.mktemp("digits")
    for i in range(150):
        digit_png(x[i], root / f"{i:03d}-{y[i]}.png")
    return root


@pytest.fixture(scope="module")
def row(mnist, tmp_path_factory) -> Path:
    _, (x, _) = mnist
    path = tmp_path_factory.mktemp("row") / "row.png"
    Image.fromarray(255 - np.concatenate([x[0], x[1], x[2]], axis=1)).resize((252, 84)).save(path)
    return path


@pytest.fixture
def blank(tmp_path) -> Path:
    path = tmp_path / "blank.png"
    Image.new("RGBA", (120, 80), (0, 0, 0, 0)).save(path)
    return path


def run(args, capsys):
    code = cli.main(["predict", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def digitlab(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "digitlab.cli", "predict", *map(str, args)], env=ENV,
                          capture_output=True, text=True, timeout=120, **kwargs)


# ---------------------------------------------------------------------------- odd arguments
@pytest.mark.hostile("cli-min-confidence-range")
@pytest.mark.parametrize("value", ["1.5", "-0.1", "nan", "high"])
def test_min_confidence_outside_0_1_is_rejected(value, folder, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["predict", str(folder / "000-7.png"), "--min-confidence", value])
    captured = capsys.readouterr()
    assert exit_.value.code == 2 and captured.out == ""
    assert "--min-confidence" in captured.err and ("between 0 and 1" in captured.err or "not a number" in captured.err)


def test_min_confidence_1_is_allowed(folder, capsys):
    code, out, _ = run([folder / "000-7.png", "--min-confidence", "1", "--json"], capsys)
    assert code == 0 and json.loads(out)["status"] == "unsure"


@pytest.mark.hostile("cli-empty-folder")
def test_empty_folder_says_no_images_and_fails(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    code, out, _ = run([tmp_path / "empty"], capsys)
    assert code == 1
    assert out.startswith(f"{tmp_path / 'empty'}: error:") and "no images in this folder" in out


@pytest.mark.hostile("cli-missing-file", "cli-not-an-image")
def test_bad_inputs_fail_alone(folder, tmp_path, capsys):
    text = tmp_path / "notes.png"
    text.write_text("just words")
    code, out, _ = run([tmp_path / "missing.png", folder / "000-7.png", text, "--json"], capsys)
    missing, good, unreadable = (json.loads(line) for line in out.splitlines())
    assert code == 1
    assert "no such file" in missing["error"] and "not a readable image" in unreadable["error"]
    assert good["label"] == 7 and "error" not in good


@pytest.mark.hostile("cli-broken-pipe")
def test_pipe_into_head_exits_quietly(folder):
    proc = subprocess.Popen([sys.executable, "-m", "digitlab.cli", "predict", str(folder), "--jobs", "1"], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()  # what `head -n 1` does after its line
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141
    assert first.startswith(str(folder).encode()) and err == b""


# ---------------------------------------------------------------------------- what users are told
@pytest.mark.hostile("cli-several-digits")
def test_several_digits_without_multi_get_a_hint(row, folder, capsys):
    code, out, _ = run([row, folder / "000-7.png", "--json"], capsys)
    several, one = (json.loads(line) for line in out.splitlines())
    assert code == 0 and several["label"] is not None
    assert "looks like 3 digits" in several["hint"] and "--multi" in several["hint"]
    assert "hint" not in one
    code, out, _ = run([row], capsys)
    assert "[looks like 3 digits: use --multi" in out
    code, out, _ = run([row, "--multi", "--json"], capsys)
    assert len(json.loads(out)["text"]) == 3 and "hint" not in json.loads(out)


@pytest.mark.hostile("cli-explain-no-digit")
def test_explain_writes_what_the_reader_saw_for_no_digit(blank, folder, tmp_path, capsys):
    seen = tmp_path / "seen"
    code, out, _ = run([blank, folder / "000-7.png", "--explain", seen], capsys)
    assert code == 0 and out.splitlines()[0] == f"{blank}: no digit"
    assert sorted(p.name for p in seen.iterdir() if "-step-" not in p.name) == ["000-blank-no-digit.png",
                                                                                "001-000-7.png"]
    assert Image.open(seen / "000-blank-no-digit.png").size == (120, 80)
    assert Image.open(seen / "001-000-7.png").size == (28, 28)
    # and each step of the pipeline for the digit, in order, ending with the 28x28 the model saw
    steps = sorted(p.name for p in seen.glob("001-*-step-*"))
    assert [name.split("-step-")[1].split("-", 1)[1] for name in steps] == ["decode.png", "page.png", "find.png",
                                                                            "normalize.png"]
    assert np.array_equal(np.asarray(Image.open(seen / steps[-1])), np.asarray(Image.open(seen / "001-000-7.png")))


# ---------------------------------------------------------------------------- worker processes
def test_a_chunk_gives_the_records_of_its_inputs_read_one_by_one(folder, row, blank, tmp_path):
    text = tmp_path / "text.png"
    text.write_text("not an image")
    paths = [folder / "000-7.png", tmp_path / "missing.png", row, blank, text, folder / "001-2.png"]
    tasks = [(n, str(p), str(p)) for n, p in enumerate(paths)]
    model = reader.get_model()
    for options in (read_commands.PredictOptions(), read_commands.PredictOptions(multi=True)):
        chunk = read_commands.answer_chunk(tasks, model, options)
        assert chunk == [read_commands.answer_chunk([task], model, options)[0] for task in tasks]
        assert [("error" in r) for r in chunk] == [False, True, False, False, True, False]
    assert "hint" in read_commands.answer_chunk(tasks[2:3], model, read_commands.PredictOptions())[0]


@pytest.mark.hostile("cli-parallel-order")
def test_worker_processes_keep_order_and_answers(folder, capsys, monkeypatch):
    code, serial, _ = run([folder, "--json", "--jobs", "1"], capsys)
    monkeypatch.setattr(read_commands, "PARALLEL_MIN", 2)
    code2, parallel, _ = run([folder, "--json", "--jobs", "2"], capsys)
    assert code == code2 == 0 and parallel == serial
    records = [json.loads(line) for line in serial.splitlines()]
    assert [Path(r["file"]).name for r in records] == sorted(p.name for p in folder.iterdir())
    right = np.mean([r["label"] == int(Path(r["file"]).stem.split("-")[1]) for r in records])
    assert right >= 0.95


@pytest.mark.hostile("cli-progress-not-on-stdout")
def test_progress_bar_goes_to_stderr_only(folder):
    done = digitlab(*sorted(folder.iterdir())[:20], "--progress")
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert len(lines) == 20 and all(line.startswith(str(folder)) and line.endswith("%)") for line in lines)
    assert "/20 [" in done.stderr and "img/s" in done.stderr


def test_no_progress_bar_when_stderr_is_not_a_terminal(folder):
    done = digitlab(folder / "000-7.png", folder / "001-2.png")
    assert done.returncode == 0 and done.stderr == ""


# ---------------------------------------------------------------------------- --out: durable, resumable
def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_out_writes_every_answer_in_order(folder, tmp_path, capsys):
    out, files = tmp_path / "results.jsonl", sorted(folder.iterdir())[:30]
    code, stdout, err = run([*files, "--out", out], capsys)
    records = read_jsonl(out)
    assert code == 0 and stdout == "" and "30 inputs answered" in err
    assert [r["file"] for r in records] == [str(p) for p in files]
    assert not (tmp_path / "results.jsonl.partial").exists()
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.hostile("cli-resume-after-kill")
def test_out_survives_sigkill_and_resumes(folder, tmp_path):
    out = tmp_path / "results.jsonl"
    journal = tmp_path / "results.jsonl.partial"
    args = [sys.executable, "-m", "digitlab.cli", "predict", str(folder), "--out", str(out), "--jobs", "2"]
    proc = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # its own group: the kill reaches its workers too
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.is_file() and journal.read_bytes().count(b"\n") >= 20:
            break
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "the run finished before it could be killed"
    before = {r["file"]: r for r in read_jsonl(journal)}
    assert 20 <= len(before) < 150

    again = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert f"{len(before)} of 150 inputs already answered" in again.stderr
    records = read_jsonl(out)
    assert [r["file"] for r in records] == [str(p) for p in sorted(folder.iterdir())]  # each exactly once
    assert all(records[i] == r for i, r in enumerate(records) if r["file"] in before and before[r["file"]] == r)
    assert not journal.exists()


@pytest.mark.hostile("cli-resume-after-partial-line")
def test_out_drops_a_half_written_line_and_answers_it_again(folder, tmp_path, capsys):
    out = tmp_path / "results.jsonl"
    files = sorted(folder.iterdir())[:5]
    run([*files[:3], "--out", out], capsys)
    lines = out.read_text().splitlines()
    (tmp_path / "results.jsonl.partial").write_text("\n".join(lines[:2]) + "\n" + lines[2][:25])
    out.unlink()
    code, _, err = run([*files, "--out", out], capsys)
    assert code == 0 and "2 of 5 inputs already answered" in err
    assert [r["file"] for r in read_jsonl(out)] == [str(f) for f in files]


def test_out_retries_failed_inputs(folder, tmp_path, capsys):
    out, late = tmp_path / "results.jsonl", tmp_path / "late.png"
    code, _, _ = run([folder / "000-7.png", late, "--out", out], capsys)
    assert code == 1 and "no such file" in read_jsonl(out)[1]["error"]
    (tmp_path / "late.png").write_bytes((folder / "001-2.png").read_bytes())
    code, _, err = run([folder / "000-7.png", late, "--out", out], capsys)
    assert code == 0 and "1 of 2 inputs already answered" in err
    assert [r.get("label") for r in read_jsonl(out)] == [7, 2]


def test_out_naming_a_folder_fails_before_any_work(folder, tmp_path, capsys):
    code, out, err = run([folder, "--out", tmp_path], capsys)
    assert code == 1 and out == "" and "is a folder" in err and len(err.splitlines()) == 1
