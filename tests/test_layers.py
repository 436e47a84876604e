"""The layers that run another, faster form (under XLA, or always for InstanceNormalization):
each must give the plain Keras layer's output and gradients, eager and compiled, serialise, and
keep older saved generators loading."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import ghibli_keras.layers as gk_layers
from ghibli_keras import models
from ghibli_keras.layers import (
    DownConv2D, InstanceNormalization, NarrowConv2D, ReflectionPadding2D, ShallowConv2D,
    TapGradConv2D, UpConv2D, in_xla_context, row_tap_kernel_gradient, tap_kernel_gradient,
)

from conftest import REPO

#: A resnet_generator(4, 1, seed=7) saved before UpConv2D and NarrowConv2D: its up-sampling is
#: Conv2DTranspose + Cropping2D and its head a Conv2D.
LEGACY_GENERATOR = os.path.join(REPO, "tests", "data", "resnet_generator_convtranspose.keras")


def outputs_and_gradients(fn, variables, x, jit_compile):
    """fn(x) and the gradients of a non-linear loss of it to x and `variables`."""

    def run(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
            loss = tf.reduce_sum(tf.sin(y) * y)
        return y, tape.gradient(loss, [x, *variables])

    return tf.function(run, jit_compile=jit_compile)(tf.constant(x))


def assert_same_in(policy, got, want):
    """`assert_same` for a layer with weights and bias computing in `policy`: in bf16 2% of the
    largest value, but 10% for the bias gradient, a bf16 sum of many terms of either sign
    whose order oneDNN's threads vary (4% apart from the reference seen on Zen 5)."""
    tolerances = [2e-2, 2e-2, 2e-2, 1e-1] if policy == "mixed_bfloat16" else [1e-5] * 4
    (y, grads), (y_ref, grads_ref) = got, want  # y, then the gradients of x, kernel and bias
    assert y.dtype == y_ref.dtype and len(grads) == len(grads_ref) == 3
    for a, b, tolerance in zip([y, *grads], [y_ref, *grads_ref], tolerances, strict=True):
        a, b = tf.cast(a, tf.float32), tf.cast(b, tf.float32)
        np.testing.assert_allclose(a, b, atol=tolerance * max(float(tf.reduce_max(tf.abs(b))), 1.0))


def share_weights(layer, reference, shape):
    """Builds `layer` and `reference` for inputs of `shape`, the reference with the layer's
    weights."""
    layer.build(shape)
    reference.build(shape)
    reference.set_weights(layer.get_weights())


def assert_same(got, want, rtol=1e-5):
    (y, grads), (y_ref, grads_ref) = got, want
    assert y.shape == y_ref.shape
    for a, b in zip([y, *grads], [y_ref, *grads_ref]):
        scale = float(tf.reduce_max(tf.abs(b)))
        np.testing.assert_allclose(a, b, atol=rtol * max(scale, 1.0))


def test_in_xla_context():
    assert not in_xla_context()  # eager
    seen = {}

    def probe(x):
        seen["xla"] = in_xla_context()
        return x

    tf.function(probe)(tf.ones(1))
    assert seen["xla"] is False
    tf.function(probe, jit_compile=True)(tf.ones(1))
    assert seen["xla"] is True


def test_without_tensorflows_helper_the_keras_form_runs(monkeypatch):
    """Where TensorFlow drops its internal XLA-context helper, in_xla_context says False and
    the layers run their Keras form under XLA too, with the same output."""
    from ghibli_keras import layers as gk_layers

    x = np.random.default_rng(1).normal(size=(1, 4, 5, 3)).astype("float32")
    up = UpConv2D(2, bias_initializer="random_normal")
    up.build(x.shape)
    want = outputs_and_gradients(up, up.trainable_variables, x, jit_compile=True)
    monkeypatch.setattr(gk_layers, "_xla_context_check", lambda: None)
    seen = {}

    def probe(v):
        seen["xla"] = in_xla_context()
        return up(v)

    got = outputs_and_gradients(probe, up.trainable_variables, x, jit_compile=True)
    assert seen["xla"] is False
    assert_same(got, want)


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("shape", [(2, 5, 7, 6), (1, 1, 1, 3), (1, 8, 3, 4)])
def test_up_conv_is_conv_transpose_without_first_row_and_column(shape, jit_compile):
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    up = UpConv2D(4, bias_initializer="random_normal")
    reference = keras.layers.Conv2DTranspose(4, 3, strides=2, padding="valid")
    share_weights(up, reference, x.shape)
    assert [w.shape for w in up.get_weights()] == [(3, 3, 4, shape[-1]), (4,)]
    got = outputs_and_gradients(up, up.trainable_variables, x, jit_compile)
    want = outputs_and_gradients(
        lambda v: reference(v)[:, 1:, 1:, :], reference.trainable_variables, x, jit_compile=False
    )
    assert got[0].shape == (shape[0], 2 * shape[1], 2 * shape[2], 4)
    assert_same(got, want)


