"""Analytic FLOP counts of the networks and of a training step (no TensorFlow: the JAX
benchmark uses them too).

A convolution is 2·H_out·W_out·k²·C_in·C_out FLOPs per image (a transposed one
2·H_in·W_in·k²·C_in·C_out); a trained network costs 3× its forward pass (forward, input
gradients, weight gradients). A step runs G and F 4 times (6 with the identity loss), all
trained; the discriminators run 2 times inside the generator update (forward + input
gradients: 2×) and 4 times in their own updates (forward + weight gradients: 2×).
"""

from __future__ import annotations

import keras
import numpy as np

from ghibli_keras import models

CONVS = (keras.layers.Conv2D, keras.layers.Conv2DTranspose)  # UpConv2D, NarrowConv2D too


def conv_shapes(net: keras.Model, size: int) -> list:
    """[(layer, input shape, output shape)] of each convolution of `net` for one `size`×`size`
    image (shapes `(1, H, W, C)`)."""
    convs = [l for l in net.layers if isinstance(l, CONVS)]
    probe = keras.Model(net.inputs, [l.input for l in convs] + [l.output for l in convs])
    shapes = [tuple(t.shape) for t in probe([np.zeros((1, size, size, 3), "float32")])]
    return list(zip(convs, shapes[: len(convs)], shapes[len(convs):]))


def conv_groups(net: keras.Model, size: int) -> list:
    """The convolutions of `net` grouped by what their cost depends on: [(description, [(layer,
    input shape, output shape)] of the group)], in the network's order. The description reads
    like "conv 3x3/1 64x64x256->256" (`convT` for a transposed or upsampling convolution)."""
    groups = {}
    for layer, i, o in conv_shapes(net, size):
        key = (type(layer).__name__, i[1:], layer.filters, layer.kernel_size, layer.strides)
        groups.setdefault(key, []).append((layer, i, o))
    described = []
    for (_, shape, filters, kernel, strides), members in groups.items():
        short = "convT" if isinstance(members[0][0], keras.layers.Conv2DTranspose) else "conv"  # UpConv2D too
        desc = f"{short} {kernel[0]}x{kernel[1]}/{strides[0]} {shape[0]}x{shape[1]}x{shape[2]}->{filters}"
        described.append((desc, members))
    return described


def layer_flops(layer, input_shape, output_shape) -> float:
    """Forward FLOPs of one convolution (2 per multiply-add; a transposed convolution counted
    over its input positions, the zero taps of its stride not counted)."""
    kh, kw = layer.kernel_size
    b, cin, cout = input_shape[0], input_shape[-1], output_shape[-1]
    transposed = isinstance(layer, keras.layers.Conv2DTranspose)
    positions = input_shape[1] * input_shape[2] if transposed else output_shape[1] * output_shape[2]
    return 2.0 * b * positions * kh * kw * cin * cout


def conv_flops(net: keras.Model, size: int) -> float:
    """Forward FLOPs of the convolutions of `net` for one `size`×`size` image."""
    return sum(layer_flops(*shapes) for shapes in conv_shapes(net, size))


def step_flops(config, batch: int) -> float:
    nets = models.build_networks(config.model)
    size = config.data.image_size
    g = conv_flops(nets["generator_g"], size)
    d = conv_flops(nets["discriminator_x"], size)
    generator_passes = 4 + (2 if config.train.lambda_identity > 0 else 0)
    return batch * (generator_passes * 3 * g + (2 * 2 + 4 * 2) * d)
