"""A preset's CycleGAN training step on Keras 3's JAX backend, on the device JAX sees.

    KERAS_BACKEND=jax python benchmarks/jax_step.py [--quick] [--preset paper]
                                                    [--batches 1,8] [--precision off,bf16]
                                                    [--steps 20]

Why it exists: the performance issue asks for the paper preset's step on a GPU. The GPU
machine lent to this project has CUDA 13, PyTorch and JAX but no TensorFlow, and none can be
carried there: TensorFlow 2.21's wheel is built for CUDA 12 and, with CUDA 12's libraries,
weighs well over a gigabyte. The networks (`ghibli_keras.models`) and the generators'
objective (`ghibli_keras.losses.generator_objective`) are plain Keras, so this script runs
them under JAX, whose `jit` compiles with XLA, the compiler TensorFlow's `jit_compile=True`
uses too. It is a stand-in for the TensorFlow `CycleGAN.train_step`, not a measurement of it.

The step is `CycleGAN.train_step`'s: the generators' joint update (one objective, an Adam
optimizer each), then each discriminator's update on the real batch and the new fakes. Left
out: the image pool (a 50-image buffer and a random swap: no arithmetic to speak of), the
reconstruction warm-up (off in the paper preset) and `tf.distribute` (one device).

Each row runs in a process of its own, so that the device's peak memory is the row's. It
prints seconds per step, images/s (photos + styles), the achieved TFLOP/s from the analytic
count of benchmarks/flops.py and its fraction of a large bf16 matrix product's rate measured
in the same process. JAX always compiles with XLA: there is no non-XLA row.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ["KERAS_BACKEND"] = "jax"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NETWORKS = ("generator_g", "generator_f", "discriminator_x", "discriminator_y")
PRECISIONS = {"off": "float32", "bf16": "mixed_bfloat16"}
MATMUL_SIZE, QUICK_MATMUL_SIZE = 8192, 1024  # (N, N) @ (N, N) in bf16
REPEATS = 5  # timed runs of a row (the median is printed)


def median_seconds(run, calls: int, repeats: int = REPEATS) -> float:
    """Median over `repeats` of the seconds per call of `calls` calls of `run()` in a row
    (`run` returns JAX arrays; the last call's are waited for)."""
    import jax
    import numpy as np

    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            out = run()
        jax.block_until_ready(out)
        times.append((time.perf_counter() - start) / calls)
    return float(np.median(times))


def matmul_rate(size: int) -> float:
    """FLOP/s of a `(size, size) @ (size, size)` bf16 product on random data."""
    import jax
    import jax.numpy as jnp

    ka, kb = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(ka, (size, size), jnp.bfloat16)
    b = jax.random.normal(kb, (size, size), jnp.bfloat16)
    product = jax.jit(jnp.matmul)
    product(a, b).block_until_ready()
    return 2.0 * size**3 / median_seconds(lambda: product(a, b), calls=10)


def make_train_step(nets: dict, optimizers: dict, train_config):
    """A pure `step(state, x, y) -> (state, g_loss)`; `state[name]` is
    `(trainable, non_trainable, optimizer variables)` of each network in NETWORKS."""
    import jax
    from keras import ops

    from ghibli_keras import losses

    t = train_config

    def network(state, name):
        trainable, non_trainable, _ = state[name]
        return lambda images: nets[name].stateless_call(trainable, non_trainable, images,
                                                        training=True)[0]

    def generators_loss(g_trainables, state, x, y):
        state = {**state, **{n: (tv, *state[n][1:]) for n, tv in zip(NETWORKS[:2], g_trainables)}}
        out = losses.generator_objective(
            *(network(state, name) for name in NETWORKS), x, y,
            lambda_cycle=t.lambda_cycle, lambda_identity=t.lambda_identity, gan_loss=t.gan_loss,
        )
        return ops.mean(out["loss"]), (out["fake_x"], out["fake_y"])

    def discriminator_loss(trainable, state, name, real, fake):
        D = network({**state, name: (trainable, *state[name][1:])}, name)
        return ops.mean(losses.discriminator(D(real), D(fake), t.gan_loss))

    def update(state, name, grads):
        trainable, non_trainable, opt_vars = state[name]
        trainable, opt_vars = optimizers[name].stateless_apply(opt_vars, grads, trainable)
        return {**state, name: (trainable, non_trainable, opt_vars)}

    def step(state, x, y):  # x, y: (B, S, S, 3) in [-1, 1]
        g_trainables = [state[name][0] for name in NETWORKS[:2]]
        (g_loss, (fake_x, fake_y)), grads = jax.value_and_grad(generators_loss, has_aux=True)(
            g_trainables, state, x, y)
        for name, g in zip(NETWORKS[:2], grads):
            state = update(state, name, g)
        for name, real, fake in (("discriminator_x", x, fake_x), ("discriminator_y", y, fake_y)):
            grads = jax.grad(discriminator_loss)(state[name][0], state, name, real, fake)
            state = update(state, name, grads)
        return state, g_loss

    return step


def training_pass(call, trainable, x):
    """`run()` computing the gradients of `mean(call(trainable, x)²)` with respect to the
    weights and the input: a network's (or a layer's) share of a training step. (With a loss
    linear in the output, its gradient is a constant, which compilers simplify.)"""
    import jax
    import jax.numpy as jnp

    def loss(trainable, x):
        return jnp.mean(jnp.square(call(trainable, x).astype("float32")))

    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))
    return lambda: grads(trainable, x)


