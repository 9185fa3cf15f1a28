"""The reader's commands: predict and serve. Torch-free, like the reader itself."""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from digitlab import reader
from digitlab.errors import DigitlabError, ImageError
from digitlab.extras import require
from digitlab.files import atomic_write_bytes, atomic_write_text
from digitlab.reader.hint import several_digits_hint
from digitlab.reader.image import Loaded, load
from digitlab.reader.pipeline import ink_map, read_page
from digitlab.reader.preprocess import composite_alpha
from digitlab.reader.recognize import SURE

# ---------------------------------------------------------------------------- predict (reader)
# Folders are read over worker processes (one per core), answers printed in input order. With
# --out, answers go to a journal (FILE.partial) as they come, each one line appended in one write
# and fsynced every second, and the journal becomes FILE when the run ends; a rerun after a crash or
# a kill skips every input the journal already answers, so nothing is redone and nothing is lost.
PARALLEL_MIN = 100  # fewer inputs: one process (each worker loads the model: not worth it for a handful)
CHUNK = 32  # inputs read together (decoded, preprocessed, then the network: see reader.classify_many)
SYNC_EVERY_S = 1.0


@dataclass(frozen=True)
class PredictOptions:
    multi: bool = False
    min_confidence: float | None = None  # None: the reader's default decision (recognize.SURE)
    explain: str | None = None
    model: str | None = None


def probability(text: str) -> float:
    """argparse type for --min-confidence: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (a probability), got {text}")
    return value


def predict_inputs(paths: list[str]) -> list[tuple[str, object]]:
    """(name, source) per input: files as given, folders' images recursively, "-" = stdin's bytes.
    A folder without images is one failed input (its source is the error)."""
    inputs: list[tuple[str, object]] = []
    for p in paths:
        if p == "-":
            inputs.append(("-", sys.stdin.buffer.read()))
        elif Path(p).is_dir():
            from digitlab.data import image_files  # the data package (its registry, urllib) only for folders
            from digitlab.data.folder import IMAGE_SUFFIXES

            found = image_files(p)
            if not found:
                kinds = ", ".join(sorted(IMAGE_SUFFIXES))
                inputs.append((p, ImageError(f"{p}: no images in this folder (looked for {kinds})")))
            inputs.extend((str(f), str(f)) for f in found)
        else:
            inputs.append((p, p))
    return inputs


def answer_chunk(tasks: list[tuple[int, str, object]], model, options: PredictOptions) -> list[dict]:
    """Some inputs -> their records, in order: the answer, or {"file", "error"}. Never raises a
    DigitlabError. Single digits are read step by step over the whole chunk (reader.classify_many)."""
    images = [opened(source) for _, _, source in tasks]  # decoded once, for the reading and the hint
    readable = [image for image in images if not isinstance(image, DigitlabError)]
    try:
        if options.multi:
            found = iter([reader.read(image, model, options.min_confidence) for image in readable])
        else:
            found = iter(reader.classify_many(readable, model, options.min_confidence))
    except DigitlabError as e:  # none is expected once the images are decoded; were one raised, the chunk fails
        return [to_record(n, name, image, e, options) for (n, name, _), image in zip(tasks, images, strict=True)]
    return [to_record(n, name, image, image if isinstance(image, DigitlabError) else next(found), options)
            for (n, name, _), image in zip(tasks, images, strict=True)]


def opened(source: object) -> Loaded | DigitlabError:
    if isinstance(source, DigitlabError):
        return source
    try:
        return load(source)
    except DigitlabError as e:
        return e


def to_record(n: int, name: str, image: Loaded | DigitlabError, result, options: PredictOptions) -> dict:
    """One input's record from its reading (a Reading with --multi, else a classify result), or its error."""
    if isinstance(result, DigitlabError):
        return {"file": name, "error": str(result)}
    try:
        if options.multi:
            out = {"file": name, **result.as_dict()}
            seen = [d.image for d in result.digits]
        else:
            out = {"file": name, **reader.as_dict(result)}
            seen = [result["image"]] if result["image"] is not None else []
            if hint := several_digits_hint(result, "use --multi"):
                out["hint"] = hint
        if options.explain:
            write_explain(Path(options.explain), n, name, seen or [what_the_reader_saw(image)],
                          "" if seen else "-no-digit")
            write_steps(Path(options.explain), n, name, image, options.multi)
    except DigitlabError as e:
        return {"file": name, "error": str(e)}
    return out


