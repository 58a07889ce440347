"""The SSD training loss of the OD API's ssdlite config.

  classification  sigmoid cross-entropy summed over all num_classes + 1 slots
                  (`weighted_sigmoid`; the background slot is trained like any
                  class and dropped at inference, where `score_converter:
                  SIGMOID` turns logits into independent per-class scores);
  localisation    smooth L1 (Huber, delta 1) summed over the 4 box codes, on
                  matched anchors only;
  hard negatives  per image, the unmatched anchors with the largest
                  classification loss, at most 3 per positive and at least 3
                  (`max_negatives_per_positive: 3`, `min_negatives_per_image: 3`),
                  drawn from the 3000 anchors of largest loss;
  normalisation   both sums divided by the number of positives in the batch
                  (`normalize_loss_by_num_matches`), at least 1.

Deviation: the OD API's miner first runs NMS at IoU 0.99 over the decoded
predictions to drop near-identical boxes before ranking them; that changes
the chosen negatives only where two predicted boxes almost coincide, and
leaving it out keeps the loss a few sorts instead of a sequential loop.
"""

import jax
import jax.numpy as jnp
import optax

MAX_NEGATIVES_PER_POSITIVE = 3
MIN_NEGATIVES_PER_IMAGE = 3
NUM_HARD_EXAMPLES = 3000


def anchor_losses(box_encodings: jax.Array, class_logits: jax.Array, box_targets: jax.Array,
                  class_targets: jax.Array, positive: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-anchor (localisation, classification) losses, each [..., N], before any mining."""
  localization = jnp.sum(optax.huber_loss(box_encodings, box_targets, delta=1.0), axis=-1)
  localization = jnp.where(positive, localization, 0.0)
  labels = jax.nn.one_hot(class_targets, class_logits.shape[-1], dtype=class_logits.dtype)
  classification = jnp.sum(optax.sigmoid_binary_cross_entropy(class_logits, labels), axis=-1)
  return localization, classification


def hard_example_mask(classification_losses: jax.Array, positive: jax.Array,
                      max_negatives_per_positive: int = MAX_NEGATIVES_PER_POSITIVE,
                      min_negatives_per_image: int = MIN_NEGATIVES_PER_IMAGE,
                      num_hard_examples: int = NUM_HARD_EXAMPLES) -> jax.Array:
  """[N] bool: the anchors of one image that enter the loss.

  Of the `num_hard_examples` anchors with the largest classification loss,
  every positive and the hardest max(min_negatives_per_image,
  max_negatives_per_positive * positives) negatives.
  """
  order = jnp.argsort(-jax.lax.stop_gradient(classification_losses), stable=True)
  rank = jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0]))
  in_pool = rank < num_hard_examples
  positives = positive & in_pool
  negatives = ~positive & in_pool
  max_negatives = jnp.maximum(min_negatives_per_image,
                              max_negatives_per_positive * jnp.sum(positives))
  # The rank of each negative among the negatives, hardest first.
  negative_rank = (jnp.cumsum(negatives[order]) - 1)[rank]
  return positives | (negatives & (negative_rank < max_negatives))


def ssd_loss(box_encodings: jax.Array, class_logits: jax.Array, box_targets: jax.Array,
             class_targets: jax.Array, positive: jax.Array,
             max_negatives_per_positive: int = MAX_NEGATIVES_PER_POSITIVE,
             min_negatives_per_image: int = MIN_NEGATIVES_PER_IMAGE,
             num_hard_examples: int = NUM_HARD_EXAMPLES,
             localization_weight: float = 1.0,
             classification_weight: float = 1.0) -> dict[str, jax.Array]:
  """The batch loss from the network's outputs and `targets.assign_targets`' targets.

  box_encodings [B, N, 4], class_logits [B, N, num_classes + 1], box_targets
  [B, N, 4], class_targets [B, N] int, positive [B, N] bool. Returns 'loss' (the
  weighted sum), 'localization_loss', 'classification_loss' and 'num_positives'.
  """
  localization, classification = anchor_losses(box_encodings, class_logits, box_targets,
                                               class_targets, positive)
  selected = jax.vmap(lambda losses, positives: hard_example_mask(
      losses, positives, max_negatives_per_positive, min_negatives_per_image,
      num_hard_examples))(classification, positive)
  num_positives = jnp.sum(positive)
  normalizer = jnp.maximum(num_positives, 1).astype(classification.dtype)
  localization_loss = jnp.sum(jnp.where(selected, localization, 0.0)) / normalizer
  classification_loss = jnp.sum(jnp.where(selected, classification, 0.0)) / normalizer
  return {
      'loss': localization_weight * localization_loss
              + classification_weight * classification_loss,
      'localization_loss': localization_loss,
      'classification_loss': classification_loss,
      'num_positives': num_positives,
  }
