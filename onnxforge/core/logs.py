"""Third-party chatter: exporters and graph rewriters print progress and graph dumps
on stdout and warn on stderr. Keep stdout for our result (``--json``) and their
chatter for ``-v``."""

from __future__ import annotations

import contextlib
import logging
import os
import io
import sys
import warnings

log = logging.getLogger("onnxforge")

_VERBOSITY = {"level": 0}


def set_verbosity(level: int) -> None:
    """The CLI's -v/-q: third-party logs and warnings show only with -v."""
    _VERBOSITY["level"] = level
    if level < 1:
        import warnings

        warnings.simplefilter("ignore")  # numpy RuntimeWarnings, torch DeprecationWarnings: -v shows them


# Tracebacks of failures the library recovers from (an engine that fell back): the
# CLI's --debug turns this logger on, so they show without -vv's debug chatter.
TRACEBACKS = logging.getLogger("onnxforge.tracebacks")


def swallowed(what: str) -> None:
    """Call inside ``except``: log the current exception's traceback for --debug."""
    TRACEBACKS.debug("%s failed (recovered):", what, exc_info=True)


def configure_ort() -> None:
    """ONNX Runtime's own logger prints coloured [E:onnxruntime:...] lines on stderr;
    they reach the user only with -v (our errors say what failed, in one line)."""
    import onnxruntime as ort

    ort.set_default_logger_severity(2 if _VERBOSITY["level"] >= 1 else 4)


@contextlib.contextmanager
def quiet_third_party():
    """Exporters and graph rewriters print progress and graph dumps on stdout and warn
    on stderr; keep stdout for our result (``--json``) and their chatter for ``-v``."""
    verbose = log.isEnabledFor(logging.INFO)
    configure_ort()
    loggers = [logging.getLogger(n) for n in ("torch", "torch.onnx", "torch.export", "torch._dynamo", "torch.fx",
                                              "torch._guards", "onnxscript", "onnx_ir", "onnxruntime", "nncf", "root")]
    levels = [lg.level for lg in loggers]
    sink = sys.stderr if verbose else io.StringIO()
    # C++ code (TorchScript graph dumps) writes to file descriptor 1 directly
    sys.stdout.flush()
    saved_fd = os.dup(1)
    target_fd = os.open(os.devnull, os.O_WRONLY) if not verbose else os.dup(2)
    os.dup2(target_fd, 1)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink):
            if not verbose:
                warnings.simplefilter("ignore")
                for lg in loggers:  # their errors too: ours says what failed, in one line (-v shows theirs)
                    lg.setLevel(logging.CRITICAL + 1)
            try:
                yield
            finally:
                for lg, lvl in zip(loggers, levels):
                    lg.setLevel(lvl)
    finally:
        sys.stdout.flush()
        os.dup2(saved_fd, 1)
        os.close(saved_fd)
        os.close(target_fd)


@contextlib.contextmanager
def native_stderr(what: str):
    """Native code (onnxsim's C++: its folding warnings, and the Python tracebacks of
    callbacks that fail inside it) writes to file descriptor 2 directly, around our one
    error line: keep that text for -v, or --debug."""
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    py = io.StringIO()  # what goes through sys.stderr instead (PyErr_Print, warnings)
    with tempfile.TemporaryFile() as buf:  # unlinked at once: nothing is left in $TMPDIR
        os.dup2(buf.fileno(), 2)
        try:
            with contextlib.redirect_stderr(py):
                yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            buf.seek(0)
            text = (buf.read().decode("utf-8", "replace") + py.getvalue()).strip()
            if text:
                (log.info if log.isEnabledFor(logging.INFO) else TRACEBACKS.debug)("%s wrote on stderr:\n%s", what, text)