def what_the_reader_saw(image: Loaded) -> np.ndarray:
    """For "no digit": the grey image the reader worked from (transparency composited), contrast
    stretched so that faint marks show, as uint8."""
    gray = image.gray if image.alpha is None else composite_alpha(image.gray, image.alpha)
    low, high = int(gray.min()), int(gray.max())
    if high == low:
        return np.zeros_like(gray)
    return ((gray.astype(np.float32) - low) * (255.0 / (high - low)) + 0.5).astype(np.uint8)


def write_explain(folder: Path, n: int, name: str, images: list, suffix: str = "") -> None:
    """The 28x28 image(s) the model saw (or, for "no digit", what the reader saw), as PNGs named after the input."""
    stem = "stdin" if name == "-" else Path(name).stem
    for i, image in enumerate(images):
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG")
        part = f"-{i}" if len(images) > 1 else ""
        atomic_write_bytes(folder / f"{n:03d}-{stem}{part}{suffix}.png", buf.getvalue())


def write_steps(folder: Path, n: int, name: str, image: Loaded, multi: bool) -> None:
    """What each step of the reader's pipeline made of the image (pipeline.Page.trace), as PNGs
    NNN-name-step-K-STEP.png: the decoded grey, the page's ink, the printed lines found and the ink
    without them, the ink read, and (one digit) the 28x28. Nothing past the step that found no digit."""
    try:
        trace = ink_map(image, trace=True).trace if multi else read_page(image, trace=True)[1].trace
    except DigitlabError:
        return
    stem = "stdin" if name == "-" else Path(name).stem
    for k, (step, picture) in enumerate(trace):
        buf = io.BytesIO()
        Image.fromarray(picture).save(buf, format="PNG")
        atomic_write_bytes(folder / f"{n:03d}-{stem}-step-{k}-{step.replace(' ', '-')}.png", buf.getvalue())


def format_line(record: dict) -> str:
    """The plain-text line of one record: "name: 7 (99.9%)"."""
    if "error" in record:
        line = f"error: {record['error']}"
    elif "text" in record:
        line = record["text"] or "no digit"
        line += " (unsure)" if record["status"] == "unsure" else ""
        line += f": {record['doubt']}" if record.get("doubt") else ""
    else:
        line = record["status"] if record["label"] is None else str(record["label"])
        line += f", maybe {record['guess']}" if record["status"] == "unsure" else ""
        line += f" ({100 * record['confidence']:.1f}%)" if record["probabilities"] else ""
    if "hint" in record:
        line += f" [{record['hint']}]"
    return f"{record['file']}: {line}"


_WORKER: dict = {}  # per worker process: its own model, loaded once


def _init_worker(options: PredictOptions) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the pool
    try:
        _WORKER["model"] = reader.get_model(options.model)
    except DigitlabError as e:  # an exception here would make the pool restart workers forever
        _WORKER["model"] = e
    _WORKER["options"] = options


