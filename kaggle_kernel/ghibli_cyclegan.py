# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Ghibli CycleGAN (ghibli-keras)
#
# Trains an unpaired CycleGAN photo → style with the ghibli-keras package on
# Kaggle's TPU, GPU or CPU, writes the competition's `images.zip` and estimates MiFID.
#
# By default it trains on the *I'm Something of a Painter Myself* data (`gan-getting-started`:
# 7,038 photos, 300 Monet paintings). To train on your own Ghibli stills, make shards with
# `ghibli-keras make-tfrecords STILLS_DIR shards/ --prefix ghibli --size 256`, upload them as a
# dataset, attach it and point `STYLES` at it below (`/kaggle/input/YOUR-DATASET/*.tfrec`).
# This notebook is generated from `kaggle_kernel/ghibli_cyclegan.py`; edit that file, not the
# notebook.

# %% [markdown]
# ## Settings
# Everything you may want to change is in this cell. The environment variables exist so the
# notebook can be tested off Kaggle; on Kaggle the defaults apply.

# %%
import glob
import json
import os

KAGGLE_ROOT = os.environ.get("GHIBLI_KAGGLE_ROOT", "/kaggle")


def kaggle_input(name):
    """The folder or file `name` anywhere under /kaggle/input: Kaggle mounts data at
    input/<slug>/, and in newer sessions at input/competitions/<slug>/ and
    input/datasets/<owner>/<slug>/."""
    found = sorted(glob.glob(f"{KAGGLE_ROOT}/input/**/{name}", recursive=True))
    if not found:
        raise FileNotFoundError(f"no {name} under {KAGGLE_ROOT}/input: add the competition's "
                                f"data (gan-getting-started) with Add Input")
    return found[-1]


PHOTOS = f"{kaggle_input('photo_tfrec')}/*.tfrec"
STYLES = f"{kaggle_input('monet_tfrec')}/*.tfrec"
WORKING = f"{KAGGLE_ROOT}/working"
WORKDIR = f"{WORKING}/run"  # model.keras, samples/, log.csv; rerunning resumes
PRESET = os.environ.get("GHIBLI_PRESET", "kaggle")  # tiny | kaggle | paper
OVERRIDES = json.loads(os.environ.get("GHIBLI_OVERRIDES", "{}"))  # e.g. {"train.epochs": 10}
# Training stops at the end of an epoch when another would pass this many hours, leaving time
# for the zip: Kaggle ends a session after 12 h on a GPU and 9 h on a TPU, and a competition
# may allow its submission notebooks less (see its Code Requirements).
TRAIN_HOURS = float(os.environ.get("GHIBLI_TRAIN_HOURS", "4"))
MIN_IMAGES = int(os.environ.get("GHIBLI_MIN_IMAGES", "7000"))  # the competition's rule
INCEPTION_WEIGHTS = os.environ.get("GHIBLI_KERAS_INCEPTION_WEIGHTS", "imagenet")

# %% [markdown]
# ## Install the package
# From the attached `ghibli-keras-wheel` dataset (no internet needed).

# %%
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("ghibli_keras") is None:
    wheels = sorted(glob.glob(f"{KAGGLE_ROOT}/input/**/ghibli_keras-*.whl", recursive=True))
    if not wheels:
        raise FileNotFoundError("attach the ghibli-keras-wheel dataset (ghibli-keras kaggle push)")
    # --no-deps: Kaggle's image has TensorFlow, Keras and the rest, and the kernel is offline
    # (tensorflow-serving-api, needed only by `export`, may not be in it).
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", wheels[-1]],
                   check=True)

import ghibli_keras
from ghibli_keras import features, metrics, strategy, submission
from ghibli_keras.errors import InputError
from ghibli_keras.inference import Translator

print("ghibli-keras", ghibli_keras.__version__)

# %% [markdown]
# ## Train
# `strategy.auto()` picks the TPU, the GPUs or the CPU; `train` uses the same choice
# (`train.strategy = "auto"`). Losses are printed per epoch; a sample grid is saved each epoch.
# A batch that does not split over the replicas is rounded up to a multiple of their count.

# %%
import dataclasses

devices = strategy.auto()
print(f"strategy: {type(devices).__name__}, {devices.num_replicas_in_sync} replica(s)")
config = ghibli_keras.get_preset(PRESET).override(
    **{"data.photos": PHOTOS, "data.styles": STYLES, "train.max_hours": TRAIN_HOURS, **OVERRIDES}
)
config = dataclasses.replace(config, data=dataclasses.replace(config.data, heldout_photos=None))
replicas = devices.num_replicas_in_sync
if config.train.batch_size % replicas:  # e.g. batch 1 on a TPU v3-8: one picture per core
    batch = -(-config.train.batch_size // replicas) * replicas
    config = config.override(**{"train.batch_size": batch})
ghibli_keras.train(config, WORKDIR, strategy=devices)

# %% [markdown]
# ## Samples
# x · G(x) · F(G(x)) · y · F(y) · G(F(y)) for a few photos and paintings.

# %%
from IPython.display import Image, display

display(Image(filename=f"{WORKDIR}/samples/latest.png"))
display(Image(filename=f"{WORKDIR}/loss_curves.png"))

# %% [markdown]
# ## The submission: images.zip
# Every photo translated to a 256×256 JPEG, then checked as Kaggle checks it.

# %%
# "auto": float32 unless this machine computes bf16 faster (after TPU training the model is
# bf16, and this runs on the TPU host's CPU, which would only emulate it)
translator = Translator.load(WORKDIR, precision="auto")
count = submission.write_submission(
    translator, PHOTOS, f"{WORKING}/images.zip", min_images=MIN_IMAGES, progress=False
)
print(f"{WORKING}/images.zip: {count} images")

# %% [markdown]
# ## A local MiFID estimate
# With Inception weights (the Keras ImageNet weights need internet; without it, attach
# inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5 as a dataset and set
# INCEPTION_WEIGHTS in the settings cell to its /kaggle/input/... path, or there
# GHIBLI_KERAS_INCEPTION_WEIGHTS when running elsewhere). Kaggle's leaderboard uses the TTUR FID graph;
# the Keras InceptionV3 gives different numbers — the line says which network it used.

# %%
import tempfile
import zipfile

try:
    extractor = features.inception(INCEPTION_WEIGHTS)
except InputError as error:
    print(f"MiFID skipped: {error}")
else:
    with tempfile.TemporaryDirectory() as folder:
        zipfile.ZipFile(f"{WORKING}/images.zip").extractall(folder)
        fake = features.extract(folder, extractor, cache=False, progress=True)
    real = features.extract(STYLES, extractor, progress=True)
    fid = metrics.fid(real, fake)
    print(f"FID {fid:.2f}, MiFID {metrics.mifid(real, fake, fid_value=fid):.2f} "
          f"[{extractor.name}]")
