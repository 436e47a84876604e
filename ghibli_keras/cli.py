"""The `ghibli-keras` command line.

Each subcommand parses and validates its arguments and paths first, with only the standard
library (and Pillow) loaded, so `--help` and input errors are instant and free of TensorFlow's
log noise; only then does it import the module that does the work.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Optional, Sequence

from . import __version__, ui
from .config import XLA_CHOICES
from .errors import InputError, TrainingDiverged

PROG = "ghibli-keras"
#: --mixed-precision of translate and submission (inference.PRECISIONS, without TensorFlow).
TRANSLATION_PRECISIONS = ("auto", "off", "bf16", "fp16")
# The defaults of modules that import TensorFlow, repeated so that parsing does not import it
# (tests check they agree).
DEFAULT_TILE, DEFAULT_OVERLAP = 1024, 128  # inference.DEFAULT_TILE, DEFAULT_OVERLAP
DEFAULT_EXPORT_MAX_PIXELS = 4096 * 4096  # export.DEFAULT_MAX_PIXELS
DEFAULT_READ_MAX_PIXELS = 100_000_000  # images.DEFAULT_MAX_PIXELS
WEIGHTS_HELP = (
    "Keras InceptionV3 weights without the top (.h5), or the TTUR FID graph "
    "classify_image_graph_def.pb for scores comparable with Kaggle and papers (default: "
    "$GHIBLI_KERAS_INCEPTION_WEIGHTS, else 'imagenet': the Keras cache, downloaded if online)"
)


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


MAX_PREFIX_BYTES = 200  # + "NN-COUNT.tfrec.partial" stays within a file name's 255 bytes


def file_prefix(text: str) -> str:
    """A shard-name prefix: part of a file name, so no folder separator."""
    if not text or "/" in text or os.sep in text:
        raise argparse.ArgumentTypeError(f"must be the start of a file name (no '/'), got {text!r}")
    size = len(os.fsencode(text))
    if size > MAX_PREFIX_BYTES:
        raise argparse.ArgumentTypeError(f"{size} bytes long; at most {MAX_PREFIX_BYTES}, so the "
                                         f"shards' file names fit")
    return text


def jpeg_quality(text: str) -> int:
    value = positive_int(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"a JPEG quality is 1 to 100, got {value}")
    return value


def output_dir(text: str) -> Path:
    """A folder to write in: an existing one, or one that can be made where no file is in the
    way and the nearest existing folder is writable."""
    if "://" in text:
        raise argparse.ArgumentTypeError(f"{text!r}: a local folder is needed (mount a bucket "
                                         f"with gcsfuse, or write locally and copy)")
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} exists and is not a folder")
    parent = path.absolute()
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} cannot be made: {str(parent)!r} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text!r}: no permission to write in {str(parent)!r}")
    try:  # what access() cannot tell: /proc, a read-only mount, a full disk...
        tempfile.TemporaryDirectory(dir=parent, prefix=".ghibli-keras-probe-").cleanup()
    except OSError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: cannot make a folder in {str(parent)!r} "
                                         f"({e.strerror or e})") from None
    return path


def output_file(text: str) -> Path:
    """A file to write: not a folder, in a folder that exists or can be made."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; name a file")
    output_dir(str(path.parent))  # its messages name the folder
    return path


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def check_shards(pattern: str, flag: str) -> None:
    """A local folder must hold TFRecord shards, a local pattern match files that are not all
    pictures; gs:// and other remote paths are checked later (by TensorFlow's file system)."""
    if "://" in pattern:
        return
    import glob

    from .images import IMAGE_SUFFIXES, TFRECORD_SUFFIXES, list_images

    convert = "; convert them first: ghibli-keras make-tfrecords {} OUT_DIR --prefix NAME"
    path = Path(pattern)
    if path.is_dir():
        if any(p.name.endswith(TFRECORD_SUFFIXES) for p in path.iterdir()):
            return
        if list_images(path):
            raise InputError(f"{flag} {pattern!r} holds pictures, not TFRecord shards"
                             + convert.format(pattern))
        raise InputError(f"{flag} {pattern!r}: a folder with no TFRecord shards "
                         f"({', '.join(TFRECORD_SUFFIXES)})")
    matches = [m for m in glob.glob(pattern) if Path(m).is_file()]
    if not matches:
        raise InputError(f"{flag} {pattern!r} matches no file: quote the glob, e.g. "
                         f"{flag} 'shards/photo/*.tfrec'")
    if all(m.lower().endswith(IMAGE_SUFFIXES) for m in matches):
        raise InputError(f"{flag} {pattern!r} matches pictures, not TFRecord shards"
                         + convert.format(os.path.dirname(pattern) or "."))


def check_preset_shards(pattern: str, flag: str, preset: str) -> None:
    """The preset's own shards (no `flag` given) must be here: the kaggle preset's are only in
    a Kaggle session."""
    import glob

    if "://" in pattern or Path(pattern).is_dir() or glob.glob(pattern):
        return
    where = " (they are there in a Kaggle session)" if pattern.startswith("/kaggle/") else ""
    raise InputError(f"the {preset} preset's shards {pattern!r} are not on this machine{where}: "
                     f"give yours with --photos and --styles")


