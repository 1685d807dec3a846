
import numpy as np
import onnx
import pytest

pytest.importorskip("skl2onnx")

from conftest import ROOT
from conftest import json_result as result  # noqa: E402

pytestmark = pytest.mark.slow  # fits and converts estimators

M = f"{ROOT / 'tests' / 'models.py'}"




@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris

    d = tmp_path_factory.mktemp("skdata")
    np.save(d / "iris.npy", load_iris().data)
    np.save(d / "bc.npy", load_breast_cancer().data)
    np.save(d / "dia.npy", load_diabetes().data)
    np.save(d / "bc32.npy", load_breast_cancer().data.astype(np.float32))
    return d


@pytest.mark.parametrize("factory,sample,outputs", [
    ("logreg", "iris", ["label", "probabilities"]),
    ("random_forest", "bc", ["label", "probabilities"]),
    ("hist_gb_float64", "bc", ["label", "probabilities"]),  # the estimator on float64 rows, ONNX on float32
    ("regressor", "dia", ["variable"]),
    ("svc_pipeline", "iris", ["label", "probabilities"]),
    ("kmeans", "iris", ["label", "scores"]),
])
def test_estimators_convert_and_pass(cli, tmp_path, data, factory, sample, outputs):
    out = tmp_path / f"{factory}.onnx"
    r = cli("convert", "sklearn", f"{M}:{factory}", "-o", out, "--sample", data / f"{sample}.npy", "--json")
    assert r.code == 0, r.err + r.out
    res = result(r)
    assert res["passed"] and res["details"]["outputs"] == outputs
    [check] = res["checks"]
    assert [o["name"] for o in check["outputs"]] == outputs
    if outputs[0] == "label":
        assert check["outputs"][0]["label_agreement"] == 1.0
    m = onnx.load(str(out))
    assert not any(o.type.HasField("sequence_type") for o in m.graph.output)  # no ZipMap by default


def test_column_transformer_from_csv(cli, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("tm", M)
    tm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tm)
    df, _ = tm.tabular_frame()
    df.to_csv(tmp_path / "data.csv", index=False)
    r = cli("convert", "sklearn", f"{M}:column_pipeline", "-o", tmp_path / "ct.onnx", "--sample", tmp_path / "data.csv", "--json")
    assert r.code == 0, r.err + r.out
    res = result(r)
    assert res["details"]["inputs"] == ["age:float32:?x1", "income:float32:?x1", "city:str:?x1", "plan:str:?x1"]
    assert res["checks"][0]["outputs"][0]["label_agreement"] == 1.0
    # a CSV that lacks a column the model was fitted on
    df.drop(columns=["plan"]).to_csv(tmp_path / "short.csv", index=False)
    r = cli("convert", "sklearn", f"{M}:column_pipeline", "-o", tmp_path / "ct2.onnx", "--sample", tmp_path / "short.csv")
    assert r.code == 3 and "missing column(s) plan" in r.err and not (tmp_path / "ct2.onnx").exists()


def test_no_sample_uses_generated_rows(cli, tmp_path):
    r = cli("convert", "sklearn", f"{M}:logreg", "-o", tmp_path / "m.onnx", "--json")
    assert r.code == 0, r.err
    res = result(r)
    assert res["details"]["inputs"] == ["X:float32:?x4"] and res["details"]["rows_checked"] == 200


def test_zipmap_on_request(cli, tmp_path, data):
    r = cli("convert", "sklearn", f"{M}:logreg", "-o", tmp_path / "z.onnx", "--sample", data / "iris.npy", "--zipmap", "--json")
    assert r.code == 0, r.err
    m = onnx.load(str(tmp_path / "z.onnx"))
    assert any(o.type.HasField("sequence_type") for o in m.graph.output)


def test_float32_threshold_flips_fail_with_hint(cli, tmp_path, data):
    # fitted on float32 rows, checked on float64 ones: float32 rounding of the ONNX input flips a threshold
    r = cli("convert", "sklearn", f"{M}:hist_gb", "-o", tmp_path / "h.onnx", "--sample", data / "bc.npy", "--json")
    assert r.code == 1
    res = result(r)
    assert not res["written"] and not (tmp_path / "h.onnx").exists()
    [why] = res["checks"][0]["problems"]
    assert "float32 threshold rounding in tree splits" in why and "float64" in why and "few rows by a jump" in why
    assert "--double does not help" in why  # onnxruntime has no double kernel for HistGradientBoosting's outputs


