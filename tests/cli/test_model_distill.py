"""`blockrag model distill`'s stop on a signal: the steps done are kept."""

from __future__ import annotations

import os
import signal

import pytest

from blockrag.cli.model import _stop_on_signal


def test_the_first_signal_asks_to_stop_the_second_quits_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM)
    with _stop_on_signal() as stop:
        assert not stop.is_set()
        os.kill(os.getpid(), signal.SIGTERM)  # delivered to the main thread before kill returns
        assert stop.is_set()
        with pytest.raises(SystemExit) as e:
            os.kill(os.getpid(), signal.SIGINT)
        assert e.value.code == 128 + signal.SIGINT
    assert signal.getsignal(signal.SIGTERM) is before
