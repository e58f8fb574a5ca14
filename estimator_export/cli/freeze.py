"""`estimator-export freeze`: freeze_graph's flags, plus optimisation, compression and checks."""
from estimator_export import _freeze_cli
from estimator_export.cli import _common


def add_parser(subparsers) -> None:
  parser = _common.add_command(
      subparsers, 'freeze',
      summary="freeze a checkpoint or SavedModel into one .pb (freeze_graph's flags)",
      description='Turns variables into constants and writes one GraphDef .pb with a '
      'manifest beside it; optionally optimises and compresses it, checking the result '
      'against the unfrozen model after every step.',
      examples=['estimator-export freeze --input_saved_model_dir=/models/m/1 '
                '--output_graph=/tmp/frozen.pb --optimize=all',
                'estimator-export freeze --input_meta_graph=model.ckpt.meta '
                '--input_checkpoint=model.ckpt --output_node_names=softmax '
                '--output_graph=/tmp/frozen.pb'])
  _freeze_cli.add_freeze_arguments(parser)
  parser.set_defaults(run=_freeze_cli.run_freeze)
