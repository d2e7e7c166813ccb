"""Metrics as Hugging Face `evaluate` modules, loaded offline by path: `evaluate.load(SQUAD_V2)`."""

from pathlib import Path

#: The path `evaluate.load` takes for the official SQuAD 2.0 metric (distill/metrics/squad_v2.py).
SQUAD_V2 = str(Path(__file__).with_name("squad_v2.py"))