def test_lightgbm_threshold_rounding_is_named(tmp_path):
    """#24's LightGBM case: rows whose float64 values sit just past a split threshold
    fall on the other side once the ONNX model reads them as float32 (converted through
    onnxmltools); the failure names the cause and the fix that applies."""
    import lightgbm as lgb
    from sklearn.datasets import load_diabetes

    import onnxforge

    X, y = load_diabetes(return_X_y=True)
    est = lgb.LGBMRegressor(n_estimators=100, verbose=-1).fit(X, y)
    splits = est.booster_.trees_to_dataframe().dropna(subset=["threshold"]).sample(15, random_state=0)
    rows = np.random.default_rng(0).choice(len(X), 15, replace=False)
    for i, (_, split) in zip(rows, splits.iterrows()):
        X[i, int(split["split_feature"].split("_")[-1])] = split["threshold"] + 1e-12
    np.save(tmp_path / "x.npy", X)
    res = onnxforge.convert_sklearn(est, tmp_path / "l.onnx", sample=tmp_path / "x.npy")
    assert not res.passed and not (tmp_path / "l.onnx").exists()
    [why] = res.checks[0].problems
    assert "float32 threshold rounding in tree splits" in why and "few rows by a jump" in why, why
    assert "X.astype('float32')" in why


def test_knn_integer_features_names_distance_ties(cli, tmp_path):
    """Labels flip on rows whose k-th and (k+1)-th neighbours are equidistant: still a
    failure, but named; the table shows labels as a count, and no 1e+307 relative error."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.integers(0, 8, size=(540, 4)).astype(np.float64))
    r = cli("convert", "sklearn", f"{M}:knn_integer", "-o", tmp_path / "k.onnx", "--sample", tmp_path / "x.npy")
    assert r.code == 1
    assert "labels differ on rows where the source's scores tie" in r.out and "this is expected" in r.out
    assert "e+30" not in r.out and "exact" in r.out


def test_label_ties_on_the_decision_boundary_pass(cli, tmp_path):
    """Rows on a logistic regression's boundary: probabilities 0.5/0.5, float32 flips the
    label. Those are ties (counted and reported), not failures."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tm", M)
    tm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tm)
    m = tm.boundary_logreg()
    x1 = np.random.default_rng(1).normal(size=300)
    np.save(tmp_path / "x.npy", np.stack([-(m.intercept_[0] + m.coef_[0, 1] * x1) / m.coef_[0, 0], x1], 1))
    r = cli("convert", "sklearn", f"{M}:boundary_logreg", "-o", tmp_path / "b.onnx", "--sample", tmp_path / "x.npy",
            "--json")
    assert r.code == 0, r.err + r.out
    label = result(r)["checks"][0]["outputs"][0]
    assert label["ties"] > 0 and label["mismatches"] == label["ties"] and "counted as ties" in label["message"]


def test_double_for_linear_models(cli, tmp_path, data):
    src = tmp_path / "lin.py"
    src.write_text("from sklearn.datasets import load_diabetes\nfrom sklearn.linear_model import Ridge\n"
                   "def build():\n    X, y = load_diabetes(return_X_y=True)\n    return Ridge().fit(X, y)\n")
    r = cli("convert", "sklearn", f"{src}:build", "-o", tmp_path / "l.onnx", "--sample", data / "dia.npy", "--double", "--json")
    assert r.code == 0, r.err
    res = result(r)
    assert res["details"]["inputs"] == ["X:float64:?x10"]
    assert res["checks"][0]["outputs"][0]["max_abs"] < 1e-9


def test_unsupported_estimator_exit_4(cli, tmp_path):
    r = cli("convert", "sklearn", f"{M}:isotonic", "-o", tmp_path / "i.onnx", "--input", "X:float32:?x1")
    assert r.code == 4 and "IsotonicRegression" in r.err and "RandomForestClassifier" in r.err
    assert not list(tmp_path.iterdir())


