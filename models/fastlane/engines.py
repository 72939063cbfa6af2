"""Single-row inference engines for a LightGBM model, and the calibrated scorer on top.

Three engines score the same model: ``lleaves`` (the trees compiled to native code by LLVM),
``onnx`` (ONNX Runtime on the converted model) and ``lightgbm`` (the reference, and the fallback
when a compiled path cannot load). Each returns the uncalibrated probability of the up class;
``Scorer`` applies the Platt calibration fitted at training time.
"""

from __future__ import annotations

import ctypes
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from libs.common.logging import get_logger

log = get_logger(__name__)
ENGINES = ("lleaves", "onnx", "lightgbm")


class Engine(Protocol):
    name: str

    def raw_probability(self, values: Sequence[float]) -> float: ...


class LightgbmEngine:
    name = "lightgbm"

    def __init__(self, model_file: Path) -> None:
        import lightgbm

        self.booster = lightgbm.Booster(model_file=str(model_file))
        self.n = self.booster.num_feature()

    def raw_probability(self, values: Sequence[float]) -> float:
        row = np.asarray(values, dtype=np.float64).reshape(1, self.n)
        return float(self.booster.predict(row, num_threads=1)[0])


class LleavesEngine:
    """lleaves' own ``predict`` converts its input to a numpy array and allocates the output on
    every call (about 10 us for one row); the compiled entry point itself takes a pointer to the
    row and to the result. This calls it directly on two buffers allocated once, which is what
    brings a single row to a few microseconds. Falls back to ``predict`` if the entry point moves
    in a future lleaves."""

    name = "lleaves"

    def __init__(self, model_file: Path, cache_dir: Path) -> None:
        import lleaves

        cache_dir.mkdir(parents=True, exist_ok=True)
        self.model = lleaves.Model(model_file=str(model_file))
        # The compiled code is specific to this CPU and lleaves version: cache it per model file.
        stamp = f"{model_file.stat().st_size}-{int(model_file.stat().st_mtime)}"
        cached = cache_dir / f"{model_file.parent.name}-{stamp}.so"
        if cached.exists():
            self.model.compile(cache=str(cached))
        else:
            # lleaves writes its cache file in place: compiled under this process's own name and
            # renamed into place, so a process starting meanwhile never loads half a library.
            mine = cached.with_suffix(f".{os.getpid()}.so")
            self.model.compile(cache=str(mine))
            os.replace(mine, cached)
        self.n = self.model.num_feature()
        self._row = (ctypes.c_double * self.n)()
        self._out = (ctypes.c_double * 1)()
        self._entry = getattr(self.model, "_c_entry_func", None)
        self._row_ptr = ctypes.cast(self._row, ctypes.POINTER(ctypes.c_double))
        self._out_ptr = ctypes.cast(self._out, ctypes.POINTER(ctypes.c_double))

    def raw_probability(self, values: Sequence[float]) -> float:
        if self._entry is None:
            return float(self.model.predict(np.asarray([values], dtype=np.float64), n_jobs=1)[0])
        self._row[:] = values
        self._entry(self._row_ptr, self._out_ptr, 0, 1)
        return float(self._out[0])


class _BoundSession:
    """An ONNX Runtime session run on buffers bound once (IO binding): the input array is
    written in place and the session reads it where it lies, which saves about 2.5 us a call
    against ``run`` (its per-call input and output conversion) on a single row."""

    def __init__(self, onnx_file: Path, shape: tuple[int, ...]) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        self.input = np.zeros(shape, dtype=np.float32)
        outputs = [o.name for o in self.session.get_outputs()]
        self.binding = self.session.io_binding()
        self.binding.bind_ortvalue_input(
            self.session.get_inputs()[0].name, ort.OrtValue.ortvalue_from_numpy(self.input)
        )
        # The (down, up) probabilities: "probabilities" in the torch exports (their only output),
        # the second output (after the label) of the LightGBM and scikit-learn conversions.
        wanted = "probabilities" if "probabilities" in outputs else outputs[1]
        self.probabilities = ort.OrtValue.ortvalue_from_shape_and_type([shape[0], 2], np.float32)
        self.binding.bind_ortvalue_output(wanted, self.probabilities)
        for other in outputs:
            if other != wanted:
                self.binding.bind_output(other)

    def up(self) -> float:
        self.session.run_with_iobinding(self.binding)
        return float(self.probabilities.numpy()[0, 1])


class OnnxEngine:
    name = "onnx"

    def __init__(self, onnx_file: Path) -> None:
        import onnxruntime as ort

        probe = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
        self.n = int(probe.get_inputs()[0].shape[1])
        self.bound = _BoundSession(onnx_file, (1, self.n))
        self._row = self.bound.input

    def raw_probability(self, values: Sequence[float]) -> float:
        self._row[0, :] = values
        return self.bound.up()


