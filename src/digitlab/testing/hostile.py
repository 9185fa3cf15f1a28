"""The hostile cases digitlab is tested against: one registry, from which RELIABILITY.md is generated.

Each `Case` says what is thrown at digitlab and the only outcome allowed. A test claims the cases it
checks in one of two ways, and `scripts/reliability_table.py` runs those tests and writes each
case's outcome into RELIABILITY.md:

    @pytest.mark.hostile("cli-min-confidence-range")          # one test, one or more case ids
    def test_min_confidence_out_of_range(...): ...

    @pytest.mark.parametrize("case", hostile.area("idx"), ids=hostile.case_id)
    def test_idx_case(case): ...                                # a parameter named `case` claims it

Adding cases (any helper, any area): append `Case(...)`s to your area's list below (or start a new
list and add it to CASES), claim each from a test as above, then run
`python scripts/reliability_table.py`. Ids are unique, lower-case, `area-what`;
tests/test_reliability.py fails when an id is reused, unclaimed, or missing from RELIABILITY.md.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    id: str  # unique and stable: "area-what"
    area: str  # cli, idx, files, image, http, model, training ...
    tried: str  # what is thrown at digitlab, as a user would describe it
    expected: str  # the only outcome allowed


def _cases(area: str, *rows: tuple[str, str, str]) -> list[Case]:
    return [Case(f"{area}-{what}", area, tried, expected) for what, tried, expected in rows]


CLI_CASES = _cases(
    "cli",
    ("min-confidence-range", "`predict --min-confidence 1.5` (and -0.1, nan)",
     "usage error naming the allowed range, exit 2, nothing on stdout"),
    ("empty-folder", "`predict emptydir` (a folder with no images)",
     "one line 'no images' on stdout/err, exit 1"),
    ("missing-file", "`predict` on a path that does not exist, among good inputs",
     "one error line for it, the others answered, exit 1"),
    ("not-an-image", "`predict` on a text file with a .png name, among good inputs",
     "one error line for it, the others answered, exit 1"),
    ("broken-pipe", "`predict FOLDER | head -n 1`",
     "quiet exit: nothing on stderr (no 'Broken pipe' message, no traceback)"),
    ("several-digits", "an image holding several digits read without --multi",
     "the answer plus a hint that it looks like several digits (try --multi)"),
    ("explain-no-digit", "`--explain DIR` on a blank image",
     "'no digit', and DIR still gets a PNG of what the reader saw"),
    ("resume-after-kill", "`predict FOLDER --out results.jsonl` killed (SIGKILL) mid-run, then rerun",
     "every input answered exactly once, earlier answers not redone"),
    ("resume-after-partial-line", "results journal ending in a half-written line (killed inside a write)",
     "the broken line is dropped and that input answered again, exactly once"),
    ("progress-not-on-stdout", "a progress bar forced on while stdout is piped",
     "stdout holds only answers; the bar goes to stderr"),
    ("parallel-order", "a folder predicted over worker processes",
     "answers in the same order and identical to a single process"),
    ("export-worse-bundle", "`export --bundle` with a model less accurate than the shipped one",
     "refused with both accuracies named, shipped model untouched; --force overrides"),
)

IDX_CASES = _cases(
    "idx",
    ("random-bytes", "random bytes (raw, and behind a gzip magic) as an IDX file",
     "a DataError (or, rarely, a valid array), within 1 s and bounded memory"),
    ("mutated-raw", "valid IDX files with bytes flipped, inserted, deleted, or cut short",
     "an array matching the header or a DataError, within 1 s and bounded memory"),
    ("mutated-gzip", "valid gzipped IDX files with bytes flipped, inserted, deleted, or cut short",
     "an array matching the header or a DataError, within 1 s and bounded memory"),
    ("header-overflow", "a 20-byte file whose header claims 65536^4 bytes (2^64: int64 wraps to 0)",
     "HeaderMismatchError (was a ValueError from reshape)"),
    ("huge-header", "a header claiming 10^9 images of 28x28",
     "HeaderMismatchError at once, nothing large allocated"),
    ("gzip-bomb", "a 100 kB gzip inflating to 100 MB behind a header claiming 10 bytes",
     "an error after inflating at most what the header promises"),
    ("zero-byte", "an empty file", "TruncatedFileError"),
)

FILES_CASES = _cases(
    "files",
    ("umask", "files written under umask 022 and 077",
     "modes 0644 and 0600 (0o666 less the umask), never a fixed 0600"),
    ("crash-mid-write", "an exception while the bytes are written",
     "the previous file intact under the real name, no temporary file left"),
)

# The reader helper adds image-loading cases here; the service helper adds HTTP cases (area "http").
IMAGE_CASES: list[Case] = []
HTTP_CASES: list[Case] = []

CASES: list[Case] = CLI_CASES + IDX_CASES + FILES_CASES + IMAGE_CASES + HTTP_CASES


def area(name: str) -> list[Case]:
    return [c for c in CASES if c.area == name]


def get(case_id: str) -> Case:
    for c in CASES:
        if c.id == case_id:
            return c
    raise KeyError(f"no hostile case {case_id!r} in digitlab.testing.hostile")


def case_id(case: Case) -> str:
    """pytest ids for a parametrized `case`: `ids=hostile.case_id`."""
    return case.id