def test_skops_trust_and_pickles(cli, tmp_path, data):
    import importlib.util

    import joblib
    import skops.io as sio

    spec = importlib.util.spec_from_file_location("tm", M)
    tm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tm)
    est = tm.regressor()
    sio.dump(est, tmp_path / "m.skops")
    r = cli("convert", "sklearn", tmp_path / "m.skops", "-o", tmp_path / "a.onnx", "--sample", data / "dia.npy")
    assert r.code == 3 and "sklearn.tree._tree.Tree" in r.err and "--trust" in r.err
    r = cli("convert", "sklearn", tmp_path / "m.skops", "-o", tmp_path / "a.onnx", "--sample", data / "dia.npy",
            "--trust", "sklearn.tree._tree.Tree")
    assert r.code == 0, r.err
    joblib.dump(est, tmp_path / "m.joblib")
    r = cli("convert", "sklearn", tmp_path / "m.joblib", "-o", tmp_path / "b.onnx", "--sample", data / "dia.npy")
    assert r.code == 3 and "arbitrary code" in r.err
    r = cli("convert", "sklearn", tmp_path / "m.joblib", "-o", tmp_path / "b.onnx", "--sample", data / "dia.npy", "--trust-pickle")
    assert r.code == 0
    # validate takes the same source options: the .skops needs its trusted type there too
    np.save(tmp_path / "x32.npy", np.load(data / "dia.npy").astype(np.float32))
    r = cli("validate", tmp_path / "m.skops", tmp_path / "a.onnx", "--inputs", tmp_path / "x32.npy")
    assert r.code == 3 and "--trust" in r.err
    r = cli("validate", tmp_path / "m.skops", tmp_path / "a.onnx", "--inputs", tmp_path / "x32.npy",
            "--trust", "sklearn.tree._tree.Tree")
    assert r.code == 0, r.err


def test_bad_sources(cli, tmp_path, data):
    r = cli("convert", "sklearn", f"{M}:unfitted", "-o", tmp_path / "u.onnx")
    assert r.code == 3 and "unfitted" in r.err
    r = cli("convert", "sklearn", f"{M}:logreg", "-o", tmp_path / "w.onnx", "--sample", data / "bc.npy")
    assert r.code == 3 and "30 features" in r.err and "fitted on 4" in r.err
    assert not list(tmp_path.glob("*.onnx"))


def test_validate_accepts_sklearn_source(cli, tmp_path, data):
    out = tmp_path / "lr.onnx"
    assert cli("convert", "sklearn", f"{M}:logreg", "-o", out, "--sample", data / "iris.npy").code == 0
    x = np.load(data / "iris.npy").astype(np.float32)
    np.savez(tmp_path / "x.npz", X=x)
    r = cli("validate", f"{M}:logreg", out, "--inputs", tmp_path / "x.npz", "--json")
    assert r.code == 0, r.err
    res = result(r)
    assert res["reference"] == "sklearn:LogisticRegression"
    assert [o["name"] for o in res["outputs"]] == ["label", "probabilities"]


@pytest.mark.parametrize("factory,sample", [("lgbm_pipeline", "bc"), ("lgbm_regressor", "dia")])
def test_lightgbm_through_onnxmltools(cli, tmp_path, data, factory, sample):
    pytest.importorskip("lightgbm")
    pytest.importorskip("onnxmltools")
    r = cli("convert", "sklearn", f"{M}:{factory}", "-o", tmp_path / "l.onnx", "--sample", data / f"{sample}.npy", "--json")
    assert r.code == 0, r.err
    assert result(r)["passed"]


