"""The networks and the generators' objective on Keras' JAX backend: what benchmarks/jax_step.py
runs on a GPU machine without TensorFlow. Each check runs in a subprocess (a process has one
Keras backend, and this one is TensorFlow's)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_on_jax(code: str, timeout: int = 300) -> str:
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_networks_import_and_run_without_tensorflow():
    out = run_on_jax("""
        import sys
        import numpy as np
        import ghibli_keras
        from ghibli_keras import layers, losses, models
        from ghibli_keras.config import get_preset

        assert not hasattr(ghibli_keras, "CycleGAN")  # the training API needs TensorFlow
        assert layers.in_xla_context()  # JAX runs everything through XLA: the XLA forms
        nets = models.build_networks(get_preset("tiny").model, seed=0)
        x = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
        assert tuple(nets["generator_g"](x).shape) == (2, 64, 64, 3)
        call = lambda name: (lambda t: nets[name](t, training=True))
        out = losses.generator_objective(
            *(call(n) for n in ("generator_g", "generator_f", "discriminator_x", "discriminator_y")),
            x, x, lambda_cycle=10.0, lambda_identity=0.5)
        assert out["loss"].shape == (2,) and np.isfinite(np.asarray(out["loss"])).all()
        print("tensorflow imported:", any(m.startswith("tensorflow") for m in sys.modules))
    """)
    assert "tensorflow imported: False" in out


def test_xla_forms_match_the_plain_layers_on_jax():
    run_on_jax("""
        import keras
        import numpy as np
        from ghibli_keras.layers import (
            DownConv2D, NarrowConv2D, ReflectionPadding2D, ShallowConv2D, UpConv2D,
        )

        x = np.random.default_rng(0).normal(size=(2, 5, 7, 4)).astype("float32")
        up = UpConv2D(6, bias_initializer="random_normal")
        sub_pixel = np.asarray(up(x))  # the XLA form on JAX
        plain = np.asarray(keras.layers.Conv2DTranspose.call(up, x))[:, 1:, 1:, :]
        np.testing.assert_allclose(sub_pixel, plain, atol=1e-5)
        narrow = NarrowConv2D(3, 3, bias_initializer="random_normal")
        np.testing.assert_allclose(np.asarray(narrow(x)),
                                   np.asarray(keras.layers.Conv2D.call(narrow, x)), atol=1e-5)
        shallow = ShallowConv2D(6, 3, bias_initializer="random_normal")
        np.testing.assert_allclose(np.asarray(shallow(x)),
                                   np.asarray(keras.layers.Conv2D.call(shallow, x)), atol=1e-5)
        down = DownConv2D(6, 3, bias_initializer="random_normal")
        np.testing.assert_allclose(np.asarray(down(x, training=True)),  # space to depth
                                   np.asarray(keras.layers.Conv2D.call(down, x)), atol=1e-5)
        for p in (1, 3):
            want = np.pad(x, [(0, 0), (p, p), (p, p), (0, 0)], mode="reflect")
            np.testing.assert_array_equal(np.asarray(ReflectionPadding2D(p)(x)), want)
            np.testing.assert_array_equal(np.asarray(ReflectionPadding2D(p)._edge_sums(x)), want)
    """)


@pytest.mark.slow
def test_jax_step_benchmark_quick():
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    done = subprocess.run([sys.executable, "benchmarks/jax_step.py", "--quick", "--profile"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    row = next(line for line in done.stdout.splitlines() if line.startswith("tiny "))
    seconds, loss = float(row.split()[3]), row.split()[-1]
    assert seconds > 0
    first, last = (float(v) for v in loss.split(">"))
    assert first > 0 and last > 0  # finite, printed as numbers
    assert "generator_g: its convolutions alone take" in done.stdout
