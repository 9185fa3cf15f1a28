"""Reading many images into Parquet: shards in, one committed partition per shard out.

    digitlab pack FOLDER --out shards/                          # images -> Parquet shards of ~100 MB
    digitlab predict shards/ --out results.parquet               # local worker processes (engine local)
    digitlab predict shards/ --out results.parquet --engine ray  # Ray Data, local or --address ADDR

The unit of work, of output and of resumption is the input shard: a Parquet file of image bytes, or
a run of loose files (folders, globs, path lists) cut into groups of `--shard-size`. Each shard's
answers are written to `OUT/part-<key>.parquet` at once (temporary name, then rename), so a run
that stops leaves whole partitions only, and the next run skips the shards already written.

Torch-free, like the reader. pyarrow is needed for Parquet; Ray only for `--engine ray` (the
`scale` extra).
"""
