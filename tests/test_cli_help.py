"""Help that helps: every option explains itself and shows its default; train lists the families."""

import argparse
import re

import pytest

from digitlab import __version__
from digitlab.cli import build_parser, main


def every_parser(parser: argparse.ArgumentParser, path: str = "digitlab"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from every_parser(sub, f"{path} {name}")


def test_every_option_has_help_that_names_its_default():
    missing = []
    for path, parser in every_parser(build_parser()):
        formatter = parser._get_formatter()
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._VersionAction | argparse._SubParsersAction):
                continue
            name = "/".join(action.option_strings) or action.dest
            if not action.help:
                missing.append(f"{path} {name}: no help")
                continue
            text = formatter._get_help_string(action) % {"default": action.default}
            flag = isinstance(action, argparse._StoreTrueAction | argparse.BooleanOptionalAction)
            if action.option_strings and not flag and not action.required and "default" not in text:
                missing.append(f"{path} {name}: help does not say its default")
    assert not missing, "\n".join(missing)


def test_train_help_lists_the_families(capsys):
    from digitlab.lab.models import FAMILIES

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = re.sub(r"-\s+", "-", " ".join(capsys.readouterr().out.split()))  # argparse wraps after a hyphen
    assert "one of: " + ", ".join(FAMILIES) in out
    assert "(default: 0)" in out  # --seed


def test_top_level_help_speaks_to_users(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "Read handwritten digits" in out and "digitlab predict photo.jpg" in out
    assert "Thin" not in out and "parses arguments" not in out


def test_version(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0 and capsys.readouterr().out == f"digitlab {__version__}\n"
