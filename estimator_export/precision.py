"""bfloat16 inference on CPU: TF Serving's `--mixed_precision=bfloat16`, for every runner.

TF Serving 2.15 turns `--mixed_precision=bfloat16` into one session option,
grappler's oneDNN bfloat16 auto mixed precision rewrite
(`RewriterConfig.auto_mixed_precision_onednn_bfloat16 = ON`): at graph
optimisation time, MatMuls, BatchMatMuls and the element-wise ops between them
run in bfloat16 with float32 inputs and outputs; the model files stay float32.
The project applies the same option wherever it builds a session: the embedded
server (`ServerOptions.mixed_precision`), `Predictor.from_saved_model(...,
mixed_precision=)`, and frozen graphs (`FreezeOptions.mixed_precision`, kept in
the frozen manifest and applied by FrozenPredictor).

It pays only on CPUs with native bfloat16 arithmetic (AVX512_BF16 or AMX,
where TensorFlow also enables oneDNN by default). Elsewhere the rewrite does
not run (oneDNN is off) or runs on emulated bfloat16, which is slower; the
option is still honoured, as TF Serving honours it, and `native_bf16()` says
which case a machine is in.

    config = precision.session_config('bfloat16')   # a ConfigProto with the rewrite on
    precision.native_bf16()                          # 'avx512_bf16', 'amx_bf16' or None
"""
import logging
from typing import Optional

import tensorflow as tf
from tensorflow.core.protobuf import rewriter_config_pb2

from estimator_export.errors import ExportError

logger = logging.getLogger('estimator_export')

BFLOAT16 = 'bfloat16'
MODES = (BFLOAT16,)
# CPU flags (/proc/cpuinfo) of native bfloat16 arithmetic.
NATIVE_BF16_FLAGS = ('avx512_bf16', 'amx_bf16')


def native_bf16(cpuinfo: str = '/proc/cpuinfo') -> Optional[str]:
  """The CPU flag giving native bfloat16 matmuls, or None (none, or not Linux)."""
  try:
    with open(cpuinfo, encoding='utf-8') as f:
      flags = set(f.read().split())
  except OSError:
    return None
  return next((flag for flag in NATIVE_BF16_FLAGS if flag in flags), None)


def check_mode(mode: Optional[str], what: str = 'mixed_precision',
               error=ExportError) -> Optional[str]:
  """mode ('' and None mean float32) or `error` naming the bad value and the fix."""
  if mode in (None, ''):
    return None
  if mode not in MODES:
    raise error(f'unknown {what}', value=mode,
                fix=f"use {' or '.join(repr(m) for m in MODES)} (or leave it empty for float32)")
  return mode


def apply(config: tf.compat.v1.ConfigProto, mode: Optional[str]) -> tf.compat.v1.ConfigProto:
  """config with the rewrite of `mode` switched on (as TF Serving's server.cc does); in place."""
  if check_mode(mode) == BFLOAT16:
    config.graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 = (
        rewriter_config_pb2.RewriterConfig.ON)
  return config


def session_config(mode: Optional[str],
                   base: Optional[tf.compat.v1.ConfigProto] = None
                  ) -> Optional[tf.compat.v1.ConfigProto]:
  """A copy of `base` (or a new ConfigProto) with `mode` applied; `base` when mode is None."""
  if check_mode(mode) is None:
    return base
  config = tf.compat.v1.ConfigProto()
  if base is not None:
    config.CopyFrom(base)
  return apply(config, mode)


def warn_if_emulated(mode: Optional[str]) -> None:
  """Logs once per call that bfloat16 is emulated here (slower than float32)."""
  if check_mode(mode) == BFLOAT16 and native_bf16() is None:
    logger.warning('mixed_precision=bfloat16 on a CPU without %s: TensorFlow runs the '
                   'float32 graph (oneDNN is off) or emulates bfloat16, which is slower; '
                   'use it on CPUs with native bfloat16', ' or '.join(NATIVE_BF16_FLAGS))
