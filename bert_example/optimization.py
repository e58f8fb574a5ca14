"""BERT fine-tuning optimisation: Adam with decoupled weight decay, linear warmup/decay.

The schedule is the one BERT fine-tuning uses: the learning rate rises
linearly from 0 to `learning_rate` over `num_warmup_steps`, then falls
linearly to 0 at `num_train_steps`. Weight decay (0.01) is added to the
Adam update itself rather than to the loss, and skips LayerNorm parameters
and biases. Gradients are clipped to a global norm of 1.0.

The Adam moments live in variables named `<variable>/adam_m` and
`<variable>/adam_v`, the layout of Google's BERT checkpoints.
"""
import re
from typing import Optional, Sequence

import tensorflow as tf

DEFAULT_NO_DECAY = ('LayerNorm', 'layer_norm', 'bias')


def learning_rate_schedule(learning_rate: float, num_train_steps: int, num_warmup_steps: int,
                           global_step: Optional[tf.Tensor] = None) -> tf.Tensor:
  """Scalar float32 Tensor: the learning rate at `global_step`.

  Args:
    learning_rate: the peak rate, reached at the end of warmup.
    num_train_steps: the rate is 0 from this step on.
    num_warmup_steps: linear warmup length (0: none).
    global_step: int64 scalar; default: the graph's global step.
  """
  if num_train_steps <= 0:
    raise ValueError(f'num_train_steps must be positive, got {num_train_steps}; '
                     'compute it from the dataset size, batch size and epochs.')
  if not 0 <= num_warmup_steps <= num_train_steps:
    raise ValueError(f'num_warmup_steps={num_warmup_steps} must be in [0, '
                     f'num_train_steps={num_train_steps}]; lower --warmup_proportion.')
  if global_step is None:
    global_step = tf.compat.v1.train.get_or_create_global_step()
  step = tf.cast(global_step, tf.float32)
  decayed = learning_rate * tf.maximum(0.0, 1.0 - step / float(num_train_steps))
  if not num_warmup_steps:
    return decayed
  warmup = learning_rate * step / float(num_warmup_steps)
  return tf.where(step < num_warmup_steps, warmup, decayed)


class AdamWeightDecay:
  """Adam whose weight decay is applied to the update, not folded into the gradient."""

  def __init__(self, learning_rate, weight_decay_rate: float = 0.01, beta_1: float = 0.9,
               beta_2: float = 0.999, epsilon: float = 1e-6,
               exclude_from_weight_decay: Sequence[str] = DEFAULT_NO_DECAY):
    """Args:
      learning_rate: float or scalar float32 Tensor.
      weight_decay_rate: decay coefficient of the parameters it applies to.
      beta_1, beta_2, epsilon: Adam's constants (BERT uses epsilon 1e-6).
      exclude_from_weight_decay: regexes; a variable whose name matches one
        is not decayed.
    """
    self.learning_rate = learning_rate
    self.weight_decay_rate = weight_decay_rate
    self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
    self.exclude = tuple(exclude_from_weight_decay)

  def decays(self, name: str) -> bool:
    """Whether the variable called `name` gets weight decay."""
    return bool(self.weight_decay_rate) and not any(re.search(p, name) for p in self.exclude)

  def apply_gradients(self, grads_and_vars, global_step: Optional[tf.Variable] = None
                     ) -> tf.Operation:
    """Builds the update of every (gradient, variable) pair; increments global_step."""
    updates = []
    for grad, var in grads_and_vars:
      if grad is None:
        continue
      name = var.op.name
      with tf.compat.v1.variable_scope(tf.compat.v1.get_variable_scope(), reuse=False):
        m = tf.compat.v1.get_variable(name + '/adam_m', var.shape, tf.float32,
                                      trainable=False,
                                      initializer=tf.compat.v1.zeros_initializer())
        v = tf.compat.v1.get_variable(name + '/adam_v', var.shape, tf.float32,
                                      trainable=False,
                                      initializer=tf.compat.v1.zeros_initializer())
      grad = tf.convert_to_tensor(grad)  # IndexedSlices (embeddings) become dense.
      next_m = self.beta_1 * m + (1.0 - self.beta_1) * grad
      next_v = self.beta_2 * v + (1.0 - self.beta_2) * tf.square(grad)
      update = next_m / (tf.sqrt(next_v) + self.epsilon)
      if self.decays(name):
        update += self.weight_decay_rate * var
      updates.extend([var.assign_sub(self.learning_rate * update), m.assign(next_m),
                      v.assign(next_v)])
    with tf.control_dependencies(updates):
      if global_step is None:
        return tf.group(*updates)
      return tf.compat.v1.assign_add(global_step, 1).op


def create_train_op(loss: tf.Tensor, learning_rate: float, num_train_steps: int,
                    num_warmup_steps: int, clip_norm: float = 1.0) -> tf.Operation:
  """The BERT fine-tuning train op for scalar float32 `loss`.

  Args:
    loss: scalar float32 Tensor.
    learning_rate: peak learning rate (e.g. 2e-5 for a pretrained BERT).
    num_train_steps: total steps; the rate decays linearly to 0 there.
    num_warmup_steps: steps of linear warmup.
    clip_norm: gradients are clipped to this global norm.

  Returns:
    An Operation that updates every trainable variable and the global step.
  """
  global_step = tf.compat.v1.train.get_or_create_global_step()
  rate = learning_rate_schedule(learning_rate, num_train_steps, num_warmup_steps, global_step)
  tf.compat.v1.summary.scalar('learning_rate', rate)
  variables = tf.compat.v1.trainable_variables()
  grads = tf.gradients(loss, variables)
  grads, _ = tf.clip_by_global_norm(grads, clip_norm=clip_norm)
  return AdamWeightDecay(rate).apply_gradients(zip(grads, variables), global_step)
