"""chintox: train, evaluate, track and promote small-LLM detectors of toxic Chinese text."""

__version__ = "0.1.0"