@pytest.mark.parametrize("policy, gpu, form", [
    ("float32", False, True), ("mixed_bfloat16", False, True), ("float32", True, False)])
def test_up_conv_without_xla_on_a_cpu_takes_the_explicitly_padded_gradients(policy, gpu, form,
                                                                           monkeypatch):
    """On a CPU without XLA: the cropped transposed convolution with gradients through explicit
    padding, the reference's outputs and gradients, also traced with shapes unknown."""
    x = np.random.default_rng(12).normal(size=(1, 6, 5, 8)).astype("float32")
    up = UpConv2D(4, bias_initializer="random_normal", dtype=policy)
    reference = keras.layers.Conv2DTranspose(4, 3, strides=2, padding="valid", dtype=policy)
    share_weights(up, reference, x.shape)
    monkeypatch.setattr(gk_layers, "on_gpu", lambda: gpu)
    calls = spy(monkeypatch, UpConv2D, "_cropped_transpose")
    got = outputs_and_gradients(up, up.trainable_variables, x, jit_compile=False)
    cropped = lambda v: reference(v)[:, 1:, 1:, :]  # noqa: E731
    want = outputs_and_gradients(cropped, reference.trainable_variables, x, jit_compile=False)
    assert bool(calls) == form
    assert_same_in(policy, got, want)
    unknown = tf.function(lambda v: up(v), input_signature=[tf.TensorSpec([None, None, None, 8])])
    np.testing.assert_allclose(tf.cast(unknown(x), tf.float32), tf.cast(got[0], tf.float32),
                               atol=1e-2 if policy == "mixed_bfloat16" else 1e-5)


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("kernel, activation", [(7, None), ((4, 3), "tanh"), (1, None)])
def test_narrow_conv_is_conv2d(kernel, activation, jit_compile):
    x = np.random.default_rng(1).normal(size=(2, 13, 11, 5)).astype("float32")
    narrow = NarrowConv2D(3, kernel, activation=activation, bias_initializer="random_normal")
    reference = keras.layers.Conv2D(3, kernel, activation=activation)
    share_weights(narrow, reference, x.shape)
    got = outputs_and_gradients(narrow, narrow.trainable_variables, x, jit_compile)
    want = outputs_and_gradients(reference, reference.trainable_variables, x, jit_compile=False)
    assert_same(got, want)


def spy(monkeypatch, cls, name):
    """Records the arguments of each call of `cls.name` (while tracing) in the returned list."""
    calls, real = [], getattr(cls, name)

    def counted(self, *args):
        calls.append(args)
        return real(self, *args)

    monkeypatch.setattr(cls, name, counted)
    return calls


def against_reference(layer, reference, x, form, monkeypatch, *, gpu=False, training=None,
                      jit_compile=False):
    """Builds `layer` and `reference` with the layer's weights, sets `on_gpu` to `gpu`, spies
    `type(layer).form`, and runs both (the layer with `training` unless None, under XLA with
    `jit_compile`): `(whether the form ran, (y, gradients), (y_ref, gradients_ref))`."""
    share_weights(layer, reference, x.shape)
    monkeypatch.setattr(gk_layers, "on_gpu", lambda: gpu)
    calls = spy(monkeypatch, type(layer), form)
    run = layer if training is None else (lambda v: layer(v, training=training))
    got = outputs_and_gradients(run, layer.trainable_variables, x, jit_compile)
    want = outputs_and_gradients(reference, reference.trainable_variables, x, jit_compile=False)
    return bool(calls), got, want


@pytest.mark.parametrize("policy, gpu, form", [
    ("mixed_bfloat16", False, True), ("mixed_bfloat16", True, False), ("float32", False, True),
    ("float32", True, False)])
def test_narrow_conv_without_xla_uses_its_form_on_a_cpu(policy, gpu, form, monkeypatch):
    x = np.random.default_rng(7).normal(size=(2, 12, 10, 8)).astype("float32")
    narrow = NarrowConv2D(3, 5, bias_initializer="random_normal", dtype=policy)
    reference = keras.layers.Conv2D(3, 5, dtype=policy)
    ran, got, want = against_reference(narrow, reference, x, "_row_split_conv", monkeypatch,
                                       gpu=gpu)
    assert ran == form
    assert_same_in(policy, got, want)


