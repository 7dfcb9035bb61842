"""GAN losses and regularisers for BigGAN, as pure per-example functions.

BigGAN (Brock, Donahue, Simonyan, "Large Scale GAN Training for High Fidelity
Natural Image Synthesis", ICLR 2019, https://arxiv.org/abs/1809.11096) trains
with the hinge loss of SA-GAN (Zhang et al., "Self-Attention Generative
Adversarial Networks", ICML 2019, https://arxiv.org/abs/1805.08318; the hinge
form is from Lim & Ye 2017 and Miyato et al. 2018):

    L_D = E[relu(1 - D(x, y))] + E[relu(1 + D(G(z), y))]
    L_G = -E[D(G(z), y)]

The paper also uses the off-diagonal orthogonal regulariser
``R_beta(W) = beta * ||W^T W ⊙ (1 - I)||_F^2`` (Section 3.1) and, in its
stability study (Section 4.2), the R1 penalty of Mescheder et al. 2018,
``gamma / 2 * E||grad_x D(x)||^2`` on real data.

Every loss returns one value per example, shape ``[B]``, with no reduction,
summaries or global state: the train step reduces with
``tf.nn.compute_average_loss(..., global_batch_size=...)`` so the result is
right under any ``tf.distribute`` strategy. Regularisers take the variables
they act on explicitly; the caller decides which ones (BigGAN excludes the
shared class embedding).

Deviation to note: the public PyTorch port of BigGAN does not differentiate
``R_beta``; it adds ``2 * beta * (w w^T ⊙ (1 - I)) w`` to each weight's
gradient (``w`` with one row per output unit). The exact gradient of ``R_beta``
as written in the paper is twice that, ``4 * beta * W (W^T W ⊙ (1 - I))``.
``orthogonal_regularizer`` implements the paper's formula; pass ``beta / 2``
(5e-5 for the usual 1e-4) to reproduce the PyTorch port's update.
"""

from collections.abc import Callable, Sequence

import tensorflow as tf

__all__ = [
    "LOSSES",
    "discriminator_loss_terms",
    "hinge_discriminator_fake_loss",
    "hinge_discriminator_loss",
    "hinge_discriminator_real_loss",
    "hinge_generator_loss",
    "loss_functions",
    "nonsaturating_discriminator_fake_loss",
    "nonsaturating_discriminator_loss",
    "nonsaturating_discriminator_real_loss",
    "nonsaturating_generator_loss",
    "orthogonal_regularizer",
    "r1_penalty",
]


def _per_example_logits(logits, name: str) -> tf.Tensor:
    """Returns ``logits`` as a float tensor of shape ``[B]``.

    Accepts ``[B]`` or ``[B, 1]``; anything else is almost certainly a wiring
    mistake (e.g. per-class logits), so it raises instead of flattening.
    """
    logits = tf.convert_to_tensor(logits)
    if not logits.dtype.is_floating:
        raise ValueError(f"{name} must be a floating tensor, got dtype {logits.dtype.name}.")
    rank = logits.shape.rank
    if rank == 1:
        return logits
    if rank == 2 and logits.shape[1] == 1:
        return tf.squeeze(logits, axis=1)
    raise ValueError(f"{name} must have shape [B] or [B, 1], got {logits.shape}.")


def _check_same_shape(real: tf.Tensor, fake: tf.Tensor) -> None:
    if not real.shape.is_compatible_with(fake.shape):
        raise ValueError(
            f"real_logits and fake_logits must have the same batch size, got shapes "
            f"{real.shape} and {fake.shape}."
        )


def hinge_discriminator_loss(real_logits, fake_logits) -> tf.Tensor:
    """Hinge loss of the discriminator, per example.

    Args:
      real_logits: float ``[B]`` or ``[B, 1]``, D's unbounded output on real images.
      fake_logits: float ``[B]`` or ``[B, 1]``, D's output on generated images.

    Returns:
      ``[B]`` tensor of the logits' dtype, ``relu(1 - real) + relu(1 + fake)``,
      values in ``[0, inf)``; zero once ``real >= 1`` and ``fake <= -1``.
    """
    real = _per_example_logits(real_logits, "real_logits")
    fake = _per_example_logits(fake_logits, "fake_logits")
    _check_same_shape(real, fake)
    return hinge_discriminator_real_loss(real) + hinge_discriminator_fake_loss(fake)


def hinge_discriminator_real_loss(real_logits) -> tf.Tensor:
    """The real images' term of D's hinge loss, per example: ``relu(1 - real)`` ``[B]``."""
    return tf.nn.relu(1.0 - _per_example_logits(real_logits, "real_logits"))


def hinge_discriminator_fake_loss(fake_logits) -> tf.Tensor:
    """The generated images' term of D's hinge loss, per example: ``relu(1 + fake)`` ``[B]``."""
    return tf.nn.relu(1.0 + _per_example_logits(fake_logits, "fake_logits"))


