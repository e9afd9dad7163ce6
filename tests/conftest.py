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


REFERENCES = {"torch": "pip install torch==2.13.0", "transformers": 'pip install -e ".[test]"',
              "tiktoken": 'pip install -e ".[test]"', "safetensors": 'pip install -e ".[test]"'}


def missing_references(skipped):
    """{module: how to install it} for the optional references that skip reports name."""
    found = {}
    for report in skipped:
        reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        for name, how in REFERENCES.items():
            if f"could not import '{name}'" in reason:
                found[name] = how
    return found


def pytest_terminal_summary(terminalreporter):
    """Say, at the end, which reference checks were skipped and how to run them."""
    missing = missing_references(terminalreporter.stats.get("skipped", []))
    if missing:
        hows = " and ".join(sorted(set(missing.values())))
        terminalreporter.write_line(f"reference checks skipped: {', '.join(sorted(missing))} not installed "
                                    f"(to run them: {hows})")
