"""Choosing where training runs: the `tf.distribute` strategy, mixed precision and XLA.

`auto()` picks, in order: `MultiWorkerMirroredStrategy` when `TF_CONFIG` names a cluster of
several tasks; a TPU (Kaggle's TPU VMs, then the older TPU runtime); `MirroredStrategy` over
several GPUs; one GPU; the CPU. Every choice is logged.
"""

from __future__ import annotations

import logging
from typing import Optional

import keras
import tensorflow as tf

from .config import XLA_CHOICES, tf_config
from .errors import InputError

log = logging.getLogger("ghibli_keras")

POLICIES = {"bf16": "mixed_bfloat16", "fp16": "mixed_float16", "off": "float32"}


def _cluster_tasks() -> int:
    """Number of tasks in TF_CONFIG's cluster (0 without TF_CONFIG)."""
    return sum(len(tasks) for tasks in tf_config().get("cluster", {}).values())


def _tpu() -> Optional[tf.distribute.Strategy]:
    """A TPUStrategy when a TPU is reachable, else None."""
    for kwargs in ({"tpu": "local"}, {}):  # TPU VMs (Kaggle's now), then the TPU-node runtime
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(**kwargs)
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            return tf.distribute.TPUStrategy(resolver)
        except (ValueError, RuntimeError, tf.errors.OpError, KeyError):
            continue
    return None


def auto() -> tf.distribute.Strategy:
    """The best strategy for this machine (see the module docstring)."""
    if _cluster_tasks() > 1:
        return get("multiworker")
    tpu = _tpu()
    if tpu is not None:
        log.info("strategy: TPU with %d cores", tpu.num_replicas_in_sync)
        return tpu
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return get("mirrored")
    if gpus:
        return get("gpu")
    return get("cpu")


def get(name: str = "auto") -> tf.distribute.Strategy:
    """A strategy by name: auto | cpu | gpu | mirrored | tpu | multiworker."""
    if name == "auto":
        return auto()
    if name == "cpu":
        log.info("strategy: CPU (default strategy)")
        return tf.distribute.get_strategy()
    if name == "gpu":
        if not tf.config.list_logical_devices("GPU"):
            raise InputError("--strategy gpu: no GPU is visible to TensorFlow")
        log.info("strategy: one GPU")
        return tf.distribute.OneDeviceStrategy("/gpu:0")
    if name == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
        log.info("strategy: MirroredStrategy over %d devices", strategy.num_replicas_in_sync)
        return strategy
    if name == "tpu":
        strategy = _tpu()
        if strategy is None:
            raise InputError("--strategy tpu: no TPU found (on Kaggle, choose a TPU accelerator)")
        log.info("strategy: TPU with %d cores", strategy.num_replicas_in_sync)
        return strategy
    if name == "multiworker":
        if _cluster_tasks() < 1:
            raise InputError("--strategy multiworker needs TF_CONFIG naming the cluster and this task")
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        log.info(
            "strategy: MultiWorkerMirroredStrategy, %d replicas in sync, this is %s",
            strategy.num_replicas_in_sync,
            task_description(),
        )
        return strategy
    raise InputError(f"unknown strategy {name!r}: auto, cpu, gpu, mirrored, tpu or multiworker")


def task_description() -> str:
    task = tf_config().get("task", {})
    return f"{task.get('type', 'worker')} {task.get('index', 0)}"


def is_chief() -> bool:
    """True for the task that writes checkpoints, logs and pictures: the `chief`, or worker 0
    when the cluster has no chief, or the only process when there is no cluster."""
    config = tf_config()
    if not config:
        return True
    task = config.get("task", {})
    if "chief" in config.get("cluster", {}):
        return task.get("type") == "chief"
    return task.get("type", "worker") == "worker" and int(task.get("index", 0)) == 0


