"""estimator_export: take a TensorFlow Estimator from training to TF Serving.

Public API (everything else is private):

    from estimator_export import (Feature, FeatureSpec, ServingModelMixin,
                                  build_combined_receiver_fn, export_for_serving, ...)
"""
from estimator_export.errors import (CheckpointNotFoundError, ConfigError, ContractError,
                                     ExportDirError, ExportError, FeatureError, FreezeError,
                                     ReceiverError, SignatureError, ValidationError,
                                     VersionExistsError)
from estimator_export.export import (ExportOptions, ExportResult, apply_retention,
                                     export_for_serving, numeric_versions, read_manifest)
from estimator_export.exporters import ServingExporter
from estimator_export.features import Feature, FeatureSpec
from estimator_export.freeze import (FreezeOptions, FreezeWarning, FrozenGraph, FrozenPredictor,
                                     freeze_checkpoint, freeze_estimator, freeze_graph,
                                     freeze_graph_fn, freeze_saved_model, read_frozen_manifest)
from estimator_export.hooks import ProgressHook, show_export_progress
from estimator_export.mixins import ServingModelMixin, UnreadFeatureWarning
from estimator_export.outputs import (build_export_outputs, classify_output,
                                      multi_head_outputs, predict_output, regress_output)
from estimator_export.predictor import Predictor
from estimator_export.receivers import (ServingReceiverFn, build_combined_receiver_fn,
                                        build_example_receiver_fn, build_image_receiver_fn,
                                        build_raw_receiver_fn, build_text_receiver_fn)

__version__ = '0.1.0'

__all__ = [
    'CheckpointNotFoundError', 'ConfigError', 'ContractError', 'ExportDirError', 'ExportError',
    'ExportOptions', 'ExportResult', 'Feature', 'FeatureError', 'FeatureSpec', 'FreezeError',
    'FreezeOptions', 'FreezeWarning', 'FrozenGraph', 'FrozenPredictor', 'Predictor',
    'ProgressHook',
    'ReceiverError', 'ServingExporter', 'ServingModelMixin', 'ServingReceiverFn',
    'SignatureError', 'UnreadFeatureWarning', 'ValidationError', 'VersionExistsError',
    'apply_retention', 'build_combined_receiver_fn', 'build_example_receiver_fn',
    'build_export_outputs', 'build_image_receiver_fn', 'build_raw_receiver_fn',
    'build_text_receiver_fn', 'classify_output', 'export_for_serving', 'freeze_checkpoint',
    'freeze_estimator', 'freeze_graph', 'freeze_graph_fn', 'freeze_saved_model',
    'multi_head_outputs', 'read_frozen_manifest',
    'numeric_versions', 'predict_output', 'read_manifest', 'regress_output',
    'show_export_progress',
]
