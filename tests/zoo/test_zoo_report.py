"""The zoo's table columns: every gate a release has shows somewhere, so a release that
failed only a package or serve-check gate never reads as all 'pass' beside FAILED."""

from onnxforge.zoo.merge import ZooGate, ZooRelease, ZooReport, combine
from onnxforge.zoo.report import gate_cell, gate_columns


def _release(name, *gates, planned=()):
    passed = all(g.passed for g in gates)
    return ZooRelease(name, None, name, "passed" if passed else "failed", 0 if passed else 1,
                      gates=gates, planned_gates=tuple(planned))


def test_package_and_serve_check_gates_have_a_column():
    ok = ZooGate("parity:convert", "parity", True, 0.0, 1e-4)
    pkg = _release("a", ok, ZooGate("package:triton", "package", False, 0.0, 1.0))
    srv = _release("b", ok, ZooGate("serve_check", "serving", False, 5.0, 1.0))
    plain = _release("c", ok)
    rep = combine([pkg, srv, plain], [], executor="local")
    assert isinstance(rep, ZooReport)
    assert gate_columns(rep) == ["parity", "serving"]
    assert [gate_cell(r, "serving") for r in (pkg, srv, plain)] == ["FAIL", "FAIL", "-"]
    assert gate_cell(_release("d", ok, planned=["package:mlflow"]), "serving") == "not run"
