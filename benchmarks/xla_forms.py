"""What the networks' XLA-only layer forms gain: `UpConv2D` (sub-pixel form of the transposed
convolution), `NarrowConv2D` (row-split form of the 7×7 head to RGB, and of the discriminator's
head), `ShallowConv2D` (row-stacked form of the 7×7 stem from RGB), `DownConv2D` (space-to-depth
form of the stride-2 convolutions, used in training) and `ReflectionPadding2D` (edge sums
instead of a concatenation), against the plain Keras layers they replace, all XLA-compiled,
in the same process.

    python benchmarks/xla_forms.py [--quick] [--preset paper] [--size 256] [--seconds 3]
                                   [--precision off|bf16]

Prints, for each such layer of the preset's generator (forward at batch 4, as `translate`
runs; forward + gradients at batch 1, as a training step runs), the Keras layer's time, the
form's time and the ratio (each distinct padding once; its edge-sum form is used on GPUs
only, and timed here whatever the device; DownConv2D's form, used in training only, timed in
both passes); then the whole generator and discriminator with the plain layers, with the
forms (as this device runs them) and, for the generator, with the edge-sum padding too (the
same network and weights), and without XLA (plain TensorFlow and oneDNN, where the layers run
their Keras forms anyway). Rounds alternate the variants so drifting load hits all;
each figure is the median over the rounds.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import ghibli_keras.layers as gk_layers  # noqa: E402
from ghibli_keras import models  # noqa: E402
from ghibli_keras.config import get_preset  # noqa: E402
from profile_step import forward_pass, timed, train_pass  # noqa: E402
from train_step import POLICIES  # noqa: E402

PASSES = (("forward", forward_pass, 4), ("fwd+grad", train_pass, 1))  # (name, pass, batch)
KINDS = (gk_layers.UpConv2D, gk_layers.NarrowConv2D, gk_layers.ShallowConv2D, gk_layers.DownConv2D,
         gk_layers.ReflectionPadding2D)


def plain_layers():
    """Traces the layers with XLA forms as their plain Keras forms, even under XLA."""
    return mock.patch.object(gk_layers, "in_xla_context", lambda: False)


def edge_sum_padding():
    """Traces ReflectionPadding2D as its edge-sum form, whatever the device."""
    return mock.patch.object(gk_layers.ReflectionPadding2D, "call", gk_layers.ReflectionPadding2D._edge_sums)


def keras_equivalent(layer, input_shape):
    """The plain Keras layer (as a function) with `layer`'s weights."""
    if isinstance(layer, gk_layers.UpConv2D):
        plain = keras.layers.Conv2DTranspose(layer.filters, 3, strides=2, padding="valid")
        fn = lambda x: plain(x)[:, 1:, 1:, :]  # noqa: E731
    else:
        plain = keras.layers.Conv2D(layer.filters, layer.kernel_size, strides=layer.strides,
                                    activation=layer.activation)
        fn = plain
    plain.build(input_shape)
    plain.set_weights(layer.get_weights())
    return fn, plain.trainable_variables