class OnnxWindowEngine:
    """The sequence family's ONNX model: one one-second window [seconds, width + 1] a call
    (models/fastlane/sequence.py), no window at all scored as an empty one."""

    name = "onnx"

    def __init__(self, onnx_file: Path) -> None:
        import onnxruntime as ort

        probe = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
        shape = probe.get_inputs()[0].shape
        self.seconds, self.width = int(shape[1]), int(shape[2])
        self.bound = _BoundSession(onnx_file, (1, self.seconds, self.width))

    def raw_probability(self, window: Any) -> float:
        if window is None:
            from models.fastlane.sequence import empty_window

            window = empty_window(self.seconds)
        self.bound.input[0] = window
        return self.bound.up()


def load_engine(name: str, version_dir: Path, cache_dir: Path) -> Engine:
    if name == "lleaves":
        return LleavesEngine(version_dir / "model.txt", cache_dir)
    if name == "onnx":
        return OnnxEngine(version_dir / "model.onnx")
    return LightgbmEngine(version_dir / "model.txt")


def load_best_engine(preferred: Sequence[str], version_dir: Path, cache_dir: Path) -> Engine:
    """The first engine of ``preferred`` that loads; lightgbm is always the last resort."""
    for name in [*preferred, "lightgbm"]:
        try:
            return load_engine(name, version_dir, cache_dir)
        except Exception as exc:
            log.warning("inference engine unavailable, trying the next", engine=name, error=repr(exc))
    raise RuntimeError(f"no engine could load {version_dir}")


def logit(p: float) -> float:
    p = min(max(p, 1e-12), 1 - 1e-12)
    return math.log(p / (1 - p))


class Scorer:
    """Calibrated probability and expected return from one feature row."""

    def __init__(
        self, engine: Engine, platt_a: float, platt_b: float, up_mean: float, down_mean: float
    ) -> None:
        self.engine = engine
        self.a, self.b = platt_a, platt_b
        self.up_mean, self.down_mean = up_mean, down_mean
        self.windowed = isinstance(engine, OnnxWindowEngine)

    def score(self, values: Sequence[float], window: Any = None) -> tuple[float, float]:
        """``window``: the one-second window, read by a windowed engine only."""
        raw = self.engine.raw_probability(window if self.windowed else values)
        p = 1.0 / (1.0 + math.exp(-(self.a * logit(raw) + self.b)))
        return p, p * self.up_mean + (1.0 - p) * self.down_mean


class ZooScorer:
    """A horizon's zoo: each family's calibrated probability, blended by the ZooBalancer's
    weights and temperature (models/fastlane/zoo.py), and the expected return of the blend."""

    def __init__(
        self,
        members: dict[str, Scorer],
        weights: dict[str, float],
        temperature: float,
        up_mean: float,
        down_mean: float,
    ) -> None:
        self.members = list(members.items())
        self.weights = weights
        # fastlane builds a one-second window for a vector only when a member reads it
        self.windowed = any(m.windowed for m in members.values())
        self.temperature = temperature
        self.up_mean, self.down_mean = up_mean, down_mean

    def score(self, values: Sequence[float], window: Any = None) -> tuple[float, float]:
        z = 0.0
        for family, member in self.members:
            p = min(max(member.score(values, window)[0], 1e-6), 1 - 1e-6)
            z += self.weights[family] * math.log(p / (1 - p))
        p = 1.0 / (1.0 + math.exp(-z / self.temperature))
        return p, p * self.up_mean + (1.0 - p) * self.down_mean


def time_engine(engine: Engine, rows: np.ndarray, repeats: int = 3) -> dict[str, float]:
    """Single-row latency in microseconds: p50 and p99 over every row, best of ``repeats``."""
    lists = [list(map(float, r)) for r in rows]
    return time_calls(engine.raw_probability, [(values,) for values in lists], repeats)


def time_calls(call: Any, arguments: Sequence[tuple[Any, ...]], repeats: int = 3) -> dict[str, float]:
    """``call(*args)`` once per entry of ``arguments``, timed: p50 and p99 in microseconds, the
    round (of ``repeats``) with the best p99 (a shared machine's hiccups are not the code's)."""
    best: dict[str, float] | None = None
    for _ in range(repeats):
        samples = []
        for args in arguments:
            t0 = time.perf_counter_ns()
            call(*args)
            samples.append(time.perf_counter_ns() - t0)
        arr = np.array(samples) / 1000.0
        got = {"p50_us": float(np.percentile(arr, 50)), "p99_us": float(np.percentile(arr, 99))}
        if best is None or got["p99_us"] < best["p99_us"]:
            best = got
    assert best is not None
    return best
