"""Times the seed's Keras AdaMatch training step (WideResNet-28-2, 64 source + 192 target images,
or another depth, width and batch) on the TensorFlow backend (the seed's own) or JAX, on random data
of the right shapes, for comparison with `adamatch-wgpu bench --step`. Run through
scripts/keras-step-bench.sh, which makes the Python environments.

The network (`wide_basic`, `get_network`) and the `AdaMatch` model with its `compute_loss` are
copied from the seed, the Keras example "Semi-supervision and domain adaptation with AdaMatch" by
Sayak Paul (keras.io, Apache-2.0; /work/shared/seed/keras-adamatch-example.txt in the project),
unchanged except for the backend choice, the depth, width and batch as arguments (the seed's
values by default) and the removal of the data loading.

Prints one JSON object (the last line): every timed step, the fastest and the median, the CPU
seconds of the cheapest step (all threads), the time of the first (compiling) step, and the host's
load average.
"""

import argparse
import json
import os
import platform
import time

# The backend must be chosen before keras is imported.
ap = argparse.ArgumentParser(description=__doc__)
ap.add_argument("--backend", choices=["tensorflow", "jax"], default="tensorflow")
ap.add_argument("--steps", type=int, default=3, help="timed steps after the compiling one")
ap.add_argument("--depth", type=int, default=28)
ap.add_argument("--width", type=int, default=2)
ap.add_argument("--source-batch", type=int, default=64, help="the target batch is 3x this")
ARGS = ap.parse_args()
os.environ["KERAS_BACKEND"] = ARGS.backend

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers, ops  # noqa: E402

keras.utils.set_random_seed(42)

# --- constants of the seed ------------------------------------------------------------------
RESIZE_TO = 32
SOURCE_BATCH_SIZE = ARGS.source_batch
TARGET_BATCH_SIZE = 3 * SOURCE_BATCH_SIZE
EPOCHS = 2
STEPS_PER_EPOCH = 60000 // SOURCE_BATCH_SIZE
TOTAL_STEPS = EPOCHS * STEPS_PER_EPOCH
LEARNING_RATE = 0.03
WEIGHT_DECAY = 0.0005
INIT = "he_normal"
DEPTH = ARGS.depth
WIDTH_MULT = ARGS.width