def profile_networks(nets: dict, size: int, batch: int) -> list:
    """[(what, count, forward FLOPs each, seconds each)]: the training pass of G and of D_X,
    then of each distinct convolution of theirs alone (its input in the compute dtype)."""
    import jax
    import keras
    import numpy as np

    from flops import conv_groups, conv_shapes, layer_flops

    rng = np.random.default_rng(1)
    rows = []
    for name in ("generator_g", "discriminator_x"):
        net = nets[name]
        x = jax.numpy.asarray(rng.uniform(-1, 1, (batch, size, size, 3)).astype("float32"))
        call = lambda tv, x, net=net: net.stateless_call(tv, [], x, training=True)[0]  # noqa: E731
        trainable = [v.value for v in net.trainable_variables]
        convs = conv_shapes(net, size)
        flops = batch * sum(layer_flops(*c) for c in convs)
        rows.append((f"{name} (whole)", 1, flops, median_seconds(training_pass(call, trainable, x), 10)))
        for desc, members in conv_groups(net, size):
            layer, i, o = members[0]
            x = jax.numpy.asarray(rng.uniform(-1, 1, (batch, *i[1:])).astype(layer.compute_dtype))
            # The layer inside a model, called as the networks are (a layer's own stateless
            # call does not cast its float32 weights to bf16).
            inputs = keras.Input(i[1:], dtype=layer.compute_dtype)
            alone = keras.Model(inputs, layer(inputs))
            call = lambda tv, x, m=alone: m.stateless_call(tv, [], x)[0]  # noqa: E731
            trainable = [v.value for v in alone.trainable_variables]
            what = f"  {desc}"
            seconds = median_seconds(training_pass(call, trainable, x), 10)
            rows.append((what, len(members), batch * layer_flops(layer, i, o), seconds))
    return rows


