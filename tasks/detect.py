"""Detect: judge texts with the registered champion (``models:/<registered_model>@champion``).

``detect_texts`` is the Python API behind ``chintox detect``; it yields one dict per non-blank text:
``{"text", "label", "score", "model_version", "model_uri"}``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import Any

from chintox.config import Config
from chintox.registry import CHAMPION, with_retries
from chintox.tracking import setup, tracking_uri

_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))$")


class NoChampionError(LookupError):
    """The registry has no version behind the requested alias."""


def champion_uri(cfg: Config) -> str:
    return f"models:/{cfg.mlflow.registered_model}@{CHAMPION}"


def resolve(cfg: Config, model_uri: str | None = None) -> tuple[str, str | None]:
    """``(pinned model uri, version)``: an alias is resolved to its version once, so every text of a
    call is judged by the same version even if the alias moves meanwhile."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = model_uri or champion_uri(cfg)
    m = _MODELS_URI.match(uri)
    if not m:
        return uri, None
    if m.group("version"):
        return uri, m.group("version")
    name, alias = m.group("name"), m.group("alias")

    def _get() -> Any:
        setup(cfg)
        return MlflowClient().get_model_version_by_alias(name, alias)

    try:
        mv = with_retries(_get, cfg, f"resolving {uri}")
    except MlflowException as e:
        raise NoChampionError(
            f"{uri}: no version of {name!r} has the alias {alias!r} in {tracking_uri(cfg)} "
            f"(register with `chintox register`, then `chintox promote`): {str(e).splitlines()[0]}"
        ) from e
    return f"models:/{name}/{mv.version}", str(mv.version)


@lru_cache(maxsize=4)
def _load(uri: str, store: str) -> Any:
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(uri)


def load_champion(cfg: Config, model_uri: str | None = None) -> tuple[Any, str, str | None]:
    """The pyfunc model, its pinned uri and version (cached per process)."""
    pinned, version = resolve(cfg, model_uri)
    setup(cfg)
    return _load(pinned, tracking_uri(cfg)), pinned, version


def detect_texts(cfg: Config, texts: Iterable[str], model_uri: str | None = None,
                 batch_size: int = 64) -> Iterator[dict[str, Any]]:
    """Judge each non-blank text; yields ``{text, label, score, model_version, model_uri}``."""
    import pandas as pd

    model, pinned, version = load_champion(cfg, model_uri)
    batch: list[str] = []

    def _flush() -> Iterator[dict[str, Any]]:
        out = model.predict(pd.DataFrame({"text": batch}))
        for text, label, score in zip(batch, out["label"].tolist(), out["score"].tolist(), strict=True):
            yield {"text": text, "label": int(label), "score": round(float(score), 6),
                   "model_version": version, "model_uri": pinned}

    for t in texts:
        if t is None or not str(t).strip():
            continue
        batch.append(str(t))
        if len(batch) >= batch_size:
            yield from _flush()
            batch = []
    if batch:
        yield from _flush()
