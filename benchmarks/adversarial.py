"""The adversarial cases (tests/adversarial/cases.py) against the CLI, in one table:
per case the exit code, whether the error was one line with a hint, whether the inputs
stayed byte-identical, files left outside the named outputs, and whether code from a
file ran; then the counts.

    python benchmarks/adversarial.py
"""

from __future__ import annotations

import contextlib
import io
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "adversarial")]


def main() -> int:
    from benchmarks._util import print_table
    from cases import CASES, build_workspace, run_case

    from onnxforge.cli.app import main as cli

    def run(argv):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = cli(argv)
        return code, err.getvalue()

    with tempfile.TemporaryDirectory() as tmp:
        ws = build_workspace(Path(tmp))
        results = [(c, run_case(c, ws, run)) for c in CASES]
    rows = [[c.name[:58], f"{r.code} (want {c.code})", "yes" if r.one_line else "NO",
             "yes" if r.inputs_intact else "NO", len(r.leftovers), "YES" if r.ran_code else "no"] for c, r in results]
    print_table(["case", "exit", "one-line error", "inputs intact", "leftovers", "code ran"], rows,
          title="adversarial inputs against every command")
    rs = [r for _, r in results]
    print(f"\ncases tried {len(rs)}, right exit code {sum(r.right_code for r in rs)}, one-line error "
          f"{sum(r.one_line for r in rs)}, inputs intact {sum(r.inputs_intact for r in rs)}, "
          f"leftovers {sum(len(r.leftovers) for r in rs)}, code run {sum(r.ran_code for r in rs)}")
    return 0 if all(r.right_code and r.one_line and r.inputs_intact and not r.leftovers and not r.ran_code
                    for r in rs) else 1


if __name__ == "__main__":
    sys.exit(main())
