"""Beyond one machine: predict into Parquet partitions (local workers, Ray Data on a simulated 2-node
cluster), stopping and resuming, `pack`, and `train --nproc 2` (DistributedDataParallel) killed and
resumed. Ray starts inside the tests (ray.cluster_utils.Cluster), no service beforehand."""

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

from digitlab import cli
from digitlab.scale.shards import read_results

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
CORRUPT = b"\x89PNG\r\n\x1a\n" + b"\0" * 40  # a PNG signature and nothing readable after it


def write_digits(root: Path, images: np.ndarray, labels: np.ndarray, start: int, n: int) -> Path:
    """n MNIST test digits as small dark-on-white PNGs, and one corrupt file among them."""
    root.mkdir(parents=True)
    for i in range(start, start + n - 1):
        Image.fromarray(255 - images[i]).resize((42, 42), Image.BILINEAR).save(root / f"{i:05d}-{labels[i]}.png")
    (root / f"{start + n // 2:05d}-corrupt.png").write_bytes(CORRUPT)
    return root


@pytest.fixture(scope="module")
def two_folders(mnist, tmp_path_factory) -> tuple[Path, Path]:
    """2 x 1,000 images (one corrupt in each): one folder read as loose files, one to be packed."""
    _, (x, y) = mnist
    root = tmp_path_factory.mktemp("scale")
    return write_digits(root / "loose", x, y, 0, 1000), write_digits(root / "packed", x, y, 1000, 1000)


