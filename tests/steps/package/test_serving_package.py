"""package(): the three targets written with the real libraries, and their proofs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from serve_models import labeled_model, requires_serve, wide_model

from onnxforge.core.errors import BadInputError, UsageError
from onnxforge.core.fileio import sha256_file

pytestmark = requires_serve


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("models")
    labeled_model(d / "labeled.onnx")
    labeled_model(d / "fixed.onnx", batch=2)
    return d


@pytest.fixture
def sk_release(sklearn_release) -> Path:
    return sklearn_release / "release"  # built once for the run (conftest.sklearn_release)


def _ort(model, feeds):
    import onnxruntime as ort

    s = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, feeds)))


def test_mlserver_folder_from_a_model(models, tmp_path):
    from onnxforge.steps.package.package import package
    from onnxforge.steps.package.package import load_package, runtime_source

    src = models / "labeled.onnx"
    before = sha256_file(src)
    res = package(src, tmp_path / "m", target="mlserver", threads=2, dims={"batch": 3})
    assert res.passed and res.written and res.model_name == "labeled"
    out = tmp_path / "m"
    settings = json.loads((out / "model-settings.json").read_text())
    assert settings["implementation"] == "onnxforge_runtime.OnnxRuntimeModel"
    assert (out / "onnxforge_runtime.py").read_bytes() == runtime_source().read_bytes()
    assert settings["parameters"] == {"uri": "./model.onnx", "extra": {"provider": "cpu", "threads": 2}}
    assert settings["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert [(o["name"], o["datatype"], o["shape"]) for o in settings["outputs"]] == [
        ("scores", "FP32", [-1, 3]), ("label", "INT64", [-1])]
    server = json.loads((out / "settings.json").read_text())
    assert not {"http_port", "grpc_port", "host"} & set(server)  # left to the environment
    import onnxruntime

    from importlib.metadata import version

    # exactly what onnxforge_runtime.py imports, as installed here; onnxforge is on no index
    assert (out / "requirements.txt").read_text().split() == [
        f"mlserver=={version('mlserver')}", f"onnxruntime=={onnxruntime.__version__}", f"numpy=={np.__version__}"]
    assert sha256_file(out / "model.onnx") == before == sha256_file(src)  # a copy; the source untouched
    info, inputs, golden = load_package(out)
    assert info["target"] == "mlserver" and info["threads"] == 2
    assert inputs[0]["x"].shape == (3, 4) and "generated" in res.inputs_from
    expect = _ort(src, inputs[0])
    np.testing.assert_array_equal(golden[0]["scores"], expect["scores"])
    np.testing.assert_array_equal(golden[0]["label"], expect["label"])
    assert set(res.files) >= {"model.onnx", "model-settings.json", "onnxforge-package/golden.npz"}


def test_existing_output_needs_force_and_sources_are_protected(models, tmp_path):
    from onnxforge.steps.package.package import package

    src = models / "labeled.onnx"
    out = tmp_path / "m"
    package(src, out, target="mlserver")
    (out / "stray.txt").write_text("old")
    with pytest.raises(BadInputError, match="exists") as e:
        package(src, out, target="mlserver")
    assert e.value.exit_code == 3 and "--force" in e.value.hint
    assert (out / "stray.txt").exists()  # refused: nothing touched
    package(src, out, target="mlserver", force=True)
    assert not (out / "stray.txt").exists() and (out / "model.onnx").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".onnxforge-")]  # no staging left
    with pytest.raises(BadInputError, match="replace the source"):
        package(src, models, target="mlserver", force=True)


@pytest.mark.parametrize("call,exc,needle", [
    (lambda m, t: ("missing.onnx", "mlserver", t), BadInputError, "not found"),
    (lambda m, t: (m / "notes.txt", "mlserver", t), BadInputError, "not an ONNX model"),
    (lambda m, t: (m / "labeled.onnx", "docker", t), UsageError, "target: must be 'mlflow', 'mlserver' or 'triton'"),
    (lambda m, t: (m / "labeled.onnx", "mlserver", t), UsageError, "mlflow target only"),
    (lambda m, t: (m / "labeled.onnx", "mlflow", t), UsageError, "needs --mlflow-tracking-uri"),
])
def test_bad_requests_are_one_line_errors(models, tmp_path, call, exc, needle):
    from onnxforge.steps.package.package import package

    (models / "notes.txt").write_text("not a model")
    source, target, out = call(models, tmp_path / "o")
    kwargs = {"target": target}
    if needle == "mlflow target only":
        kwargs["mlflow_tracking_uri"] = "sqlite:///x.db"
    if needle == "needs --mlflow-tracking-uri":
        kwargs["register"] = "x"
    with pytest.raises(exc, match=needle):
        package(source, out, **kwargs)
    assert not (tmp_path / "o").exists()


def test_failed_release_and_zipmap_outputs_are_refused(tmp_path, models):
    from onnx import TensorProto, helper

    from onnxforge.steps.package.package import package

    failed = tmp_path / "failed-release"
    failed.mkdir()
    (failed / "report.json").write_text("{}")
    with pytest.raises(BadInputError, match="did not pass"):
        package(failed, tmp_path / "o", target="mlserver")
    # a sequence-of-maps output (sklearn's ZipMap) cannot travel over V2
    seq = helper.make_value_info("probs", helper.make_sequence_type_proto(
        helper.make_tensor_type_proto(TensorProto.FLOAT, None)))
    g = helper.make_graph([helper.make_node("SequenceConstruct", ["x"], ["probs"])], "z",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])], [seq])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    (tmp_path / "z.onnx").write_bytes(m.SerializeToString())
    with pytest.raises(BadInputError, match="V2 inference protocol cannot carry") as e:
        package(tmp_path / "z.onnx", tmp_path / "o", target="mlserver")
    assert "zipmap" in e.value.hint


def test_triton_repository_batched(models, tmp_path):
    from onnxforge.steps.package.triton import check_triton_config
    from onnxforge.steps.package.package import package
    from onnxforge.steps.package.triton import parse_config

    res = package(models / "labeled.onnx", tmp_path / "repo", target="triton", threads=3, name="clf")
    assert res.passed and not res.problems and len(res.checks) >= 8, res.problems
    cfg = parse_config(tmp_path / "repo" / "clf" / "config.pbtxt")
    assert cfg.name == "clf" and cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 64
    assert cfg.HasField("dynamic_batching")
    assert [(i.name, list(i.dims)) for i in cfg.input] == [("x", [4])]
    scores, label = cfg.output
    assert list(scores.dims) == [3] and not scores.HasField("reshape")
    assert list(label.dims) == [1] and label.HasField("reshape") and list(label.reshape.shape) == []
    assert cfg.instance_group[0].kind == 2  # KIND_CPU
    assert cfg.parameters["intra_op_thread_count"].string_value == "3"
    assert sha256_file(tmp_path / "repo" / "clf" / "1" / "model.onnx") == sha256_file(models / "labeled.onnx")
    assert (tmp_path / "repo" / "clf" / "onnxforge-package" / "golden.npz").is_file()
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["clf"]  # Triton loads every folder here

    # the check reads the file: a wrong dim or a broken file is caught
    path = tmp_path / "repo" / "clf" / "config.pbtxt"
    path.write_text(path.read_text().replace("dims: [ 4 ]", "dims: [ 5 ]"))
    checks, problems = check_triton_config(tmp_path / "repo" / "clf")
    assert any("input x" in p and "[5]" in p for p in problems)
    path.write_text("name: clf\nplatform: [")
    with pytest.raises(BadInputError, match="does not parse"):
        check_triton_config(tmp_path / "repo" / "clf")


def test_triton_fixed_batch_and_gpu_instance(models, tmp_path):
    from onnxforge.steps.package.package import package
    from onnxforge.steps.package.triton import parse_config

    res = package(models / "fixed.onnx", tmp_path / "repo", target="triton", provider="cuda")
    assert res.passed, res.problems
    cfg = parse_config(tmp_path / "repo" / "fixed" / "config.pbtxt")
    assert cfg.max_batch_size == 0 and not cfg.HasField("dynamic_batching")
    assert list(cfg.input[0].dims) == [2, 4]
    assert list(cfg.output[1].dims) == [2]
    assert cfg.instance_group[0].kind == 1  # KIND_GPU
    with pytest.raises(UsageError, match="no dml instance kind"):
        package(models / "fixed.onnx", tmp_path / "repo2", target="triton", provider="dml")


@pytest.mark.slow  # trains a model and imports mlflow
def test_mlflow_model_from_a_release(sk_release, tmp_path):
    import yaml

    from onnxforge.steps.package.package import package

    manifest = json.loads((sk_release / "manifest.json").read_text())
    res = package(sk_release, tmp_path / "mlf", target="mlflow")
    assert res.passed and res.proof is not None and res.proof.passed
    assert res.proof.candidate == "mlflow.pyfunc.load_model" and res.proof.samples == 1
    assert {o.name for o in res.proof.outputs} == {"label", "probabilities"}
    assert "release validation data" in res.inputs_from
    out = tmp_path / "mlf"
    mlmodel = yaml.safe_load((out / "MLmodel").read_text())
    assert "onnx" in mlmodel["flavors"] and "python_function" in mlmodel["flavors"]
    sig_in = json.loads(mlmodel["signature"]["inputs"])
    assert sig_in == [{"name": "X", "type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 30]}}]
    meta = mlmodel["metadata"]["onnxforge"]
    assert meta["manifest"]["sha256"] == manifest["sha256"]
    assert meta["ledger"][0]["step"] == "convert" and meta["ledger"][0]["passed"] is True
    reqs = (out / "requirements.txt").read_text().split()
    assert f"onnxruntime=={manifest['versions']['onnxruntime']}" in reqs
    example = json.loads((out / "input_example.json").read_text())
    assert len(example["X"]) == 5  # a few rows, not the whole validation set
    # the same folder serves with `mlserver start`
    assert json.loads((out / "model-settings.json").read_text())["parameters"]["uri"] == "./model.onnx"
    assert (out / "onnxforge-package" / "manifest.json").is_file()


@pytest.mark.slow  # imports mlflow
def test_mlflow_proof_fails_past_tolerance(sk_release, tmp_path):
    from onnxforge.steps.package.package import package
    from onnxforge.steps.package.package import _mlflow_proof, load_package
    from onnxforge.core.types import Tolerance

    package(sk_release, tmp_path / "mlf", target="mlflow")
    _, inputs, golden = load_package(tmp_path / "mlf")
    golden = [{**g, "probabilities": g["probabilities"] + 1e-2} for g in golden]  # what a broken round trip gives
    rep = _mlflow_proof(tmp_path / "mlf", inputs, golden, Tolerance(1e-4, 1e-3))
    assert not rep.passed
    assert [o.name for o in rep.outputs if not o.passed] == ["probabilities"]


@pytest.mark.slow
def test_mlflow_tracking_run_and_registry(sk_release, tmp_path):
    import mlflow.pyfunc
    from mlflow import MlflowClient

    from onnxforge.steps.package.package import package

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = package(sk_release, tmp_path / "mlf", target="mlflow", mlflow_tracking_uri=uri, register="breast-cancer")
    t = res.tracking
    assert t["registered_model"] == "breast-cancer" and t["version"] == "1"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    run = client.get_run(t["run_id"])
    m = run.data.metrics
    assert m["parity.label.label_agreement"] == 1.0 and m["accuracy"] > 0.9
    assert m["latency_p50_ms"] > 0 and m["pyfunc_parity_passed"] == 1.0 and m["model_bytes"] > 0
    assert run.info.status == "FINISHED"
    mv = client.get_model_version("breast-cancer", "1")
    assert (tmp_path / "mlartifacts").is_dir()  # beside the database, not in the working folder
    loaded = mlflow.pyfunc.load_model(mv.source)
    assert loaded.predict({"X": np.zeros((2, 30), np.float32)})["probabilities"].shape == (2, 2)
    # a second package registers version 2 of the same model
    res2 = package(sk_release, tmp_path / "mlf", target="mlflow", mlflow_tracking_uri=uri, register="breast-cancer",
                   force=True)
    assert res2.tracking["version"] == "2"


@pytest.mark.slow  # trains a model
def test_mlflow_file_store_refused_before_writing(sk_release, tmp_path, monkeypatch):
    from onnxforge.steps.package.package import package

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(BadInputError, match="cannot be used") as e:
        package(sk_release, tmp_path / "mlf", target="mlflow", mlflow_tracking_uri=(tmp_path / "runs").as_uri())
    assert "sqlite" in e.value.hint
    assert not (tmp_path / "mlf").exists()


def test_external_data_travels_with_the_model(tmp_path):
    from fixtures.make_fixtures import onnx_with_external_data

    from onnxforge.steps.package.package import package

    src = onnx_with_external_data(tmp_path / "src")
    for target in ("mlserver", "triton"):
        res = package(src, tmp_path / target, target=target)
        assert res.passed, res.problems
        model_dir = Path(res.model_dir) / ("1" if target == "triton" else "")
        assert (model_dir / "ext.onnx.data").stat().st_size == (tmp_path / "src" / "ext.onnx.data").stat().st_size
        _ort(model_dir / "model.onnx", {"x": np.zeros((1, 128), np.float32)})  # loads from its new place


def test_where_the_golden_inputs_come_from(models, tmp_path):
    from onnxforge.steps.package.package import package
    from onnxforge.steps.package.package import load_package

    # explicit inputs are checked against the model
    np.savez(tmp_path / "in.npz", x=np.ones((2, 4), np.float32))
    res = package(models / "labeled.onnx", tmp_path / "a", target="mlserver", inputs=tmp_path / "in.npz")
    assert res.inputs_from == str(tmp_path / "in.npz")
    np.testing.assert_array_equal(load_package(tmp_path / "a")[1][0]["x"], np.ones((2, 4), np.float32))
    np.savez(tmp_path / "bad.npz", y=np.ones((2, 4), np.float32))
    with pytest.raises(BadInputError, match="missing input"):
        package(models / "labeled.onnx", tmp_path / "b", target="mlserver", inputs=tmp_path / "bad.npz")
    # a release whose validation data is not on this machine: generated inputs, said so
    rel = tmp_path / "rel"
    rel.mkdir()
    (rel / "model.onnx").write_bytes((models / "labeled.onnx").read_bytes())
    (rel / "report.json").write_text(json.dumps({"result": {"config": {"data": {"validation": "/gone/val.npz"}}}}))
    res = package(rel, rel / "mlserver", target="mlserver", dims={"batch": 2})
    assert "generated" in res.inputs_from and any("/gone/val.npz" in n for n in res.notes)
    assert res.model_name == "rel"


@pytest.mark.parametrize("target", ["mlserver", "mlflow", "triton"])
def test_every_file_is_readable_by_any_user(tmp_path, target):
    """A server in a container often runs as another user: 0644 files and 0755 folders
    whatever the umask, and the MLflow model in one file (mlflow.onnx's default wrote
    the weights of this 8 KiB model to a second file, mode 0600)."""
    import os
    import stat

    from onnxforge.steps.package.package import package

    src = wide_model(tmp_path / "wide.onnx")
    old = os.umask(0o077)
    try:
        res = package(src, tmp_path / "out", target=target)
    finally:
        os.umask(old)
    assert res.passed
    paths = [tmp_path / "out", *sorted((tmp_path / "out").rglob("*"))]
    modes = {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.lstat().st_mode)) for p in paths}
    assert modes == {k: ("0o755" if (tmp_path / k).is_dir() else "0o644") for k in modes}
    models = [p for p in paths if p.suffix == ".onnx"]
    assert len(models) == 1 and not [p for p in paths if p.is_file() and p.suffix == "" and p.name != "MLmodel"]
    from onnxforge.core.fileio import external_data_files, load_onnx

    assert external_data_files(load_onnx(models[0], load_external_data=False)) == {}


def test_shipped_runtime_imports_only_mlserver_onnxruntime_numpy_and_agrees_with_v2():
    """onnxforge_runtime.py is copied into folders where onnxforge is not installed: it
    may import nothing of onnxforge, and its datatype table must be v2.py's (read, not
    imported: importing it imports mlserver)."""
    import ast

    from onnxforge.steps.package.package import runtime_source
    from onnxforge.steps.package.v2 import V2_DATATYPES

    tree = ast.parse(runtime_source().read_text())
    roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    roots |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert roots <= {"__future__", "math", "re", "mlserver", "onnxruntime", "numpy"}, roots
    tables = {t.id: ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign) for t in n.targets}
    ort_names = {"float": "float32", "double": "float64", "string": "str"}
    as_v2 = {ort_names.get(k[7:-1], k[7:-1]): v for k, v in tables["V2_OF_ORT"].items()}
    assert as_v2 == V2_DATATYPES
    assert {v: ("str" if n == "object" else n) for v, n in tables["NUMPY_OF_V2"].items()} == {
        v: k for k, v in V2_DATATYPES.items()}


@pytest.mark.parametrize("model, find, put, problem", [
    ("labeled", "data_type: TYPE_FP32", "data_type: TYPE_FP16",
     "input x data_type: expected TYPE_FP32, found TYPE_FP16 (float32)"),
    ("labeled", 'name: "x"', 'name: "y"', "input names: expected ['x'], found ['y']"),
    ("labeled", 'name: "label"', 'name: "labels"', "output names: expected ['label', 'scores'], found ['labels', 'scores']"),
    ("labeled", "dims: [ 4 ]", "dims: [ 5 ]", "input x dims: expected [4], found [5] for model shape ['batch', 4] "
     "(max_batch_size > 0: without the batch dim)"),
    ("labeled", "dims: [ 4 ]", "dims: [ -1, 4 ]", "input x dims: expected [4], found [-1, 4]"),
    ("labeled", "reshape: { shape: [ ] }", "", "output label reshape: expected [ ] (batch only), found absent"),
    ("labeled", "dynamic_batching { }", "", "dynamic_batching: expected set, found absent"),
    ("labeled", "KIND_CPU", "KIND_GPU", "instance_group: expected one group of KIND_CPU, count >= 1, found ['KIND_GPU']"),
    ("labeled", 'platform: "onnxruntime_onnx"', 'platform: "tensorflow_savedmodel"',
     "platform: expected 'onnxruntime_onnx', found 'tensorflow_savedmodel'"),
    ("fixed", "max_batch_size: 0", "max_batch_size: 8",
     "max_batch_size: expected 0 (the model has no symbolic first dim shared by every input and output), found 8"),
    ("fixed", "data_type: TYPE_INT64", "data_type: TYPE_INT32", "output label data_type: expected TYPE_INT64, found"),
], ids=["dtype", "input-name", "output-name", "dim", "batch-in-dims", "reshape", "dynamic-batching", "kind",
        "platform", "fixed-batch", "output-dtype"])
def test_triton_config_checked_field_by_field(models, tmp_path, model, find, put, problem):
    """A hand-edited config.pbtxt: the field, what the model needs and what the file says."""
    from onnxforge.steps.package.triton import check_triton_config
    from onnxforge.steps.package.package import package

    assert package(models / f"{model}.onnx", tmp_path / "repo", target="triton", name="m").passed
    path = tmp_path / "repo" / "m" / "config.pbtxt"
    text = path.read_text()
    assert find in text
    path.write_text(text.replace(find, put, 1))
    checks, problems = check_triton_config(tmp_path / "repo" / "m", models / f"{model}.onnx", provider="cpu")
    assert any(p.startswith(problem) for p in problems), problems
    assert checks  # the rest still held


def test_triton_mismatch_is_exit_1_at_package_time(cli, models, tmp_path, monkeypatch):
    """A writer bug (the config written from a wrong spec) fails the package: exit 1, the
    problem line names the field, and nothing is written."""
    from dataclasses import replace

    from onnxforge.steps.package import triton

    real = triton.config_text

    def from_a_wrong_spec(name, ins, outs, **kwargs):
        return real(name, [replace(s, dtype="float64") for s in ins], outs, **kwargs)

    monkeypatch.setattr(triton, "config_text", from_a_wrong_spec)
    r = cli("package", models / "labeled.onnx", "-o", tmp_path / "repo", "--target", "triton")
    assert r.code == 1, r.err
    assert "problem: input x data_type: expected TYPE_FP32, found TYPE_FP64 (float32)" in r.out
    assert not (tmp_path / "repo").exists()


def test_triton_openvino_backend_config(models, tmp_path):
    """--runtime openvino (#27): Triton's OpenVINO backend, which reads model.onnx itself,
    with the latency settings `benchmark --runtime openvino` measures; the check reads
    the file back field by field (no Triton server here)."""
    from onnxforge.steps.package.package import package
    from onnxforge.steps.package.triton import check_triton_config, parse_config

    res = package(models / "labeled.onnx", tmp_path / "repo", target="triton", runtime="openvino", threads=2,
                  name="clf")
    assert res.passed and not res.problems, res.problems
    text = (tmp_path / "repo" / "clf" / "config.pbtxt").read_text()
    assert 'backend: "openvino"' in text and "platform" not in text and "execution_accelerators" not in text
    cfg = parse_config(tmp_path / "repo" / "clf" / "config.pbtxt")
    assert cfg.backend == "openvino" and cfg.default_model_filename == "model.onnx" and cfg.max_batch_size == 64
    assert [(i.name, list(i.dims)) for i in cfg.input] == [("x", [4])] and cfg.HasField("dynamic_batching")
    assert {k: v.string_value for k, v in cfg.parameters.items()} == {
        "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": "2"}
    assert cfg.instance_group[0].kind == 2  # KIND_CPU
    assert sha256_file(tmp_path / "repo" / "clf" / "1" / "model.onnx") == sha256_file(models / "labeled.onnx")
    assert any(c.startswith("default_model_filename") for c in res.checks)

    # read back as the OpenVINO backend's: the file name and the thread count are checked
    path = tmp_path / "repo" / "clf" / "config.pbtxt"
    path.write_text(text.replace('default_model_filename: "model.onnx"\n', "").replace('"2"', '"3"'))
    _, problems = check_triton_config(tmp_path / "repo" / "clf", provider="cpu", threads=2, runtime="openvino")
    assert "default_model_filename: expected 'model.onnx', found ''" in problems
    assert any(p.startswith("parameters.INFERENCE_NUM_THREADS: expected 2, found 3") for p in problems)
    _, problems = check_triton_config(tmp_path / "repo" / "clf", runtime="ort")
    assert any(p.startswith("platform: expected 'onnxruntime_onnx', found 'openvino'") for p in problems)


def test_openvino_runtime_is_for_triton_on_cpu(cli, models, tmp_path):
    for extra in (["--target", "mlserver"], ["--target", "triton", "--provider", "cuda"]):
        r = cli("package", models / "labeled.onnx", "-o", tmp_path / "out", "--runtime", "openvino", *extra)
        assert r.code == 2 and "--runtime openvino is Triton's OpenVINO backend" in r.err, r.err
        assert not (tmp_path / "out").exists()
