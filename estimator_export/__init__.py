"""estimator_export: take a TensorFlow Estimator from training to TF Serving.

Public API (everything else is private):

    from estimator_export import (Feature, FeatureSpec, ServingModelMixin,
                                  build_combined_receiver_fn, export_for_serving, ...)

The front is lazy: `import estimator_export` imports no TensorFlow; each name is
imported from its module on first use (so `estimator-export --help` is instant).
"""
import importlib
from typing import Any, Dict, List

__version__ = '0.1.0'

# Public name -> the module that defines it.
_EXPORTS: Dict[str, str] = {}
for _module, _names in {
    'errors': ('CheckpointNotFoundError', 'ConfigError', 'ContractError', 'EstimatorExportError',
               'ExportDirError', 'ExportError', 'FeatureError', 'FreezeError', 'ReceiverError',
               'SignatureError', 'TagSetError', 'ValidationError', 'VersionExistsError'),
    'custom_receiver': ('adapt_receiver_fn',),
    'export': ('ExportOptions', 'ExportResult', 'apply_retention', 'export_for_serving',
               'numeric_versions', 'read_manifest'),
    'exporters': ('ServingExporter',),
    'features': ('Feature', 'FeatureSpec'),
    'freeze': ('FreezeOptions', 'FreezeWarning', 'FrozenGraph', 'FrozenPredictor',
               'freeze_checkpoint', 'freeze_estimator', 'freeze_graph', 'freeze_graph_fn',
               'freeze_saved_model', 'read_frozen_manifest'),
    'hooks': ('ProgressHook', 'show_export_progress'),
    'mixins': ('ServingModelMixin', 'UnreadFeatureWarning'),
    'outputs': ('build_export_outputs', 'classify_output', 'multi_head_outputs',
                'predict_output', 'regress_output'),
    'predictor': ('Predictor',),
    'receivers': ('ServingReceiverFn', 'build_combined_receiver_fn', 'build_example_receiver_fn',
                  'build_image_receiver_fn', 'build_raw_receiver_fn', 'build_text_receiver_fn'),
    'servability': ('ServabilityReport', 'UnservableGraphError', 'assert_servable',
                    'check_servability'),
    'tag_sets': ('MetaGraphSpec',),
}.items():
  for _name in _names:
    _EXPORTS[_name] = _module
del _module, _names, _name

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
  module = _EXPORTS.get(name)
  if module is None:
    raise AttributeError(f"module 'estimator_export' has no attribute {name!r}")
  value = getattr(importlib.import_module(f'estimator_export.{module}'), name)
  globals()[name] = value  # Later lookups skip __getattr__.
  return value


def __dir__() -> List[str]:
  return sorted(set(globals()) | set(_EXPORTS))
