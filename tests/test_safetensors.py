"""minigpt.safetensors: round trips, agreement with the reference library, refusal of bad files."""
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minigpt.safetensors import SafetensorsError, load_file, read_header, save_file

DTYPES = [np.bool_, np.uint8, np.int8, np.uint16, np.int16, np.float16, np.uint32, np.int32,
          np.float32, np.uint64, np.int64, np.float64]


def tensor_dicts():
    names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=12)
    arrays = st.sampled_from(DTYPES).flatmap(lambda dt: hnp.arrays(
        dt, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)))
    return st.dictionaries(names.filter(lambda s: s != "__metadata__"), arrays, max_size=5)


def write_raw(path, header, data=b"", pad=True):
    """A file with a hand-made header: for lying about the data."""
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    if pad:
        raw += b" " * (-len(raw) % 8)
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)
    return path


@given(tensors=tensor_dicts(), metadata=st.dictionaries(st.text(max_size=5), st.text(max_size=5),
                                                        max_size=3))
def test_round_trip_keeps_every_dtype_shape_and_value(tmp_path_factory, tensors, metadata):
    path = tmp_path_factory.mktemp("st") / "t.safetensors"
    save_file(tensors, path, metadata=metadata)
    back, meta = load_file(path)
    assert meta == metadata
    assert set(back) == set(tensors)
    for name, a in tensors.items():
        assert back[name].dtype == a.dtype and back[name].shape == a.shape
        np.testing.assert_array_equal(back[name], a)


def test_writer_aligns_every_tensor_to_its_item_size(tmp_path):
    path = tmp_path / "t.safetensors"
    save_file({"a": np.ones(3, np.uint8), "b": np.ones(5, np.float64), "c": np.ones(3, np.float16),
               "d": np.ones(1, np.float32)}, path)
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    assert header_len % 8 == 0
    tensors, _ = read_header(path)
    for t in tensors.values():
        size = {"U8": 1, "F16": 2, "F32": 4, "F64": 8}[t["dtype"]]
        assert (8 + header_len + t["begin"]) % size == 0


def test_load_names_reads_only_those_and_refuses_unknown(tmp_path):
    path = tmp_path / "t.safetensors"
    save_file({"a": np.arange(3.0), "b": np.zeros(2, np.int32)}, path)
    got, _ = load_file(path, names=["b"])
    assert list(got) == ["b"]
    with pytest.raises(SafetensorsError, match="no tensor named 'z'"):
        load_file(path, names=["z"])


def test_bf16_is_widened_to_the_float32_with_the_same_top_bits(tmp_path):
    values = np.array([1.0, -2.5, 3.140625, 0.0, np.inf], dtype=np.float32)
    raw = (values.view(np.uint32) >> 16).astype("<u2").tobytes()   # exact: low bits are zero
    path = write_raw(tmp_path / "bf.safetensors",
                     {"x": {"dtype": "BF16", "shape": [5], "data_offsets": [0, 10]}}, raw)
    got, _ = load_file(path)
    assert got["x"].dtype == np.float32
    np.testing.assert_array_equal(got["x"], values)


def test_reference_library_reads_ours_and_we_read_its(tmp_path):
    pytest.importorskip("safetensors")
    from safetensors.numpy import load as ref_load, save as ref_save
    tensors = {"w": np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32),
               "i": np.arange(5, dtype=np.int64), "h": np.ones((2, 0), np.float16)}
    save_file(tensors, tmp_path / "ours.safetensors", metadata={"format": "pt"})
    theirs = ref_load((tmp_path / "ours.safetensors").read_bytes())
    (tmp_path / "theirs.safetensors").write_bytes(ref_save(tensors, metadata={"format": "np"}))
    back, meta = load_file(tmp_path / "theirs.safetensors")
    assert meta == {"format": "np"}
    for name, a in tensors.items():
        np.testing.assert_array_equal(theirs[name], a)
        np.testing.assert_array_equal(back[name], a)
        assert back[name].dtype == a.dtype


def test_torch_bfloat16_file_reads_as_its_float32_values(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    from safetensors.torch import save as torch_save
    x = torch.randn(4, 3).to(torch.bfloat16)
    (tmp_path / "bf.safetensors").write_bytes(torch_save({"x": x}))
    got, _ = load_file(tmp_path / "bf.safetensors")
    np.testing.assert_array_equal(got["x"], x.float().numpy())


@given(data=st.data())
def test_a_truncated_file_is_refused_at_any_cut(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("st") / "t.safetensors"
    save_file({"a": np.arange(6, dtype=np.float32), "b": np.ones(3, np.int16)}, path)
    whole = path.read_bytes()
    cut = data.draw(st.integers(0, len(whole) - 1))
    path.write_bytes(whole[:cut])
    with pytest.raises(SafetensorsError):
        load_file(path)


F32_2 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.mark.parametrize("header, data, message", [
    ({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, "truncated"),
    ({"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, "needs 12 bytes"),
    ({"x": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, b"\0" * 8, "begin <= end"),
    ({"x": F32_2, "y": F32_2}, b"\0" * 8, "overlap"),
    ({"x": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, "gap"),
    ({"x": F32_2}, b"\0" * 12, "gap at the end"),
    ({"x": {"dtype": "F8_E4M3", "shape": [8], "data_offsets": [0, 8]}}, b"\0" * 8, "F8_E4M3"),
    ({"x": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8, "non-negative"),
    ({"x": {"dtype": "F32", "shape": [True, 2], "data_offsets": [0, 8]}}, b"\0" * 8, "non-negative"),
    ({"x": {"dtype": "F32", "shape": [2]}}, b"\0" * 8, "exactly dtype, shape and data_offsets"),
    ({"x": F32_2, "__metadata__": {"a": 1}}, b"\0" * 8, "strings to strings"),
    ([1, 2], b"", "not a JSON object"),
    (b"{not json", b"", "not valid JSON"),
    (b'{"x": 1, "x": 2}', b"", "repeats a key"),
])
def test_a_header_that_lies_about_the_data_is_refused(tmp_path, header, data, message):
    path = write_raw(tmp_path / "bad.safetensors", header, data)
    with pytest.raises(SafetensorsError, match=message):
        load_file(path)


def test_a_header_length_past_the_end_of_the_file_is_refused(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes((1000).to_bytes(8, "little") + b'{"x": 1}')
    with pytest.raises(SafetensorsError, match="runs past the end"):
        load_file(path)


def test_a_short_or_missing_file_is_a_clear_error(tmp_path):
    (tmp_path / "short").write_bytes(b"abc")
    with pytest.raises(SafetensorsError, match="too short"):
        load_file(tmp_path / "short")
    with pytest.raises(SafetensorsError, match="cannot read"):
        load_file(tmp_path / "absent.safetensors")


def test_writer_refuses_what_safetensors_cannot_hold(tmp_path):
    with pytest.raises(SafetensorsError, match="dtype"):
        save_file({"c": np.ones(2, np.complex64)}, tmp_path / "c.safetensors")
    with pytest.raises(SafetensorsError, match="metadata"):
        save_file({"a": np.ones(2)}, tmp_path / "m.safetensors", metadata={"n": 1})
    assert not list(tmp_path.iterdir())            # nothing half-written left behind


def test_a_deeply_nested_header_is_refused_not_a_recursion_error(tmp_path):
    path = write_raw(tmp_path / "deep.safetensors", b"[" * 200_000)
    with pytest.raises(SafetensorsError, match="nested more than"):
        load_file(path)
