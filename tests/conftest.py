"""Shared test settings: hypothesis profiles sized for a 2-core machine."""
import os
import sys
import threading
from pathlib import Path

import pytest

from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

settings.register_profile("default", max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=300, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def pipe_path():
    """pipe_path(data) -> "/dev/fd/N": a pipe that a thread fills with the bytes data, as a
    shell's process substitution `<(cat f)` gives a program. Closed after the test."""
    readers = []

    def make(data):
        r, w = os.pipe()
        readers.append(r)

        def feed():
            with os.fdopen(w, "wb") as f:
                f.write(data)
        threading.Thread(target=feed, daemon=True).start()
        return f"/dev/fd/{r}"
    yield make
    for r in readers:
        os.close(r)