# --- the seed's AdaMatch model (verbatim) ---------------------------------------------------
class AdaMatch(keras.Model):
    def __init__(self, model, total_steps, tau=0.9, **kwargs):
        super().__init__(**kwargs)
        self.model = model
        self.tau = tau
        self.total_steps = total_steps
        self.current_step = keras.Variable(0.0, dtype="float32", trainable=False)
        self.loss_tracker = keras.metrics.Mean(name="loss")

        self.weak_augment = keras.Sequential(
            [
                layers.RandomFlip("horizontal"),
                layers.RandomTranslation(0.1, 0.1, fill_mode="constant"),
            ]
        )
        rand_aug = layers.RandAugment(value_range=(0, 255), num_ops=2, factor=0.5)
        self.strong_aug = rand_aug

    def build(self, input_shape):
        self.model.build(input_shape[0])  # input_shape[0] is the source_imgs shape
        self.weak_augment.build(input_shape[0])
        super().build(input_shape)

    @property
    def metrics(self):
        return [self.loss_tracker]

    def compute_mu(self):
        pi = ops.cast(np.pi, "float32")
        return (
            0.5
            - ops.cos(ops.minimum(pi, (2 * pi * self.current_step) / self.total_steps))
            / 2
        )

    def call(self, inputs, training=False):
        source_imgs, _, _ = inputs
        return self.model(source_imgs, training=training)

    def compute_loss(self, x=None, y_true=None, y_pred=None, sample_weight=None):
        source_imgs, source_labels, target_imgs = x

        source_ds_w = self.weak_augment(source_imgs, training=True)
        source_ds_s = self.strong_aug(source_imgs, training=True)

        target_ds_w = self.weak_augment(target_imgs, training=True)
        target_ds_s = self.strong_aug(target_imgs, training=True)

        combined_images = ops.concatenate(
            [source_ds_w, source_ds_s, target_ds_w, target_ds_s], axis=0
        )

        combined_source = ops.concatenate([source_ds_w, source_ds_s], axis=0)
        ## Forward passes ##
        combined_logits = self.model(combined_images, training=True)
        z_d_prime_source = self.model(
            combined_source, training=False
        )  # No BatchNorm update.

        total_source = ops.shape(combined_source)[0]
        z_prime_source = combined_logits[:total_source]

        ## 1. Random logit interpolation for the source images ##
        lambd = keras.random.uniform(ops.shape(z_prime_source), 0, 1)

        final_source_logits = (lambd * z_prime_source) + (
            (1 - lambd) * z_d_prime_source
        )

        ## 2. Distribution alignment (only consider weakly augmented images) ##
        y_hat_source_w = ops.softmax(final_source_logits[:SOURCE_BATCH_SIZE])

        logits_target = combined_logits[total_source:]
        logits_target_w = logits_target[:TARGET_BATCH_SIZE]
        y_hat_target_w = ops.softmax(logits_target_w)

        source_dist = ops.mean(y_hat_source_w, axis=0) + 1e-8
        target_dist = ops.mean(y_hat_target_w, axis=0) + 1e-8

        expectation_ratio = source_dist / target_dist
        expectation_ratio = ops.clip(expectation_ratio, 0.1, 10.0)
        y_tilde_target_w = ops.stop_gradient(
            ops.normalize(y_hat_target_w * expectation_ratio, axis=-1, order=1)
        )

        ## 3. Relative confidence thresholding ##
        row_wise_max = ops.max(y_hat_source_w, axis=-1)
        c_tau = self.tau * ops.mean(row_wise_max)
        mask = ops.cast(ops.max(y_tilde_target_w, axis=-1) >= c_tau, "float32")

        loss_func = keras.losses.CategoricalCrossentropy(from_logits=True)

        ## Compute losses (pay attention to the indexing) ##
        source_loss = loss_func(
            source_labels, final_source_logits[:SOURCE_BATCH_SIZE]
        ) + loss_func(
            source_labels, final_source_logits[SOURCE_BATCH_SIZE:total_source]
        )

        target_loss = ops.mean(
            keras.losses.categorical_crossentropy(
                y_tilde_target_w,
                logits_target[TARGET_BATCH_SIZE:],
                from_logits=True,
            )
            * mask
        )

        target_loss_weight = self.compute_mu()  # Compute weight for the target loss
        total_loss = source_loss + (
            target_loss_weight * target_loss
        )  # Update current training step for the scheduler

        self.current_step.assign_add(1.0)

        self.loss_tracker.update_state(total_loss)
        return total_loss


# --- the seed's WideResNet-28-2 (verbatim) --------------------------------------------------
def wide_basic(x, n_input_plane, n_output_plane, stride):
    if n_input_plane != n_output_plane:
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)

        shortcut = layers.Conv2D(
            n_output_plane,
            (1, 1),
            strides=stride,
            padding="same",
            use_bias=False,
            kernel_initializer=INIT,
            kernel_regularizer=keras.regularizers.l2(WEIGHT_DECAY),
        )(x)

        convs = layers.Conv2D(
            n_output_plane,
            (3, 3),
            strides=stride,
            padding="same",
            use_bias=False,
            kernel_initializer=INIT,
            kernel_regularizer=keras.regularizers.l2(WEIGHT_DECAY),
        )(x)

    else:
        shortcut = x

        convs = layers.BatchNormalization()(x)
        convs = layers.Activation("relu")(convs)

        convs = layers.Conv2D(
            n_output_plane,
            (3, 3),
            strides=stride,
            padding="same",
            use_bias=False,
            kernel_initializer=INIT,
            kernel_regularizer=keras.regularizers.l2(WEIGHT_DECAY),
        )(convs)

    convs = layers.BatchNormalization()(convs)
    convs = layers.Activation("relu")(convs)

    convs = layers.Conv2D(
        n_output_plane,
        (3, 3),
        strides=1,
        padding="same",
        use_bias=False,
        kernel_initializer=INIT,
        kernel_regularizer=keras.regularizers.l2(WEIGHT_DECAY),
    )(convs)

    return layers.Add()([convs, shortcut])


