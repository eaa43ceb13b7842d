"""The MLflow pyfunc of a stepdown_ml model, logged as code (no pickle).

MLflow's built-in ONNX flavour mishandles this graph's outputs, so the model is this
``PythonModel``: it loads the logged model directory (ONNX + manifest + vocabulary) and
scores through the same :class:`stepdown_ml.serving.Model` as ``predict()``.
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

from stepdown_ml.serving import InvalidCandidateError, Model, predict
from stepdown_ml.serving.registry import MODEL_DIR_ARTIFACT


class StepdownModel(PythonModel):
    """Scores candidate rows (docs/CONTRACT.md) into the scores layout."""

    def load_context(self, context: Any) -> None:
        self.model = Model(context.artifacts[MODEL_DIR_ARTIFACT])

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        try:
            return predict(frame, model=self.model)
        except InvalidCandidateError as exc:
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None


mlflow.models.set_model(StepdownModel())
