"""The `ghibli-keras` command line.

Each subcommand parses and validates its arguments and paths first, with only the standard
library (and Pillow) loaded, so `--help` and input errors are instant and free of TensorFlow's
log noise; only then does it import the module that does the work.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from . import __version__
from .errors import InputError

PROG = "ghibli-keras"


# --------------------------------------------------------------------------------------------
# Argument types: errors name the argument and the bad value.


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def existing_dir(text: str) -> Path:
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"folder {text!r} does not exist")
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not a folder")
    return path


def output_dir(text: str) -> Path:
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} exists and is not a folder")
    return path


def _quiet_tensorflow() -> None:
    """Imports TensorFlow without its C++ start-up chatter (CUDA probes, absl pre-init lines).

    Those lines are written to file descriptor 2 before TensorFlow's log level applies, so the
    descriptor itself points at /dev/null while TensorFlow loads and enumerates devices. Set
    TF_CPP_MIN_LOG_LEVEL yourself (e.g. 0) to see everything.
    """
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow as tf

            tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)


# --------------------------------------------------------------------------------------------
# Subcommands


def cmd_make_tfrecords(args: argparse.Namespace) -> int:
    from . import images

    if not images.list_images(args.src_dir):
        raise InputError(
            f"no pictures found in {str(args.src_dir)!r} (looked recursively for "
            f"{', '.join(images.IMAGE_SUFFIXES)})"
        )
    _quiet_tensorflow()
    from . import data

    report = data.write_tfrecords(
        args.src_dir,
        args.out_dir,
        args.prefix,
        size=args.size,
        shard_size=args.shard_size,
        target=args.target,
        strict=args.strict,
        max_pixels=args.max_pixels,
        quality=args.quality,
        overwrite=args.overwrite,
        workers=args.workers,
        progress=not args.quiet,
    )
    print(report.summary())
    print(f"shards in {args.out_dir}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    sample = Path(args.sample)
    for domain in ("photo", "ghibli"):
        if not (sample / domain).is_dir():
            raise InputError(
                f"sample shards {str(sample / domain)!r} not found: run from the repository root "
                f"or pass --sample DIR"
            )
    _quiet_tensorflow()
    from . import demo

    demo.run(sample, args.out)
    return 0


# --------------------------------------------------------------------------------------------
# Parser


class _Parser(argparse.ArgumentParser):
    """Usage errors on one line, naming the argument, with a pointer to --help."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Turn photos into Studio-Ghibli-style pictures with a CycleGAN (Keras 3).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser(
        "make-tfrecords",
        help="convert a folder of pictures into TFRecord shards (Kaggle schema)",
        description="Convert every picture below SRC_DIR (JPEG, PNG, WebP, BMP, GIF, TIFF; "
        "recursively) into TFRecord shards named PREFIXNN-COUNT.tfrec in OUT_DIR, each record "
        "holding image_name, image (JPEG bytes) and target. Unreadable files are skipped and "
        "listed at the end.",
    )
    p.add_argument("src_dir", type=existing_dir, metavar="SRC_DIR")
    p.add_argument("out_dir", type=output_dir, metavar="OUT_DIR")
    p.add_argument("--prefix", required=True, help="shard name prefix, e.g. 'ghibli' or 'photo'")
    p.add_argument(
        "--size",
        type=positive_int,
        help="resize the shorter side to N and centre-crop to NxN (Kaggle uses 256); "
        "default: keep each picture's size",
    )
    p.add_argument("--shard-size", type=positive_int, default=256, help="images per shard (256)")
    p.add_argument("--target", help="the 'target' feature of every record (default: the prefix)")
    p.add_argument(
        "--strict", action="store_true", help="any unreadable picture is an error; write nothing"
    )
    p.add_argument(
        "--max-pixels",
        type=positive_int,
        default=100_000_000,
        help="skip pictures with more pixels than this (100000000)",
    )
    p.add_argument("--quality", type=positive_int, default=95, help="JPEG quality 1-100 (95)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace shards of this prefix in OUT_DIR"
    )
    p.add_argument("--workers", type=positive_int, help="threads (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_make_tfrecords)

    p = sub.add_parser(
        "demo",
        help="run the demo on the embedded sample data",
        description="Run the demo on the embedded sample shards and write its results to --out.",
    )
    p.add_argument("--out", type=output_dir, default=Path("demo_out"), help="(demo_out)")
    p.add_argument(
        "--sample",
        type=existing_dir,
        default=Path("tfrecords/sample"),
        help="the sample shards (tfrecords/sample)",
    )
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
