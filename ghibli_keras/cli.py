"""The `ghibli-keras` command line.

Each subcommand parses and validates its arguments and paths first, with only the standard
library (and Pillow) loaded, so `--help` and input errors are instant and free of TensorFlow's
log noise; only then does it import the module that does the work.
"""

from __future__ import annotations

import argparse
import dataclasses
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


def check_glob(pattern: str, flag: str) -> None:
    """A local pattern must match a file; gs:// and other remote paths are checked later."""
    if "://" in pattern:
        return
    import glob

    path = Path(pattern)
    if path.is_dir() or glob.glob(pattern):
        return
    raise InputError(f"{flag} {pattern!r} matches no file: quote the glob, e.g. "
                     f"{flag} 'shards/photo/*.tfrec'")


def _log_to_stderr() -> None:
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
    logger = logging.getLogger("ghibli_keras")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


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


def cmd_train(args: argparse.Namespace) -> int:
    from .config import get_preset

    config = get_preset(args.preset)
    photos = args.photos or config.data.photos
    styles = args.styles or config.data.styles
    check_glob(photos, "--photos")
    check_glob(styles, "--styles")
    heldout = args.heldout_photos if args.heldout_photos is not None else config.data.heldout_photos
    if heldout and args.heldout_photos is None and args.photos is not None:
        heldout = None  # the preset's held-out set belongs to the preset's data
    if heldout:
        check_glob(heldout, "--heldout-photos")
    load_size = None
    if args.image_size is not None:
        if args.image_size % 4:
            raise InputError(f"--image-size must be a multiple of 4, got {args.image_size}")
        ratio = config.data.load_size / config.data.image_size
        load_size = args.load_size or round(args.image_size * ratio)
    decay_epochs = args.decay_epochs
    if args.epochs is not None and decay_epochs is None:  # keep the preset's proportion
        decay_epochs = round(config.train.decay_epochs * args.epochs / config.train.epochs)
    config = config.override(
        **{
            "data.photos": photos,
            "data.styles": styles,
            "data.heldout_photos": heldout,
            "data.image_size": args.image_size,
            "data.load_size": load_size or args.load_size,
            "train.epochs": args.epochs,
            "train.decay_epochs": decay_epochs,
            "train.steps_per_epoch": args.steps_per_epoch,
            "train.batch_size": args.batch_size,
            "train.learning_rate": args.learning_rate,
            "train.strategy": args.strategy,
            "train.mixed_precision": args.mixed_precision,
            "train.xla": args.xla,
        }
    )
    if not heldout:  # override() skips None values: clear the preset's held-out set here
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, heldout_photos=None))
    _log_to_stderr()
    _quiet_tensorflow()
    from . import training

    training.train(config, args.workdir)
    print(f"workdir: {args.workdir} (model.keras, log.csv, samples/, tensorboard/)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    sample = Path(args.sample)
    for domain in ("photo", "ghibli", "photo_test"):
        if not (sample / domain).is_dir():
            raise InputError(
                f"sample shards {str(sample / domain)!r} not found: run from the repository root "
                f"or pass --sample DIR"
            )
    _log_to_stderr()
    _quiet_tensorflow()
    from . import demo

    config = demo.demo_config(sample)
    if args.epochs is not None:  # a shorter run: keep the preset's share of decaying epochs
        decay = round(config.train.decay_epochs * args.epochs / config.train.epochs)
        config = config.override(**{"train.epochs": args.epochs, "train.decay_epochs": decay})
    config = config.override(**{"train.steps_per_epoch": args.steps_per_epoch})
    demo.run(sample, args.out, config)
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
        "train",
        help="train (or resume) a CycleGAN from TFRecord shards",
        description="Train a CycleGAN photo -> style from two sets of TFRecord shards. Rerunning "
        "the same command with the same --workdir resumes where it stopped.",
    )
    p.add_argument("--photos", help="shards of photos, domain X (a quoted glob, file or folder)")
    p.add_argument("--styles", help="shards of style pictures, domain Y")
    p.add_argument("--heldout-photos", help="held-out photo shards for samples and validation")
    p.add_argument("--preset", choices=["tiny", "kaggle", "paper"], default="paper",
                   help="model and schedule (paper)")
    p.add_argument("--workdir", type=output_dir, required=True, help="the run's folder")
    p.add_argument("--epochs", type=positive_int)
    p.add_argument("--decay-epochs", type=int, help="last epochs with linear LR decay")
    p.add_argument("--steps-per-epoch", type=positive_int)
    p.add_argument("--batch-size", type=positive_int, help="global batch size")
    p.add_argument("--image-size", type=positive_int, help="training crop side (multiple of 4)")
    p.add_argument("--load-size", type=positive_int, help="resize before cropping")
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--strategy", choices=["auto", "cpu", "gpu", "mirrored", "tpu", "multiworker"])
    p.add_argument("--mixed-precision", choices=["auto", "off", "bf16", "fp16"])
    p.add_argument("--xla", choices=["auto", "on", "off"])
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "demo",
        help="train the tiny preset on the embedded sample data and score it",
        description="Train the tiny preset on the embedded sample shards (about 10 minutes on "
        "a 2-core CPU), then write pictures, loss curves and the held-out score to --out.",
    )
    p.add_argument("--out", type=output_dir, default=Path("demo_out"), help="(demo_out)")
    p.add_argument(
        "--sample",
        type=existing_dir,
        default=Path("tfrecords/sample"),
        help="the sample shards (tfrecords/sample)",
    )
    p.add_argument("--epochs", type=positive_int, help="fewer epochs for a quicker look (8)")
    p.add_argument("--steps-per-epoch", type=positive_int, help="(100)")
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
