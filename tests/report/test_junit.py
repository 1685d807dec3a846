"""A JUnit file is what a CI dashboard colours: a release that did not pass must show a
failure or an error there, whatever step or phase it stopped in."""

import dataclasses
import xml.etree.ElementTree as ET

from results import release

from onnxforge.report.junit import junit


def _suite(r):
    return ET.fromstring(junit(r).encode())


def test_an_error_after_the_last_recorded_step_is_an_error_case():
    # the parity ledger of step 0 raised after the step itself was recorded as passed
    r = dataclasses.replace(release(), gates=(), passed=False, status="error", exit_code=3, raised_at=0,
                            error="the model failed on these inputs", failure="the model failed on these inputs")
    suite = _suite(r)
    assert int(suite.get("errors")) >= 1
    assert any(c.find("error") is not None for c in suite.iter("testcase"))


def test_a_failed_release_without_a_failing_case_still_fails():
    r = dataclasses.replace(release(), gates=(), passed=False, status="failed", failure="a check failed")
    suite = _suite(r)
    assert int(suite.get("failures")) + int(suite.get("errors")) >= 1


def test_a_passed_release_has_no_failure_case():
    r = dataclasses.replace(release(), gates=tuple(g for g in release().gates if g.passed), passed=True,
                            status="passed", failure=None, exit_code=0)
    suite = _suite(r)
    assert suite.get("failures") == "0" and suite.get("errors") == "0"