@pytest.mark.parametrize("policy, jit_compile, gpu, form", [
    ("float32", False, False, True), ("mixed_bfloat16", False, False, True),
    ("float32", True, False, False), ("float32", False, True, False)])
@pytest.mark.parametrize("shape, kernel, filters", [((2, 13, 11, 5), 7, 3), ((1, 9, 8, 6), (4, 3), 1)])
def test_narrow_conv_training_on_a_cpu_takes_gradients_of_its_own(policy, jit_compile, gpu, form,
                                                                 shape, kernel, filters, monkeypatch):
    """Training on TensorFlow on a CPU without XLA: the input's gradient as a convolution of the
    padded output gradient with the flipped kernel, the kernel's by row_tap_kernel_gradient —
    the same as Conv2D's; under XLA or on a GPU not taken."""
    x = np.random.default_rng(3).normal(size=shape).astype("float32")
    narrow = NarrowConv2D(filters, kernel, activation="tanh", bias_initializer="random_normal",
                          dtype=policy)
    reference = keras.layers.Conv2D(filters, kernel, activation="tanh", dtype=policy)
    ran, got, want = against_reference(narrow, reference, x, "_onednn_conv", monkeypatch, gpu=gpu,
                                       training=True, jit_compile=jit_compile)
    assert ran == form
    assert_same_in(policy, got, want)


@pytest.mark.parametrize("shape, kernel, filters", [
    ((2, 9, 11, 5), (3, 3), 6), ((1, 10, 7, 4), (4, 2), 3), ((3, 6, 6, 2), (1, 1), 4),
    ((1, 7, 7, 3), (7, 7), 2)])
@pytest.mark.parametrize("gradient", [tap_kernel_gradient, row_tap_kernel_gradient])
def test_tap_kernel_gradients_are_conv2d_backprop_filter(shape, kernel, filters, gradient):
    """Batches, non-square pictures and kernels, the kernel as large as the picture; shapes
    known (eagerly) and batch, H and W unknown while tracing, as in a model built on
    `(None, None, None, C)` inputs."""
    rng = np.random.default_rng(8)
    kh, kw = kernel
    x = rng.normal(size=shape).astype("float32")
    dy = rng.normal(size=(shape[0], shape[1] - kh + 1, shape[2] - kw + 1, filters)).astype("float32")
    want = tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=[kh, kw, shape[3], filters],
                                           out_backprop=dy, strides=[1, 1, 1, 1], padding="VALID")
    specs = [tf.TensorSpec([None, None, None, shape[3]]), tf.TensorSpec([None, None, None, filters])]
    traced = tf.function(lambda x, dy: gradient(x, dy, kh, kw), input_signature=specs)
    for got in (gradient(tf.constant(x), tf.constant(dy), kh, kw), traced(x, dy)):
        assert got.shape == (kh, kw, shape[3], filters)
        np.testing.assert_allclose(got, want, atol=1e-4 * float(tf.reduce_max(tf.abs(want))))


def test_tap_kernel_gradient_of_known_shapes_traces_no_shape_arithmetic():
    """Shapes known while tracing (as in training) give each tap constant row bounds: no
    arithmetic on shapes in the graph (177 ops a call when each tap computed its bounds, 61
    now; 6 s more to trace the paper step)."""
    specs = [tf.TensorSpec([2, 9, 11, 5]), tf.TensorSpec([2, 7, 9, 6])]
    graph = tf.function(lambda x, dy: tap_kernel_gradient(x, dy, 3, 3)).get_concrete_function(*specs).graph
    ops = [op.type for op in graph.get_operations()]
    assert ops.count("MatMul") == 9, ops
    assert not {"Shape", "Mul", "AddV2", "Sub"} & set(ops), ops


