"""What every example's `main` does first: quiet TF's deprecation noise, prepare output_dir."""
import os
import shutil
import warnings

import tensorflow as tf


def prepare_output_dir(output_dir: str, fresh: bool = True) -> str:
  """Returns output_dir as an absolute path, emptied first when `fresh`."""
  tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
  warnings.filterwarnings('ignore', message='`tf.layers')
  output_dir = os.path.abspath(output_dir)
  if fresh and os.path.isdir(output_dir):
    shutil.rmtree(output_dir)
  return output_dir
