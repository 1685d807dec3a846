import numpy as np
import pytest

from onnxforge.core.errors import BadInputError, UsageError
from onnxforge.data.generate import generate_inputs
from onnxforge.data.samples import check_sample_fits, load_samples, save_samples
from onnxforge.data.specs import parse_dims, parse_dynamic, parse_spec, parse_val_ranges, resolve_shape
from onnxforge.core.types import TensorSpec


@pytest.mark.parametrize(
    "text,expected",
    [
        ("x:float32:1x3x224x224", TensorSpec("x", "float32", (1, 3, 224, 224))),
        ("ids:int64:batchx128", TensorSpec("ids", "int64", ("batch", 128))),
        ("ids:int64:max_lenx8", TensorSpec("ids", "int64", ("max_len", 8))),
        ("ids:int64:x_lenxbatch", TensorSpec("ids", "int64", ("x_len", "batch"))),
        ("ids:int64:[maxlen,8]", TensorSpec("ids", "int64", ("maxlen", 8))),
        ("gpu_0/data_0:float:1x3", TensorSpec("gpu_0/data_0", "float32", (1, 3))),
        ("input:0:float32:2x2", TensorSpec("input:0", "float32", (2, 2))),
        ("flag:bool:", TensorSpec("flag", "bool", ())),
        ("t:double:scalar", TensorSpec("t", "float64", ())),
        ("x:float32:[1,seq,4]", TensorSpec("x", "float32", (1, "seq", 4))),
        ("x:float32:?x4", TensorSpec("x", "float32", (None, 4))),
    ],
)
def test_parse_spec(text, expected):
    assert parse_spec(text) == expected


@pytest.mark.parametrize("bad", ["x", "x:float32", "x:floaty:1x2", ":float32:1", "x:float32:1x$"])
def test_parse_spec_rejects(bad):
    with pytest.raises(UsageError):
        parse_spec(bad)


def test_spec_round_trips_through_str():
    s = TensorSpec("ids", "int64", ("batch", 128))
    assert parse_spec(str(s)) == s


def test_dims_and_ranges():
    assert parse_dims(["batch=8", "seq=3"]) == {"batch": 8, "seq": 3}
    with pytest.raises(UsageError):
        parse_dims(["batch=0"])
    with pytest.raises(UsageError):
        parse_dims(["batch"])
    assert parse_val_ranges(["ids:[0,100]", "[-1,1]"]) == {"ids": (0.0, 100.0), "": (-1.0, 1.0)}
    with pytest.raises(UsageError):
        parse_val_ranges(["x:[3,1]"])


def test_resolve_shape():
    s = TensorSpec("x", "float32", ("batch", None, 4))
    assert resolve_shape(s, {"batch": 8}) == (8, 1, 4)
    with pytest.raises(UsageError, match="symbolic dim 'batch'") as e:
        resolve_shape(s, {}, default=None)
    assert "--dim batch=" in e.value.hint


def test_generate_is_seeded_and_typed():
    specs = [
        TensorSpec("x", "float32", ("batch", 3)),
        TensorSpec("ids", "int64", (2, 5)),
        TensorSpec("m", "bool", (4,)),
        TensorSpec("h", "float16", (2,)),
    ]
    a = generate_inputs(specs, seed=3, dims={"batch": 5}, val_ranges={"ids": (100, 102), "x": (-2, -1)})
    b = generate_inputs(specs, seed=3, dims={"batch": 5}, val_ranges={"ids": (100, 102), "x": (-2, -1)})
    c = generate_inputs(specs, seed=4, dims={"batch": 5})
    assert a["x"].shape == (5, 3) and a["x"].dtype == np.float32
    assert ((a["x"] >= -2) & (a["x"] <= -1)).all()
    assert a["ids"].dtype == np.int64 and set(np.unique(a["ids"])) <= {100, 101, 102}
    assert a["m"].dtype == np.bool_ and a["h"].dtype == np.float16
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["x"], c["x"][: a["x"].shape[0]])