def alternate(runs, rounds: int, seconds: float) -> list[float]:
    """Median seconds of each compiled function in `runs`, timed in `rounds` alternating rounds
    (so load that drifts during the run hits them all alike)."""
    times = [[] for _ in runs]
    for _ in range(rounds):
        for run, kept in zip(runs, times):
            kept.append(timed(run, seconds))
    return [float(np.median(t)) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny preset, 1 round of 0.5 s")
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--size", type=int, default=256, help="picture side (256)")
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement (3)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precision", choices=list(POLICIES), default="off",
                        help="off: float32; bf16: mixed_bfloat16 (float32 weights), as training's "
                        "--mixed-precision bf16")
    args = parser.parse_args()
    keras.config.set_dtype_policy(POLICIES[args.precision])
    preset = "tiny" if args.quick else args.preset
    seconds, rounds = (0.5, 1) if args.quick else (args.seconds, args.rounds)
    m = get_preset(preset).model
    g = models.resnet_generator(m.ngf, m.n_blocks, seed=0, name="generator_g")
    d = models.patch_discriminator(m.ndf, m.n_layers, seed=1, name="discriminator_x")
    short = {g.name: "G", d.name: "D"}
    distinct = {}  # each padding of a distinct input shape once (18 in the residual blocks)
    for net in (g, d):
        forms = [l for l in net.layers if isinstance(l, KINDS)]
        probe = keras.Model(net.inputs, [l.input for l in forms])
        shapes = [tuple(t.shape[1:]) for t in probe([np.zeros((1, args.size, args.size, 3), "float32")])]
        for layer, shape in zip(forms, shapes):
            key = (net.name, layer.name) if not isinstance(layer, gk_layers.ReflectionPadding2D) else (
                shape, layer.padding)
            distinct.setdefault(key, (f"{short[net.name]} {layer.name}", layer, shape))
    print(f"{preset} preset networks, {args.size}x{args.size}, XLA on, {POLICIES[args.precision]}; "
          f"median of {rounds} alternating rounds of {seconds:g} s")
    print(f"  {'layer':40} {'pass':9} {'batch':>5} {'Keras ms':>9} {'form ms':>8}  gain")
    for name, layer, shape in distinct.values():
        kind = type(layer).__name__
        out = f"p{layer.padding}" if kind == "ReflectionPadding2D" else layer.filters
        desc = f"{name} {kind} {'x'.join(map(str, shape))}->{out}"
        for pass_name, pass_fn, batch in PASSES:
            x = tf.random.uniform((batch, *shape))
            if kind == "ReflectionPadding2D":
                runs = [pass_fn(layer._reflect, [], x, True), pass_fn(layer._edge_sums, [], x, True)]
            else:
                plain_fn, plain_vars = keras_equivalent(layer, x.shape)
                form = lambda v, layer=layer: layer(v, training=True)  # noqa: E731 (DownConv2D's form)
                runs = [pass_fn(plain_fn, plain_vars, x, True),
                        pass_fn(form, layer.trainable_variables, x, True)]
            t_plain, t_form = alternate(runs, rounds, seconds)
            print(f"  {desc:40} {pass_name:9} {batch:5d} {t_plain * 1e3:9.1f} {t_form * 1e3:8.1f}  "
                  f"{t_plain / t_form:.2f}x", flush=True)
    print("whole networks (the same weights): without XLA; XLA with the plain layers, with the "
          "forms (as on this device), and with the edge-sum padding too (the generator's)")
    print(f"  {'network':15} {'pass':9} {'batch':>5} {'no XLA s':>8} {'plain s':>8} {'forms s':>8} "
          f"{'+pad s':>8}  {'forms/plain':>11} {'forms/no XLA':>12} {'+pad/forms':>10}")
    for net in (g, d):
        for pass_name, pass_fn, batch in PASSES:
            x = tf.random.uniform((batch, args.size, args.size, 3), -1, 1)
            training = pass_fn is train_pass
            call = lambda v, net=net, training=training: net(v, training=training)  # noqa: E731

            def compiled_within(context, call=call, net=net, pass_fn=pass_fn, x=x):
                with context:
                    run = pass_fn(call, net.trainable_variables, x, True)
                    run()  # trace and compile while the patch is in place
                return run

            runs = [pass_fn(call, net.trainable_variables, x, False), compiled_within(plain_layers()),
                    pass_fn(call, net.trainable_variables, x, True)]
            padded = any(isinstance(l, gk_layers.ReflectionPadding2D) for l in net.layers)
            if padded:
                runs.append(compiled_within(edge_sum_padding()))
            t_off, t_plain, t_forms, *t_pad = alternate(runs, rounds, seconds)
            pad = f"{t_pad[0]:8.3f}  " if padded else f"{'-':>8}  "
            pad_ratio = f"{t_forms / t_pad[0]:9.2f}x" if padded else f"{'-':>10}"
            print(f"  {net.name:15} {pass_name:9} {batch:5d} {t_off:8.3f} {t_plain:8.3f} {t_forms:8.3f} "
                  f"{pad}{t_plain / t_forms:10.2f}x {t_off / t_forms:11.2f}x {pad_ratio}", flush=True)


if __name__ == "__main__":
    main()