def test_lightgbm_without_onnxmltools_is_exit_5(tmp_path, data):
    import subprocess
    import sys

    pytest.importorskip("lightgbm")
    # onnxmltools made unimportable in a child process: the missing-extra path
    code = (
        "import sys; sys.modules['onnxmltools'] = None\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from onnxforge.cli.app import main\n"
        f"sys.exit(main(['convert', 'sklearn', {M + ':lgbm_regressor'!r}, '-o', {str(tmp_path / 'x.onnx')!r},"
        f" '--sample', {str(data / 'dia.npy')!r}]))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 5, r.stderr
    assert "onnxmltools" in r.stderr and "onnxforge[boosting]" in r.stderr


def test_options_and_target_opset(cli, tmp_path, data):
    r = cli("convert", "sklearn", f"{M}:logreg", "-o", tmp_path / "o.onnx", "--sample", data / "iris.npy",
            "--option", "nocl=True", "--target-opset", "17", "--json")
    assert r.code == 0, r.err
    m = onnx.load(str(tmp_path / "o.onnx"))
    assert {o.domain or "": o.version for o in m.opset_import}[""] == 17


def test_isolation_forest_every_output_checked(cli, tmp_path, data):
    """skl2onnx's default ai.onnx.ml opset (4) is past what it writes for IsolationForest:
    the convert picks ai.onnx.ml 3 itself, says so and records the pair; then both the
    label and the scores are compared."""
    r = cli("convert", "sklearn", f"{M}:isolation_forest", "-o", tmp_path / "i.onnx", "--sample", data / "bc32.npy",
            "--json")
    assert r.code == 0, r.err + r.out
    res = result(r)
    assert res["details"]["opsets"]["ai.onnx.ml"] == 3
    assert any("ai.onnx.ml 3" in n for n in res["notes"])
    outs = {o["name"]: o for o in res["checks"][0]["outputs"]}
    assert set(outs) == {"label", "scores"} and outs["label"]["label_agreement"] == 1.0
    assert outs["scores"]["max_abs"] < 1e-5
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "i.onnx")).metadata_props}
    assert "ai.onnx.ml=3" in meta["onnxforge.target_opset"]


@pytest.mark.parametrize("flags,code,opsets", [
    (["--target-opset", "17"], 0, {"ai.onnx": 17, "ai.onnx.ml": 3}),  # main given, ai.onnx.ml chosen
    (["--target-opset", "ai.onnx.ml=3"], 0, None),  # README's flag alone was "op_version must be specified"
    (["--target-opset", "17", "--target-opset", "ai.onnx.ml=3"], 0, {"ai.onnx": 17, "ai.onnx.ml": 3}),
    (["--target-opset", "17", "--target-opset", "ai.onnx.ml=4"], 4, None),  # the user's pair stays theirs
])
def test_isolation_forest_opset_flags(cli, tmp_path, data, flags, code, opsets):
    r = cli("convert", "sklearn", f"{M}:isolation_forest", "-o", tmp_path / "i.onnx", "--sample", data / "bc32.npy",
            *flags, "--json")
    assert r.code == code, r.err + r.out
    if code:
        assert "--opset 17 --opset ai.onnx.ml=3" in r.err and not (tmp_path / "i.onnx").exists()
        return
    res = result(r)
    assert res["details"]["opsets"]["ai.onnx.ml"] == 3
    if opsets:
        assert res["details"]["opsets"] == opsets


@pytest.mark.parametrize("factory", ["xgb_classifier", "lgbm_classifier"])
def test_boosting_classifiers_end_to_end(cli, tmp_path, data, factory):
    pytest.importorskip("onnxmltools")
    pytest.importorskip("xgboost" if factory.startswith("xgb") else "lightgbm")
    r = cli("convert", "sklearn", f"{M}:{factory}", "-o", tmp_path / "b.onnx", "--sample", data / "bc32.npy", "--json")
    assert r.code == 0, r.err + r.out
    res = result(r)
    assert [o["name"] for o in res["checks"][0]["outputs"]] == ["label", "probabilities"]
    assert res["checks"][0]["outputs"][0]["label_agreement"] == 1.0
    r = cli("validate", f"{M}:{factory}", tmp_path / "b.onnx", "--inputs", data / "bc32.npy")
    assert r.code == 0, r.err


def test_csv_sample_validates_too(cli, tmp_path):
    """The CSV convert accepts, validate accepts; an empty numeric cell is a missing value."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tm", M)
    tm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tm)
    df, _ = tm.tabular_frame()
    df.to_csv(tmp_path / "data.csv", index=False)
    r = cli("convert", "sklearn", f"{M}:column_pipeline", "-o", tmp_path / "ct.onnx", "--sample", tmp_path / "data.csv")
    assert r.code == 0, r.err
    r = cli("validate", f"{M}:column_pipeline", tmp_path / "ct.onnx", "--inputs", tmp_path / "data.csv")
    assert r.code == 0, r.err
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + (tmp_path / "data.csv").read_bytes())
    r = cli("validate", f"{M}:column_pipeline", tmp_path / "ct.onnx", "--inputs", tmp_path / "bom.csv")
    assert r.code == 0, r.err  # the BOM is not part of the first column's name