def test_load_npz_single_and_stacked(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.savez(tmp_path / "d.npz", x=x)
    [one] = load_samples(tmp_path / "d.npz")
    np.testing.assert_array_equal(one["x"], x)
    many = load_samples(tmp_path / "d.npz", stacked=True)
    assert len(many) == 3 and many[1]["x"].shape == (4,)
    np.savez(tmp_path / "bad.npz", x=x, y=np.zeros((2, 1)))
    with pytest.raises(BadInputError, match="leading sample axis"):
        load_samples(tmp_path / "bad.npz", stacked=True)


def test_load_folders(tmp_path):
    from onnx import numpy_helper

    flat = tmp_path / "flat"
    flat.mkdir()
    np.save(flat / "x.npy", np.ones((1, 4), np.float32))
    np.save(flat / "gpu_0%2Fdata_0.npy", np.zeros(2, np.float32))
    [s] = load_samples(flat)
    assert set(s) == {"x", "gpu_0/data_0"}

    numbered = tmp_path / "numbered"
    for i in range(3):
        (numbered / str(i)).mkdir(parents=True)
        np.save(numbered / str(i) / "x.npy", np.full((1, 4), i, np.float32))
    samples = load_samples(numbered)
    assert [float(s["x"][0, 0]) for s in samples] == [0.0, 1.0, 2.0]

    pb = tmp_path / "onnxtest" / "test_data_set_0"
    pb.mkdir(parents=True)
    t = numpy_helper.from_array(np.ones((1, 4), np.float32), "")
    (pb / "input_0.pb").write_bytes(t.SerializeToString())
    [s] = load_samples(tmp_path / "onnxtest", names=["x"])
    assert list(s) == ["x"] and s["x"].shape == (1, 4)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BadInputError, match="no samples"):
        load_samples(empty)
    with pytest.raises(BadInputError, match="not found"):
        load_samples(tmp_path / "missing.npz")


def test_save_samples_round_trip(tmp_path):
    samples = [{"x": np.full((2,), i, np.float32)} for i in range(3)]
    samples[1] = {"x": np.zeros((5,), np.float32)}  # shapes may differ per sample
    save_samples(tmp_path / "s.npz", samples)
    back = load_samples(tmp_path / "s.npz")
    assert len(back) == 3 and float(back[2]["x"][0]) == 2.0 and back[1]["x"].shape == (5,)
    save_samples(tmp_path / "one.npz", samples[:1])
    assert list(np.load(tmp_path / "one.npz").files) == ["x"]


def test_check_sample_fits():
    specs = [TensorSpec("x", "float32", ("batch", 4))]
    check_sample_fits({"x": np.zeros((7, 4), np.float32)}, specs)
    with pytest.raises(BadInputError, match="missing input"):
        check_sample_fits({"y": np.zeros((1, 4), np.float32)}, specs)
    with pytest.raises(BadInputError, match="rank 2"):
        check_sample_fits({"x": np.zeros((4,), np.float32)}, specs)
    with pytest.raises(BadInputError, match="fixes it to 4"):
        check_sample_fits({"x": np.zeros((1, 5), np.float32)}, specs)
    with pytest.raises(BadInputError, match="expects float32"):
        check_sample_fits({"x": np.zeros((1, 4), np.float64)}, specs)


def test_parse_dynamic_one_or_several_axes():
    assert parse_dynamic(["x:0=batch", "ids:0=batch,1=seq", "a:b:1=s"]) == {
        "x": {0: "batch"}, "ids": {0: "batch", 1: "seq"}, "a:b": {1: "s"}}


@pytest.mark.parametrize("bad", ["x", "x:0", "x:0=", "x:a=b", "x:0=batch,", ":0=b", "x:0=1b", "x:0=b,1"])
def test_parse_dynamic_refuses(bad):
    with pytest.raises(UsageError, match="bad --dynamic"):
        parse_dynamic([bad])


