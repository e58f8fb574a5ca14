"""Tests for bert_example.optimization: the schedule and Adam with decoupled weight decay."""
import numpy as np
import pytest
import tensorflow as tf

from bert_example import optimization


def _run(build):
  with tf.Graph().as_default():
    fetches = build()
    with tf.compat.v1.Session() as sess:
      sess.run(tf.compat.v1.global_variables_initializer())
      return fetches(sess) if callable(fetches) else sess.run(fetches)


class TestLearningRateSchedule:

  @pytest.mark.parametrize('step, expected', [
      (0, 0.0), (5, 0.5e-3), (9, 0.9e-3),            # warmup: linear from 0
      (10, 1e-3 * (1 - 10 / 100)), (55, 1e-3 * (1 - 55 / 100)),   # then linear decay
      (100, 0.0), (150, 0.0)])                       # and 0 past the end
  def test_values(self, step, expected):
    rate = _run(lambda: optimization.learning_rate_schedule(
        1e-3, 100, 10, tf.constant(step, tf.int64)))
    assert rate == pytest.approx(expected, abs=1e-9)

  def test_no_warmup(self):
    assert _run(lambda: optimization.learning_rate_schedule(
        1e-3, 100, 0, tf.constant(0, tf.int64))) == pytest.approx(1e-3)

  @pytest.mark.parametrize('steps, warmup, pattern', [
      (0, 0, 'num_train_steps must be positive'),
      (10, 20, r'num_warmup_steps=20 must be in \[0, num_train_steps=10\]')])
  def test_bad_schedule(self, steps, warmup, pattern):
    with tf.Graph().as_default(), pytest.raises(ValueError, match=pattern):
      optimization.learning_rate_schedule(1e-3, steps, warmup)


class TestAdamWeightDecay:

  def test_one_step_matches_numpy(self):
    w0 = np.array([[1.0, -2.0], [0.5, 3.0]], np.float32)
    b0 = np.array([0.1, -0.1], np.float32)
    x = np.array([[1.0, 2.0]], np.float32)

    def build():
      with tf.compat.v1.variable_scope('layer'):
        w = tf.compat.v1.get_variable('kernel', initializer=w0)
        b = tf.compat.v1.get_variable('bias', initializer=b0)
      loss = tf.reduce_sum(tf.square(tf.matmul(x, w) + b))
      grads = tf.gradients(loss, [w, b])
      step = tf.compat.v1.train.get_or_create_global_step()
      opt = optimization.AdamWeightDecay(0.1, weight_decay_rate=0.01)
      train = opt.apply_gradients(zip(grads, [w, b]), step)

      def fetch(sess):
        g = sess.run(grads)
        sess.run(train)
        names = sorted(v.op.name for v in tf.compat.v1.global_variables())
        return g, sess.run([w, b, step]), names
      return fetch

    (gw, gb), (w1, b1, step), names = _run(build)
    # Adam from zero moments, one step, no bias correction (as BERT), decoupled decay.
    def expected(v0, g, decay):
      m = 0.1 * g
      v = 0.001 * g * g
      return v0 - 0.1 * (m / (np.sqrt(v) + 1e-6) + decay * v0)
    np.testing.assert_allclose(w1, expected(w0, gw, 0.01), rtol=1e-5)
    np.testing.assert_allclose(b1, expected(b0, gb, 0.0), rtol=1e-5)  # bias: no decay
    assert step == 1
    assert 'layer/kernel/adam_m' in names and 'layer/kernel/adam_v' in names

  @pytest.mark.parametrize('name, decays', [
      ('bert/encoder/layer_0/attention/self/query/kernel', True),
      ('bert/encoder/layer_0/output/LayerNorm/gamma', False),
      ('bert/pooler/dense/bias', False),
      ('output_weights', True), ('output_bias', False)])
  def test_decay_exclusions(self, name, decays):
    assert optimization.AdamWeightDecay(1e-3).decays(name) is decays

  def test_create_train_op_lowers_loss(self):
    def build():
      w = tf.compat.v1.get_variable('w', initializer=np.float32([3.0, -4.0]))
      loss = tf.reduce_sum(tf.square(w))
      train = optimization.create_train_op(loss, 0.1, num_train_steps=50, num_warmup_steps=5)

      def fetch(sess):
        before = sess.run(loss)
        for _ in range(50):
          sess.run(train)
        return before, sess.run(loss)
      return fetch

    before, after = _run(build)
    assert after < before / 4