def run_row(preset: str, batch: int, precision: str, steps: int, matmul_size: int,
            profiled: bool = False) -> dict:
    """One row, in this process: the measurements as a dict."""
    import jax
    import keras
    import numpy as np

    from flops import step_flops
    from ghibli_keras import models
    from ghibli_keras.config import get_preset

    config = get_preset(preset)
    flops = step_flops(config, batch)  # built in float32, before the policy changes
    keras.config.set_dtype_policy(PRECISIONS[precision])
    nets = models.build_networks(config.model, seed=0)
    optimizers = {}
    for name, net in nets.items():
        optimizers[name] = keras.optimizers.Adam(config.train.learning_rate,
                                                 beta_1=config.train.beta_1)
        optimizers[name].build(net.trainable_variables)
    copy = lambda variables: [jax.numpy.array(v.value) for v in variables]  # noqa: E731
    state = {  # copies: the step donates its state, the profile reuses the networks' own
        name: (copy(net.trainable_variables), copy(net.non_trainable_variables),
               copy(optimizers[name].variables))
        for name, net in nets.items()
    }
    size = config.data.image_size
    rng = np.random.default_rng(0)
    x, y = (jax.device_put(rng.uniform(-1, 1, (batch, size, size, 3)).astype("float32"))
            for _ in range(2))
    start = time.perf_counter()
    step = jax.jit(make_train_step(nets, optimizers, config.train), donate_argnums=0)
    step = step.lower(state, x, y).compile()
    compile_seconds = time.perf_counter() - start
    memory = step.memory_analysis()  # XLA's plan for the step's buffers
    step_bytes = None if memory is None else (
        memory.argument_size_in_bytes + memory.output_size_in_bytes
        + memory.temp_size_in_bytes - memory.alias_size_in_bytes)
    state, loss = step(state, x, y)
    first_loss = float(loss)

    def one_step():
        nonlocal state
        state, loss = step(state, x, y)
        return loss

    seconds = median_seconds(one_step, calls=steps)
    last_loss = float(one_step())
    profile = profile_networks(nets, size, batch) if profiled else None
    rate = matmul_rate(matmul_size)
    device = jax.devices()[0]
    memory = device.memory_stats() or {}
    return {
        "preset": preset, "batch": batch, "precision": precision, "seconds": seconds,
        "compile_seconds": compile_seconds, "flops": flops, "matmul_rate": rate,
        "peak_bytes": memory.get("peak_bytes_in_use"), "step_bytes": step_bytes,
        "profile": profile, "device": device.device_kind,
        "platform": device.platform, "jax": jax.__version__, "keras": keras.__version__,
        "first_loss": first_loss, "last_loss": last_loss,
    }


def batch_list(text: str) -> list:
    """`--batches`: positive integers separated by commas."""
    try:
        batches = [int(b) for b in text.split(",")]
    except ValueError:
        batches = []
    if not batches or min(batches) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of positive integers like 1,8")
    return batches


def main() -> None:
    from ghibli_keras.config import PRESETS  # plain Python: no Keras, no backend

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny preset, batch 1, fp32, 3 steps, a small matrix product")
    parser.add_argument("--preset", default="paper", choices=list(PRESETS))
    parser.add_argument("--batches", default="1,8", type=batch_list, help="per device, e.g. 1,8")
    parser.add_argument("--precision", help=f"of {','.join(PRECISIONS)} (off,bf16; --quick: off)")
    parser.add_argument("--steps", type=int, default=20, help="steps per timed run")
    parser.add_argument("--profile", action="store_true",
                        help="after each row, time G's and D's training passes and each of "
                             "their convolutions alone")
    parser.add_argument("--row", help=argparse.SUPPRESS)  # preset,batch,precision: run one row
    args = parser.parse_args()
    matmul_size = QUICK_MATMUL_SIZE if args.quick else MATMUL_SIZE
    steps = 3 if args.quick else args.steps
    if args.row:
        preset, batch, precision = args.row.split(",")
        print(json.dumps(run_row(preset, int(batch), precision, steps, matmul_size, args.profile)))
        return
    preset = "tiny" if args.quick else args.preset
    batches = [1] if args.quick else args.batches
    precisions = (args.precision or ("off" if args.quick else "off,bf16")).split(",")
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad:
        parser.error(f"--precision: {bad[0]!r} is not one of {', '.join(PRECISIONS)}")

    for i, (batch, precision) in enumerate((b, p) for b in batches for p in precisions):
        command = [sys.executable, __file__, "--row", f"{preset},{batch},{precision}",
                   "--steps", str(steps)] + (["--quick"] if args.quick else []) + (
                   ["--profile"] if args.profile else [])
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"row {preset} batch {batch} {precision} failed:\n{done.stderr[-4000:]}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        if i == 0:
            print_header(row, matmul_size, steps)
        print_row(row)
        if row["profile"]:
            print_profile(row)


