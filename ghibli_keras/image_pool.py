"""The history of generated images shown to the discriminators (Shrivastava et al.; the
CycleGAN paper's pool of 50), kept in graph-mode variables, one pool per replica."""

from __future__ import annotations

import tensorflow as tf


class ImagePool(tf.Module):
    """A buffer of the latest `pool_size` fakes.

    `pool(images)` returns a batch of the same shape. For each image, in order: while the pool
    is not full the image is stored and returned; once full, with probability 1/2 a random
    stored image is returned and replaced by the new one, else the new image is returned. So the
    discriminator sees half current, half past fakes, which damps oscillation. A non-finite
    image is returned and not stored.

    The buffer lives in variables with `ON_READ` synchronisation: under a `tf.distribute`
    strategy each replica keeps its own pool, updated without any cross-replica traffic or host
    round trip. It is not part of the saved model (like the reference's, a resumed run
    refills it within `pool_size` images).

    Args:
        pool_size: images kept; 0 turns the pool off (`pool(x)` is `x`).
        image_shape: `(H, W, C)` of the images.

    Example:
    >>> pool = ImagePool(2, (4, 4, 3))
    >>> pool(tf.zeros((3, 4, 4, 3))).shape
    TensorShape([3, 4, 4, 3])
    """

    def __init__(self, pool_size: int, image_shape, name: str = "image_pool"):
        super().__init__(name=name)
        if pool_size < 0:
            raise ValueError(f"pool_size must be >= 0, got {pool_size}")
        self.pool_size = pool_size
        self.image_shape = tuple(image_shape)
        if pool_size:
            local = dict(
                trainable=False,
                synchronization=tf.VariableSynchronization.ON_READ,
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )
            self.images = tf.Variable(tf.zeros((pool_size, *self.image_shape)), name="images", **local)
            self.count = tf.Variable(0, dtype=tf.int32, name="count", **local)

    def __call__(self, images: tf.Tensor) -> tf.Tensor:
        images = tf.stop_gradient(tf.cast(images, tf.float32))  # (B, H, W, C)
        if not self.pool_size:
            return images

        def query(i, out):
            image = images[i]

            def store(slot):
                # Per-replica (ON_READ) variables support `assign` but not scatter updates.
                buffer = tf.tensor_scatter_nd_update(self.images.read_value(), [[slot]], image[None])
                return self.images.assign(buffer)

            def insert():
                with tf.control_dependencies([store(self.count.read_value())]):
                    with tf.control_dependencies([self.count.assign_add(1)]):
                        return tf.identity(image)

            def swap():
                slot = tf.random.uniform([], 0, self.pool_size, dtype=tf.int32)
                old = tf.identity(tf.gather(self.images.read_value(), slot))
                with tf.control_dependencies([old]):
                    update = store(slot)
                with tf.control_dependencies([update]):
                    return tf.identity(old)

            def replay_or_pass():
                return tf.cond(tf.random.uniform([]) < 0.5, swap, lambda: tf.identity(image))

            def pooled():
                return tf.cond(self.count.read_value() < self.pool_size, insert, replay_or_pass)

            # A non-finite fake (a float16 overflow) passes through unstored: kept, it would make
            # the discriminator's later steps non-finite, and skipped, until swapped out.
            finite = tf.reduce_all(tf.math.is_finite(image))
            chosen = tf.cond(finite, pooled, lambda: tf.identity(image))
            return i + 1, out.write(i, chosen)

        batch = tf.shape(images)[0]
        out = tf.TensorArray(tf.float32, size=batch, element_shape=images.shape[1:])
        _, out = tf.while_loop(lambda i, _: i < batch, query, (0, out))
        return tf.ensure_shape(out.stack(), images.shape)