def _answer_in_worker(tasks: list[tuple[int, str, object]]) -> list[dict]:
    model = _WORKER["model"]
    if isinstance(model, DigitlabError):
        return [{"file": name, "error": str(model)} for _, name, _ in tasks]
    return answer_chunk(tasks, model, _WORKER["options"])


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def answers(tasks: list[tuple[int, str, object]], options: PredictOptions, jobs: int) -> Iterator[dict]:
    """Records in input order: in this process for a few inputs, else over `jobs` worker processes;
    in chunks of up to CHUNK inputs (smaller for a short list, so that every worker gets several)."""
    jobs = min(jobs or usable_cpus(), len(tasks))
    parallel = jobs > 1 and len(tasks) >= PARALLEL_MIN
    size = max(1, min(CHUNK, len(tasks) // (8 * jobs))) if parallel else CHUNK
    chunks = [tasks[i:i + size] for i in range(0, len(tasks), size)]
    if not parallel:
        model = reader.get_model(options.model)
        for chunk in chunks:
            yield from answer_chunk(chunk, model, options)
        return
    # spawned, not forked: a process that already runs threads (Ray's, a server's) can deadlock a fork
    pool = multiprocessing.get_context("spawn").Pool(jobs, initializer=_init_worker, initargs=(options,))
    try:
        for records in pool.imap(_answer_in_worker, chunks):
            yield from records
        pool.close()
    finally:
        pool.terminate()
        pool.join()


class ResultsFile:
    """--out FILE: answers kept durably as they come, resumable after a crash or a kill.

    Answers are appended to FILE.partial (one write per line, fsynced every second); the end of the
    run writes FILE, in input order, atomically, and removes the journal. Opening it again reads back
    FILE and any journal: answered inputs are skipped; failed ones and a half-written last line are
    read again."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.journal = self.path.with_name(self.path.name + ".partial")
        self.records: dict[str, dict] = {}
        for source in (self.path, self.journal):
            for record in read_records(source):
                if "error" not in record and record.get("file") not in (None, "-"):
                    self.records[record["file"]] = record
        self.earlier = len(self.records)
        atomic_write_text(self.journal, "".join(json.dumps(r) + "\n" for r in self.records.values()))
        self.fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND)
        self.synced = time.monotonic()

    def answered(self, name: str) -> bool:
        return name != "-" and name in self.records

    def add(self, record: dict) -> None:
        os.write(self.fd, (json.dumps(record) + "\n").encode("utf-8"))
        self.records[record["file"]] = record
        if time.monotonic() - self.synced > SYNC_EVERY_S:
            os.fsync(self.fd)
            self.synced = time.monotonic()

    def close(self) -> None:
        """Interrupted: the journal stays, synced, for the next run to resume from."""
        if self.fd >= 0:
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1

    def finish(self, names: list[str]) -> None:
        """Writes FILE: this run's inputs in order, then earlier answers for other inputs."""
        self.close()
        ordered = {n: self.records[n] for n in names if n in self.records}
        ordered.update(self.records)
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in ordered.values()))
        self.journal.unlink(missing_ok=True)


