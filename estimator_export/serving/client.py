"""Moved: the clients are estimator_export.client (this alias keeps old imports working).

    from estimator_export.serving.client import GrpcClient, RestClient   # still works
    from estimator_export.client import GrpcClient, RestClient           # the new home

The `estimator-export query` command that lived here is estimator_export.cli.query.
"""
# pylint: disable=wildcard-import,unused-wildcard-import
from estimator_export.client import *  # noqa: F401,F403
from estimator_export.client import __all__  # noqa: F401
