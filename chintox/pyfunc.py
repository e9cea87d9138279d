"""The registered detector as an MLflow pyfunc: raw texts in, ``label`` and ``score`` out.

The model version holds the whole detector folder (``merged/`` model and tokenizer, ``prompt.txt`` and
its card ``detector.json``) as the artifact ``detector``, and is logged as code (MLflow "models from
code"): :data:`MODEL_CODE` is the file MLflow stores and runs to build the model (it calls
``mlflow.models.set_model(DetectorModel())``), nothing is pickled. :class:`DetectorModel` loads the
folder with :class:`chintox.detector.Detector` (backend ``hf``), so the served model scores exactly as
the detector's card says (prompt, answer words, threshold, dtype, context window).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc

from chintox.card import DetectorCard

DETECTOR_ARTIFACT = "detector"
MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")  # python_model= for mlflow.pyfunc.log_model


class DetectorFolderError(FileNotFoundError):
    """A folder that is not a trained detector."""


def check_detector_dir(path: str | Path) -> DetectorCard:
    """The card of a detector folder that can be served, or a clear error."""
    p = Path(path)
    if not p.is_dir():
        raise DetectorFolderError(f"detector folder not found: {p.resolve()} (run the stage2 step first)")
    if not (p / "prompt.txt").is_file():
        raise DetectorFolderError(f"{p.resolve()} is not a detector folder: missing prompt.txt")
    if not (p / "merged" / "config.json").is_file():
        raise DetectorFolderError(f"{p.resolve()} has no merged/ model folder (merged/config.json)")
    return DetectorCard.read(p)


def load_detector(path: str | Path) -> Any:
    """The one place that turns a detector folder into an object with ``predict(texts)``."""
    from chintox.detector import Detector

    check_detector_dir(path)
    return Detector(path, backend="hf")


def _texts(model_input: Any) -> list[str]:
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        col = "text" if "text" in model_input.columns else model_input.columns[0]
        return [str(t) for t in model_input[col].tolist()]
    if isinstance(model_input, pd.Series):
        return [str(t) for t in model_input.tolist()]
    if isinstance(model_input, dict):
        v = model_input.get("text", next(iter(model_input.values())))
        return [v] if isinstance(v, str) else [str(t) for t in v]
    if isinstance(model_input, str):
        return [model_input]
    return [str(t) for t in model_input]


class DetectorModel(mlflow.pyfunc.PythonModel):
    """pyfunc: a DataFrame with a ``text`` column (or a list of strings) -> DataFrame label, score."""

    def load_context(self, context) -> None:
        self._detector = load_detector(context.artifacts[DETECTOR_ARTIFACT])

    def predict(self, context, model_input, params=None):
        import pandas as pd

        texts = _texts(model_input)
        rows = self._detector.predict(texts) if texts else []
        return pd.DataFrame(
            {"label": [int(r["label"]) for r in rows], "score": [float(r["score"]) for r in rows]},
            columns=["label", "score"],
        )


def signature() -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", "text")]),
        outputs=Schema([ColSpec("long", "label"), ColSpec("double", "score")]),
    )
