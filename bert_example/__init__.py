"""BERT example for estimator_export: fine-tune, export, serve and query BERT.

Modules:
  modeling: `BertConfig` and a tf.compat.v1 graph-mode `BertModel` whose
    variables carry the original Google BERT checkpoint names.
  tokenization: a pure-Python BERT WordPiece tokenizer (no downloads).
  text_ops: the same tokenization as TensorFlow ops, for the `text` signature.
  servability: an alias of `estimator_export.servability` (where the check now lives).
  checkpoint: Hugging Face safetensors -> Google-name TF checkpoint conversion
    and `init_from_checkpoint` for use inside an Estimator model_fn.
  convert_checkpoint: command-line wrapper around `checkpoint`.
  data: GLUE-format processors, a vocab builder, TFRecords.
  demo_data: the generated demo sentiment dataset.
  optimization: Adam with decoupled weight decay and linear warmup/decay.
  model: `BertClassifier`, the library's mixin subclass with three kinds of
    serving signature (token ids, tf.Examples, raw text).
  pipeline: train / evaluate / predict / export from plain settings.
  run_classifier: the absl command line (google-research/bert's flag names).
  client: query a served model with raw text or token ids (gRPC or REST).
  pretrained: the demo's starting point (pretrained MiniLM, or a small BERT).
  demo: the flagship demo `make demo` runs.
"""