def hinge_generator_loss(fake_logits) -> tf.Tensor:
    """Hinge loss of the generator, per example.

    Args:
      fake_logits: float ``[B]`` or ``[B, 1]``, D's output on generated images.

    Returns:
      ``[B]`` tensor, ``-fake``, values in ``(-inf, inf)``.
    """
    return -_per_example_logits(fake_logits, "fake_logits")


def nonsaturating_discriminator_loss(real_logits, fake_logits) -> tf.Tensor:
    """Non-saturating (logistic) loss of the discriminator, per example.

    Equal to the sigmoid cross-entropy with label 1 on real and 0 on fake
    (Goodfellow et al. 2014), written with ``softplus`` for stability.

    Args:
      real_logits: float ``[B]`` or ``[B, 1]``, D's output on real images.
      fake_logits: float ``[B]`` or ``[B, 1]``, D's output on generated images.

    Returns:
      ``[B]`` tensor, ``softplus(-real) + softplus(fake)``, values in ``(0, inf)``.
    """
    real = _per_example_logits(real_logits, "real_logits")
    fake = _per_example_logits(fake_logits, "fake_logits")
    _check_same_shape(real, fake)
    return nonsaturating_discriminator_real_loss(real) + nonsaturating_discriminator_fake_loss(fake)


def nonsaturating_discriminator_real_loss(real_logits) -> tf.Tensor:
    """The real images' term of D's logistic loss, per example: ``softplus(-real)`` ``[B]``."""
    return tf.nn.softplus(-_per_example_logits(real_logits, "real_logits"))


def nonsaturating_discriminator_fake_loss(fake_logits) -> tf.Tensor:
    """The generated images' term of D's logistic loss, per example: ``softplus(fake)`` ``[B]``."""
    return tf.nn.softplus(_per_example_logits(fake_logits, "fake_logits"))


def nonsaturating_generator_loss(fake_logits) -> tf.Tensor:
    """Non-saturating loss of the generator, per example.

    Args:
      fake_logits: float ``[B]`` or ``[B, 1]``, D's output on generated images.

    Returns:
      ``[B]`` tensor, ``softplus(-fake)`` (= ``-log sigmoid(fake)``), in ``(0, inf)``.
    """
    return tf.nn.softplus(-_per_example_logits(fake_logits, "fake_logits"))


def _as_matrix(kernel, dtype: tf.DType) -> tf.Tensor:
    """Reshapes a weight to ``[fan_in, out]`` in ``dtype``: the last axis is the output axis."""
    name = getattr(kernel, "name", "<tensor>")
    kernel = tf.convert_to_tensor(kernel)
    rank = kernel.shape.rank
    if rank is None or rank < 2:
        raise ValueError(
            f"orthogonal_regularizer needs weights of rank >= 2 ([fan_in, out] or "
            f"[kh, kw, in, out]); {name!r} has shape {kernel.shape}. Leave biases and "
            f"normalisation parameters out of the list."
        )
    return tf.reshape(tf.cast(kernel, dtype), [-1, kernel.shape[-1]])


def _off_diagonal_gram_energy(w: tf.Tensor) -> tf.Tensor:
    """``||W^T W ⊙ (1 - I)||_F^2`` of a ``[fan_in, out]`` matrix, on the smaller Gram matrix."""
    fan_in, out = w.shape
    if fan_in is None or out is None or out <= fan_in:
        # The out x out Gram is the smaller one: sum its off-diagonal entries directly. The
        # identity below would subtract two nearly equal sums here as W approaches
        # orthogonal columns (where the regulariser drives it), and lose the small
        # off-diagonal energy to rounding; the direct sum keeps full relative precision.
        gram = tf.matmul(w, w, transpose_a=True)  # [out, out]
        off_diagonal = gram - tf.linalg.diag(tf.linalg.diag_part(gram))
        return tf.reduce_sum(tf.square(off_diagonal))
    # Wide W (G's first linear layer is [20, 24576]): an out x out Gram would not fit in
    # memory. ||W^T W||_F = ||W W^T||_F and diag(W^T W)_j = ||w_j||^2, so the off-diagonal
    # energy is ||W W^T||_F^2 - sum_j ||w_j||^4 with a fan_in x fan_in Gram; the gradient,
    # 4 W (W^T W ⊙ (1 - I)) = 4 (W W^T) W - 4 W diag(||w_j||^2), needs nothing bigger than W.
    # The subtraction stays accurate: ||W W^T||_F^2 >= (sum_j ||w_j||^2)^2 / fan_in, so for
    # columns of equal norm the subtracted sum is at most fan_in / out of the first term.
    gram = tf.matmul(w, w, transpose_b=True)  # [fan_in, fan_in]
    column_norms = tf.reduce_sum(tf.square(w), axis=0)  # [out], ||w_j||^2
    energy = tf.reduce_sum(tf.square(gram)) - tf.reduce_sum(tf.square(column_norms))
    # Rounding can leave a tiny negative value where the energy is (nearly) zero.
    return tf.maximum(energy, 0.0)