def _cpuinfo(cpuinfo: Optional[str]) -> tuple[str, set]:
    """(vendor_id, flags) from /proc/cpuinfo's text, or `cpuinfo` (for tests); ("", set())
    where it cannot be read."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return "", set()
    vendor, flags = "", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "vendor_id":
            vendor = value.strip()
        elif key.strip() == "flags":
            flags.update(value.split())
    return vendor, flags


def cpu_has_bf16(cpuinfo: Optional[str] = None) -> bool:
    """Whether the CPU has bfloat16 instructions (AVX512_BF16 or AMX-BF16), from the `flags`
    of /proc/cpuinfo (or `cpuinfo`, for tests): oneDNN then runs bf16 convolutions with them,
    where XLA's CPU backend does not. Without them TensorFlow emulates bf16, which measured
    4-16x slower per step than float32. Whether they are also faster than float32:
    `cpu_bf16_pays`."""
    return bool(_cpuinfo(cpuinfo)[1] & {"avx512_bf16", "amx_bf16"})


def cpu_bf16_pays(cpuinfo: Optional[str] = None) -> bool:
    """Whether this CPU computes bfloat16 faster than float32: with AMX-BF16 (Intel's matrix
    units), or with AVX512_BF16 on an AMD CPU, whose VDPBF16PS does twice the work of an fp32
    FMA at the same rate (a 2-core Zen 5: oneDNN's bf16 convolutions 2.0-3.0x its fp32 ones,
    the paper step 1.6-2.0x). Intel's AVX512_BF16 without AMX (Cooper Lake; Sapphire and
    Emerald Rapids where a VM hides AMX) does no more work a cycle than fp32 FMAs: on a 2-core
    Emerald Rapids oneDNN's bf16 convolutions and matrix product ran at 0.52-0.68x of float32's
    best rate and the paper step at 0.59-0.68x of float32's (benchmarks/RESULTS.md)."""
    vendor, flags = _cpuinfo(cpuinfo)
    return "amx_bf16" in flags or ("avx512_bf16" in flags and vendor == "AuthenticAMD")


def device_kind(strategy: tf.distribute.Strategy) -> str:
    """"tpu", "gpu" or "cpu": what the strategy's replicas compute on."""
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "tpu"
    try:
        devices = strategy.extended.worker_devices
    except RuntimeError:  # the default strategy: TensorFlow places ops on a GPU if there is one
        devices = ()
    if any("GPU" in d.upper() for d in devices):
        return "gpu"
    if not devices and tf.config.list_logical_devices("GPU"):
        return "gpu"
    return "cpu"


def _gpus_have_bf16() -> bool:
    """Ampere (compute capability 8.0) and later have bf16 tensor cores."""
    gpus = tf.config.list_physical_devices("GPU")
    capabilities = [tf.config.experimental.get_device_details(g).get("compute_capability", (0, 0))
                    for g in gpus]
    return bool(capabilities) and all(tuple(c) >= (8, 0) for c in capabilities)


def auto_precision(strategy: tf.distribute.Strategy, cpuinfo: Optional[str] = None) -> str:
    """`--mixed-precision auto`: bf16 where the hardware computes it faster than float32 (TPU,
    GPUs from Ampere on, CPUs with AMX or AMD's AVX512_BF16: `cpu_bf16_pays`), else off. fp16
    is never chosen automatically (it needs loss scaling; ask for it on older GPUs)."""
    kind = device_kind(strategy)
    if kind == "tpu":
        return "bf16"
    if kind == "gpu":
        return "bf16" if _gpus_have_bf16() else "off"
    return "bf16" if cpu_bf16_pays(cpuinfo) else "off"


def warn_fp16_on_a_cpu(choice: str, strategy: tf.distribute.Strategy) -> None:
    """Logs a warning when `--mixed-precision` `choice` is fp16 and `strategy` computes on a
    CPU, where float16 is slower than float32 (an Emerald Rapids VM with AVX512_FP16,
    benchmarks/RESULTS.md): a convolution's forward pass at 0.66x float32's rate without XLA,
    about float32's with it; the tiny preset's training step 1.46x float32's time with XLA and
    200x without (TensorFlow's float16 convolution gradients on a CPU are Eigen's)."""
    if choice == "fp16" and device_kind(strategy) == "cpu":
        log.warning(
            "--mixed-precision fp16 on a CPU is slower than float32 (convolutions at 0.66x "
            "float32's rate without XLA, at best float32's with it; training steps 1.5x "
            "float32's time with XLA, 200x without): use bf16 or off on a CPU"
        )


