"""Progress lines: what a detached job's log shows while a stage runs."""

from __future__ import annotations

import io
import logging
import re

import pytest

from core.progress import PROGRESS_LOGGER, Progress, console, format_duration, use_console


class Lines:
    def __init__(self, caplog):
        self.caplog = caplog

    def __getitem__(self, index: int) -> str:
        return self.caplog.messages[index]

    def __len__(self) -> int:
        return len(self.caplog.messages)


@pytest.fixture
def lines(caplog) -> Lines:
    """The progress lines logged so far."""
    caplog.set_level(logging.INFO, logger=PROGRESS_LOGGER)
    return Lines(caplog)


def test_a_line_per_interval_with_count_fields_rate_and_time_left(lines):
    with Progress("label", total=4, unit="ex", bar=False, every_s=0) as done:
        done.update(1, features=3)
        done.update(1, features=7)
    assert len(lines) == 2   # one per update; close adds none when nothing moved since the last line
    assert re.fullmatch(r"label: 1/4 ex \(25\.0%\), features 3, [\d.e+]+ ex/s, \d+s left", lines[0]), lines[0]
    assert lines[1].startswith("label: 2/4 ex (50.0%), features 7, ")


def test_lines_only_when_told_and_a_last_one_at_the_end(lines):
    done = Progress("intermediate", total=10, unit="step", bar=False, every_s=None, initial=4)
    done.update(1)
    assert len(lines) == 0
    done.fields = {"loss": 0.123456, "lr": 3e-05}
    done.line()
    assert lines[0].startswith("intermediate: 5/10 step (50.0%), loss 0.1235, lr 3e-05, ")
    done.update(5)
    done.close()
    assert lines[1].startswith("intermediate: 10/10 step (100.0%), ")
    assert "left" not in lines[1]


def test_bars_are_drawn_on_the_console_the_runner_gives(lines):
    stream = io.StringIO()
    with use_console(stream):
        assert console() is stream
        with Progress("augment", total=2, unit="block", bar=True, every_s=None) as done:
            done.update(2)
    assert "augment" in stream.getvalue() and "2/2" in stream.getvalue()
    assert console() is not stream


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (59.4, "59s"), (61, "1m01s"), (3600 * 30 + 125, "30h02m")])
def test_durations_read_as_hours_minutes_seconds(seconds, text):
    assert format_duration(seconds) == text
