"""TF Serving 2.15.1's config messages that tensorflow-serving-api does not ship.

tensorflow-serving-api has model_server_config_pb2 but no _pb2 module for
BatchingParameters (tensorflow_serving/servables/tensorflow/
session_bundle_config.proto), MonitoringConfig (tensorflow_serving/config/
monitoring_config.proto) or SSLConfig (tensorflow_serving/config/
ssl_config.proto). They are built here as real protobuf classes from
FileDescriptorProtos with the field names, numbers and types of those .proto
files at tag 2.15.1 (session_bundle_config.proto is reduced to
BatchingParameters, the only message a flag reads).

They live in a private DescriptorPool, so a later import of real generated
modules of the same files can never clash with them.
"""
from google.protobuf import descriptor_pb2
from google.protobuf import descriptor_pool
from google.protobuf import message_factory
from google.protobuf import wrappers_pb2

_F = descriptor_pb2.FieldDescriptorProto
_PACKAGE = 'tensorflow.serving'

# (file name, imports, {message: [(field, number, type, label, type_name)]}), as in 2.15.1.
_FILES = (
    ('tensorflow_serving/servables/tensorflow/session_bundle_config.proto',
     ['google/protobuf/wrappers.proto'], {
         'BatchingParameters': [
             ('max_batch_size', 1, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL,
              '.google.protobuf.Int64Value'),
             ('batch_timeout_micros', 2, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL,
              '.google.protobuf.Int64Value'),
             ('max_enqueued_batches', 3, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL,
              '.google.protobuf.Int64Value'),
             ('num_batch_threads', 4, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL,
              '.google.protobuf.Int64Value'),
             ('thread_pool_name', 5, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL,
              '.google.protobuf.StringValue'),
             ('enable_large_batch_splitting', 8, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL,
              '.google.protobuf.BoolValue'),
             ('max_execution_batch_size', 9, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL,
              '.google.protobuf.Int64Value'),
             ('allowed_batch_sizes', 6, _F.TYPE_INT64, _F.LABEL_REPEATED, None),
             ('pad_variable_length_inputs', 7, _F.TYPE_BOOL, _F.LABEL_OPTIONAL, None),
         ]}),
    ('tensorflow_serving/config/monitoring_config.proto', [], {
        'PrometheusConfig': [
            ('enable', 1, _F.TYPE_BOOL, _F.LABEL_OPTIONAL, None),
            ('path', 2, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None),
        ],
        'MonitoringConfig': [
            ('prometheus_config', 1, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL,
             '.tensorflow.serving.PrometheusConfig'),
        ]}),
    ('tensorflow_serving/config/ssl_config.proto', [], {
        'SSLConfig': [
            ('server_key', 1, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None),
            ('server_cert', 2, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None),
            ('custom_ca', 3, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None),
            ('client_verify', 4, _F.TYPE_BOOL, _F.LABEL_OPTIONAL, None),
        ]}),
)


def _build_pool() -> descriptor_pool.DescriptorPool:
  pool = descriptor_pool.DescriptorPool()
  pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
  for name, dependencies, messages in _FILES:
    proto = descriptor_pb2.FileDescriptorProto(name=name, package=_PACKAGE, syntax='proto3',
                                               dependency=dependencies)
    for message_name, fields in messages.items():
      message = proto.message_type.add(name=message_name)
      for field_name, number, kind, label, type_name in fields:
        field = message.field.add(name=field_name, number=number, type=kind, label=label,
                                  json_name=_json_name(field_name))
        if type_name:
          field.type_name = type_name
    pool.Add(proto)
  return pool


def _json_name(name: str) -> str:
  head, *rest = name.split('_')
  return head + ''.join(part.capitalize() for part in rest)


_POOL = _build_pool()


def _message_class(full_name: str):
  return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(full_name))


BatchingParameters = _message_class('tensorflow.serving.BatchingParameters')
MonitoringConfig = _message_class('tensorflow.serving.MonitoringConfig')
PrometheusConfig = _message_class('tensorflow.serving.PrometheusConfig')
SSLConfig = _message_class('tensorflow.serving.SSLConfig')