def print_header(row: dict, matmul_size: int, steps: int) -> None:
    print(f"device: {row['device']} ({row['platform']}); JAX {row['jax']}, Keras "
          f"{row['keras']} (JAX backend; XLA compiles every row)")
    print(f"matmul: a ({matmul_size}, {matmul_size}) @ ({matmul_size}, {matmul_size}) bf16 "
          f"product's rate, measured in the row's process; step: median of {REPEATS} runs of "
          f"{steps} steps; loss: the generators' objective at the first and the last step")
    print("memory, GiB: step: XLA's plan for the compiled step (arguments + outputs + temporaries "
          "- donated); peak: the device allocator's peak in the row's process (autotuning too)")
    print(f"{'preset':8} {'batch':>5} {'prec':>5} {'s/step':>8} {'steps/s':>8} {'img/s':>8} "
          f"{'TFLOP/s':>8} {'matmul':>8} {'of it':>6} {'step':>6} {'peak':>6} {'compile':>8} {'loss':>14}",
          flush=True)


def print_row(r: dict) -> None:
    rate = r["flops"] / r["seconds"] / 1e12
    gib = lambda n: "n/a" if n is None else f"{n / 2**30:.2f}"  # noqa: E731
    loss = f"{r['first_loss']:.3f}>{r['last_loss']:.3f}"
    print(f"{r['preset']:8} {r['batch']:5d} {r['precision']:>5} {r['seconds']:8.4f} "
          f"{1 / r['seconds']:8.2f} {2 * r['batch'] / r['seconds']:8.1f} {rate:8.2f} "
          f"{r['matmul_rate'] / 1e12:8.1f} {rate / (r['matmul_rate'] / 1e12):6.3f} "
          f"{gib(r['step_bytes']):>6} {gib(r['peak_bytes']):>6} {r['compile_seconds']:7.1f}s {loss:>14}",
          flush=True)


def print_profile(r: dict) -> None:
    """The row's network profile: each pass's time and rate, then the convolutions' share."""
    matmul = r["matmul_rate"]
    print(f"  profile, batch {r['batch']} {r['precision']}: training pass (forward + gradients of "
          f"weights and input), median of {REPEATS} runs of 10")
    print(f"  {'what':44} {'count':>5} {'GFLOP':>8} {'ms each':>8} {'TFLOP/s':>8} {'of matmul':>9}")
    whole = None  # (network, its pass's seconds, [seconds of its convolutions])
    for what, count, flops, seconds in r["profile"]:
        if what.endswith("(whole)"):
            if whole:
                print_conv_share(*whole)
            whole = (what.split()[0], seconds, [])
        else:
            whole[2].append(count * seconds)
        rate = 3 * flops / seconds  # a training pass: 3x the forward FLOPs
        print(f"  {what:44} {count:5d} {3 * flops / 1e9:8.2f} {seconds * 1e3:8.3f} "
              f"{rate / 1e12:8.2f} {rate / matmul:9.3f}")
    print_conv_share(*whole)


def print_conv_share(network: str, seconds: float, conv_seconds: list) -> None:
    share = sum(conv_seconds) / seconds
    print(f"  {network}: its convolutions alone take {sum(conv_seconds) * 1e3:.3f} ms, "
          f"{share:.0%} of its training pass; the rest (norms, pads, activations, casts) ~{1 - share:.0%}")


if __name__ == "__main__":
    main()
