"""Configs as code: frozen dataclasses, named presets, JSON round trip, dotted overrides.

>>> cfg = get_preset("tiny")
>>> cfg.model.generator, cfg.data.image_size
('resnet', 64)
>>> cfg = cfg.override(**{"train.epochs": 2})
>>> Config.from_json(cfg.to_json()) == cfg
True
"""

from __future__ import annotations

import dataclasses
import glob
import json
from pathlib import Path
from typing import Optional

from .errors import InputError

SAMPLE_DIR = "tfrecords/sample"  # the embedded sample shards, in the source checkout
SAMPLE_PHOTOS = f"{SAMPLE_DIR}/photo/*.tfrec"
SAMPLE_STYLES = f"{SAMPLE_DIR}/ghibli/*.tfrec"
SAMPLE_HELDOUT = f"{SAMPLE_DIR}/photo_test/*.tfrec"
#: The folder this package was imported from sits in: a source checkout (or editable install).
CHECKOUT = Path(__file__).resolve().parents[1]
KAGGLE_INPUT = "/kaggle/input"  # where a Kaggle session mounts attached data
KAGGLE_COMPETITION = "gan-getting-started"


def locate_sample(path: str) -> str:
    """`path` itself, unless it is under `tfrecords/sample` and matches nothing from the working
    directory: then the same path in the checkout this package runs from, where the sample
    ships, if it matches there. So the presets' default shards and `ghibli-keras demo` work
    from any folder, not only the repository's root.

    >>> locate_sample("shards/photo/*.tfrec")  # not the sample: as given
    'shards/photo/*.tfrec'
    """
    under_sample = path == SAMPLE_DIR or path.startswith(SAMPLE_DIR + "/")
    if not under_sample or glob.glob(path):
        return path
    candidate = str(CHECKOUT / path)
    return candidate if glob.glob(candidate) else path


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the two domains are and how they are cut into training crops."""

    photos: str = SAMPLE_PHOTOS  # domain X shards (file, glob or folder)
    styles: str = SAMPLE_STYLES  # domain Y shards
    heldout_photos: Optional[str] = SAMPLE_HELDOUT  # for samples, test_step and scores
    image_size: int = 256  # training crop side
    load_size: int = 286  # resize before the random crop (the reference's 286 -> 256)
    shuffle_buffer: int = 256  # serialized records per domain


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The four networks. Defaults are the reference's resnet_9blocks and 70x70 PatchGAN."""

    generator: str = "resnet"  # "resnet" | "unet" (the Kaggle tutorial's)
    ngf: int = 64  # generator filters in the first layer
    n_blocks: int = 9  # ResNet blocks (6 or 9 in the reference)
    ndf: int = 64  # discriminator filters in the first layer
    n_layers: int = 3  # PatchGAN stride-2 layers (3 = 70x70 receptive field)
    affine_norm: bool = False  # learnable scale/offset in instance norm (reference: no)
    norm_epsilon: float = 1e-5  # the reference's (PyTorch's) epsilon
    global_skip: bool = False  # G(x) = clip(x + residual(x)): starts at the identity


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The optimisation. Defaults are the paper's."""

    epochs: int = 200
    decay_epochs: int = 100  # the last N epochs decay the learning rate linearly to zero
    steps_per_epoch: Optional[int] = None  # default: one pass over the larger domain
    batch_size: int = 1  # global, over all replicas
    learning_rate: float = 2e-4
    beta_1: float = 0.5
    gan_loss: str = "lsgan"  # "lsgan" | "bce"
    lambda_cycle: float = 10.0
    lambda_identity: float = 0.5  # relative to lambda_cycle, as in the reference
    pool_size: int = 50  # history of fakes shown to the discriminators (0: none)
    warmup_steps: int = 0  # reconstruction-only steps before adversarial training
    strategy: str = "auto"  # auto | cpu | gpu | mirrored | tpu | multiworker
    mixed_precision: str = "auto"  # auto | off | bf16 | fp16
    xla: str = "auto"  # auto | on | off
    steps_per_execution: int = 1  # steps per call from Python (lowered to divide an epoch)
    seed: Optional[int] = None  # repeatable data order, augmentation and initialisation
    metrics_every: int = 0  # KID (and FID) of G(held-out photos) every N epochs; 0: never
    inception_weights: Optional[str] = None  # for those metrics: "imagenet" or a path
    max_hours: Optional[float] = None  # stop at an epoch's end if another would pass this (resumable)


