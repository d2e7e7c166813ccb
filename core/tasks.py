"""The tasks a job can run, named once: every stage branches on this name."""

from typing import Literal

Task = Literal["qa", "classification"]
