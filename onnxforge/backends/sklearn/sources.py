"""Loading scikit-learn sources (.skops, joblib/pickle, factories). .skops files load
only trusted types; pickles only with ``trust_pickle`` (docs/security.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from onnxforge.backends.base import call_factory, cwd_importable, is_factory
from onnxforge.core.errors import BadInputError, first_line, require

SKLEARN_SUFFIXES = (".skops", ".joblib", ".pkl", ".pickle")


def load_sklearn(source: Any, *, trust: Sequence[str] = (), trust_pickle: bool = False):
    """A fitted estimator from a live object, a factory, a .skops file, or (trusted) a pickle."""
    if not isinstance(source, (str, Path)):
        return source
    spec = str(source)
    if is_factory(spec):
        est = call_factory(spec, "a fitted scikit-learn estimator")
        _check_estimator(est, spec)
        return est
    from onnxforge.core.fileio import check_readable_file

    path = check_readable_file(spec, "sklearn source")
    if path.suffix == ".skops":
        import zipfile

        if not zipfile.is_zipfile(path):  # before skops: importing it walks all of sklearn (4-6 s)
            raise BadInputError(f"{path}: not a readable .skops file (not a zip archive)",
                                hint="write it with skops.io.dump(estimator, path)")
        sio = require("skops.io", "sklearn")
        try:
            untrusted = sio.get_untrusted_types(file=str(path))
        except Exception as exc:
            raise BadInputError(f"{path}: not a readable .skops file ({first_line(exc)})",
                                hint="write it with skops.io.dump(estimator, path)") from None
        refused = [t for t in untrusted if t not in trust and not trust_pickle]
        if refused:
            raise BadInputError(
                f"{path} needs types that are not trusted by default: {', '.join(refused)}",
                hint="review them, then pass --trust TYPE for each (or --trust-pickle to trust all)",
            )
        est = sio.load(str(path), trusted=list(untrusted))
    elif path.suffix in (".joblib", ".pkl", ".pickle"):
        if not trust_pickle:
            raise BadInputError(
                f"{path} is a pickle; unpickling runs arbitrary code, so it is refused",
                hint="pass --trust-pickle if you trust the file, or save with skops.io.dump to a .skops file",
            )
        import joblib

        try:
            with cwd_importable():
                est = joblib.load(str(path))
        except Exception as exc:
            raise BadInputError(f"{path}: cannot unpickle ({type(exc).__name__}: {first_line(exc)})") from None
    else:
        raise BadInputError(f"unsupported sklearn source {path}",
                            hint="give a .skops file, a factory module:function, or a .joblib/.pkl with --trust-pickle")
    _check_estimator(est, str(path))
    return est


def _check_estimator(est, where: str) -> None:
    from sklearn.base import BaseEstimator
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    if not isinstance(est, BaseEstimator):
        raise BadInputError(f"{where} gave {type(est).__name__}, not a scikit-learn estimator")
    try:
        check_is_fitted(est)
    except NotFittedError:
        raise BadInputError(f"{where} gave an unfitted {type(est).__name__}", hint="fit it before converting") from None
    except TypeError:
        pass