def set_precision(choice: str, strategy: tf.distribute.Strategy) -> str:
    """Sets the global Keras dtype policy; returns its name.

    `auto` is `auto_precision(strategy)`; `bf16` gives `mixed_bfloat16` (float32 master
    weights; no loss scaling needed), `fp16` `mixed_float16` (GPUs; the model wraps its
    optimizers in `LossScaleOptimizer`).
    """
    if choice not in ("auto", *POLICIES):
        raise InputError(f"unknown mixed precision {choice!r}: auto, off, bf16 or fp16")
    if choice == "auto":
        choice = auto_precision(strategy)
        log.info("mixed precision auto -> %s (%s)", choice, device_kind(strategy))
    policy = POLICIES[choice]
    warn_fp16_on_a_cpu(choice, strategy)
    keras.config.set_dtype_policy(policy)
    log.info("precision: %s", policy)
    return policy


#: `--xla auto` on a CPU with bf16 instructions leaves float32 ResNet generators at least this
#: wide (`ngf`, the paper's) to oneDNN: the paper step 1.21x faster without XLA on an Emerald
#: Rapids VM (7.55 s against 9.12 s, after the row strips of `layers.TapGradConv2D`), while the
#: tiny preset's (16) ran 1.4x faster with it.
ONEDNN_MIN_NGF = 64


def auto_xla(strategy: tf.distribute.Strategy, generator: str = "resnet",
             policy: Optional[str] = None, ngf: Optional[int] = None) -> bool:
    """`--xla auto`, from benchmarks/train_step.py: on for TPU (always XLA) and GPUs. On a CPU:
    off for the U-Net (Kaggle preset: 2x slower with XLA); on a CPU with bf16 instructions
    (which oneDNN uses and XLA's CPU backend does not; a recent x86 CPU) off under
    `mixed_bfloat16` (the global dtype policy, or `policy`: paper preset on a 2-core Zen 5
    3.8 s a step without XLA, 8.6 s with it, 6.6 s in fp32 with XLA; on a 2-core Emerald
    Rapids 13.3 s against 15.6 s) and for ResNet generators of `ONEDNN_MIN_NGF` filters and
    more (`ngf`; unknown: on); else on for the ResNet generator (paper preset 1.74x, tiny 2.1x
    faster steps with XLA on a 2-core x86 CPU without bf16 instructions, in fp32). Always on
    under `mixed_float16` on a CPU: without XLA TensorFlow's float16 convolution gradients
    there are Eigen's, 200x slower (the tiny preset, 18 s a step against 0.09 s)."""
    if device_kind(strategy) in ("tpu", "gpu"):
        return True
    policy = policy or keras.config.dtype_policy().name
    if policy == "mixed_float16":  # TensorFlow's float16 conv gradients on a CPU: 200x slower
        return True
    if cpu_has_bf16() and (policy == "mixed_bfloat16" or (ngf or 0) >= ONEDNN_MIN_NGF):
        return False
    return generator == "resnet"


def use_xla(choice: str, strategy: tf.distribute.Strategy, generator: str = "resnet",
            ngf: Optional[int] = None) -> bool:
    """Whether to `jit_compile` the train step (`auto`: `auto_xla` for `generator` of `ngf`
    filters)."""
    if choice not in XLA_CHOICES:
        raise InputError(f"unknown --xla {choice!r}: auto, on or off")
    replicas = strategy.num_replicas_in_sync
    several = replicas > 1 and not isinstance(strategy, tf.distribute.TPUStrategy)
    auto = choice == "auto" and not several and auto_xla(strategy, generator, ngf=ngf)
    on = choice == "on" or auto
    if on and several:
        log.warning(
            "XLA with %d replicas under %s is unverified (keras#18145); turning it off",
            replicas, type(strategy).__name__,
        )
        on = False
    log.info("XLA: %s%s", "on" if on else "off", " (auto)" if choice == "auto" else "")
    return on