def orthogonal_regularizer(kernels: Sequence, beta: float = 1e-4) -> tf.Tensor:
    """BigGAN's off-diagonal orthogonal regulariser.

    For each kernel, ``W`` is its ``[fan_in, out]`` matrix (a dense kernel as
    is, a conv kernel ``[kh, kw, in, out]`` reshaped to ``[kh * kw * in, out]``),
    so the Gram matrix ``W^T W`` is ``out x out`` and compares the filters
    ``w_j`` (the columns, one per output unit) of different output units, as in
    the paper. The diagonal (filter norms) is not penalised. The sum over
    kernels is

        R = beta * sum_k ||W_k^T W_k ⊙ (1 - I)||_F^2.

    It is computed on the smaller of the two Gram matrices: ``W^T W`` directly
    when ``out <= fan_in``, else through the identity
    ``||W^T W ⊙ (1 - I)||_F^2 = ||W W^T||_F^2 - sum_j ||w_j||^4`` with the
    ``fan_in x fan_in`` matrix ``W W^T``, so no tensor larger than the kernel
    or the smaller Gram matrix is formed in the forward or backward pass.

    Its gradient is ``4 * beta * W (W^T W ⊙ (1 - I))``, twice the update that
    the PyTorch port applies (see the module docstring).

    Args:
      kernels: the weights to regularise (``tf.Variable``s, tensors or arrays),
        each of rank >= 2 with the output axis last. The caller chooses them
        (BigGAN leaves out the shared class embedding, biases and BN parameters).
      beta: non-negative strength; the paper uses 1e-4.

    Returns:
      Scalar ``R >= 0``, float64 if any kernel is float64, else float32
      (float16 and bfloat16 kernels are cast up); 0.0 for an empty list.
    """
    if beta < 0:
        raise ValueError(f"beta must be non-negative, got {beta}.")
    kernels = list(kernels)
    dtype = tf.float32
    if any(tf.as_dtype(getattr(k, "dtype", tf.float32)) == tf.float64 for k in kernels):
        dtype = tf.float64
    total = tf.constant(0.0, dtype)
    for kernel in kernels:
        total += _off_diagonal_gram_energy(_as_matrix(kernel, dtype))
    return tf.cast(beta, dtype) * total


def r1_penalty(real_image_gradients, gamma: float) -> tf.Tensor:
    """R1 gradient penalty on real data, per example (Mescheder et al. 2018).

    Args:
      real_image_gradients: float ``[B, H, W, C]`` (any rank >= 1 with the batch
        first), the gradient of D's output on real images with respect to those
        images, e.g. ``tape.gradient(tf.reduce_sum(real_logits), real_images)``
        (summing the logits gives each example its own gradient because the
        examples do not interact in D).
      gamma: non-negative penalty weight.

    Returns:
      ``[B]`` tensor, ``gamma / 2 * ||grad_i||^2`` per example, in ``[0, inf)``.
    """
    if gamma < 0:
        raise ValueError(f"gamma must be non-negative, got {gamma}.")
    grads = tf.convert_to_tensor(real_image_gradients)
    if grads.shape.rank is None or grads.shape.rank < 1:
        raise ValueError(f"real_image_gradients must have a batch axis, got shape {grads.shape}.")
    squared_norm = tf.reduce_sum(tf.square(grads), axis=list(range(1, grads.shape.rank)))
    return tf.cast(0.5 * gamma, grads.dtype) * squared_norm


LossFn = Callable[..., tf.Tensor]

LOSSES: dict[str, tuple[LossFn, LossFn]] = {
    "hinge": (hinge_discriminator_loss, hinge_generator_loss),
    "nonsaturating": (nonsaturating_discriminator_loss, nonsaturating_generator_loss),
}


def loss_functions(name: str) -> tuple[LossFn, LossFn]:
    """Returns ``(discriminator_loss, generator_loss)`` for a loss family.

    Args:
      name: one of the keys of ``LOSSES`` ("hinge", "nonsaturating").

    Raises:
      ValueError: for an unknown name; the message lists the valid ones.
    """
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"Unknown loss {name!r}; valid names are {sorted(LOSSES)}.") from None


DISCRIMINATOR_LOSS_TERMS: dict[str, tuple[LossFn, LossFn]] = {
    "hinge": (hinge_discriminator_real_loss, hinge_discriminator_fake_loss),
    "nonsaturating": (nonsaturating_discriminator_real_loss, nonsaturating_discriminator_fake_loss),
}


def discriminator_loss_terms(name: str) -> tuple[LossFn, LossFn]:
    """Returns ``(real term, fake term)`` of D's loss of a family: per-example functions of
    the real and of the fake logits whose sum is the family's discriminator loss (the port
    logs their means as ``D_loss_real`` and ``D_loss_fake``)."""
    loss_functions(name)
    return DISCRIMINATOR_LOSS_TERMS[name]