def get_network():
    n = (DEPTH - 4) // 6
    stages = [16, 16 * WIDTH_MULT, 32 * WIDTH_MULT, 64 * WIDTH_MULT]
    inputs = keras.Input(shape=(32, 32, 3))

    x = layers.Rescaling(1.0 / 255)(inputs)

    x = layers.Conv2D(
        stages[0],
        (3, 3),
        padding="same",
        use_bias=False,
        kernel_initializer=INIT,
        kernel_regularizer=keras.regularizers.l2(WEIGHT_DECAY),
    )(x)

    for i in range(1, 4):
        x = wide_basic(x, stages[i - 1], stages[i], stride=(1 if i == 1 else 2))
        for _ in range(n - 1):
            x = wide_basic(x, stages[i], stages[i], stride=1)

    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    x = layers.GlobalAveragePooling2D()(x)

    outputs = layers.Dense(
        10,
        kernel_regularizer=keras.regularizers.l2(WEIGHT_DECAY),
    )(x)

    return keras.Model(inputs, outputs)


# --- timing (not from the seed) ---------------------------------------------------------------
def batch(rng):
    """Random data shaped like the seed's AdaMatchDataset items: float32 pixels in [0, 255]."""
    s_imgs = rng.integers(0, 256, (SOURCE_BATCH_SIZE, RESIZE_TO, RESIZE_TO, 3)).astype("float32")
    labels = np.eye(10, dtype="float32")[rng.integers(0, 10, SOURCE_BATCH_SIZE)]
    t_imgs = rng.integers(0, 256, (TARGET_BATCH_SIZE, RESIZE_TO, RESIZE_TO, 3)).astype("float32")
    return (s_imgs, labels, t_imgs), np.zeros((SOURCE_BATCH_SIZE,), dtype="float32")


def peak_rss_bytes():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main():
    args = ARGS

    wrn_model = get_network()
    reduce_lr = keras.optimizers.schedules.CosineDecay(LEARNING_RATE, TOTAL_STEPS, 0.25)
    optimizer = keras.optimizers.Adam(reduce_lr)
    adamatch_trainer = AdaMatch(model=wrn_model, total_steps=TOTAL_STEPS)
    adamatch_trainer.compile(optimizer=optimizer)

    rng = np.random.default_rng(0)
    x, y = batch(rng)
    _ = adamatch_trainer(x)

    t = time.perf_counter()
    adamatch_trainer.train_on_batch(x, y)  # traces and compiles the step
    compile_s = time.perf_counter() - t
    print(f"first step (compile + run): {compile_s:.1f} s", flush=True)

    times, cpu = [], []
    for i in range(args.steps):
        x, y = batch(rng)
        c = time.process_time()  # all threads of the process (XLA's pool included)
        t = time.perf_counter()
        logs = adamatch_trainer.train_on_batch(x, y, return_dict=True)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        print(
            f"step {i + 1}: {times[-1]:.2f} s, {cpu[-1]:.1f} CPU s, loss {float(logs['loss']):.4f}",
            flush=True,
        )

    if args.backend == "jax":
        import jax

        framework = f"keras {keras.__version__}, jax {jax.__version__} ({jax.default_backend()})"
    else:
        import tensorflow as tf

        framework = f"keras {keras.__version__}, tensorflow {tf.__version__} (cpu)"
    ordered = sorted(times)
    print(
        json.dumps(
            {
                "framework": framework,
                "backend": args.backend,
                "network": f"WRN-{DEPTH}-{WIDTH_MULT}",
                "source_batch": SOURCE_BATCH_SIZE,
                "python": platform.python_version(),
                "images_per_step": SOURCE_BATCH_SIZE + TARGET_BATCH_SIZE,
                "compile_and_first_step_s": compile_s,
                "step_s": times,
                "step_s_min": ordered[0],
                "step_s_median": ordered[len(ordered) // 2],
                "step_cpu_s": min(cpu),
                "peak_rss_bytes": peak_rss_bytes(),
                "host_load": list(os.getloadavg()),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