def test_generated_images_are_normalised_per_channel():
    """#24: with a norm, a float input is (U[0,1) - mean) / std along its channel axis
    (axis 1, else the last), not [0, 1) noise; a preset and explicit constants agree."""
    from onnxforge.data.specs import input_norm

    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    specs = [TensorSpec("pixel_values", "float32", (16, 3, 32, 32)), TensorSpec("nhwc", "float32", (16, 32, 32, 3)),
             TensorSpec("ids", "int64", (2, 4))]
    a = generate_inputs(specs, seed=0, norms={"pixel_values": "imagenet", "nhwc": "0.485,0.456,0.406/0.229,0.224,0.225"})
    for arr, axes in ((a["pixel_values"], (0, 2, 3)), (a["nhwc"], (0, 1, 2))):
        assert arr.dtype == np.float32
        np.testing.assert_allclose(arr.mean(axis=axes), (0.5 - mean) / std, atol=0.02)
        np.testing.assert_allclose(arr.std(axis=axes), np.sqrt(1 / 12) / std, rtol=0.02)
    assert a["ids"].min() >= 0 and a["ids"].max() <= 10  # ints untouched
    # a raw range (--val-range) is what gets normalised: [0, 255] pixels with 0-255 constants
    b = generate_inputs(specs[:1], val_ranges={"pixel_values": (0, 255)}, norms={"": "127.5,127.5,127.5/50,50,50"})
    np.testing.assert_allclose(b["pixel_values"].mean(axis=(0, 2, 3)), 0.0, atol=0.05)
    assert input_norm("imagenet")["label"] == "ImageNet"
    assert input_norm({"mean": [0.5] * 3, "std": [0.5] * 3})["label"] == "[-1, 1]"  # recorded constants named


@pytest.mark.parametrize("bad", ["x:imagenett", "x:0.5,0.5/0.2", "x:0.5/0", "x:0.5/nan", "x:0.5,0.5"])
def test_input_norm_grammar_is_checked(bad):
    from onnxforge.data.specs import parse_input_norms

    with pytest.raises(UsageError) as e:
        parse_input_norms([bad])
    assert "--input-norm for x" in e.value.message and "imagenet" in e.value.hint


def test_input_norm_without_a_channel_axis_is_refused():
    with pytest.raises(UsageError, match="no axis of 3 channels"):
        generate_inputs([TensorSpec("x", "float32", (2, 4))], norms={"x": "imagenet"})


def test_describe_generated_says_how():
    from onnxforge.data.generate import describe_generated

    specs = [TensorSpec("pixel_values", "float32", (1, 3, 4, 4))]
    assert describe_generated(specs) == "generated (uniform [0,1) noise, seed 0)"
    assert describe_generated(specs, seed=3, norms={"pixel_values": "imagenet"}) == \
        "generated (ImageNet-normalised images, seed 3)"
    assert "images normalised with mean 0.1,0.2,0.3, std 1,2,3" in describe_generated(specs, norms={"": "0.1,0.2,0.3/1,2,3"})


def test_a_dim_named_as_a_sum_is_the_sum_of_its_terms():
    """A decoder's mask is [batch_size, past_sequence_length + sequence_length]: generated
    inputs must fit the cache and the new tokens together, whatever value the sum was given."""
    from onnxforge.core.types import TensorSpec
    from onnxforge.data.specs import resolve_shape

    mask = TensorSpec("attention_mask", "int64", ("batch_size", "past_sequence_length + sequence_length"))
    dims = {"batch_size": 2, "past_sequence_length": 3, "sequence_length": 4, "past_sequence_length + sequence_length": 2}
    assert resolve_shape(mask, dims) == (2, 7)
    assert resolve_shape(mask, {"past_sequence_length": 5}, default=1) == (1, 6)
    assert resolve_shape(TensorSpec("x", "float32", ("n + 1",)), {"n": 2}) == (3,)
