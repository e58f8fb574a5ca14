"""Moved: the servability check is `estimator_export.servability` (generic, for any export).

This alias keeps `from bert_example import servability` working.
"""
from estimator_export.servability import (TARGET, TF_TEXT_OPS_FILE, OpProblem,
                                          ServabilityReport, UnservableGraphError,
                                          allowed_op_defs, assert_servable, check_servability,
                                          core_op_defs, tf_text_op_defs)

__all__ = ('TARGET', 'TF_TEXT_OPS_FILE', 'OpProblem', 'ServabilityReport',
           'UnservableGraphError', 'allowed_op_defs', 'assert_servable', 'check_servability',
           'core_op_defs', 'tf_text_op_defs')