def predict(args: list, capsys) -> tuple[int, str, str]:
    code = cli.main(["predict", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def by_file(rows: list[dict]) -> dict[str, dict]:
    """Parquet rows -> {file: the record as predict --json prints it}; fails on a file answered twice."""
    out = {}
    for row in rows:
        assert row["file"] not in out, f"{row['file']} answered twice"
        out[row["file"]] = json.loads(row["json"])
    return out


# ---------------------------------------------------------------------------- fast
def test_parquet_columns_are_predicts_json_and_pack_round_trips(mnist, tmp_path, capsys):
    """Local engine, Parquet in and out: every column is the --json record's field; packed shards
    answer as the loose files did (keys relative to the folder); a rerun reads nothing again."""
    _, (x, y) = mnist
    folder = write_digits(tmp_path / "imgs", x, y, 0, 30)
    code, out, _ = predict([folder, "--json", "--jobs", "1"], capsys)
    assert code == 1  # the corrupt one
    expected = {Path(r["file"]).name: r for r in map(json.loads, out.splitlines())}

    assert cli.main(["pack", str(folder), "--out", str(tmp_path / "shards"), "--shard-mb", "0.005"]) == 0
    shards = sorted((tmp_path / "shards").glob("images-*.parquet"))
    assert len(shards) > 1 and "Parquet shards" in capsys.readouterr().out

    results = tmp_path / "results.parquet"
    code, _, err = predict([tmp_path / "shards", "--out", results, "--jobs", "1"], capsys)
    assert code == 1 and f"30 inputs in {len(shards)} shards" in err and "1 failed" in err
    rows = read_results(results)
    got = by_file(rows)
    assert sorted(got) == sorted(expected)
    for row in rows:  # the same answers; an error names the key, as predict's names the file
        record = expected[row["file"]]
        if "error" in record:
            record["error"] = record["error"].replace(str(folder / row["file"]), row["file"])
        assert got[row["file"]] == {**record, "file": row["file"]}
        for column in ("label", "confidence", "status", "probabilities", "box", "hint", "error"):
            assert row[column] == record.get(column), column
    assert next(r for r in rows if r["error"])["file"].endswith("corrupt.png")

    before = {p: p.stat().st_mtime_ns for p in results.glob("part-*.parquet")}
    code, _, err = predict([tmp_path / "shards", "--out", results], capsys)
    assert code == 0 and f"{len(shards)} of {len(shards)} shards already written" in err
    assert {p: p.stat().st_mtime_ns for p in results.glob("part-*.parquet")} == before


def test_parquet_output_refuses_other_options_and_bad_arguments(mnist, tmp_path, capsys):
    _, (x, y) = mnist
    folder = write_digits(tmp_path / "imgs", x, y, 0, 5)
    results = tmp_path / "r.parquet"
    assert predict([folder, "--out", results], capsys)[0] == 1
    code, _, err = predict([folder, "--out", results, "--multi"], capsys)
    assert code == 1 and "holds answers made with other options" in err and "Traceback" not in err
    for args, message in [([folder, "--engine", "ray"], "--engine ray writes Parquet"),
                          ([folder, "--out", tmp_path / "x.parquet", "--address", "h:1"], "use it with --engine ray"),
                          ([folder, "--out", tmp_path / "y.parquet", "--explain", tmp_path], "--explain"),
                          ([folder, "--out", tmp_path / "z.parquet", "--shard-size", "0"], "--shard-size 0")]:
        code, _, err = predict(args, capsys)
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1, (args, err)
        assert not (tmp_path / "z.parquet").exists()
    # a missing input is an answer (its error), as for predict, not a failed job
    code, _, err = predict([tmp_path / "missing.parquet", "--out", tmp_path / "w.parquet"], capsys)
    assert code == 1 and "1 failed" in err
    assert "missing.parquet" in read_results(tmp_path / "w.parquet")[0]["error"]
    (tmp_path / "f.parquet").write_text("not parquet")
    code, _, err = predict([tmp_path / "f.parquet", "--out", tmp_path / "v.parquet"], capsys)
    assert code == 1 and "not a readable Parquet file" in err
    assert cli.main(["pack", str(tmp_path / "nope"), "--out", str(tmp_path / "s")]) == 1
    assert "not a folder" in capsys.readouterr().err


def test_engine_ray_without_the_extra_says_which_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as without the extra
    (tmp_path / "a.png").write_bytes(CORRUPT)
    code, _, err = predict([tmp_path / "a.png", "--out", tmp_path / "r.parquet", "--engine", "ray"], capsys)
    assert code == 1 and err.strip() == 'digitlab: error: --engine ray needs Ray: pip install "digitlab[scale]"'


def test_nproc_is_for_neural_families(capsys):
    assert cli.main(["train", "knn", "--nproc", "2"]) == 1
    assert "knn trains in one step: --nproc is for neural families" in capsys.readouterr().err
    assert cli.main(["train", "mlp", "--nproc", "0"]) == 1
    assert "--nproc 0" in capsys.readouterr().err


# ---------------------------------------------------------------------------- Ray, 2 simulated nodes
@pytest.fixture(scope="module")
def cluster():
    """A head and a worker node of 1 CPU each, in this machine; the test process is the driver."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    store = 100 * 1024 * 1024  # each node's object store: the default would take ~30% of RAM per node
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": store,
                                                      "include_dashboard": False})
    c.add_node(num_cpus=1, object_store_memory=store)
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


@pytest.mark.slow
def test_two_node_ray_cluster_answers_as_predict_json_and_resumes(two_folders, cluster, tmp_path, capsys):
    """2,000 inputs (loose files and packed Parquet shards, one corrupt in each) on a 2-node cluster:
    every answer is the one `predict --json` gives, the corrupt ones are rows with their error. Then
    half the partitions are lost (a stopped job), and the rerun reads only those shards."""
    import ray

    loose, packed = two_folders
    code, out, _ = predict([loose, packed, "--json"], capsys)
    assert code == 1
    expected = {r["file"]: r for r in map(json.loads, out.splitlines())}
    assert len(expected) == 2000
    shards = tmp_path / "shards"
    assert cli.main(["pack", str(packed), "--out", str(shards), "--shard-mb", "0.2"]) == 0
    capsys.readouterr()

    results = tmp_path / "results.parquet"
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        assert len(nodes) == 2
        command = [loose, shards, "--out", results, "--engine", "ray", "--shard-size", "250"]
        code, _, err = predict(command, capsys)
        assert code == 1 and "2,000 inputs" in err and "2 failed now" in err, err
        got = by_file(read_results(results))
        assert len(got) == 2000
        for name, record in got.items():  # packed keys are paths under the packed folder
            reference = expected.get(name) or expected[str(packed / name)]
            if "error" in reference:  # the error names the input as the row does
                reference = {**reference, "error": reference["error"].replace(reference["file"], name)}
            assert record == {**reference, "file": name}
        assert sorted(r["file"] for r in got.values() if "error" in r) == sorted(
            name for name in got if name.endswith("corrupt.png"))
        assert sum("error" in r for r in got.values()) == 2

        parts = sorted(results.glob("part-*.parquet"))
        kept = {p: p.stat().st_mtime_ns for p in parts[::2]}
        for p in parts[1::2]:  # a job stopped halfway: these were never committed
            p.unlink()
        (results / ".part-0123456789abcdef.parquet.a1b2c3.tmp").write_bytes(b"half a file")
        code, _, err = predict(command, capsys)
        assert f"{len(kept)} of {len(parts)} shards already written" in err, err
        assert by_file(read_results(results)) == got  # every input once, the same answers
        assert {p: p.stat().st_mtime_ns for p in parts[::2]} == kept  # not read again
        assert not list(results.glob(".*.tmp"))
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_local_job_killed_halfway_resumes_each_input_once(two_folders, tmp_path):
    """A real process killed (SIGKILL) mid-run keeps its committed partitions; the rerun reads the
    other shards and every input is answered exactly once."""
    loose, _ = two_folders
    results = tmp_path / "results.parquet"
    command = [sys.executable, "-m", "digitlab.cli", "predict", str(loose), "--out", str(results),
               "--shard-size", "50", "--jobs", "1", "--no-progress"]
    proc = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while len(list(results.glob("part-*.parquet"))) < 3 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()
    committed = {p: p.stat().st_mtime_ns for p in results.glob("part-*.parquet")}
    assert 3 <= len(committed) < 20, "the job was not stopped halfway"
    rows = read_results(results)
    assert len(rows) == 50 * len(committed)  # whole partitions only

    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr  # the corrupt image
    assert f"{len(committed)} of 20 shards already written" in done.stderr
    got = by_file(read_results(results))
    assert len(got) == 1000 and sum("error" in r for r in got.values()) == 1
    assert {p: p.stat().st_mtime_ns for p in committed} == committed


# ---------------------------------------------------------------------------- DDP
@pytest.mark.slow
def test_train_nproc_2_saves_one_model_and_resumes_after_a_kill(data_root, tmp_path):
    """`train mlp --nproc 2`: two gloo ranks; killed (the whole process group, SIGKILL) after a
    checkpoint, then resumed under DDP to the end, with one model folder written by rank 0."""
    out = tmp_path / "mlp"
    command = [sys.executable, "-m", "digitlab.cli", "train", "mlp", "--limit", "3000", "--epochs", "6",
               "--set", "hidden=64", "--nproc", "2", "--out", str(out)]
    proc = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    checkpoint = out / "checkpoint" / "checkpoint.json"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if checkpoint.is_file() and json.loads(checkpoint.read_text())["epoch"] >= 1:
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both ranks at once, as a lost machine
    finally:
        proc.wait()
        proc.communicate()
    stopped_at = json.loads(checkpoint.read_text())["epoch"]
    assert 1 <= stopped_at < 6 and not (out / "metrics.json").exists()

    done = subprocess.run([*command, "--resume"], env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resuming at epoch {stopped_at + 1} of 6" in done.stderr
    assert done.stdout.count("saved to") == 1  # rank 0 speaks for the run
    config = json.loads((out / "config.json").read_text())
    history = json.loads((out / "history.json").read_text())
    assert config["world_size"] == 2 and [h["epoch"] for h in history] == [1, 2, 3, 4, 5, 6]
    assert all("val_acc" in h for h in history)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.85 and metrics["train_images"] == 2700
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint", "config.json", "history.json", "metrics.json",
                                                     "weights.safetensors"]
    # resuming on another number of processes would change the steps per epoch: refused, in one line
    other = subprocess.run([*command[:-4], "--out", str(out), "--resume"], env=ENV, capture_output=True,
                           text=True, timeout=120)
    assert other.returncode == 1 and "resume it with --nproc 2" in other.stderr and "Traceback" not in other.stderr