@dataclasses.dataclass(frozen=True)
class Config:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict) -> "Config":
        parts = {}
        for name, section in _SECTIONS.items():
            sub = values.get(name, {})
            unknown = set(sub) - {f.name for f in dataclasses.fields(section)}
            if unknown:
                raise InputError(f"unknown config field(s) in {name!r}: {sorted(unknown)}")
            parts[name] = section(**sub)
        return cls(**parts).validated()

    @classmethod
    def from_json(cls, text: str) -> "Config":
        return cls.from_dict(json.loads(text))

    def override(self, **dotted) -> "Config":
        """`cfg.override(**{"train.epochs": 3, "data.image_size": 64})`; None values are ignored."""
        values = self.to_dict()
        for key, value in dotted.items():
            if value is None:
                continue
            section, _, name = key.partition(".")
            if section not in values or name not in values[section]:
                raise InputError(f"unknown config field {key!r}")
            values[section][name] = value
        return Config.from_dict(values)

    def validated(self) -> "Config":
        d, m, t = self.data, self.model, self.train
        checks = [
            (d.image_size > 0 and d.image_size % 4 == 0, f"data.image_size must be a positive multiple of 4, got {d.image_size}"),
            (d.load_size >= d.image_size, f"data.load_size ({d.load_size}) must be >= data.image_size ({d.image_size})"),
            (m.generator in ("resnet", "unet"), f"model.generator must be 'resnet' or 'unet', got {m.generator!r}"),
            (m.generator != "unet" or d.image_size % 256 == 0, f"the U-Net generator needs image_size divisible by 256, got {d.image_size}"),
            (m.ngf > 0 and m.ndf > 0, f"model.ngf and model.ndf must be positive, got {m.ngf}, {m.ndf}"),
            (m.n_blocks >= 0, f"model.n_blocks must be >= 0, got {m.n_blocks}"),
            (m.n_layers >= 1, f"model.n_layers must be >= 1, got {m.n_layers}"),
            (m.norm_epsilon > 0, f"model.norm_epsilon must be positive, got {m.norm_epsilon}"),
            (t.epochs > 0, f"train.epochs must be positive, got {t.epochs}"),
            (0 <= t.decay_epochs <= t.epochs, f"train.decay_epochs must be in 0..epochs ({t.epochs}), got {t.decay_epochs}"),
            (t.steps_per_epoch is None or t.steps_per_epoch > 0, f"train.steps_per_epoch must be positive, got {t.steps_per_epoch}"),
            (t.batch_size > 0, f"train.batch_size must be positive, got {t.batch_size}"),
            (t.learning_rate > 0, f"train.learning_rate must be positive, got {t.learning_rate}"),
            (t.gan_loss in ("lsgan", "bce"), f"train.gan_loss must be 'lsgan' or 'bce', got {t.gan_loss!r}"),
            (t.pool_size >= 0 and t.warmup_steps >= 0, "train.pool_size and train.warmup_steps must be >= 0"),
            (t.strategy in STRATEGIES, f"train.strategy must be one of {STRATEGIES}, got {t.strategy!r}"),
            (t.mixed_precision in PRECISIONS, f"train.mixed_precision must be one of {PRECISIONS}, got {t.mixed_precision!r}"),
            (t.xla in XLA_CHOICES, f"train.xla must be one of {XLA_CHOICES}, got {t.xla!r}"),
            (t.steps_per_execution > 0, f"train.steps_per_execution must be positive, got {t.steps_per_execution}"),
            (t.metrics_every >= 0, f"train.metrics_every must be >= 0, got {t.metrics_every}"),
            (t.max_hours is None or t.max_hours > 0, f"train.max_hours must be positive, got {t.max_hours}"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)
        smallest = smallest_crop(m)
        if d.image_size < smallest:
            raise InputError(f"data.image_size (--image-size) {d.image_size} is smaller than these "
                             f"networks take: at least {smallest} for a {m.generator} generator and "
                             f"a PatchGAN of model.n_layers {m.n_layers}")
        return self


def smallest_crop(model: ModelConfig) -> int:
    """The smallest training crop (a multiple of 4) the networks of `model` take: the ResNet's
    residual blocks reflect-pad their H/4 input by 1, so it needs 8 (the U-Net 256); the
    PatchGAN's 4x4 convolutions (`n_layers` of stride 2, one of stride 1, the head; each input
    zero-padded by 1) each need an input of at least 4. 12 for the tiny preset, 24 for the
    paper's."""
    generator = 256 if model.generator == "unet" else 8
    side = generator
    while not _patch_fits(side, model.n_layers):
        side += 4
    return side


def _patch_fits(side: int, n_layers: int) -> bool:
    n = side + 2  # layer1_pad
    for stride in [2] * n_layers + [1]:
        if n < 4:
            return False
        n = (n - 4) // stride + 1 + 2  # the convolution, then the next one's padding
    return n >= 4  # the head's 4x4 input


STRATEGIES = ("auto", "cpu", "gpu", "mirrored", "tpu", "multiworker")
PRECISIONS = ("auto", "off", "bf16", "fp16")
XLA_CHOICES = ("auto", "on", "off")


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


def _tiny() -> Config:
    """The demo's run: a small ResNet on 64-px crops of the sample set, <= 10 min on 2 cores.

    Measured choices (held-out PSNR against `stylize`, see the README's demo section):
    - global skip: the generator starts as the identity, so the first steps are not spent
      learning to reproduce photos (a plain tanh head ended below the identity baseline);
    - no identity loss: |G(y) - y| pulls G towards the identity, against the style (+0.02 dB
      after 300 steps with it, +1.9 dB without);
    - learning rate 5e-4 for the small networks, decaying linearly over the second half,
      which stops the late drift seen at a constant rate;
    - XLA and precision `auto`: on a CPU where bf16 is not faster than float32, float32 with
      XLA (2.1x faster steps than without on a 2-core Xeon: 0.57 s against 1.21 s at batch 4);
      on one where it is (AMD's AVX512_BF16, AMX), bf16 without XLA (2-core Zen 5, a real run
      on the sample shards: a median step of 87 ms, against 85 ms in float32 with XLA, whose
      compilations made the run longer: 48 s against 64-92 s for 3 epochs; bf16 with XLA 1.2x
      slower).
    """
    return Config(
        data=DataConfig(image_size=64, load_size=72),
        model=ModelConfig(ngf=16, n_blocks=3, ndf=32, n_layers=2, global_skip=True),
        train=TrainConfig(
            epochs=8,
            decay_epochs=4,
            steps_per_epoch=100,
            batch_size=4,
            learning_rate=5e-4,
            lambda_identity=0.0,
            pool_size=50,
            seed=0,
        ),
    )


def kaggle_competition_shards(folder: str, root: Optional[str] = None) -> str:
    """The glob of the competition's shards in `folder` (`photo_tfrec`, `monet_tfrec`) under
    Kaggle's input (`root`, default `KAGGLE_INPUT`): `input/gan-getting-started/` in the
    classic layout, `input/competitions/gan-getting-started/` in Kaggle's newer one (taken
    where only it exists)."""
    root = KAGGLE_INPUT if root is None else root
    classic = f"{root}/{KAGGLE_COMPETITION}/{folder}"
    newer = f"{root}/competitions/{KAGGLE_COMPETITION}/{folder}"
    chosen = newer if Path(newer).is_dir() and not Path(classic).is_dir() else classic
    return f"{chosen}/*.tfrec"


def _kaggle() -> Config:
    """The Kaggle "Monet CycleGAN" tutorial's networks and losses: U-Net at 256, BCE, no pool,
    25 epochs at a constant learning rate. An epoch here is one pass over the 7,038 photos (the
    tutorial's is 300 steps): the notebook bounds the run with `train.max_hours`."""
    return Config(
        data=DataConfig(
            photos=kaggle_competition_shards("photo_tfrec"),
            styles=kaggle_competition_shards("monet_tfrec"),
            heldout_photos=None,
            image_size=256,
            load_size=286,
        ),
        model=ModelConfig(generator="unet", affine_norm=True),
        train=TrainConfig(
            epochs=25, decay_epochs=0, batch_size=1, gan_loss="bce", pool_size=0
        ),
    )


def _paper() -> Config:
    """The CycleGAN paper: resnet_9blocks at 256, 100 epochs constant + 100 decaying."""
    return Config()


PRESETS = {"tiny": _tiny, "kaggle": _kaggle, "paper": _paper}


def get_preset(name: str) -> Config:
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[name]().validated()


def tf_config(raw: Optional[str] = None) -> dict:
    """`TF_CONFIG` (or `raw`) parsed and checked, {} when unset: a JSON object whose `cluster`
    maps task types to lists of "host:port" addresses and whose `task` names one of them by
    type and index. Imports no TensorFlow, so the command line checks it first.

    Raises:
        InputError: what is wrong, quoting TF_CONFIG.
    """
    import os

    raw = os.environ.get("TF_CONFIG", "") if raw is None else raw
    if not raw.strip():
        return {}
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise InputError(f"TF_CONFIG is not valid JSON ({e}): {raw[:80]!r}") from None
    example = ('e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
               '"task": {"type": "worker", "index": 0}}')
    cluster = config.get("cluster", {}) if isinstance(config, dict) else None
    if not isinstance(cluster, dict):
        raise InputError(f"TF_CONFIG must be a JSON object with a 'cluster' object, {example}")
    for kind, addresses in cluster.items():
        if not (isinstance(addresses, list) and addresses
                and all(isinstance(a, str) and ":" in a for a in addresses)):
            raise InputError(f"TF_CONFIG cluster[{kind!r}] must be a list of 'host:port' "
                             f"addresses, got {addresses!r}")
    task = config.get("task", {})
    if cluster and task:
        kind, index = task.get("type", "worker"), task.get("index", 0)
        if kind not in cluster:
            raise InputError(f"TF_CONFIG task type {kind!r} is not in the cluster "
                             f"({', '.join(cluster)}), {example}")
        if not (isinstance(index, int) and 0 <= index < len(cluster[kind])):
            raise InputError(f"TF_CONFIG task index {index!r} is out of range: the cluster has "
                             f"{len(cluster[kind])} {kind} task(s), indices 0..{len(cluster[kind]) - 1}")
    return config