@pytest.mark.parametrize("policy, training, jit_compile, gpu, small, form", [
    ("mixed_bfloat16", True, False, False, True, True),
    ("mixed_bfloat16", False, False, False, True, False),  # inference
    ("mixed_bfloat16", True, True, False, True, False),  # XLA
    ("mixed_bfloat16", True, False, True, True, False),  # a GPU
    ("mixed_bfloat16", True, False, False, False, False),  # too few channels
    ("float32", True, False, False, True, False),
])
def test_tap_grad_conv_is_conv2d(policy, training, jit_compile, gpu, small, form, monkeypatch):
    """The tap-by-tap kernel gradient runs exactly when training in bf16 on a CPU without XLA
    with enough channels (`small`: the threshold lowered to these test's 8 x 6); one thread, so
    no strips."""
    x = np.random.default_rng(9).normal(size=(2, 11, 9, 8)).astype("float32")
    conv = TapGradConv2D(6, 3, activation="relu", bias_initializer="random_normal", dtype=policy)
    reference = keras.layers.Conv2D(6, 3, activation="relu", dtype=policy)
    if small:
        monkeypatch.setattr(TapGradConv2D, "MIN_CHANNEL_PRODUCT", 8 * 6)
    monkeypatch.setattr(gk_layers, "intra_op_threads", lambda: 1)
    ran, got, want = against_reference(conv, reference, x, "_onednn_conv", monkeypatch, gpu=gpu,
                                       training=training, jit_compile=jit_compile)
    assert ran == form
    assert_same_in(policy, got, want)


@pytest.mark.parametrize("shape, kernel, n", [
    ((1, 10, 7, 4), (3, 3), 2), ((2, 11, 9, 3), (4, 2), 2), ((1, 9, 6, 2), (3, 1), 7),
    ((3, 5, 5, 2), (1, 1), 5),
    ((1, 9, 7, 4), (3, 3), 2), ((2, 12, 5, 3), (4, 4), 4)])  # 7 rows in 2 strips, 9 in 4
@pytest.mark.parametrize("bias", [False, True])
def test_strip_conv_is_conv2d(shape, kernel, n, bias):
    """Batches of one and more, non-square kernels, a strip per output row, rows that do not
    part evenly; shapes known (eagerly) and unknown while tracing."""
    rng = np.random.default_rng(10)
    x = rng.normal(size=shape).astype("float32")
    k = rng.normal(size=(*kernel, shape[3], 5)).astype("float32")
    b = rng.normal(size=(5,)).astype("float32") if bias else None
    want = tf.nn.conv2d(x, k, 1, "VALID") + (0 if b is None else b)
    spec = [tf.TensorSpec([None, None, None, shape[3]])]
    traced = tf.function(lambda v: gk_layers.strip_conv(v, tf.constant(k), n, b), input_signature=spec)
    for got in (gk_layers.strip_conv(tf.constant(x), tf.constant(k), n, b), traced(x)):
        np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("threads, shape, n, strips", [
    (2, (1, 10, 7, 4), 2, True),  # 8 output rows: 2 strips of 4
    (4, (2, 10, 7, 4), 2, True),  # 2 images on 4 threads: 2 strips each
    (2, (2, 10, 7, 4), 1, False),  # as many images as threads
    (2, (1, 9, 7, 4), 2, True),  # 7 output rows: strips of 4, the last padded
    (2, (1, 7, 7, 4), 2, True),  # 5 output rows: strips of 3, the kernel's height
    (2, (1, 6, 7, 4), 2, False),  # strips of 2 rows, fewer than the kernel's 3
    (1, (1, 10, 7, 4), 1, False)])
@pytest.mark.parametrize("policy, training", [
    ("float32", False), ("float32", True), ("mixed_bfloat16", True)])
def test_tap_grad_conv_cuts_a_small_batch_into_strips(threads, shape, n, strips, policy, training,
                                                      monkeypatch):
    """Row strips exactly when the batch is smaller than the threads and the output rows make
    strips of at least kh rows; Conv2D's outputs and gradients either way, with shapes known
    and (both forms in the graph) unknown while tracing."""
    x = np.random.default_rng(11).normal(size=shape).astype("float32")
    conv = TapGradConv2D(6, 3, activation="relu", bias_initializer="random_normal", dtype=policy)
    reference = keras.layers.Conv2D(6, 3, activation="relu", dtype=policy)
    share_weights(conv, reference, x.shape)
    monkeypatch.setattr(gk_layers, "on_gpu", lambda: False)
    monkeypatch.setattr(gk_layers, "intra_op_threads", lambda: threads)
    monkeypatch.setattr(TapGradConv2D, "MIN_CHANNEL_PRODUCT", 4 * 6)  # taps too in bf16
    assert conv._strips(tf.constant(x)) == (n, strips)
    strip_calls = []
    real_strip_conv = gk_layers.strip_conv
    monkeypatch.setattr(gk_layers, "strip_conv", lambda *a: strip_calls.append(a) or real_strip_conv(*a))
    got = outputs_and_gradients(lambda v: conv(v, training=training), conv.trainable_variables, x,
                                jit_compile=False)
    want = outputs_and_gradients(reference, reference.trainable_variables, x, jit_compile=False)
    assert bool(strip_calls) == strips
    assert_same_in(policy, got, want)
    tolerance = 2e-2 if policy == "mixed_bfloat16" else 1e-5
    spec = [tf.TensorSpec([None, None, None, shape[3]])]
    unknown = tf.function(lambda v: conv(v, training=training), input_signature=spec)
    np.testing.assert_allclose(tf.cast(unknown(x), tf.float32), tf.cast(got[0], tf.float32),
                               atol=tolerance * max(float(tf.reduce_max(tf.abs(got[0]))), 1.0))


