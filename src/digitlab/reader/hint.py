"""The several-digits hint: one function, so the CLI and the API give the same one.

`classify` reads an image as one digit. When its picture holds several digit-sized blobs ("21041"
written on a line), the answer is still one digit, often at high confidence; the hint says so and
how to read them as a number instead."""

from __future__ import annotations

from digitlab.reader.recognize import digit_count


def several_digits(result: dict) -> int | None:
    """How many digits a `classify` result's picture seems to hold, when more than one; else None."""
    if result.get("status") == "no digit" or result.get("ink") is None:
        return None
    count = digit_count(result["ink"])
    return count if count > 1 else None


def several_digits_hint(result: dict, advice: str) -> str | None:
    """ "looks like 5 digits: <advice> to read them as a number", or None for one digit (or none).
    advice: how this interface reads a number ("use --multi", "use POST /v1/read")."""
    count = several_digits(result)
    return None if count is None else f"looks like {count} digits: {advice} to read them as a number"
