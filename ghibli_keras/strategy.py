"""Choosing where training runs: the `tf.distribute` strategy, mixed precision and XLA.

`auto()` picks, in order: `MultiWorkerMirroredStrategy` when `TF_CONFIG` names a cluster of
several tasks; a TPU (Kaggle's TPU VMs, then the older TPU runtime); `MirroredStrategy` over
several GPUs; one GPU; the CPU. Every choice is logged.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Optional

import keras
import tensorflow as tf

from .errors import InputError

log = logging.getLogger("ghibli_keras")

POLICIES = {"bf16": "mixed_bfloat16", "fp16": "mixed_float16", "off": "float32"}


def _cluster_tasks() -> int:
    """Number of tasks in TF_CONFIG's cluster (0 without TF_CONFIG)."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 0
    try:
        cluster = json.loads(raw).get("cluster", {})
    except json.JSONDecodeError as e:
        raise InputError(f"TF_CONFIG is not valid JSON ({e}): {raw[:80]!r}") from None
    return sum(len(tasks) for tasks in cluster.values())


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
    task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
    return f"{task.get('type', 'worker')} {task.get('index', 0)}"


def is_chief() -> bool:
    """True for the task that writes checkpoints, logs and pictures: the `chief`, or worker 0
    when the cluster has no chief, or the only process when there is no cluster."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return True
    config = json.loads(raw)
    task = config.get("task", {})
    if "chief" in config.get("cluster", {}):
        return task.get("type") == "chief"
    return task.get("type", "worker") == "worker" and int(task.get("index", 0)) == 0


def set_precision(choice: str, strategy: tf.distribute.Strategy) -> str:
    """Sets the global Keras dtype policy; returns its name.

    `auto` is off (float32) until the performance work decides per device; `bf16` gives
    `mixed_bfloat16` (TPU, recent CPUs and GPUs; no loss scaling needed), `fp16`
    `mixed_float16` (GPUs; the model wraps its optimizers in `LossScaleOptimizer`).
    """
    if choice == "auto":
        choice = "off"
    if choice not in POLICIES:
        raise InputError(f"unknown mixed precision {choice!r}: auto, off, bf16 or fp16")
    policy = POLICIES[choice]
    keras.config.set_dtype_policy(policy)
    log.info("precision: %s", policy)
    return policy


def use_xla(choice: str, strategy: tf.distribute.Strategy) -> bool:
    """Whether to `jit_compile` the train step. `auto` is off for now; on TPU XLA is always on."""
    if choice not in ("auto", "on", "off"):
        raise InputError(f"unknown --xla {choice!r}: auto, on or off")
    on = choice == "on"
    replicas = strategy.num_replicas_in_sync
    if on and replicas > 1 and not isinstance(strategy, tf.distribute.TPUStrategy):
        log.warning(
            "XLA with %d replicas under %s is unverified (keras#18145); turning it off",
            replicas, type(strategy).__name__,
        )
        on = False
    log.info("XLA: %s", "on" if on else "off")
    return on
