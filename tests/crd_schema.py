"""Strict CRD schemas for manifest tests (the TFJob of test_cluster, the InferenceService of
test_deploy): a field the schema does not declare fails, as the API server would prune it."""


def strict(schema):
  """`schema` with additionalProperties false wherever it lists properties and allows no more."""
  if isinstance(schema, list):
    return [strict(s) for s in schema]
  if not isinstance(schema, dict):
    return schema
  out = {k: strict(v) for k, v in schema.items()}
  if ('properties' in schema and 'additionalProperties' not in schema and
      not schema.get('x-kubernetes-preserve-unknown-fields')):
    out['additionalProperties'] = False
  return out
