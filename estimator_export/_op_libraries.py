"""Op libraries that the real TF Serving links and that exports may use.

TF Serving 2.15.1 links TF Text's ops, so a SavedModel with a raw-text
signature (TF Text tokenizer ops) loads there. In Python those ops exist only
after `import tensorflow_text`; every loader of this package calls
`register_serving_op_libraries()` first so such exports load here too.
"""
import importlib
import logging
import threading

logger = logging.getLogger('estimator_export')

# Python packages whose import registers ops that tensorflow_model_server links.
SERVING_OP_PACKAGES = ('tensorflow_text',)

_lock = threading.Lock()
_registered = None


def register_serving_op_libraries() -> tuple:
  """Imports the installed op packages once; returns the names imported."""
  global _registered
  with _lock:
    if _registered is None:
      found = []
      for name in SERVING_OP_PACKAGES:
        try:
          importlib.import_module(name)
        except ImportError:
          logger.debug('op package %s is not installed; its ops cannot be loaded', name)
          continue
        found.append(name)
      _registered = tuple(found)
    return _registered