@pytest.mark.parametrize("jit_compile, training, gpu", [
    (False, True, False), (True, False, False), (True, True, False), (True, True, True)])
@pytest.mark.parametrize("shape, kernel", [
    ((2, 9, 11, 5), 3), ((1, 10, 7, 4), 4), ((1, 8, 8, 3), 2), ((1, 9, 9, 3), (1, 4))])
def test_down_conv_is_stride_2_conv2d(shape, kernel, jit_compile, training, gpu, monkeypatch):
    """Even and odd sizes, kernels up to 4; the space-to-depth form runs exactly when training
    under XLA, on a CPU or a GPU."""
    x = np.random.default_rng(5).normal(size=shape).astype("float32")
    down = DownConv2D(6, kernel, bias_initializer="random_normal")
    reference = keras.layers.Conv2D(6, kernel, strides=2)
    ran, got, want = against_reference(down, reference, x, "_space_to_depth_conv", monkeypatch,
                                       gpu=gpu, training=training, jit_compile=jit_compile)
    assert ran == (jit_compile and training)
    assert_same(got, want)


@pytest.mark.parametrize("jit_compile, gpu", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("shape, kernel", [((2, 13, 11, 3), 7), ((1, 9, 8, 2), (3, 5)), ((1, 4, 4, 3), 1)])
def test_shallow_conv_is_conv2d(shape, kernel, jit_compile, gpu, monkeypatch):
    x = np.random.default_rng(6).normal(size=shape).astype("float32")
    shallow = ShallowConv2D(5, kernel, activation="relu", bias_initializer="random_normal")
    reference = keras.layers.Conv2D(5, kernel, activation="relu")
    ran, got, want = against_reference(shallow, reference, x, "_row_stack_conv", monkeypatch,
                                       gpu=gpu, jit_compile=jit_compile)
    assert ran == jit_compile  # on a CPU or a GPU
    assert_same(got, want)


@pytest.mark.parametrize("jit_compile, gpu, form", [
    (False, False, "_gathered"), (False, True, "_reflect"), (True, False, "_reflect"),
    (True, True, "_edge_sums"),
])
@pytest.mark.parametrize("padding, shape", [(1, (2, 5, 7, 3)), (3, (1, 8, 4, 2)), (2, (1, 3, 6, 1))])
def test_reflection_padding_is_numpy_reflect(padding, shape, jit_compile, gpu, form, monkeypatch):
    """Each form (the gather on oneDNN, the edge sums under XLA on a GPU) is
    np.pad(mode="reflect"), and its gradients are ops.pad's."""
    x = np.random.default_rng(2).normal(size=shape).astype("float32")
    p = padding
    plain = lambda t: keras.ops.pad(t, [[0, 0], [p, p], [p, p], [0, 0]], mode="reflect")  # noqa: E731
    want = outputs_and_gradients(plain, [], x, jit_compile=False)
    monkeypatch.setattr(gk_layers, "on_gpu", lambda: gpu)
    for unused in {"_gathered", "_reflect", "_edge_sums"} - {form}:  # must not be traced
        monkeypatch.setattr(ReflectionPadding2D, unused, lambda self, x: 1 / 0)
    got = outputs_and_gradients(ReflectionPadding2D(padding), [], x, jit_compile)
    np.testing.assert_array_equal(got[0], np.pad(x, [(0, 0), (p, p), (p, p), (0, 0)], mode="reflect"))
    assert_same(got, want)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_reflection_padding_gathered_with_unknown_sizes(dtype):
    """The gather form where only the run knows B, H and W (as translate and the SavedModel
    trace), in float32 and bfloat16: np.pad's values, ops.pad's gradient."""
    pad = ReflectionPadding2D(2)
    x = tf.constant(np.random.default_rng(3).normal(size=(2, 6, 9, 3)), dtype)
    weights = tf.range(1.0, 14.0)[None, None, :, None]  # (1, 1, W + 4, 1): a gradient per column

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], dtype)])
    def run(t):
        with tf.GradientTape() as tape:
            tape.watch(t)
            y = pad(t)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) ** 2 * weights)
        return y, tape.gradient(loss, t)

    y, dx = run(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y_ref = tf.pad(x, [[0, 0], [2, 2], [2, 2], [0, 0]], mode="REFLECT")
        loss = tf.reduce_sum(tf.cast(y_ref, tf.float32) ** 2 * weights)
    np.testing.assert_array_equal(tf.cast(y, tf.float32), tf.cast(y_ref, tf.float32))
    # bf16: the loss's gradient rounds apart in a graph and eagerly (one bf16 step at most)
    rtol = 1e-2 if dtype == "bfloat16" else 1e-6
    np.testing.assert_allclose(tf.cast(dx, tf.float32), tf.cast(tape.gradient(loss, x), tf.float32),
                               rtol=rtol)


def test_reflection_padding_too_small_input_names_the_size():
    with pytest.raises(ValueError, match=r"ReflectionPadding2D\(3\) needs inputs larger than 3 pixels, got 3"):
        ReflectionPadding2D(3)(np.zeros((1, 3, 8, 1), "float32"))


@pytest.mark.parametrize("jit_compile, gpu", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("batch", [1, 2])
def test_instance_norm_is_group_norm_with_a_group_per_channel(affine, jit_compile, gpu, batch,
                                                             monkeypatch):
    """Eager: TensorFlow's fused batch norm of each image (batch 2: split apart); XLA:
    moments over H and W (on a GPU the variance as E[x²] - E[x]²)."""
    monkeypatch.setattr(gk_layers, "on_gpu", lambda: gpu)
    x = np.random.default_rng(4).normal(2.0, 3.0, size=(batch, 7, 5, 6)).astype("float32")
    init = dict(gamma_initializer="random_normal", beta_initializer="random_normal")
    norm = InstanceNormalization(center=affine, scale=affine, **init)
    reference = keras.layers.GroupNormalization(groups=-1, epsilon=1e-5, center=affine, scale=affine)
    norm.build(x.shape)
    reference.build(x.shape)
    assert norm.groups == 6 and len(norm.weights) == (2 if affine else 0)
    reference.set_weights(norm.get_weights())
    got = outputs_and_gradients(norm, norm.trainable_variables, x, jit_compile)
    want = outputs_and_gradients(reference, reference.trainable_variables, x, jit_compile=False)
    assert_same(got, want)
    if not affine:
        np.testing.assert_allclose(np.std(got[0], axis=(1, 2)), 1.0, atol=1e-3)


@pytest.mark.parametrize("affine", [False, True])
def test_instance_norm_of_an_unknown_batch_is_group_norm(affine, monkeypatch):
    """Batch unknown when traced (as translate and the SavedModel trace it): the fused norm
    image after image in a while loop, outputs and gradients as GroupNormalization's."""
    loops = []
    each_image = gk_layers._each_image
    monkeypatch.setattr(gk_layers, "_each_image", lambda *a: loops.append(1) or each_image(*a))
    x = np.random.default_rng(6).normal(-1.0, 2.0, size=(3, 6, 5, 4)).astype("float32")
    init = dict(gamma_initializer="random_normal", beta_initializer="random_normal")
    norm = InstanceNormalization(center=affine, scale=affine, **init)
    reference = keras.layers.GroupNormalization(groups=-1, epsilon=1e-5, center=affine, scale=affine)
    share_weights(norm, reference, x.shape)

    @tf.function(input_signature=[tf.TensorSpec([None, 6, 5, 4], tf.float32)])
    def run(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = norm(x)
            loss = tf.reduce_sum(tf.sin(y) * y)
        assert y.shape.as_list() == [None, 6, 5, 4]
        return y, tape.gradient(loss, [x, *norm.trainable_variables])

    got = run(tf.constant(x))
    assert loops == [1]
    assert_same(got, outputs_and_gradients(reference, reference.trainable_variables, x, False))


def test_instance_norm_with_unknown_sizes():
    """As translate traces it: batch, height and width unknown until run time."""
    norm = InstanceNormalization(center=True, scale=True, beta_initializer="random_normal")
    x = np.random.default_rng(5).normal(size=(3, 6, 4, 5)).astype("float32")
    spec = tf.TensorSpec([None, None, None, 5], tf.float32)
    traced = tf.function(norm, input_signature=[spec])
    np.testing.assert_allclose(traced(x), norm._moments(x), atol=1e-5)
    np.testing.assert_allclose(traced(x[:1]), norm._moments(x[:1]), atol=1e-5)


def test_instance_norm_config_and_refusals():
    norm = InstanceNormalization(epsilon=1e-3, center=True, scale=True, name="n")
    norm.build((None, 4, 4, 8))
    config = norm.get_config()
    assert config["groups"] == 8  # as GroupNormalization saves it: the built group count
    copy = InstanceNormalization.from_config(config)
    copy.build((None, 4, 4, 8))
    assert copy.get_config() == config
    with pytest.raises(ValueError, match="groups must be -1 or 8, got groups=2"):
        InstanceNormalization(groups=2).build((None, 4, 4, 8))
    with pytest.raises(ValueError, match="axis=-1.*got axis=1"):
        InstanceNormalization(axis=1)


def test_layers_without_bias():
    x = np.random.default_rng(2).normal(size=(1, 6, 6, 4)).astype("float32")
    for layer in (UpConv2D(2, use_bias=False), NarrowConv2D(2, 3, use_bias=False),
                  ShallowConv2D(2, 3, use_bias=False), DownConv2D(2, 3, use_bias=False),
                  TapGradConv2D(2, 3, use_bias=False)):
        eager = layer(x)
        compiled = tf.function(lambda v, layer=layer: layer(v, training=True), jit_compile=True)(tf.constant(x))
        np.testing.assert_allclose(compiled, eager, atol=1e-5)
        assert len(layer.weights) == 1


def test_mixed_bfloat16_under_xla():
    x = np.random.default_rng(3).normal(size=(1, 6, 6, 8)).astype("float32")
    policy = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        layers_ = [UpConv2D(4), NarrowConv2D(3, 3), ShallowConv2D(4, 3), DownConv2D(4, 3),
                   InstanceNormalization(center=True, scale=True)]
    finally:
        keras.mixed_precision.set_dtype_policy(policy)
    for layer in layers_:
        eager = layer(x)
        compiled = tf.function(lambda v, layer=layer: layer(v, training=True), jit_compile=True)(tf.constant(x))
        assert eager.dtype == compiled.dtype == tf.bfloat16
        assert all(w.dtype == "float32" for w in layer.weights)  # master weights stay float32
        scale = float(tf.reduce_max(tf.abs(tf.cast(eager, tf.float32))))
        np.testing.assert_allclose(tf.cast(compiled, tf.float32), tf.cast(eager, tf.float32),
                                   atol=0.02 * scale)


def test_configs_round_trip():
    up = UpConv2D(5, use_bias=False, name="up")
    assert "kernel_size" not in up.get_config() and "strides" not in up.get_config()
    assert UpConv2D.from_config(up.get_config()).get_config() == up.get_config()
    narrow = NarrowConv2D(3, (7, 5), activation="tanh", name="head")
    copy = NarrowConv2D.from_config(narrow.get_config())
    assert copy.get_config() == narrow.get_config() and copy.kernel_size == (7, 5)
    for layer in (ShallowConv2D(8, 7, name="stem"), DownConv2D(8, (3, 4), use_bias=False),
                  TapGradConv2D(8, (3, 2), activation="relu", name="block")):
        copy = type(layer).from_config(layer.get_config())
        assert copy.get_config() == layer.get_config() and copy.kernel_size == layer.kernel_size
    assert DownConv2D(8, 3).get_config()["strides"] == (2, 2)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: UpConv2D(4, strides=1), "UpConv2D fixes .*do not pass strides"),
        (lambda: UpConv2D(4, kernel_size=5, padding="same"), "do not pass kernel_size, padding"),
        (lambda: NarrowConv2D(3, 7, strides=2), r"strides=\(1, 1\); got strides=\(2, 2\)"),
        (lambda: NarrowConv2D(3, 7, padding="same"), "padding='valid'; got padding='same'"),
        (lambda: ShallowConv2D(8, 7, strides=2), r"ShallowConv2D has strides=\(1, 1\)"),
        (lambda: TapGradConv2D(8, 3, padding="same"), r"TapGradConv2D has padding='valid'"),
        (lambda: DownConv2D(8, 3, strides=1), r"DownConv2D has strides=\(2, 2\); got strides=\(1, 1\)"),
        (lambda: DownConv2D(8, 5), r"at most 4x4; got kernel_size=5"),
        (lambda: DownConv2D(8, (3, 0)), r"got kernel_size=\(3, 0\)"),
    ],
)
def test_fixed_arguments_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_generator_uses_them_and_compiles_to_the_same_result():
    g = models.resnet_generator(4, 1, seed=5)
    assert isinstance(g.get_layer("up1_conv"), UpConv2D)
    assert isinstance(g.get_layer("head_conv"), NarrowConv2D)
    assert isinstance(g.get_layer("stem_norm"), InstanceNormalization)
    assert isinstance(g.get_layer("stem_conv"), ShallowConv2D)
    assert isinstance(g.get_layer("down1_conv"), DownConv2D)
    assert isinstance(g.get_layer("block1_conv2"), TapGradConv2D)
    x = tf.random.uniform((2, 16, 24, 3), -1, 1, seed=0)
    for training in (False, True):  # training: DownConv2D's form too
        compiled = tf.function(lambda v: g(v, training=training), jit_compile=True)(x)
        np.testing.assert_allclose(compiled, g(x, training=training), atol=1e-5)


