"""ghibli-keras: photos to Studio-Ghibli-style pictures with an unpaired CycleGAN (Keras 3).

`import ghibli_keras` registers the package's Keras classes, so `keras.models.load_model`
reads a workdir's `model.keras`:

>>> import ghibli_keras, keras                                 # doctest: +SKIP
>>> model = keras.models.load_model("run/model.keras")        # doctest: +SKIP
>>> styled = model(photos)   # float (B, H, W, 3) in [-1, 1] -> the same, in the style

The command line (`ghibli-keras`, `python -m ghibli_keras`) skips these imports so that `--help`
and input errors come before TensorFlow loads; it imports what it needs after validating.
"""

import os as _os
import sys as _sys

__version__ = "0.1.0"

#: Set by the `ghibli-keras` launcher (ghibli_keras_cli.py).
CLI_ENV = "GHIBLI_KERAS_CLI"

# While `python -m ghibli_keras` imports this package, sys.argv[0] is "-m" (documented in
# the Python command-line reference); `ghibli-keras` sets CLI_ENV.
_cli = bool(_os.environ.get(CLI_ENV)) or _sys.argv[:1] == ["-m"]
# The training API needs TensorFlow; on another Keras backend (KERAS_BACKEND, read the way
# Keras reads it at import) only the networks import: ghibli_keras.models, .layers, .losses.
_tensorflow = _os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow"

if not _cli and _tensorflow:
    from .config import PRESETS, Config, DataConfig, ModelConfig, TrainConfig, get_preset
    from .cyclegan import CycleGAN
    from .layers import ReflectionPadding2D
    from .models import GlobalSkip, patch_discriminator, resnet_generator, unet_generator
    from .schedules import LinearDecay
    from .training import train

    __all__ = [
        "CycleGAN", "Config", "DataConfig", "ModelConfig", "TrainConfig", "PRESETS",
        "get_preset", "train", "resnet_generator", "unet_generator", "patch_discriminator",
        "ReflectionPadding2D", "GlobalSkip", "LinearDecay", "__version__",
    ]
