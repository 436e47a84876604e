"""Packaging for ghibli-keras: `pip install .` (add `[test]`, `[kaggle]`, `[ui]` or `[gpu]`)."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(
    r'^__version__ = "([^"]+)"', (HERE / "ghibli_keras" / "__init__.py").read_text(), re.M
).group(1)

INSTALL_REQUIRES = [
    "tensorflow>=2.16,<3",
    "keras>=3.3,<4",
    "tensorboard>=2.16,<3",  # tf.summary and the TensorBoard callback (no longer a TF dependency)
    "numpy>=1.26,<3",
    "scipy>=1.11,<2",
    "matplotlib>=3.7,<4",
    "pillow>=10.1,<14",
    "tqdm>=4.64,<5",
    "tensorflow-serving-api>=2.16,<3",  # the PredictionLog protos of the export's warm-up requests
]

UI_REQUIRES = ["streamlit>=1.50,<2"]

EXTRAS_REQUIRE = {
    # scikit-image is needed only to rebuild tfrecords/sample/ (its four source photos ship with it).
    "sample": ["scikit-image>=0.22,<1"],
    "test": [
        "pytest>=7.4,<10",
        "pytest-timeout>=2.2,<3",
        "scikit-image>=0.22,<1",
        # the Kaggle kernel: notebook <-> script, running the notebook, the API's presence
        "jupytext>=1.16,<2",
        "nbformat>=5.9,<6",
        "nbclient>=0.10,<1",
        "ipykernel>=6.29,<8",
        "kaggle>=1.6,<3",
        # the web UI, and Playwright driving Debian's chromium (no browser download)
        *UI_REQUIRES,
        "playwright>=1.40,<2",
        # benchmarks/jax_step.py: the networks and the objective on Keras' JAX backend (the
        # stand-in for GPU timings where TensorFlow cannot be installed); CPU jaxlib
        "jax[cpu]>=0.4.34,<1",
    ],
    "kaggle": ["kaggle>=1.6,<3"],
    "ui": UI_REQUIRES,
    "gpu": ["tensorflow[and-cuda]>=2.16,<3"],
}

setup(
    name="ghibli-keras",
    version=VERSION,
    description="Turn photos into Studio-Ghibli-style pictures with an unpaired CycleGAN (Keras 3, TensorFlow).",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["ghibli_keras", "ghibli_keras.*"]),
    py_modules=["ghibli_keras_cli"],
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": ["ghibli-keras = ghibli_keras_cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