def test_generator_training_in_bf16_takes_the_tap_gradients(monkeypatch):
    """In a model, training in bf16 on a CPU without XLA: the residual convolutions' kernel
    gradients tap by tap (threshold lowered to the tiny generator's 16 x 16 channels), the
    same gradients as the plain form's within bf16 rounding."""
    policy = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        g = models.resnet_generator(4, 2, seed=5)
    finally:
        keras.mixed_precision.set_dtype_policy(policy)
    monkeypatch.setattr(gk_layers, "on_gpu", lambda: False)
    monkeypatch.setattr(gk_layers, "intra_op_threads", lambda: 1)
    calls = spy(monkeypatch, TapGradConv2D, "_onednn_conv")
    x = np.random.default_rng(3).uniform(-1, 1, size=(2, 16, 12, 3)).astype("float32")
    variables = g.trainable_variables
    monkeypatch.setattr(TapGradConv2D, "MIN_CHANNEL_PRODUCT", 10**12)
    _, want = outputs_and_gradients(lambda v: g(v, training=True), variables, x, jit_compile=False)
    assert not calls
    monkeypatch.setattr(TapGradConv2D, "MIN_CHANNEL_PRODUCT", 16 * 16)
    _, got = outputs_and_gradients(lambda v: g(v, training=True), variables, x, jit_compile=False)
    assert len(calls) == 4  # 2 blocks x 2 convolutions
    for variable, a, b in zip(["x", *(v.path for v in variables)], got, want, strict=True):
        if "block" in variable and variable.endswith("kernel"):
            scale = float(tf.reduce_max(tf.abs(b)))
            np.testing.assert_allclose(a, b, atol=0.03 * scale, err_msg=variable)


