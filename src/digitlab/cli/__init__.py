"""The `digitlab` command: each command parses its arguments, calls the library and prints the result.

Heavy modules (torch, sklearn) are imported inside the commands that need them, so
`digitlab predict` and `digitlab --help` start fast.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

import numpy as np

from digitlab.cli import lab_commands, read_commands
from digitlab.errors import DigitlabError
from digitlab.extras import missing_extra


# ---------------------------------------------------------------------------- data
def cmd_data_list(args: argparse.Namespace) -> int:
    from digitlab.data import DATASETS, locate

    print(f"{'name':<15} {'train':>7} {'test':>7}  {'local copy':<45} description")
    for name, ds in DATASETS.items():
        folder = locate(name, args.data_dir)
        where = str(folder) if folder else "- (not present)"
        print(f"{name:<15} {ds.counts['train']:>7} {ds.counts['test']:>7}  {where:<45} {ds.description}")
    return 0


def cmd_data_verify(args: argparse.Namespace) -> int:
    from digitlab.data import get, load

    ds = get(args.name)
    for split in ds.files:
        images, labels = load(args.name, split, args.data_dir)
        counts = np.bincount(labels, minlength=len(ds.classes))
        print(f"{split:<5} {len(images):>6} images {images.shape[1]}x{images.shape[2]}  "
              f"per class: {' '.join(str(c) for c in counts)}")
    print(f"{args.name}: all files present, checksums and counts OK")
    return 0


def cmd_data_show(args: argparse.Namespace) -> int:
    from PIL import Image

    from digitlab.data import get, load
    from digitlab.files import atomic_write_bytes

    images, labels = load(args.name, args.split, args.data_dir)
    if not 0 <= args.index < len(images):
        raise DigitlabError(f"--index {args.index} out of range: {args.split} has {len(images)} images")
    image = Image.fromarray(images[args.index])
    if args.scale > 1:
        image = image.resize((28 * args.scale, 28 * args.scale), Image.NEAREST)
    import io

    buf = io.BytesIO()
    image.save(buf, format=_image_format(args.out))
    atomic_write_bytes(args.out, buf.getvalue())
    label = int(labels[args.index])
    name = get(args.name).classes[label]
    print(f"{args.name} {args.split}[{args.index}]: label {label} ({name}) -> {args.out}")
    return 0


def _image_format(path: str) -> str:
    suffix = Path(path).suffix.lower().lstrip(".")
    formats = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "bmp": "BMP", "gif": "GIF", "webp": "WEBP",
               "tif": "TIFF", "tiff": "TIFF"}
    if suffix not in formats:
        raise DigitlabError(f"{path}: unknown image type {suffix!r}; use one of {', '.join(formats)}")
    return formats[suffix]


# ---------------------------------------------------------------------------- parser
DESCRIPTION = "Read handwritten digits in images, and train, compare, export and serve the models that do it."
EPILOG = """examples:
  digitlab predict photo.jpg            the digit in an image (folders and - for stdin work too)
  digitlab predict --multi number.png   a row of digits as one number
  digitlab train cnn                    train a model on MNIST and report its test accuracy
  digitlab serve                        the REST API and a drawing pad on http://127.0.0.1:8000

`digitlab COMMAND --help` tells more about each command."""


class DefaultsFormatter(argparse.HelpFormatter):
    """Ends an option's help with its default, as argparse.ArgumentDefaultsHelpFormatter does, except
    where the help already names it (the family's, one per core, ...) or there is none to show (a
    flag that is off unless given)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        nothing = action.default is None or action.default is False or action.default is argparse.SUPPRESS
        if "default" in text or not action.option_strings or action.required or nothing or action.default == []:
            return text
        return f"{text} (default: %(default)s)"


class EpilogFormatter(DefaultsFormatter, argparse.RawDescriptionHelpFormatter):
    """The top-level help: its examples keep their lines."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose help shows defaults; its subcommands' parsers are Parsers too."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="digitlab", description=DESCRIPTION, epilog=EPILOG, formatter_class=EpilogFormatter)
    from digitlab import __version__

    parser.add_argument("--version", action="version", version=f"digitlab {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    data_dir = argparse.ArgumentParser(add_help=False)
    data_dir.add_argument("--data-dir", help="folder holding the dataset (or its parent); "
                          "default: $DIGITLAB_DATA/<name>, then ~/.cache/digitlab/<name>; missing files are "
                          "downloaded unless DIGITLAB_OFFLINE=1")

    data = commands.add_parser("data", help="list, verify and look at datasets")
    data_cmds = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    p = data_cmds.add_parser("list", parents=[data_dir], help="the registry and what is present locally")
    p.set_defaults(func=cmd_data_list)
    p = data_cmds.add_parser("verify", parents=[data_dir], help="checksums and counts per split and class")
    p.add_argument("name", help="a dataset name (digitlab data list)")
    p.set_defaults(func=cmd_data_verify)
    p = data_cmds.add_parser("show", parents=[data_dir], help="write one image of a dataset to a file")
    p.add_argument("name", help="a dataset name (digitlab data list)")
    p.add_argument("--split", default="test", choices=["train", "test"], help="which split to take the image from")
    p.add_argument("--index", type=int, default=0, help="the image's position in the split, from 0")
    p.add_argument("--scale", type=int, default=1, help="upscale factor for viewing")
    p.add_argument("--out", required=True, help="output image (.png, .jpg, ...)")
    p.set_defaults(func=cmd_data_show)
    lab_commands.add_commands(commands, data_dir)
    read_commands.add_commands(commands, data_dir)
    return parser


def command_words(args: argparse.Namespace) -> str:
    """The command as the user named it, for messages: "train cnn", "report", "feedback export"."""
    words = [args.command, getattr(args, "data_command", None) or getattr(args, "feedback_command", None),
             getattr(args, "model", None) if args.command in ("train", "lr-find") else None]
    return " ".join(w for w in words if w)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # recorded by `train` in the model's config.json, and so in an exported model card
    args.command_line = shlex.join(["digitlab", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except DigitlabError as e:
        print(f"digitlab: error: {e}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as e:  # an optional extra's module: say which extra, in one line
        missing = missing_extra(e, command_words(args))
        if missing is None:
            raise
        print(f"digitlab: error: {missing}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # stdout's reader left (`digitlab predict DIR | head`): stop quietly, like any Unix filter.
        # Point stdout at /dev/null so Python's final flush does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for `yes | head`
    except (OSError, ValueError) as e:
        print(f"digitlab: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("digitlab: interrupted", file=sys.stderr)
        return 130