#: Where the weights come from when no flag names them (features.WEIGHTS_ENV, nst.WEIGHTS_ENV).
INCEPTION_WEIGHTS_ENV = "GHIBLI_KERAS_INCEPTION_WEIGHTS"
VGG_WEIGHTS_ENV = "GHIBLI_KERAS_VGG_WEIGHTS"


def _check_weights_file(weights: Optional[str], flag: str, env: str, keywords: tuple,
                        what: str) -> None:
    """`flag`'s value, or else `$env`'s: one of `keywords` or an existing file; the message
    names the one that was used."""
    source = flag
    if not weights and os.environ.get(env):
        weights, source = os.environ[env], f"${env}"
    if not weights or weights in keywords or Path(weights).is_file():
        return
    if Path(weights).is_dir():
        raise InputError(f"{source} {weights!r} is a folder: give the weights file in it ({what})")
    raise InputError(f"{source} {weights!r}: no such file ({what})")


def check_weights(weights: Optional[str], default: bool = True) -> None:
    """--inception-weights: "imagenet" or an existing file; without it (and with `default`),
    $GHIBLI_KERAS_INCEPTION_WEIGHTS the same."""
    _check_weights_file(weights, "--inception-weights", INCEPTION_WEIGHTS_ENV if default else "",
                        ("imagenet",), "a Keras InceptionV3 weights file without the top, or "
                        "the TTUR classify_image_graph_def.pb")


def _log_to_stderr() -> None:
    """The package's log lines on stderr as "ghibli-keras: ...": one handler however often
    `main` runs in a process, writing to whatever `sys.stderr` is when a line is logged."""
    import logging

    class StderrHandler(logging.StreamHandler):
        name = PROG

        @property
        def stream(self):  # the current sys.stderr (pytest and notebooks replace it)
            return sys.stderr

        @stream.setter
        def stream(self, _):  # StreamHandler.__init__ sets it
            pass

    logger = logging.getLogger("ghibli_keras")
    if not any(h.name == PROG for h in logger.handlers):
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
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


def override_with_flags(config, flags: dict):
    """`config.override(**flags)` (which validates), its messages naming the command line's
    flags (`--load-size`) instead of the config fields (`data.load_size`) they set."""
    import re

    try:
        return config.override(**flags)
    except InputError as e:
        names = {key: "--" + key.partition(".")[2].replace("_", "-") for key in flags}
        # "data.image_size (--image-size)" -> "--image-size": the flag once
        raise InputError(re.sub(r"\b((?:data|model|train)\.\w+)(?: \(--[\w-]+\))?",
                                lambda m: names.get(m.group(1), m.group(0)), str(e))) from None


