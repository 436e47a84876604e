"""Numerics are kept under mixed_bfloat16: tiny-preset runs in bf16 reach the held-out PSNR
of float32 runs with the same seeds, data and steps (their mean at least fp32's - 0.3 dB).

Each run trains in a fresh process: a run is then reproducible to the last bit (same PSNR on
every repeat here), while two runs in one long-lived process are not (the process's earlier
work moves the result by up to 0.8 dB). GAN training amplifies any rounding difference, so the
two precisions end at different points, and one seed cannot resolve 0.3 dB: a run is still
climbing at its last epoch, and where its jump falls decides its end. Measured on a 2-core
Xeon with AMX after the antialiased jitter (400 steps, batch 1; per-epoch held-out PSNR):
seed 0 fp32 17.35 17.52 17.67 19.03, bf16 17.41 17.49 18.07 18.55 (gap -0.48 at the end);
seed 1 fp32 ... 17.92, bf16 ... 17.85 (-0.07); seed 2 fp32 ... 17.88, bf16 ... 17.91 (+0.04);
identity 17.28. Earlier single-seed readings moved as much with any change of rounding (seed
0: fp32 19.04 / bf16 19.58, then 19.41 / 18.45, then 19.06 / 18.84), while five seeds' mean gap
stayed within 0.1 dB (benchmarks/RESULTS.md, "GPU"). So the test compares the means of three
seeds (-0.17 dB here): bf16 >= fp32 - 0.3 dB, and fp32 clearly learned.

Run alone: python tests/test_precision.py off|bf16 [SEED]  (prints the JSON the test reads).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

STEPS_PER_EPOCH, EPOCHS = 100, 4
HELDOUT = 32  # held-out photos scored
TOLERANCE_DB = 0.3
SEEDS = (0, 1, 2)


def train_and_score(precision: str, seed: int) -> dict:
    """Trains the tiny preset at batch 1 under XLA in `precision` (off|bf16); held-out PSNR of
    G(photo) against stylize(photo), beside the identity's."""
    import keras
    import numpy as np
    import tensorflow as tf

    from conftest import SAMPLE
    from ghibli_keras import data, demo, training
    from ghibli_keras import strategy as strategies

    config = demo.demo_config(Path(SAMPLE)).override(**{
        "train.epochs": EPOCHS, "train.decay_epochs": EPOCHS // 2,
        "train.steps_per_epoch": STEPS_PER_EPOCH, "train.batch_size": 1, "train.seed": seed,
    })
    d, t = config.data, config.train
    strategies.set_precision(precision, tf.distribute.get_strategy())
    keras.utils.set_random_seed(t.seed)
    dataset = data.training_dataset(d.photos, d.styles, t.batch_size, image_size=d.image_size,
                                    load_size=d.load_size, resize_on_device=True, seed=t.seed)
    # XLA: emulated bf16 on a CPU without bf16 units is several times slower without it
    model = training.build_model(config, STEPS_PER_EPOCH, jit_compile=True)
    model.fit(dataset, epochs=EPOCHS, steps_per_epoch=STEPS_PER_EPOCH, verbose=0, shuffle=False)
    photos = np.stack(list(data.load_tfrecords(d.heldout_photos).as_numpy_iterator()))[:HELDOUT]
    score = demo.heldout_score(model.generator_g, photos)
    return {"precision": precision, "psnr": score["psnr_model_db"],
            "identity": score["psnr_identity_baseline_db"]}


def run_in_fresh_process(precision: str, seed: int) -> dict:
    done = subprocess.run([sys.executable, __file__, precision, str(seed)], capture_output=True,
                          text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_bf16_runs_reach_the_float32_psnr():
    runs = {p: [run_in_fresh_process(p, seed) for seed in SEEDS] for p in ("off", "bf16")}
    mean = {p: sum(r["psnr"] for r in rs) / len(rs) for p, rs in runs.items()}
    identity = runs["off"][0]["identity"]
    print(f"held-out PSNR, seeds {SEEDS}: identity {identity:.2f} dB; "
          + "; ".join(f"{p} {[r['psnr'] for r in rs]} mean {mean[p]:.2f} dB" for p, rs in runs.items()))
    # fp32 learned enough that bf16 runs that learned nothing would fail below
    assert mean["off"] > identity + TOLERANCE_DB + 0.3, runs["off"]
    assert mean["bf16"] >= mean["off"] - TOLERANCE_DB, runs


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    print(json.dumps(train_and_score(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0)))
