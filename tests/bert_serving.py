"""A tiny BERT classifier trained on the demo data, exported and served on 127.0.0.1.

    with bert_serving.trained_and_served(root, 'bert', seq=16, hidden_size=16, ...) as (run,
                                                                                         server):
      ...  # run: pipeline.run's result (model, estimator, ...); server: the embedded server

Shared by the BERT end-to-end and client tests; each picks its sizes.
"""
import contextlib
import os
from typing import Any, Iterator, Tuple

import estimator_export as ee
from bert_example import client as client_lib
from bert_example import data as data_lib
from bert_example import demo_data
from bert_example import modeling
from bert_example import pipeline
from estimator_export.client import GrpcClient
from estimator_export.serving.server import create_server


@contextlib.contextmanager
def trained_and_served(root: str, model_name: str, seq: int, *, num_train: int, num_dev: int,
                       num_test: int, hidden_size: int, num_hidden_layers: int,
                       intermediate_size: int, max_position_embeddings: int,
                       **settings: Any) -> Iterator[Tuple[Any, Any]]:
  """Generates the demo data and a vocabulary under root, fine-tunes, exports, serves.

  Args:
    root: a fresh directory for data, vocabulary, model and export.
    model_name: the served model's name (and the export's ExportOptions.model_name).
    seq: max_seq_length.
    num_train, num_dev, num_test: demo examples per split.
    hidden_size, num_hidden_layers, intermediate_size, max_position_embeddings: the
      BertConfig (2 attention heads).
    **settings: more pipeline.ClassifierSettings (batch size, learning rate, do_eval...).

  Yields:
    (pipeline.run's result, the server), once the model is AVAILABLE; the server is
    stopped after.
  """
  data_dir = os.path.join(root, 'data')
  demo_data.generate_demo_dataset(data_dir, num_train=num_train, num_dev=num_dev,
                                  num_test=num_test)
  vocab = os.path.join(root, 'vocab.txt')
  size = data_lib.build_vocab(data_lib.get_processor('demo').get_train_examples(data_dir), vocab)
  config = modeling.BertConfig(vocab_size=size, hidden_size=hidden_size,
                               num_hidden_layers=num_hidden_layers, num_attention_heads=2,
                               intermediate_size=intermediate_size,
                               max_position_embeddings=max_position_embeddings)
  config_file = os.path.join(root, 'bert_config.json')
  with open(config_file, 'w') as f:
    f.write(config.to_json_string())
  options = pipeline.ClassifierSettings(
      task_name='demo', data_dir=data_dir, vocab_file=vocab, bert_config_file=config_file,
      output_dir=os.path.join(root, 'model'), max_seq_length=seq, num_train_epochs=1.0,
      do_train=True, do_export=True, export_dir=os.path.join(root, 'export'),
      export_options=ee.ExportOptions(model_name=model_name), **settings)
  run = pipeline.run(options, print_fn=lambda m: None)
  server = create_server(model_name=model_name, model_base_path=options.export_dir, port=0,
                         rest_api_port=0)
  try:
    with GrpcClient(f'127.0.0.1:{server.grpc_port}') as client:
      client_lib.wait_until_available(client, model_name, timeout=60)
    yield run, server
  finally:
    server.stop(grace=1)
