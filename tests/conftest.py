"""Shared fixtures. TensorFlow's CPU is split into 2 logical devices before anything else runs,
so the MirroredStrategy tests have two replicas on this 2-core machine."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(REPO, "tfrecords", "sample")


def smooth_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth random uint8 (H, W, 3) picture: JPEG keeps it within a few levels."""
    coarse = rng.uniform(30, 225, size=(4, 4, 3))
    ys = np.linspace(0, 3, height)[:, None]
    xs = np.linspace(0, 3, width)[None, :]
    y0, x0 = np.floor(ys).astype(int).clip(0, 2), np.floor(xs).astype(int).clip(0, 2)
    fy, fx = (ys - y0)[..., None], (xs - x0)[..., None]
    top = coarse[y0, x0] * (1 - fx) + coarse[y0, x0 + 1] * fx
    bottom = coarse[y0 + 1, x0] * (1 - fx) + coarse[y0 + 1, x0 + 1] * fx
    return np.rint(top * (1 - fy) + bottom * fy).astype(np.uint8)


def shard_with_a_bad_record(path, count: int = 6, bad=3, size: int = 16,
                            bad_image: bytes = b"not a picture") -> str:
    """A shard of `count` grey JPEGs named p0, p1, ... whose record `bad` holds `bad_image`
    instead (`bad=None`: none); returns its path."""
    from ghibli_keras import data

    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(count):
            jpeg = data.encode_jpeg(np.full((size, size, 3), 20 * i, np.uint8))
            writer.write(data.make_example(f"p{i}", bad_image if i == bad else jpeg,
                                           "photo").SerializeToString())
    return str(path)


def truncated_shard(path, count: int = 6) -> str:
    """A shard of `count` good records cut in the middle of one, as an interrupted copy leaves
    it; returns its path."""
    shard_with_a_bad_record(path, count, bad=None)
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2 + 40])  # past the 4th record's 12-byte header
    return str(path)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def sample_dir():
    return SAMPLE


def tiny_test_config(**overrides):
    """A very small run on the sample data: seconds per epoch, for tests that need a model."""
    from ghibli_keras.config import get_preset

    values = {
        "data.photos": f"{SAMPLE}/photo",
        "data.styles": f"{SAMPLE}/ghibli",
        "data.heldout_photos": f"{SAMPLE}/photo_test",
        "data.image_size": 32,
        "data.load_size": 36,
        "model.ngf": 4,
        "model.n_blocks": 1,
        "model.ndf": 4,
        "model.n_layers": 2,
        "train.epochs": 2,
        "train.decay_epochs": 1,
        "train.steps_per_epoch": 3,
        "train.batch_size": 2,
        "train.pool_size": 4,
        "train.xla": "off",
        # float32 whatever the CPU (auto picks bf16 where the CPU computes it faster), so that
        # tests comparing two ways of running the trained model hold on every host
        "train.mixed_precision": "off",
        "train.seed": 0,
    }
    values.update(overrides)
    return get_preset("tiny").override(**values)


@pytest.fixture(scope="session")
def trained_workdir(tmp_path_factory):
    """One tiny trained run shared by every test that needs a model."""
    from ghibli_keras import training

    workdir = tmp_path_factory.mktemp("trained") / "run"
    training.train(tiny_test_config(), workdir, verbose=0)
    return workdir


@pytest.fixture(scope="session")
def vgg_weights_file(tmp_path_factory):
    """Random VGG19 weights saved as a file, as a user would pass --vgg-weights PATH (the
    ImageNet weights cannot be downloaded here)."""
    import keras

    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("vgg") / "vgg19_random.weights.h5"
    keras.applications.VGG19(include_top=False, weights=None).save_weights(path)
    return path


@pytest.fixture
def float32_after():
    """Sets the global Keras dtype policy back to float32 after a test that changes it."""
    yield
    keras.config.set_dtype_policy("float32")
