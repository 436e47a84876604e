"""`--mixed-precision auto` and `--xla auto`: what they choose, per device and generator."""

import logging

import keras
import pytest
import tensorflow as tf

from ghibli_keras import strategy as strategies
from ghibli_keras.errors import InputError

INTEL_SPR = ("processor\t: 0\nvendor_id\t: GenuineIntel\n"
             "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n")
INTEL_EMR_VM = ("processor\t: 0\nvendor_id\t: GenuineIntel\n"  # AMX hidden by the hypervisor
                "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_fp16 avx512_vnni\n")
AMD_ZEN5 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n"
AMD_ZEN3 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu sse2 avx2\n"


def test_cpu_bf16_detection_reads_the_flags():
    assert strategies.cpu_has_bf16(INTEL_SPR)
    assert strategies.cpu_has_bf16(INTEL_EMR_VM) and strategies.cpu_has_bf16(AMD_ZEN5)
    assert not strategies.cpu_has_bf16(AMD_ZEN3)
    assert not strategies.cpu_has_bf16("")
    assert not strategies.cpu_has_bf16("model name\t: avx512_bf16 in a name is not a flag\n")


@pytest.mark.parametrize("cpuinfo, pays", [
    (INTEL_SPR, True),  # AMX
    (AMD_ZEN5, True),  # AVX512_BF16 at twice the fp32 FMA's work a cycle: the step 1.6-2.0x
    (INTEL_EMR_VM, False),  # AVX512_BF16 without AMX: the step 0.59-0.68x of float32's
    (AMD_ZEN3, False),  # no bf16 instructions: emulated
    ("", False),
])
def test_bf16_pays_where_measured_faster_than_float32(cpuinfo, pays):
    assert strategies.cpu_bf16_pays(cpuinfo) is pays


def test_auto_precision_on_a_cpu():
    cpu = tf.distribute.get_strategy()
    assert strategies.device_kind(cpu) == "cpu"
    assert strategies.auto_precision(cpu, cpuinfo=INTEL_SPR) == "bf16"
    assert strategies.auto_precision(cpu, cpuinfo=AMD_ZEN5) == "bf16"
    assert strategies.auto_precision(cpu, cpuinfo=INTEL_EMR_VM) == "off"
    assert strategies.auto_precision(cpu, cpuinfo=AMD_ZEN3) == "off"


def test_set_precision(float32_after):
    cpu = tf.distribute.get_strategy()
    expected = "mixed_bfloat16" if strategies.cpu_bf16_pays() else "float32"
    assert strategies.set_precision("auto", cpu) == expected
    assert strategies.set_precision("bf16", cpu) == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == "mixed_bfloat16"
    with pytest.raises(InputError, match="'bf32'"):
        strategies.set_precision("bf32", cpu)


@pytest.mark.parametrize("native", [True, False])
def test_fp16_on_a_cpu_warns_and_takes_xla(native, monkeypatch, caplog, float32_after):
    """float16 on a CPU: 1.46x float32's step with XLA, 200x without (TensorFlow's float16
    convolution gradients there are Eigen's), so it is said, and `--xla auto` is on for it."""
    cpu = tf.distribute.get_strategy()
    monkeypatch.setattr(strategies, "cpu_has_bf16", lambda cpuinfo=None: native)
    with caplog.at_level(logging.WARNING, logger="ghibli_keras"):
        assert strategies.set_precision("fp16", cpu) == "mixed_float16"
    assert "slower than float32" in caplog.text and "bf16 or off" in caplog.text
    for generator in ("resnet", "unet"):
        assert strategies.auto_xla(cpu, generator, ngf=64) is True
    assert strategies.use_xla("off", cpu, "resnet") is False  # asked for: as said


def test_auto_xla_follows_the_measurements():
    cpu = tf.distribute.get_strategy()
    assert strategies.use_xla("auto", cpu, "resnet")  # 1.7-2.1x faster steps on this CPU
    assert not strategies.use_xla("auto", cpu, "unet")  # 2x slower
    assert strategies.use_xla("on", cpu, "unet") and not strategies.use_xla("off", cpu)
    with pytest.raises(InputError, match="'yes'"):
        strategies.use_xla("yes", cpu)


@pytest.mark.parametrize("native", [True, False])
def test_auto_xla_is_off_for_native_bf16_on_a_cpu(native, monkeypatch, float32_after):
    """oneDNN runs bf16 convolutions with the CPU's bf16 instructions, XLA's CPU backend does
    not (paper step 3.8 s without XLA, 8.6 s with it); emulated bf16 is faster with XLA. On such
    a CPU float32 ResNets as wide as the paper's train faster without XLA too."""
    cpu = tf.distribute.get_strategy()
    monkeypatch.setattr(strategies, "cpu_has_bf16", lambda cpuinfo=None: native)
    assert strategies.auto_xla(cpu, "resnet", "mixed_bfloat16") is (not native)
    assert strategies.auto_xla(cpu, "resnet", "float32") is True
    assert strategies.auto_xla(cpu, "resnet", "float32", ngf=16) is True  # tiny: 1.4x with XLA
    # The paper's width: 1.21x without XLA.
    assert strategies.auto_xla(cpu, "resnet", "float32", ngf=64) is (not native)
    assert strategies.use_xla("auto", cpu, "resnet", ngf=64) is (not native)
    assert strategies.auto_xla(cpu, "unet", "float32") is False
    strategies.set_precision("bf16", cpu)  # the global policy, as training sets it
    assert strategies.use_xla("auto", cpu, "resnet") is (not native)
    assert strategies.use_xla("on", cpu, "resnet") is True


def test_xla_with_several_cpu_replicas(caplog):
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with caplog.at_level(logging.WARNING, logger="ghibli_keras"):
        assert not strategies.use_xla("auto", mirrored, "resnet")
    assert not caplog.records  # auto just chooses off
    with caplog.at_level(logging.WARNING, logger="ghibli_keras"):
        assert not strategies.use_xla("on", mirrored, "resnet")
    assert "unverified" in caplog.text  # asked for, refused aloud
