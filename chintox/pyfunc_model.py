"""The registered detector's model code (MLflow "models from code"; see :mod:`chintox.pyfunc`).

MLflow copies this file into the model version and runs it when the model is logged and loaded;
``chintox`` itself travels with the version as its code path. Nothing imports this module.
"""

import mlflow.models

from chintox.pyfunc import DetectorModel

mlflow.models.set_model(DetectorModel())
