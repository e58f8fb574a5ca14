"""Clients for TF Serving's gRPC and REST APIs (and this package's embedded server).

    from estimator_export.client import GrpcClient, RestClient

    with GrpcClient('127.0.0.1:8500') as client:
      client.predict('half_plus_two', {'x': [[1.0], [2.0]]})     # {'y': array([[2.5], [3.]])}
      client.classify('m', [{'x': 2.0}], signature_name='classify_x_to_y')  # [[('', 3.0)]]
      client.multi_inference('m', [('regress_x_to_y', 'regress'),
                                   ('classify_x_to_y', 'classify')], [{'x': 2.0}])
    RestClient('http://127.0.0.1:8501').regress('m', [{'x': 80.0}], 'regress_x_to_y')

    # Round-robin over several servers (gRPC's own load balancing):
    GrpcClient('10.0.0.5:8500,10.0.0.6:8500')           # or a list of 'ip:port'
    GrpcClient('dns:///serving.default.svc.cluster.local:8500')  # a headless Service

Both clients take numpy arrays, (nested) lists or scalars for Predict inputs,
and feature dicts, `tf.train.Example`s or serialized Examples for
Classify/Regress, and return numpy arrays and plain Python values. Every
failure, the server's and the connection's, raises `ServingClientError` with a
`grpc.StatusCode` and TF Serving's message; a value that cannot become a request
raises `errors.ClientInputError` (a ValueError and TypeError) before anything is sent.

The client layer sits beside the server (estimator_export.serving), not in it: it
imports only estimator_export.errors and estimator_export._saved_model. The
`estimator-export query` command is estimator_export.cli.query.
"""
from estimator_export.client._convert import to_example
from estimator_export.client._convert import to_model_server_config
from estimator_export.client._convert import to_ndarray
from estimator_export.client._convert import to_tensor_proto
from estimator_export.client._grpc import GrpcClient
from estimator_export.client._grpc import channel_target
from estimator_export.client._rest import RestClient
from estimator_export.client._status import CLASSIFY_METHOD
from estimator_export.client._status import Classifications
from estimator_export.client._status import Code
from estimator_export.client._status import DEFAULT_GRPC_TARGET
from estimator_export.client._status import DEFAULT_REST_URL
from estimator_export.client._status import INT32_MAX
from estimator_export.client._status import REGRESS_METHOD
from estimator_export.client._status import ServingClientError
from estimator_export.errors import ClientInputError

__all__ = [
    'CLASSIFY_METHOD', 'Classifications', 'ClientInputError', 'Code', 'DEFAULT_GRPC_TARGET',
    'DEFAULT_REST_URL', 'GrpcClient', 'INT32_MAX', 'REGRESS_METHOD', 'RestClient',
    'ServingClientError', 'channel_target', 'to_example', 'to_model_server_config', 'to_ndarray',
    'to_tensor_proto',
]
