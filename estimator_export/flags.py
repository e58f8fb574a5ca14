"""absl flags for training scripts, and their conversion to plain export settings.

Library modules never read FLAGS. A script defines the flags from its
`__main__` block and turns parsed values into arguments in `main`::

    from absl import app, flags
    from estimator_export import flags as export_flags

    def main(argv):
      settings = export_flags.export_settings_from_flags(flags.FLAGS)
      model.export_for_serving(estimator, settings.export_dir,
                               model.serving_input_receiver_fn(settings.receiver_kind),
                               options=settings.options)

    if __name__ == '__main__':
      export_flags.define_export_flags(flags.FLAGS)
      app.run(main)
"""
import dataclasses
from typing import Tuple

from absl import flags

from estimator_export import tag_sets as tag_sets_lib
from estimator_export.errors import ExportError, TagSetError, did_you_mean
from estimator_export.export import ExportOptions

FORMATS = ('raw', 'example', 'text', 'image')


@dataclasses.dataclass(frozen=True)
class ExportSettings:
  """Plain values taken from the export flags."""
  do_export: bool
  export_dir: str
  formats: Tuple[str, ...]
  options: ExportOptions

  @property
  def receiver_kind(self) -> str:
    """'raw', 'example', or 'combined' when several formats are asked for."""
    return self.formats[0] if len(self.formats) == 1 else 'combined'


def define_export_flags(flag_values: flags.FlagValues, export_dir_default: str = None):
  """Defines the export flags in `flag_values` (pass flags.FLAGS from __main__)."""
  flags.DEFINE_bool('do_export', False, 'Export the trained model for TF Serving.',
                    flag_values=flag_values)
  flags.DEFINE_string('export_dir', export_dir_default,
                      'Base directory of the exported versions (TF Serving --model_base_path).',
                      flag_values=flag_values)
  flags.DEFINE_list('export_formats', ['raw', 'example'],
                    'Serving input formats, primary first: ' + ', '.join(FORMATS) + '.',
                    flag_values=flag_values)
  flags.DEFINE_string('export_version', 'step',
                      "Version directory: an integer, 'step' (global step) or 'timestamp'.",
                      flag_values=flag_values)
  flags.DEFINE_enum('export_on_collision', 'error', ['error', 'bump'],
                    'When the version exists: fail, or take the next free number.',
                    flag_values=flag_values)
  flags.DEFINE_integer('exports_to_keep', 5,
                       'Versions to keep after exporting (0 keeps all; 1 keeps 2, the new one '
                       'and a fallback while servers load it, unless '
                       '--export_allow_single_version).', lower_bound=0, flag_values=flag_values)
  flags.DEFINE_bool('export_allow_single_version', False,
                    'With --exports_to_keep=1, really keep one version: delete the previous '
                    'one before any server has loaded the new one.', flag_values=flag_values)
  flags.DEFINE_string('export_keep_best_by', None,
                      'Keep the best versions by this eval metric instead of the newest.',
                      flag_values=flag_values)
  flags.DEFINE_bool('export_higher_is_better', True, 'Direction of --export_keep_best_by.',
                    flag_values=flag_values)
  flags.DEFINE_integer('warmup_requests', 1,
                       'Warmup requests per signature in assets.extra (0: no warmup file).',
                       lower_bound=0, flag_values=flag_values)
  flags.DEFINE_bool('validate_export', True,
                    'Reload the export and run every signature before publishing it.',
                    flag_values=flag_values)
  flags.DEFINE_bool('export_check_servable', False,
                    'Before publishing, check that TF Serving 2.15.1 has every op the export '
                    'uses (TF 2.15 + TF Text 2.12.1); fail the export if not.',
                    flag_values=flag_values)
  flags.DEFINE_multi_string('export_tag_sets', ['serve'],
                            'One MetaGraph per value, all sharing one variables directory: '
                            'TAGS (comma-separated; every signature) or TAGS=SIGNATURE,... '
                            '(those signatures), e.g. --export_tag_sets=serve '
                            '--export_tag_sets=serve,gpu. TF Serving loads one with '
                            '--saved_model_tags=TAGS.', flag_values=flag_values)
  flags.DEFINE_float('export_rtol', 1e-4, 'Relative tolerance of export parity checks.',
                     flag_values=flag_values)
  flags.DEFINE_float('export_atol', 1e-5, 'Absolute tolerance of export parity checks.',
                     flag_values=flag_values)


