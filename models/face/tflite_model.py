"""Thin wrapper over the LiteRT interpreter: one float32 input, named float32 outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class TfliteModel:
    """Loads a .tflite file once and runs it on a single NHWC float32 batch."""

    def __init__(self, model_path: Path, num_threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter

        if not Path(model_path).is_file():
            raise ValueError(f"model file not found: {model_path} (run scripts/extract_mediapipe_assets.py)")
        self._interpreter = Interpreter(model_path=str(model_path), num_threads=num_threads)
        self._interpreter.allocate_tensors()
        (inp,) = self._interpreter.get_input_details()
        self._input_index = inp["index"]
        self.input_shape: tuple[int, ...] = tuple(int(d) for d in inp["shape"])
        self._outputs = {d["name"]: d["index"] for d in self._interpreter.get_output_details()}

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.input_shape[1], self.input_shape[2]

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if batch.shape != self.input_shape:
            raise ValueError(f"model input must have shape {self.input_shape}, got {batch.shape}")
        self._interpreter.set_tensor(self._input_index, np.ascontiguousarray(batch, dtype=np.float32))
        self._interpreter.invoke()
        return {name: self._interpreter.get_tensor(idx) for name, idx in self._outputs.items()}
