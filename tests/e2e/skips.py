"""The e2e tier's two rules, as a pytest plugin that tests/e2e/conftest.py registers:

- every test collected under tests/e2e carries the `e2e` marker, so `pytest -m e2e` (scripts/test) cannot
  deselect a file that forgot its `pytestmark`;
- under CI a skipped e2e test fails the run, unless its skip is listed in ALLOWED with why: CI installs
  everything the tier needs (scripts/test), so a skip there means a missing install step or a broken
  fixture, not a test that cannot run.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Mapping
from pathlib import Path
from typing import Final

import pytest

# A test node id (a file, a test, or a parametrised test without its [id]) or a substring of the skip's
# reason -> why CI may skip it. A skip that is not here fails under CI.
ALLOWED: Final[dict[str, str]] = {
    "tests/e2e/test_tiny_model.py::test_without_torch_it_says_which_python_to_use":
        "checks the message of an interpreter WITHOUT torch; it cannot run where confgen's venv has torch",
    "tests/e2e/test_vllm_check.py::test_skipped_without_vllm":
        "checks the report when no vLLM can be found; it cannot run where confgen's venv has vLLM itself",
}


def under_ci(env: Mapping[str, str] = os.environ) -> bool:
    """CI=true (GitHub, GitLab and our CI set it); an empty, 0, false or no value is not CI."""
    return env.get("CI", "").strip().lower() not in {"", "0", "false", "no"}


def listed(nodeid: str, reason: str, allowed: Mapping[str, str]) -> bool:
    return any(nodeid == entry or nodeid.startswith((f"{entry}::", f"{entry}[")) or entry in reason
               for entry in allowed)


def unlisted_message(reason: str) -> str:
    return f"unlisted skip under CI: {reason}; add it to tests/e2e/skips.py with why, or fix the cause"


def _reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return text.removeprefix("Skipped: ")


class E2eTier:
    """Marks and guards the tests under `folder`; `allowed` is ALLOWED (tests pass their own)."""

    def __init__(self, folder: Path, allowed: Mapping[str, str] = ALLOWED) -> None:
        self.folder = folder.resolve()
        self.allowed = allowed

    def _ours(self, path: Path) -> bool:
        return path.resolve().is_relative_to(self.folder)

    @pytest.hookimpl(tryfirst=True)  # before `-m e2e` deselects (the mark plugin's own modifyitems)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            if self._ours(item.path) and item.get_closest_marker("e2e") is None:
                item.add_marker(pytest.mark.e2e)

    @pytest.hookimpl(wrapper=True, tryfirst=True)  # outermost: sees the report once skipping.py has made it
    def pytest_runtest_makereport(self, item: pytest.Item) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if report.skipped and not hasattr(report, "wasxfail") and self._ours(item.path):
            self._guard(report, report.nodeid)
        return report

    @pytest.hookimpl(wrapper=True, tryfirst=True)  # a module that skips itself (importorskip, module-level skip)
    def pytest_make_collect_report(self, collector: pytest.Collector
                                   ) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
        report = yield
        if report.skipped and self._ours(collector.path):
            self._guard(report, report.nodeid)
        return report

    def _guard(self, report: pytest.TestReport | pytest.CollectReport, nodeid: str) -> None:
        reason = _reason(report)
        if under_ci() and not listed(nodeid, reason, self.allowed):
            report.outcome = "failed"
            report.longrepr = unlisted_message(reason)