def export_settings_from_flags(flag_values: flags.FlagValues) -> ExportSettings:
  """Converts parsed export flags to ExportSettings, with clear errors."""
  fv = flag_values
  formats = tuple(f.strip().lower() for f in fv.export_formats if f.strip())
  for f in formats:
    if f not in FORMATS:
      raise ExportError('unknown --export_formats entry', value=f,
                        fix=f'use {", ".join(FORMATS)}' + did_you_mean(f, FORMATS))
  if not formats:
    raise ExportError('--export_formats is empty', value=fv.export_formats,
                      fix='e.g. --export_formats=raw,example')
  if fv.do_export and not fv.export_dir:
    raise ExportError('--do_export needs --export_dir', value=None,
                      fix='e.g. --export_dir=/models/my_model')
  version = fv.export_version
  if version not in ('step', 'timestamp'):
    if not version.isdigit():
      raise ExportError('bad --export_version', value=version,
                        fix="give a non-negative integer, 'step' or 'timestamp'")
    version = int(version)
  try:
    tag_sets = tag_sets_lib.normalize_tag_sets(
        [tag_sets_lib.parse_tag_set_flag(text) for text in fv.export_tag_sets])
  except TagSetError as e:
    raise TagSetError(f'--export_tag_sets: {e.what}', value=e.value, fix=e.fix) from e
  options = ExportOptions(
      version=version, tag_sets=tag_sets, on_collision=fv.export_on_collision,
      keep=fv.exports_to_keep or None,
      keep_best_by=fv.export_keep_best_by if fv.exports_to_keep else None,
      higher_is_better=fv.export_higher_is_better,
      allow_single_version=fv.export_allow_single_version, validate=fv.validate_export,
      warmup=fv.warmup_requests > 0,
      warmup_records_per_signature=max(1, fv.warmup_requests),
      rtol=fv.export_rtol, atol=fv.export_atol, check_servable=fv.export_check_servable)
  return ExportSettings(do_export=fv.do_export, export_dir=fv.export_dir, formats=formats,
                        options=options)


@dataclasses.dataclass(frozen=True)
class EvalTiming:
  """When the evaluator of `tf.estimator.train_and_evaluate` evaluates (EvalSpec's values)."""
  start_delay_secs: float
  throttle_secs: float


def define_eval_timing_flags(flag_values: flags.FlagValues, start_delay_secs: float = 5.0,
                             throttle_secs: float = 30.0) -> None:
  """Defines --eval_start_delay_secs and --eval_throttle_secs (EvalSpec's two delays).

  tf.estimator's own defaults, 120 s and 600 s, suit jobs of hours; with them a
  job of a few minutes waits up to ten minutes for its final evaluation and
  export. These defaults follow a checkpoint within half a minute.
  """
  flags.DEFINE_float('eval_start_delay_secs', start_delay_secs,
                     'Distributed (TF_CONFIG) jobs: seconds the evaluator waits before its '
                     'first evaluation (tf.estimator.EvalSpec.start_delay_secs; TF\'s default '
                     'is 120).', lower_bound=0, flag_values=flag_values)
  flags.DEFINE_float('eval_throttle_secs', throttle_secs,
                     'Distributed (TF_CONFIG) jobs: the evaluator evaluates (and exports) the '
                     'newest checkpoint at most once per this many seconds, and always the '
                     'final one (tf.estimator.EvalSpec.throttle_secs; TF\'s default of 600 '
                     'makes a short job wait up to ten minutes for its last export).',
                     lower_bound=0, flag_values=flag_values)


def eval_timing_from_flags(flag_values: flags.FlagValues) -> EvalTiming:
  """The parsed --eval_start_delay_secs and --eval_throttle_secs."""
  return EvalTiming(start_delay_secs=flag_values.eval_start_delay_secs,
                    throttle_secs=flag_values.eval_throttle_secs)
