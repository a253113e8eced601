"""tests/e2e/skips.py: the e2e tier's plugin, run by pytester on a small e2e folder of its own."""

from __future__ import annotations

import pytest

from tests.e2e.skips import ALLOWED, listed, under_ci

pytest_plugins = ["pytester"]

CONFTEST = """
from pathlib import Path
from tests.e2e.skips import E2eTier

def pytest_configure(config):
    config.pluginmanager.register(E2eTier(Path(__file__).parent, {
        "needs a GPU": "no accelerator on CI machines",
        "e2e/test_some.py::test_listed_by_id": "listed by its node id",
    }))
"""
INI = "[pytest]\naddopts = --strict-markers\nmarkers =\n    e2e: end-to-end\n"
TESTS = """
import pytest

def test_listed_by_reason():
    pytest.skip("needs a GPU: none here")

def test_listed_by_id():
    pytest.skip("the backend is not installed")

@pytest.mark.skipif(True, reason="the vLLM venv is missing")
def test_unlisted_mark():
    pass

@pytest.fixture
def backend():
    pytest.skip("no backend")

def test_unlisted_in_a_fixture(backend):
    pass

def test_unlisted_in_the_body():
    pytest.skip("the simulator did not start")

def test_runs():
    pass
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    folder = pytester.mkdir("e2e")
    (folder / "conftest.py").write_text(CONFTEST, encoding="utf-8")
    (folder / "test_some.py").write_text(TESTS, encoding="utf-8")
    pytester.makepyfile(test_outside="import pytest\n\ndef test_outside():\n    pytest.skip('not e2e')\n")
    pytester.makeini(INI)
    return pytester


def test_without_ci_skips_are_skips(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    result = suite.runpytest("-rs")
    result.assert_outcomes(passed=1, skipped=6)
    assert result.ret == 0


def test_under_ci_an_unlisted_skip_fails_the_run(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    result = suite.runpytest("-rA")
    # Listed skips stay skips, and so does a test outside the folder; the unlisted ones fail (those that
    # skip at setup, by a skipif mark or in a fixture, are reported as errors).
    result.assert_outcomes(passed=1, skipped=3, errors=2, failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "*unlisted skip under CI: the vLLM venv is missing; add it to tests/e2e/skips.py with why, or fix the cause",
        "*unlisted skip under CI: no backend; add it to tests/e2e/skips.py with why, or fix the cause",
        "*unlisted skip under CI: the simulator did not start; add it to tests/e2e/skips.py with why, or fix the cause",
    ], consecutive=False)
    assert "needs a GPU" in result.stdout.str()


def test_under_ci_listed_skips_pass(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    result = suite.runpytest("-k", "listed_by or runs or outside")
    result.assert_outcomes(passed=1, skipped=3)
    assert result.ret == 0


def test_a_module_that_skips_itself_fails_under_ci(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = pytester.mkdir("e2e")
    (folder / "conftest.py").write_text(CONFTEST, encoding="utf-8")
    pytester.makeini(INI)
    (folder / "test_gone.py").write_text("import pytest\n\npytest.importorskip('no_such_module_here')\n",
                                         encoding="utf-8")
    monkeypatch.setenv("CI", "true")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.INTERRUPTED  # a collection error stops the run
    result.stdout.fnmatch_lines(["*unlisted skip under CI: could not import 'no_such_module_here'*"])
    monkeypatch.setenv("CI", "false")
    result = pytester.runpytest()
    result.assert_outcomes(skipped=1)


def test_every_test_under_the_folder_is_marked_e2e(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    (suite.path / "e2e" / "test_unmarked.py").write_text("def test_plain():\n    pass\n", encoding="utf-8")
    result = suite.runpytest("-m", "e2e")
    result.assert_outcomes(passed=2, skipped=5, deselected=1)  # test_outside is the one deselected


@pytest.mark.parametrize(("env", "expected"), [
    ({"CI": "true"}, True), ({"CI": "1"}, True), ({"CI": "TRUE"}, True),
    ({}, False), ({"CI": ""}, False), ({"CI": "false"}, False), ({"CI": "0"}, False),
])
def test_under_ci(env: dict[str, str], expected: bool) -> None:
    assert under_ci(env) is expected


def test_listed_matches_node_ids_and_reasons() -> None:
    table = {"tests/e2e/test_a.py::test_b": "why", "needs a GPU": "why"}
    assert listed("tests/e2e/test_a.py::test_b", "anything", table)
    assert listed("tests/e2e/test_a.py::test_b[x-1]", "anything", table)
    assert not listed("tests/e2e/test_a.py::test_bc", "anything", table)
    assert listed("tests/e2e/test_z.py::test_y", "this needs a GPU (none found)", table)
    assert not listed("tests/e2e/test_z.py::test_y", "the vLLM venv is missing", table)


def test_every_allowed_skip_says_why() -> None:
    assert ALLOWED
    assert all(why.strip() for why in ALLOWED.values())


def test_recorded_figures_are_shown_whether_tests_pass_or_fail(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("from tests.e2e.conftest import pytest_terminal_summary  # noqa: F401\n")
    pytester.makepyfile(test_figures="""
def test_measures(record_property):
    record_property("figures", "12 answered, 3 refused")

def test_fails(record_property):
    record_property("figures", "1 wrong")
    assert False
""")
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*= figures =*", "test_figures.py::test_measures: 12 answered, 3 refused",
                                 "test_figures.py::test_fails: 1 wrong"])