def test_discriminator_uses_them_and_compiles_to_the_same_result(monkeypatch):
    d = models.patch_discriminator(4, 3, seed=5)
    assert [type(d.get_layer(f"layer{i}_conv")).__name__ for i in (1, 2, 3, 4)] == [
        "DownConv2D", "DownConv2D", "DownConv2D", "TapGradConv2D"]
    assert isinstance(d.get_layer("head_conv"), NarrowConv2D)
    calls = spy(monkeypatch, DownConv2D, "_space_to_depth_conv")
    x = tf.random.uniform((2, 64, 48, 3), -1, 1, seed=0)
    compiled = tf.function(lambda v: d(v, training=True), jit_compile=True)(x)
    assert len(calls) == 3  # the training flag reaches the layers inside the model
    np.testing.assert_allclose(compiled, d(x, training=True), atol=1e-5)


def test_generators_saved_before_load_and_match(tmp_path):
    legacy = keras.saving.load_model(LEGACY_GENERATOR)
    names = {type(layer).__name__ for layer in legacy.layers}
    assert {"Conv2DTranspose", "Cropping2D"} <= names and "UpConv2D" not in names
    current = models.resnet_generator(4, 1, seed=7, name="generator_g")  # same seed, same weights
    x = tf.random.uniform((2, 16, 24, 3), -1, 1, seed=1)
    np.testing.assert_allclose(current(x), legacy(x), atol=1e-6)
    current.save(tmp_path / "g.keras")
    np.testing.assert_allclose(keras.saving.load_model(tmp_path / "g.keras")(x), legacy(x), atol=1e-6)


def test_docstring_examples():
    import doctest

    from ghibli_keras import layers as gk_layers

    result = doctest.testmod(gk_layers)
    assert result.failed == 0 and result.attempted >= 4