def cmd_train(args: argparse.Namespace) -> int:
    from .config import get_preset, locate_sample, tf_config

    tf_config()  # a cluster's TF_CONFIG (several workers) checked before TensorFlow reads it
    config = get_preset(args.preset)
    photos = args.photos or locate_sample(config.data.photos)
    styles = args.styles or locate_sample(config.data.styles)
    for given, pattern, flag in ((args.photos, photos, "--photos"), (args.styles, styles, "--styles")):
        if given is None:
            check_preset_shards(pattern, flag, args.preset)
        check_shards(pattern, flag)
    heldout = args.heldout_photos
    if heldout is None and args.photos is None:  # the preset's held-out set, with its data
        heldout = config.data.heldout_photos and locate_sample(config.data.heldout_photos)
    if heldout:
        check_shards(heldout, "--heldout-photos")
    load_size = None
    if args.image_size is not None:
        if args.image_size % 4:
            raise InputError(f"--image-size must be a multiple of 4, got {args.image_size}")
        ratio = config.data.load_size / config.data.image_size
        load_size = args.load_size or round(args.image_size * ratio)
    decay_epochs = args.decay_epochs
    if args.epochs is not None and decay_epochs is None:  # keep the preset's proportion
        decay_epochs = round(config.train.decay_epochs * args.epochs / config.train.epochs)
    flags = {
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
        "train.steps_per_execution": args.steps_per_execution,
        "train.metrics_every": args.metrics_every,
        "train.inception_weights": args.inception_weights,
        "train.max_hours": args.max_hours,
    }
    config = override_with_flags(config, flags)
    check_weights(config.train.inception_weights, default=bool(config.train.metrics_every))
    if not heldout:  # override() skips None values: clear the preset's held-out set here
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, heldout_photos=None))
    from . import workdir

    workdir.check(config.validated(), args.workdir)  # a rerun's settings, before TensorFlow
    _log_to_stderr()
    _quiet_tensorflow()
    from . import training

    training.train(config, args.workdir)
    print(f"workdir: {args.workdir} (model.keras, log.csv, samples/, tensorboard/)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .config import SAMPLE_DIR, locate_sample

    sample = Path(args.sample) if args.sample is not None else Path(locate_sample(SAMPLE_DIR))
    for domain in ("photo", "ghibli", "photo_test"):
        if not (sample / domain).is_dir():
            raise InputError(
                f"sample shards {str(sample / domain)!r} not found: pass --sample DIR (the "
                f"{SAMPLE_DIR} folder of a ghibli-keras checkout)"
            )
    check_weights(args.inception_weights, default=False)  # (without: scores but KID/FID)
    _log_to_stderr()
    _quiet_tensorflow()
    from . import demo

    config = demo.demo_config(sample)
    if args.epochs is not None:  # a shorter run: keep the preset's share of decaying epochs
        decay = round(config.train.decay_epochs * args.epochs / config.train.epochs)
        config = config.override(**{"train.epochs": args.epochs, "train.decay_epochs": decay})
    config = config.override(**{"train.steps_per_epoch": args.steps_per_epoch})
    try:
        demo.run(sample, args.out, config, inception_weights=args.inception_weights)
    except InputError as e:  # a rerun with other settings: in the demo's own flags
        raise InputError(_in_demo_flags(str(e))) from None
    return 0


#: The config fields the demo's flags set, and where its workdir comes from.
DEMO_FLAGS = {"train.epochs": "--epochs", "train.decay_epochs": "--epochs",
              "train.steps_per_epoch": "--steps-per-epoch", "another --workdir": "another --out"}


def _in_demo_flags(message: str) -> str:
    for name, flag in DEMO_FLAGS.items():
        message = message.replace(name, flag)
    return message


#: The fewest images a set can have for a covariance (and so FID, KID, MiFID).
FID_MIN_SET = 2


def _too_few(flag: str, source: str, count: int) -> InputError:
    return InputError(f"{flag} {source!r}: {count} image(s); the scores compare covariances, "
                      f"which need at least {FID_MIN_SET} images a set (thousands for a stable FID)")


def _check_pictures(flag: str, files: list, max_pixels: int) -> None:
    """Every picture's header, before a network loads: an empty file, a non-picture or an
    over-large picture is named at once rather than minutes into the run."""
    from .images import ImageReadError, check_headers

    try:
        check_headers(files, max_pixels=max_pixels)
    except ImageReadError as e:
        raise InputError(f"{flag}: {e}; remove or replace it") from None


def cmd_fid(args: argparse.Namespace) -> int:
    from .images import resolve_files

    for flag, source in (("REAL", args.real), ("FAKE", args.fake)):
        try:
            kind, files = resolve_files(source)
        except InputError as e:
            raise InputError(f"{flag}: {e}") from None
        if kind == "images" and len(files) < FID_MIN_SET:  # shards are counted after reading
            raise _too_few(flag, source, len(files))
        if kind == "images":
            _check_pictures(flag, files, args.max_pixels)
    check_weights(args.inception_weights)
    _log_to_stderr()
    _quiet_tensorflow()
    from . import features, metrics

    extractor = features.inception(args.inception_weights or features.default_weights())
    cache = False if args.no_cache else True
    real = features.extract(args.real, extractor, batch_size=args.batch_size, cache=cache,
                            progress=not args.quiet, description="REAL",
                            max_pixels=args.max_pixels)
    fake = features.extract(args.fake, extractor, batch_size=args.batch_size, cache=cache,
                            progress=not args.quiet, description="FAKE",
                            max_pixels=args.max_pixels)
    for flag, source, found in (("REAL", args.real, real), ("FAKE", args.fake, fake)):
        if len(found) < FID_MIN_SET:
            raise _too_few(flag, source, len(found))
    network = f"[{extractor.name}]"
    print(f"REAL: {len(real)} images ({args.real}); FAKE: {len(fake)} images ({args.fake})")
    score = metrics.fid(real, fake)
    print(f"FID    {score:.4f}  {network}")
    if args.kid:
        kid = metrics.kid(real, fake)
        spread = (f" ± {kid.std:.6f}" if math.isfinite(kid.std)
                  else " (both sets whole in every subset: no spread)")
        print(f"KID    {kid.mean:.6f}{spread}  {network}")
    if args.mifid:
        distance = metrics.memorization_distance(real, fake)
        print(f"MiFID  {metrics.mifid(real, fake, fid_value=score):.4f}  {network} (memorisation distance "
              f"{distance:.4f}; below {metrics.MIFID_EPSILON} it divides the FID)")
    if min(len(real), len(fake)) < metrics.FID_MIN_IMAGES:
        print(f"note: FID from fewer than {metrics.FID_MIN_IMAGES} images per set is biased "
              f"upwards; compare it only between sets of the same sizes (KID is unbiased: --kid)")
    return 0


def check_model(text: str) -> Path:
    """MODEL: a workdir (with model.keras), a .keras file or a SavedModel folder."""
    from .files import check_keras_archive

    path = Path(text)
    if path.is_file() and path.suffix == ".keras":
        check_keras_archive(path)
        return path
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return path
    if path.is_dir() and (path / "model.keras").is_file():
        check_keras_archive(path / "model.keras")
        return path
    if not path.exists():
        raise InputError(f"MODEL {text!r}: no such file or folder")
    raise InputError(f"MODEL {text!r}: expected a workdir (with model.keras), a .keras file or a "
                     f"SavedModel folder (with saved_model.pb)")


def cmd_translate(args: argparse.Namespace) -> int:
    from .images import output_paths

    model = check_model(args.model)
    if args.format not in ("jpg", "png"):
        raise InputError(f"--format must be jpg or png, got {args.format!r}")
    if args.tile and not 0 <= args.overlap < args.tile:
        raise InputError(f"--overlap must be in 0..{args.tile - 1} (below --tile), got {args.overlap}")
    if args.tile and args.tile < 2 * args.overlap:
        raise InputError(f"--tile ({args.tile}) must be at least twice --overlap ({args.overlap})")
    pairs = output_paths(args.inputs, args.out, args.format)
    _log_to_stderr()
    _quiet_tensorflow()
    from . import inference

    translator = inference.Translator.load(model, args.direction, xla=args.xla,
                                           precision=args.mixed_precision)
    report = inference.translate_files(
        translator, args.inputs, args.out, fmt=args.format, max_side=args.max_side,
        tile=args.tile, overlap=args.overlap, progress=not args.quiet,
        max_pixels=args.max_pixels,
    )
    print(report.summary())
    print(f"{len(report.written)} of {len(pairs)} picture(s) in {args.out}")
    return 0 if report.written and not report.failed else 1


def cmd_export(args: argparse.Namespace) -> int:
    model = check_model(args.model)
    if (model / "saved_model.pb").is_file():
        raise InputError(f"MODEL {args.model!r} is already an export; export a workdir or .keras")
    out = Path(args.out)
    if out.absolute().resolve() in (Path.cwd().resolve(), *Path.cwd().resolve().parents):
        raise InputError(f"--out {str(args.out)!r} is the current folder or one above it: "
                         f"export into a new folder, e.g. models/ghibli/1")
    if (out / "saved_model.pb").exists():
        raise InputError(f"--out {str(args.out)!r} already holds a SavedModel: export into a new "
                         f"version folder (e.g. models/ghibli/2)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"--out {str(args.out)!r} exists and is not an empty folder")
    _log_to_stderr()
    _quiet_tensorflow()
    from . import export, inference

    translator = inference.Translator.load(model, "photo2style", xla="off",
                                           precision=args.mixed_precision)
    export.export(translator.generator, out, source=str(model), max_pixels=args.max_pixels,
                  jit_compile=args.xla == "on")
    print(f"SavedModel in {out} (signatures serving_default and translate; see {out / 'README.md'})")
    return 0


def cmd_submission(args: argparse.Namespace) -> int:
    from . import submission
    from .images import resolve_files

    low, high = submission.default_bounds(args.min_images, args.max_images)
    if args.check:
        if args.model or args.photos:
            raise InputError("--check ZIP validates an existing zip: give no MODEL or --photos")
        count = submission.check_zip(args.check, min_images=low, max_images=high, size=args.size)
        print(f"{args.check}: a valid submission of {count} {args.size}x{args.size} JPEGs")
        return 0
    if not args.model or not args.photos:
        raise InputError("give MODEL and --photos GLOB (or --check ZIP)")
    model = check_model(args.model)
    try:
        kind, files = resolve_files(args.photos)
    except InputError as e:
        raise InputError(f"--photos: {e}") from None
    if kind == "images" and not low <= len(files) <= high:  # shards are counted after loading
        raise InputError(f"--photos {args.photos!r}: {len(files)} pictures; the competition "
                         f"needs {low:,} to {high:,} images")
    if args.out.suffix.lower() != ".zip":
        raise InputError(f"--out must name a .zip file, got {str(args.out)!r}")
    if kind == "images":
        _check_pictures("--photos", files, args.max_pixels)
    _log_to_stderr()
    _quiet_tensorflow()
    from . import inference

    translator = inference.Translator.load(model, "photo2style", xla=args.xla,
                                           precision=args.mixed_precision)
    count = submission.write_submission(translator, args.photos, args.out, size=args.size,
                                        min_images=low, max_images=high,
                                        progress=not args.quiet, max_pixels=args.max_pixels)
    print(f"{args.out}: {count} {args.size}x{args.size} JPEGs, checked")
    if args.size != submission.SIZE:
        print(f"note: the competition takes {submission.SIZE}x{submission.SIZE} pictures only; "
              f"this zip is for trials")
    return 0


def cmd_kaggle(args: argparse.Namespace) -> int:
    # ghibli_keras.kaggle imports no TensorFlow; GHIBLI_KERAS_CLI keeps the package's own
    # heavy imports out too.
    from . import kaggle

    if args.action == "build":
        out = kaggle.build(args.out, user=args.username, accelerator=args.accelerator,
                           internet=args.internet, wheel=not args.no_wheel)
        print(f"kernel: {out / 'kernel'}  wheel dataset: {out / 'wheel'}\n"
              f"next: ghibli-keras kaggle push {out}")
    elif args.action == "push":
        kaggle.push(args.dir)
    else:
        kaggle.submit(args.zip, args.message)
    return 0


# --------------------------------------------------------------------------------------------
# Parser


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    try:
        value = non_negative_float(text)
    except argparse.ArgumentTypeError:
        if text.lstrip().startswith("-"):
            raise argparse.ArgumentTypeError(f"must be positive, got {text}") from None
        raise
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def check_vgg_weights(weights: Optional[str]) -> None:
    """--vgg-weights: "imagenet", "random" or an existing file; without it,
    $GHIBLI_KERAS_VGG_WEIGHTS the same."""
    _check_weights_file(weights, "--vgg-weights", VGG_WEIGHTS_ENV, ("imagenet", "random"),
                        "VGG19 weights without the top, "
                        "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5")


STYLE_MIN_SIDE = 32  # nst.MIN_SIDE


def _check_style_side(name: str, path: str, shape: tuple, size) -> None:
    """Both pictures are resized so their longer side is `size` (None: kept); VGG19 needs
    every side >= STYLE_MIN_SIDE. Refused here, before VGG19 loads, with the --size that works."""
    height, width = shape
    longer, shorter = max(height, width), min(height, width)
    after = shorter if size is None else max(1, round(shorter * size / longer))
    if after >= STYLE_MIN_SIDE:
        return
    needed = math.ceil(STYLE_MIN_SIDE * longer / shorter)
    at = "" if size is None else f" at --size {size}"
    raise InputError(f"{name} {path}: {width}x{height} has a shorter side of {after} pixels"
                     f"{at}; VGG19 needs at least {STYLE_MIN_SIDE}: use --size {needed} or more"
                     + (" (the picture is enlarged)" if needed > longer else ""))


def cmd_style_transfer(args: argparse.Namespace) -> int:
    from . import images

    out = Path(args.out)
    if out.suffix.lower() not in images.WRITE_FORMATS:
        raise InputError(f"--out {args.out!r}: name a {', '.join(images.WRITE_FORMATS)} file")
    if out.is_dir():
        raise InputError(f"--out {args.out!r} is a folder; name a {', '.join(images.WRITE_FORMATS)} file")
    try:
        output_dir(str(out.parent))  # before minutes of optimisation
    except argparse.ArgumentTypeError as e:
        raise InputError(f"--out {args.out!r}: {e}") from None
    if args.size is not None and args.size < STYLE_MIN_SIDE:
        raise InputError(f"--size must be at least {STYLE_MIN_SIDE}, got {args.size}")
    content = images.read_image(args.content, max_pixels=args.max_pixels)  # names the file
    style = images.read_image(args.style, max_pixels=args.max_pixels)
    for name, path, picture in (("CONTENT", args.content, content), ("STYLE", args.style, style)):
        _check_style_side(name, path, picture.shape[:2], args.size)
    check_vgg_weights(args.vgg_weights)
    _log_to_stderr()
    _quiet_tensorflow()
    import time

    from tqdm.auto import tqdm

    from . import nst

    weights = args.vgg_weights or nst.default_weights()
    if weights == "random":
        print("note: --vgg-weights random: VGG19 with random weights moves colours and textures "
              "only; it is not style transfer as with the ImageNet weights")
        weights = None
    config = nst.StyleConfig(
        steps=args.steps, size=args.size, content_weight=args.content_weight,
        style_weight=args.style_weight, tv_weight=args.tv_weight, optimizer=args.optimizer,
        learning_rate=args.learning_rate, xla=args.xla == "on",
    )
    extractor = nst.feature_extractor(weights)  # before the bar: it may download or fail
    start = time.perf_counter()
    with tqdm(total=config.steps, desc="style transfer", unit="step", disable=args.quiet) as bar:
        def progress(done: int, losses: dict) -> None:
            bar.update(done - bar.n)
            bar.set_postfix({k: f"{losses[k]:.4g}" for k in nst.LOSS_NAMES}, refresh=False)

        result = nst.stylize(content, style, config, weights=weights, extractor=extractor,
                             progress=progress)
    seconds = time.perf_counter() - start
    images.write_image(result.image, out)
    first, last = result.losses[0], result.losses[-1]
    print("loss      " + "".join(f"{k:>12}" for k in nst.LOSS_NAMES))
    print("start     " + "".join(f"{first[k]:12.5g}" for k in nst.LOSS_NAMES))
    print("end       " + "".join(f"{last[k]:12.5g}" for k in nst.LOSS_NAMES))
    h, w = result.image.shape[:2]
    steps = len(result.losses) - 1  # L-BFGS stops early once the loss no longer moves
    print(f"{out}: {w}x{h}, {steps} {config.optimizer} steps in {seconds:.0f} s "
          f"(VGG19 weights: {result.weights})"
          + (f"; stopped before {config.steps}: the loss no longer decreased"
             if steps < config.steps else ""))
    return 0


def ui_command(args: argparse.Namespace) -> tuple[list[str], dict]:
    """Checks the `ui` arguments; returns the `streamlit run` command line and environment."""
    import importlib.util

    from . import ui

    if args.model:
        try:
            check_model(args.model)
        except InputError as e:
            raise InputError(str(e).replace("MODEL", "--model", 1)) from None
    check_vgg_weights(args.vgg_weights)
    if not 1 <= args.port <= 65535:
        raise InputError(f"--port must be in 1..65535, got {args.port}")
    import socket

    try:
        family, kind, _, _, where = socket.getaddrinfo(args.address, args.port,
                                                       type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise InputError(f"--address {args.address!r}: not an address of this machine "
                         f"({e}); e.g. 127.0.0.1, or 0.0.0.0 for every interface") from None
    with socket.socket(family, kind) as probe:  # as the server will, before it starts
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(where)
        except OSError as e:
            raise InputError(f"--address {args.address} --port {args.port}: cannot listen there "
                             f"({e.strerror or e}): another --port, or an address of this machine "
                             f"(127.0.0.1, or 0.0.0.0 for every interface)") from None
    if importlib.util.find_spec("streamlit") is None:
        raise InputError("the web UI needs Streamlit: pip install 'streamlit>=1.50,<2' (or, in "
                         "the checkout, pip install -e '.[ui]')")
    return ui.streamlit_command(args.port, args.address, args.model, args.vgg_weights,
                                args.max_upload_mb, args.max_pixels)


def cmd_ui(args: argparse.Namespace) -> int:
    command, env = ui_command(args)
    print(f"ghibli-keras UI on http://{args.address}:{args.port} (Ctrl-C stops it)", flush=True)
    # Become the server, so signals (Ctrl-C, a service manager's SIGTERM) reach it directly.
    os.execve(command[0], command, env)
    return 0  # not reached


class _Parser(argparse.ArgumentParser):
    """Usage errors on one line, naming the argument, with a pointer to --help."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _add_read_max_pixels(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-pixels", type=positive_int, default=DEFAULT_READ_MAX_PIXELS,
                   help=f"refuse picture files with more pixels than this, read from the "
                   f"header before anything runs ({DEFAULT_READ_MAX_PIXELS})")


def _add_translation_options(p: argparse.ArgumentParser) -> None:
    """--xla and --mixed-precision of the commands that translate with a generator (see
    inference.translation_xla and inference.translation_policy)."""
    p.add_argument("--xla", choices=XLA_CHOICES, default="auto",
                   help="XLA-compile the generator (auto: on GPU/TPU; on a CPU off where it has "
                   "bf16 instructions, else on for float32 ResNet generators, off for the U-Net; "
                   "a SavedModel keeps what export chose)")
    p.add_argument("--mixed-precision", choices=TRANSLATION_PRECISIONS, default="auto",
                   help="compute in bfloat16 (auto: where the CPU/GPU/TPU computes it faster than "
                   "float32: about 2x on a CPU with AMX or AMD's AVX512_BF16) or float32 (off); "
                   "fp16 for GPUs without bf16 (slower than float32 on a CPU); a SavedModel keeps "
                   "its own")


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
    p.add_argument("--prefix", required=True, type=file_prefix,
                   help="shard name prefix, e.g. 'ghibli' or 'photo'")
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
        default=DEFAULT_READ_MAX_PIXELS,
        help=f"skip pictures with more pixels than this ({DEFAULT_READ_MAX_PIXELS})",
    )
    p.add_argument("--quality", type=jpeg_quality, default=95, help="JPEG quality 1-100 (95)")
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
    p.add_argument("--image-size", type=positive_int,
                   help="training crop side (a multiple of 4; at least 12 for tiny, 24 for paper; "
                        "multiples of 256 for kaggle's U-Net)")
    p.add_argument("--load-size", type=positive_int, help="resize before cropping")
    p.add_argument("--learning-rate", type=positive_float)
    p.add_argument("--strategy", choices=["auto", "cpu", "gpu", "mirrored", "tpu", "multiworker"])
    p.add_argument("--mixed-precision", choices=["auto", "off", "bf16", "fp16"],
                   help="auto: bf16 where the hardware computes it faster than float32, else off; "
                   "fp16 (loss-scaled) for GPUs without bf16, slower than float32 on a CPU")
    p.add_argument("--xla", choices=XLA_CHOICES,
                   help="XLA-compile the train step (auto: on for TPU and one GPU; on a CPU on for "
                   "ResNet generators, off for the U-Net, and off on a CPU with bf16 instructions "
                   "under bf16 or for generators as wide as the paper's)")
    p.add_argument("--steps-per-execution", type=positive_int, metavar="N",
                   help="training steps per call from Python (1; more saves host round trips on TPUs; "
                   "on a CPU it made no measurable difference); lowered to divide --steps-per-epoch")
    p.add_argument("--metrics-every", type=int, metavar="N",
                   help="KID (and FID) of G(held-out photos) every N epochs, to metrics.csv and "
                   "TensorBoard (needs Inception weights)")
    p.add_argument("--inception-weights", metavar="PATH", help=WEIGHTS_HELP)
    p.add_argument("--max-hours", type=positive_float, metavar="H",
                   help="stop at the end of an epoch if another would end more than H hours "
                   "after the start (a session's time limit); rerunning goes on from there")
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
        help="the sample shards (tfrecords/sample, from the working directory or else from "
        "the checkout ghibli-keras runs from)",
    )
    p.add_argument("--epochs", type=positive_int, help="fewer epochs for a quicker look (8)")
    p.add_argument("--steps-per-epoch", type=positive_int, help="(100)")
    p.add_argument("--inception-weights", metavar="PATH",
                   help="for KID/FID before and after training; " + WEIGHTS_HELP)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "fid",
        help="FID (and KID, MiFID) between two sets of pictures",
        description="Score FAKE against REAL with Inception pool-3 features: FID, and with "
        "--kid / --mifid the Kernel Inception Distance and Kaggle's memorisation-informed FID. "
        "REAL and FAKE are folders, quoted globs of pictures, or TFRecord shards. Features of "
        "files are cached (~/.cache/ghibli_keras, or $GHIBLI_KERAS_CACHE).",
    )
    p.add_argument("real", metavar="REAL")
    p.add_argument("fake", metavar="FAKE")
    p.add_argument("--kid", action="store_true", help="also the Kernel Inception Distance")
    p.add_argument("--mifid", action="store_true", help="also MiFID (Kaggle gan-getting-started)")
    p.add_argument("--inception-weights", metavar="PATH", help=WEIGHTS_HELP)
    p.add_argument("--batch-size", type=positive_int, default=32, help="(32)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write cached features")
    _add_read_max_pixels(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_fid)

    p = sub.add_parser(
        "translate",
        help="translate pictures of any size with a trained model",
        description="Translate every picture of INPUT (files or folders, recursively) with "
        "MODEL (a workdir, a .keras file or an exported SavedModel) into --out, keeping their "
        "names (and sub-folders) with the --format suffix. Pictures keep their size and EXIF "
        "orientation; large ones are translated in overlapping, blended tiles. Unreadable files "
        "are reported and skipped.",
    )
    p.add_argument("model", metavar="MODEL")
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    p.add_argument("--out", type=output_dir, required=True, help="folder for the translations")
    p.add_argument("--direction", choices=["photo2style", "style2photo"], default="photo2style",
                   help="G (photo2style, default) or F (style2photo; needs the whole CycleGAN)")
    p.add_argument("--max-side", type=positive_int, metavar="N",
                   help="shrink pictures whose longer side exceeds N first")
    p.add_argument("--tile", type=non_negative_int, default=DEFAULT_TILE, metavar="N",
                   help=f"translate pictures with a side over N in NxN tiles ({DEFAULT_TILE}; "
                   f"0: never)")
    p.add_argument("--overlap", type=non_negative_int, default=DEFAULT_OVERLAP, metavar="N",
                   help=f"pixels shared by neighbouring tiles ({DEFAULT_OVERLAP})")
    p.add_argument("--format", default="jpg", choices=["jpg", "png"], help="(jpg)")
    p.add_argument("--max-pixels", type=positive_int, default=DEFAULT_READ_MAX_PIXELS,
                   metavar="N", help=f"skip pictures with more pixels than N, read from their "
                   f"header before decoding ({DEFAULT_READ_MAX_PIXELS}); --max-side then "
                   f"shrinks the ones read")
    _add_translation_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_translate)

    p = sub.add_parser(
        "export",
        help="export the photo->style generator as a SavedModel for TF Serving",
        description="Write a SavedModel of G into --out (for TF Serving, a numbered version "
        "folder such as models/ghibli/1) with signatures serving_default (JPEG/PNG bytes in, "
        "JPEG bytes out) and translate (float images in [-1, 1]), plus generator.keras, TF "
        "Serving warm-up requests and a README.",
    )
    p.add_argument("model", metavar="MODEL", help="a workdir or a .keras file")
    p.add_argument("--out", type=output_dir, required=True,
                   help="the SavedModel folder (new or empty)")
    p.add_argument("--max-pixels", type=positive_int, default=DEFAULT_EXPORT_MAX_PIXELS,
                   help=f"refuse larger pictures with INVALID_ARGUMENT ({DEFAULT_EXPORT_MAX_PIXELS})")
    p.add_argument("--xla", choices=["on", "off"], default="off",
                   help="compile the network with XLA in the SavedModel (off)")
    p.add_argument("--mixed-precision", choices=["off", "bf16", "fp16"], default="off",
                   help="the SavedModel computes in float32 (off), which runs alike everywhere, "
                   "or bfloat16 (bf16: about 2x faster where the serving CPU has AMX or AMD's "
                   "AVX512_BF16, or on GPUs from Ampere on; slower elsewhere, Intel's AVX512_BF16 "
                   "without AMX included), or float16 (fp16: for serving GPUs without bf16, "
                   "such as the T4; slower than float32 on a CPU) (off)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "submission",
        help="write (or check) the Kaggle competition's images.zip",
        description="Translate every photo of --photos (TFRecord shards or pictures) with "
        "MODEL to a 256x256 JPEG in --out, then validate it as Kaggle does (7,000-10,000 "
        "images, 256x256 RGB JPEG, unique names); an invalid zip is not left in place. "
        "`submission --check images.zip` validates an existing zip.",
    )
    p.add_argument("model", nargs="?", metavar="MODEL",
                   help="a workdir, a .keras file or an exported SavedModel")
    p.add_argument("--photos", metavar="GLOB", help="photo shards or pictures (quote globs)")
    p.add_argument("--out", type=output_file, default=Path("images.zip"), help="(images.zip)")
    p.add_argument("--size", type=positive_int, default=256, help="(256)")
    p.add_argument("--check", metavar="ZIP", help="only validate ZIP")
    p.add_argument("--min-images", type=positive_int, help="(7000, Kaggle's rule)")
    p.add_argument("--max-images", type=positive_int, help="(10000, Kaggle's rule)")
    _add_read_max_pixels(p)
    _add_translation_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_submission)

    p = sub.add_parser(
        "style-transfer",
        help="paint a photo in the style of one picture (neural style transfer, no training)",
        description="Optimise a picture that keeps CONTENT's VGG19 features (block5_conv2) and "
        "takes STYLE's textures (Gram matrices of block1_conv1 ... block5_conv1), starting from "
        "CONTENT (Gatys et al.). Needs the VGG19 ImageNet weights: the Keras cache (downloaded "
        "when online), $GHIBLI_KERAS_VGG_WEIGHTS or --vgg-weights PATH.",
    )
    p.add_argument("content", metavar="CONTENT", help="the photo")
    p.add_argument("style", metavar="STYLE", help="the style picture, e.g. a Ghibli still")
    p.add_argument("--out", required=True, help="the result, a .jpg or .png file")
    p.add_argument("--steps", type=positive_int, default=200, help="optimiser steps (200)")
    p.add_argument("--size", type=positive_int, default=384,
                   help="longer side of the result in pixels (384; each step costs ~size^2)")
    p.add_argument("--style-weight", type=non_negative_float, default=1e-2, help="(1e-2)")
    p.add_argument("--content-weight", type=non_negative_float, default=1e4, help="(1e4)")
    p.add_argument("--tv-weight", type=non_negative_float, default=30.0,
                   help="total-variation weight, against noise (30)")
    p.add_argument("--optimizer", choices=["adam", "lbfgs"], default="adam",
                   help="Adam, or scipy's L-BFGS-B (fewer steps, each a little dearer) (adam)")
    p.add_argument("--learning-rate", type=positive_float, default=0.02, help="Adam's step on [0, 1] pixels (0.02)")
    p.add_argument("--xla", choices=["on", "off"], default="on",
                   help="compile each step with XLA (on: 10-20%% faster steps on a CPU)")
    p.add_argument("--vgg-weights", metavar="PATH",
                   help="VGG19 weights without the top (.h5), 'imagenet' (the Keras cache, "
                   "downloaded if online) or 'random' (no real style; for trying offline) "
                   "(default: $GHIBLI_KERAS_VGG_WEIGHTS, else imagenet)")
    _add_read_max_pixels(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_style_transfer)

    p = sub.add_parser(
        "ui",
        help="a web page to translate uploaded photos (CycleGAN or style transfer)",
        description="Serve a Streamlit page: upload a photo, translate it with a CycleGAN (a "
        "workdir, .keras file or exported SavedModel) or by style transfer from an uploaded "
        "style picture, compare and download. Needs Streamlit (`pip install -e '.[ui]'` in the "
        "checkout).",
    )
    p.add_argument("--model", metavar="PATH", help="the CycleGAN to offer (can be typed in the page)")
    p.add_argument("--port", type=positive_int, default=ui.DEFAULT_PORT, help=f"({ui.DEFAULT_PORT})")
    p.add_argument("--address", default="127.0.0.1",
                   help="the address to listen on (127.0.0.1: this machine only; 0.0.0.0: all)")
    p.add_argument("--vgg-weights", metavar="PATH",
                   help="VGG19 weights for style transfer (as for style-transfer)")
    p.add_argument("--max-upload-mb", type=positive_int, default=ui.DEFAULT_MAX_UPLOAD_MB,
                   help=f"largest upload in MB ({ui.DEFAULT_MAX_UPLOAD_MB})")
    p.add_argument("--max-pixels", type=positive_int, default=ui.DEFAULT_MAX_PIXELS,
                   help=f"refuse pictures with more pixels ({ui.DEFAULT_MAX_PIXELS})")
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser(
        "kaggle",
        help="build, push and submit the Kaggle kernel",
        description="Build the Kaggle kernel folder (notebook + metadata) and the package wheel "
        "as a dataset folder; push both with the Kaggle API; or submit an images.zip.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    actions.required = True
    a = actions.add_parser("build", help="write DIR/kernel and DIR/wheel (no credentials needed)")
    a.add_argument("--out", type=output_dir, required=True, metavar="DIR")
    a.add_argument("--username", help="your Kaggle user name (default: $KAGGLE_USERNAME)")
    a.add_argument("--accelerator", choices=["gpu", "tpu", "none"], default="gpu", help="(gpu)")
    a.add_argument("--internet", action="store_true", help="let the kernel reach the internet")
    a.add_argument("--no-wheel", action="store_true", help="metadata only, no wheel build")
    a = actions.add_parser("push", help="upload DIR/wheel as a dataset and push DIR/kernel")
    a.add_argument("dir", type=existing_dir, metavar="DIR")
    a = actions.add_parser("submit", help="submit images.zip to gan-getting-started")
    a.add_argument("zip", metavar="ZIP")
    a.add_argument("-m", "--message", required=True)
    p.set_defaults(func=cmd_kaggle)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, `timeout`, a job scheduler), raised like Ctrl-C so that every `with`
    block removes what it had half written."""


def _raise_terminated(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM raises `Terminated` while the block runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with _sigterm_as_interrupt():
            return args.func(args)
    except InputError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"{PROG}: stopped: {e}", file=sys.stderr)
        return 1
    except Terminated:
        print(f"{PROG}: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
