"""The analytic FLOP count the benchmarks divide by (benchmarks/train_step.py): every speed
ratio of issue 8 rests on it, so it is checked against the formula written out by hand."""

import os
import re
import subprocess
import sys

import pytest

from ghibli_keras import models

from conftest import REPO

sys.path.insert(0, os.path.join(REPO, "benchmarks"))
from flops import conv_flops, conv_shapes, layer_flops  # noqa: E402
from train_step import PeakBeside  # noqa: E402


def conv(size_out, k, cin, cout):
    """2 FLOPs per multiply-add of a convolution with `size_out`² output positions."""
    return 2.0 * size_out**2 * k * k * cin * cout


@pytest.mark.parametrize("ngf, n_blocks, size", [(4, 2, 32), (8, 1, 48)])
def test_resnet_generator_flops(ngf, n_blocks, size):
    s = size
    want = (conv(s, 7, 3, ngf)  # stem
            + conv(s // 2, 3, ngf, 2 * ngf) + conv(s // 4, 3, 2 * ngf, 4 * ngf)  # down
            + 2 * n_blocks * conv(s // 4, 3, 4 * ngf, 4 * ngf)  # residual blocks
            # transposed convolutions, counted over their input positions
            + conv(s // 4, 3, 4 * ngf, 2 * ngf) + conv(s // 2, 3, 2 * ngf, ngf)
            + conv(s, 7, ngf, 3))  # head
    g = models.resnet_generator(ngf, n_blocks, seed=0)
    assert conv_flops(g, size) == pytest.approx(want, rel=1e-12)
    kinds = [type(layer).__name__ for layer, _, _ in conv_shapes(g, size)]
    assert kinds.count("UpConv2D") == 2 and kinds.count("NarrowConv2D") == 1
    assert kinds.count("ShallowConv2D") == 1 and kinds.count("DownConv2D") == 2


def test_discriminator_flops():
    d = models.patch_discriminator(4, 3, seed=0)
    shapes = conv_shapes(d, 64)
    # 4x4 convolutions: /2 to 32, 16, 8 (each after 1-pixel padding), then /1 twice: 7, 6
    outs = [o[1] for _, _, o in shapes]
    assert outs == [32, 16, 8, 7, 6]
    channels = [3, 4, 8, 16, 32, 1]
    want = sum(conv(h, 4, channels[i], channels[i + 1]) for i, h in enumerate(outs))
    assert conv_flops(d, 64) == pytest.approx(want, rel=1e-12)


def test_layer_flops_scale_with_batch():
    g = models.resnet_generator(4, 1, seed=0)
    layer, i, o = conv_shapes(g, 32)[0]
    assert layer_flops(layer, (3, *i[1:]), (3, *o[1:])) == 3 * layer_flops(layer, i, o)


def test_peak_beside_each_measurement_is_the_mean_of_the_peaks_around_it():
    measured = iter([100.0, 140.0, 90.0])
    peaks = PeakBeside(seconds=0.5, measure=lambda seconds: next(measured))
    assert peaks.around(lambda: "first") == ("first", 120.0)  # (100 + 140) / 2
    assert peaks.around(lambda: "second") == ("second", 115.0)  # 140 is reused as 'before'


# Each benchmark's smallest run, and a line its table must print: the scripts are developer
# tools run by hand, so this keeps them from rotting between the sessions that run them.
SMOKE_RUNS = [
    ("train_step.py", ["--quick", "--batches", "1", "--xla", "off", "--precision", "off"],
     r"tiny +1 +off +off +1 +[\d.]+ .* 0\.\d\d +[\d.]+ GiB"),
    ("train_step.py", ["--quick", "--batches", "1", "--xla", "off", "--precision", "off",
                       "--reference", "matmul", "--matmul-size", "512"],  # the GPU target's form
     r"peak: a \(512, 512\) @ \(512, 512\) bf16 matmul(.*\n)+tiny +1 +off +off +1 +[\d.]+ .* [\d.]+ GiB"),
    ("profile_step.py", ["--quick", "--xla", "off"], r"whole step: [\d.]+ s measured .* of peak"),
    ("inference.py", ["--quick", "--precisions", "off"], r"7,038 Kaggle photos .* \d+ min"),
    ("input_pipeline.py", ["--quick"], r"ratio pipeline / ceiling: +[\d.]+"),
    ("metrics.py", ["--images", "64"], r"scoring 64 images against \d+: [\d.]+ s"),
    ("xla_forms.py", ["--quick"], r"generator_g +fwd\+grad .*x"),
    ("kernel_gradient.py", ["--quick"], r"generator_g .* ratio [\d.]+"),
    ("jax_step.py", ["--quick"], r"tiny +1 +off +[\d.]+"),
]


@pytest.mark.slow
@pytest.mark.parametrize("script, args, printed", SMOKE_RUNS, ids=[s for s, _, _ in SMOKE_RUNS])
def test_each_benchmark_runs_and_prints_its_table(script, args, printed):
    if script == "jax_step.py":
        pytest.importorskip("jax")
    run = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", script), *args],
                         capture_output=True, text=True, timeout=600, cwd=REPO)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert re.search(printed, run.stdout), run.stdout[-2000:]