def read_records(path: Path) -> list[dict]:
    """The JSON records of a JSONL file, skipping lines that do not parse (a write cut short)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_bytes().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def progress_bar(total: int, progress: bool | None):
    """tqdm's bar on stderr. auto (None): only on a terminal, and only once the work has taken 2 s;
    True: always, at once. None for one input in auto mode: there is nothing to show, and importing
    tqdm would add ~20 ms to `digitlab predict one.png`."""
    if progress is None and total <= 1:
        return None
    from tqdm import tqdm

    auto = progress is None
    return tqdm(total=total, unit="img", file=sys.stderr, leave=False, dynamic_ncols=True,
                delay=2.0 if auto else 0.0, disable=None if auto else not progress)


def cmd_predict(args: argparse.Namespace) -> int:
    options = PredictOptions(args.multi, args.min_confidence, args.explain, args.model)
    from digitlab.cli import scale_commands

    if scale_commands.wants_parquet(args):  # a folder of Parquet partitions, by shard (digitlab.scale)
        return scale_commands.predict_to_parquet(args, options)
    if args.out and Path(args.out).is_dir():
        raise DigitlabError(f"--out {args.out}: is a folder; give a file name, e.g. {Path(args.out) / 'results.jsonl'}")
    if args.model:
        reader.get_model(args.model)  # a bad --model is one error now, not one per input
    inputs = predict_inputs(args.paths)
    results = ResultsFile(args.out) if args.out else None
    tasks = [(n, name, source) for n, (name, source) in enumerate(inputs)
             if not (results and results.answered(name))]
    if results and results.earlier:
        print(f"digitlab: {args.out}: {len(inputs) - len(tasks):,} of {len(inputs):,} inputs already answered; "
              f"reading the other {len(tasks):,}", file=sys.stderr)
    bar = progress_bar(len(tasks), args.progress)
    share_terminal = bar is not None and not bar.disable and sys.stdout.isatty() and sys.stderr.isatty()
    failed = 0
    stream = answers(tasks, options, args.jobs)
    try:
        for record in stream:
            failed += "error" in record
            if results:
                results.add(record)
            else:
                line = json.dumps(record) if args.json else format_line(record)
                if share_terminal:  # clear the bar, print, redraw it below
                    bar.write(line, file=sys.stdout)
                else:
                    print(line, flush=True)
            if bar is not None:
                bar.update()
    except BaseException:
        if results:
            results.close()
            print(f"digitlab: answers so far kept in {results.journal}; run the same command again to resume",
                  file=sys.stderr)
        raise
    finally:
        stream.close()  # stops the worker processes now, not whenever the generator is collected
        if bar is not None:
            bar.close()
    if args.explain:
        print(f"digitlab: --explain: the images the model saw, and each step's, are in {args.explain}/ "
              f"(NNN-<input name>.png)", file=sys.stderr)
    if results:
        results.finish([name for name, _ in inputs])
        print(f"digitlab: {args.out}: {len(inputs):,} inputs answered ({len(tasks):,} now, "
              f"{len(inputs) - len(tasks):,} earlier), {failed:,} failed", file=sys.stderr)
    return 1 if failed else 0


def add_predict_commands(commands) -> None:
    p = commands.add_parser("predict", help="read handwritten digits in image files (the bundled model)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders (recursive), or - for stdin")
    p.add_argument("--json", action="store_true", help="one JSON object per input")
    p.add_argument("--multi", action="store_true", help="read a row of digits as one number")
    p.add_argument("--min-confidence", type=probability, default=None, metavar="P",
                   help="answer 'unsure' (label null, the best reading in 'guess') below this confidence, 0-1 "
                        f"(default: {SURE}, where the reader's sure answers are right 99.5%% of the time)")
    p.add_argument("--explain", metavar="DIR", help="write the 28x28 image(s) the model saw into DIR "
                   "(for 'no digit': the grey image the reader saw), and what each step of the reader made "
                   "(NNN-name-step-K-STEP.png); default: none written")
    p.add_argument("--model", metavar="M", help="an ONNX model file (default: the bundled model)")
    p.add_argument("--out", metavar="FILE", help="write JSON lines to FILE instead of stdout, durably; "
                   "rerun the same command to resume an interrupted run (default: stdout); NAME.parquet: "
                   "Parquet partitions")
    p.add_argument("--jobs", type=int, default=0, metavar="N", help="worker processes (default: one per core)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: when stderr is a terminal and the work takes over 2 s)")
    from digitlab.cli import scale_commands

    scale_commands.add_predict_options(p)
    p.set_defaults(func=cmd_predict)
    scale_commands.add_pack_command(commands)


# ---------------------------------------------------------------------------- serve
def cmd_serve(args: argparse.Namespace) -> int:
    # FastAPI and uvicorn are the `serve` extra: imported here so `digitlab predict` never needs them
    require("serve", "fastapi", "uvicorn", "python_multipart")
    from digitlab.serve import ServeConfig, run

    for name in ("workers", "max_batch", "max_concurrent", "max_body_mb", "max_megapixels", "timeout",
                 "header_timeout", "feedback_per_minute", "feedback_max_mb", "models_cache"):
        if getattr(args, name) <= 0:
            raise DigitlabError(f"--{name.replace('_', '-')} must be positive")
    if args.batch_wait_ms < 0:
        raise DigitlabError("--batch-wait-ms must be 0 or more")
    if args.models and not Path(args.models).is_dir():
        raise DigitlabError(f"--models {args.models}: not a folder (it holds exported models: NAME.onnx or "
                            "NAME/model.onnx)")
    config = ServeConfig(model=args.model, models=args.models, models_cache=args.models_cache,
                         max_body_bytes=int(args.max_body_mb * 1024 * 1024),
                         max_pixels=int(args.max_megapixels * 1_000_000), max_batch=args.max_batch,
                         max_concurrent=args.max_concurrent, request_timeout=args.timeout,
                         header_timeout=args.header_timeout,
                         feedback_db=args.feedback_db or ServeConfig().feedback_db, watch=args.watch,
                         reload_token=args.reload_token, batch_wait_ms=args.batch_wait_ms,
                         feedback_token=args.feedback_token, feedback_per_minute=args.feedback_per_minute,
                         feedback_max_mb=args.feedback_max_mb)
    try:
        run(config, args.host, args.port, workers=args.workers, announce=lambda line: print(line, flush=True),
            log_level=args.log_level)
    except KeyboardInterrupt:
        pass
    return 0


def cmd_feedback_export(args: argparse.Namespace) -> int:
    from digitlab.serve.config import default_feedback_db
    from digitlab.serve.feedback import connect, export, kept_apart

    db = args.db or default_feedback_db()
    counts = export(db, args.dir)
    total = sum(counts.values())
    per_label = " ".join(f"{label}:{n}" for label, n in sorted(counts.items())) or "none"
    con = connect(db)
    try:
        apart = kept_apart(con)
    finally:
        con.close()
    print(f"{total} correction{'s' if total != 1 else ''} from {db} -> {Path(args.dir) / '<label>'}/*.png  "
          f"(per label: {per_label})" + (f"; {apart} kept apart (not a digit), left out" if apart else ""))
    return 0


def add_serve_commands(commands) -> None:
    from digitlab.serve.config import ServeConfig

    d, cores = ServeConfig(), usable_cpus()
    p = commands.add_parser("serve", help="REST API and web drawing pad (FastAPI on uvicorn)")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on; 0.0.0.0 for every interface")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    p.add_argument("--model", help="an ONNX model file (default: the bundled model); a fine-tuned export works too")
    p.add_argument("--models", metavar="DIR", help="also serve every exported model in DIR (NAME.onnx or "
                   "NAME/model.onnx, as `digitlab finetune --out DIR/NAME` writes); a request picks one with "
                   "?model=NAME (default: none, one model)")
    p.add_argument("--models-cache", type=int, default=d.models_cache,
                   help="at most this many of DIR's models loaded at once per worker (they load on first use)")
    p.add_argument("--workers", type=int, default=cores,
                   help=f"worker processes, each loading the model once (default: one per core, here {cores})")
    p.add_argument("--max-body-mb", type=float, default=d.max_body_bytes / 1024 / 1024, help="request body limit")
    p.add_argument("--max-megapixels", type=float, default=d.max_pixels / 1e6,
                   help="image size limit, read from the header before decoding")
    p.add_argument("--max-batch", type=int, default=d.max_batch, help="images per /v1/predict/batch request")
    p.add_argument("--max-concurrent", type=int, default=d.max_concurrent,
                   help="requests read at once per worker (its thread pool)")
    p.add_argument("--batch-wait-ms", type=float, default=d.batch_wait_ms,
                   help="how long the first request at the network waits for others to share its call")
    p.add_argument("--timeout", type=float, default=d.request_timeout, help="seconds per request")
    p.add_argument("--header-timeout", type=float, default=d.header_timeout,
                   help="seconds a client may take to send its request headers (slowloris guard)")
    p.add_argument("--feedback-db", help="SQLite file for corrections (default: $DIGITLAB_FEEDBACK_DB or "
                   "~/.local/share/digitlab/feedback.sqlite3)")
    p.add_argument("--feedback-token", help="secret for POST /v1/feedback (default: anyone may send corrections)")
    p.add_argument("--feedback-per-minute", type=int, default=d.feedback_per_minute,
                   help="corrections a minute per client address, per worker (beyond: 429)")
    p.add_argument("--feedback-max-mb", type=float, default=d.feedback_max_mb,
                   help="size limit of the corrections database (beyond: 507)")
    p.add_argument("--watch", action="store_true", help="reload the model when its file changes; find new and "
                   "replaced models in --models DIR")
    p.add_argument("--reload-token", help="secret for POST /v1/model/reload (default: none; loopback clients only)")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"],
                   help="uvicorn's log level")
    p.set_defaults(func=cmd_serve)

    fb = commands.add_parser("feedback", help="corrections collected by the service")
    fb_cmds = fb.add_subparsers(dest="feedback_command", metavar="ACTION", required=True)
    p = fb_cmds.add_parser("export", help="write the corrections as a labelled image folder DIR/<label>/*.png")
    p.add_argument("dir", metavar="DIR", help="folder to write into (created if missing); "
                   "`digitlab finetune MODEL --images DIR` reads it")
    p.add_argument("--db", help="the SQLite file (default: as for serve)")
    p.set_defaults(func=cmd_feedback_export)


def add_commands(commands, data_dir: argparse.ArgumentParser) -> None:
    add_predict_commands(commands)
    add_serve_commands(commands)
