"""`digitlab predict ... --out NAME.parquet [--engine local|ray]` and `digitlab pack`. Torch-free.

The answers go to a folder of Parquet partitions, one per input shard, each committed whole (see
digitlab.scale); a rerun of the same command skips the shards already written.
"""

from __future__ import annotations

import argparse
import sys
import time

from digitlab.cli.read_commands import PredictOptions, progress_bar
from digitlab.errors import DigitlabError
from digitlab.scale.shards import FILES_PER_SHARD, PACK_SHARD_MB, is_parquet_path

ENGINES = ("local", "ray")


def wants_parquet(args: argparse.Namespace) -> bool:
    """Whether this predict writes Parquet: --out NAME.parquet (or an existing results folder), or
    --engine given. Checks the options that only make sense together."""
    parquet = bool(args.out) and is_parquet_path(args.out.rstrip("/"))
    if args.engine == "ray" and not parquet:
        raise DigitlabError("--engine ray writes Parquet: give --out NAME.parquet")
    if args.address and args.engine != "ray":
        raise DigitlabError("--address is the Ray cluster's: use it with --engine ray")
    if parquet and args.explain:
        raise DigitlabError("--explain writes PNGs beside a local run; it does not go with Parquet output")
    return parquet


def predict_to_parquet(args: argparse.Namespace, options: PredictOptions) -> int:
    from digitlab import reader
    from digitlab.scale import engines
    from digitlab.scale.shards import Results, plan

    if args.model:
        reader.get_model(args.model)  # a bad --model is one error now, not one per input
    shards = plan(args.paths, args.shard_size, args.key_column, args.image_column)
    results = Results(args.out, {"multi": options.multi, "min_confidence": options.min_confidence,
                                 "model": options.model})
    todo = [s for s in shards if not results.done(s)]
    total, now = sum(s.count for s in shards), sum(s.count for s in todo)
    if len(todo) < len(shards):
        print(f"digitlab: {args.out}: {len(shards) - len(todo):,} of {len(shards):,} shards already written; "
              f"reading the other {len(todo):,} ({now:,} inputs)", file=sys.stderr)
    engine = args.engine or "local"
    started = False
    if engine == "ray" and todo:
        started = engines.start_ray(args.address, args.jobs)
    bar = progress_bar(now, args.progress)
    tick = bar.update if bar is not None else (lambda n: None)
    answers = (engines.ray_engine if engine == "ray" else engines.local)(todo, options, args.jobs, tick)
    failed = written = 0
    t0 = time.perf_counter()
    try:
        for shard, records in answers:
            results.commit(shard, records)
            failed += sum("error" in r for r in records)
            written += 1
    except BaseException:
        print(f"digitlab: {args.out}: {written:,} more shards written before the stop; run the same command "
              f"again to read the other {len(todo) - written:,}", file=sys.stderr)
        raise
    finally:
        answers.close()
        if bar is not None:
            bar.close()
        if started:
            engines.stop_ray()
    took = time.perf_counter() - t0
    rate = f", {now / took:,.{0 if now >= 10 * took else 1}f} images/s" if now and took > 0 else ""
    print(f"digitlab: {args.out}: {total:,} inputs in {len(shards):,} shards ({now:,} read now with the {engine} "
          f"engine{rate}; {total - now:,} earlier), {failed:,} failed now", file=sys.stderr)
    return 1 if failed else 0


def add_predict_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Parquet output and clusters (--out NAME.parquet)")
    g.add_argument("--engine", choices=ENGINES, help="local: worker processes on this machine (the default); "
                   "ray: Ray Data, on this machine or the cluster at --address (needs digitlab[scale])")
    g.add_argument("--address", metavar="ADDR", help="the Ray cluster to run on, e.g. 10.0.0.1:6379 or auto "
                   "(default: start Ray on this machine); inputs must be at the same paths on every node")
    g.add_argument("--shard-size", type=int, default=FILES_PER_SHARD, metavar="N",
                   help=f"loose files per shard, the unit written and resumed (default {FILES_PER_SHARD:,})")
    g.add_argument("--key-column", metavar="COL", help="in Parquet inputs: the column naming each image "
                   "(default: key, file or path)")
    g.add_argument("--image-column", metavar="COL", help="in Parquet inputs: the image-bytes column "
                   "(default: image, or the only binary column)")


def cmd_pack(args: argparse.Namespace) -> int:
    from digitlab.scale.shards import pack

    written = pack(args.folder, args.out, args.shard_mb)
    size = sum(p.stat().st_size for p in written)
    print(f"{args.folder} -> {len(written):,} Parquet shard{'s' if len(written) != 1 else ''} in {args.out} "
          f"({size / 1e6:,.1f} MB)")
    return 0


def add_pack_command(commands) -> None:
    p = commands.add_parser("pack", help="turn a folder of images into Parquet shards for cluster reading")
    p.add_argument("folder", metavar="FOLDER", help="the folder of images to pack (recursive)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the shards images-00000.parquet, ...")
    p.add_argument("--shard-mb", type=float, default=PACK_SHARD_MB, metavar="MB",
                   help=f"image bytes per shard (default {PACK_SHARD_MB:g} MB)")
    p.set_defaults(func=cmd_pack)
