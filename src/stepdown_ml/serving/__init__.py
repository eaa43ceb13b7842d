"""Runtime: what scores candidates in production.

``model`` (one ONNX session, ``predict()``), ``batch`` (streaming file scoring),
``spark`` (the same block scorer on a cluster) and ``registry`` (MLflow model URIs,
MLflow imported only when one is asked for). Nothing here imports scikit-learn,
skl2onnx or the training code; ``make test`` checks that with import-linter.
"""

from stepdown_ml.serving.model import InvalidCandidateError, Model, load_model, predict

__all__ = ["InvalidCandidateError", "Model", "load_model", "predict"]
