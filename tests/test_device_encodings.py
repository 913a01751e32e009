"""Update encodings and error feedback (fedmath/encodings.py, fedmath/error_feedback.py), by hand."""

import struct

import numpy as np
import pytest

from fedmath import encodings as enc
from fedmath.error_feedback import ErrorFeedback


def _update():
    return [np.array([[0.5, -2.0, 0.0], [4.0, 0.25, -1.0]], np.float32), np.array([3.0, -0.5], np.float32)]


@pytest.mark.parametrize("name", ["float32", "int8", "topk", "topk:0.5", "topk_int8", "topk_int8:0.3"])
def test_every_encoding_round_trips_shapes_and_dtypes(name):
    u = _update()
    out = enc.decode(name, enc.encode(name, u, rng=np.random.default_rng(0)), [a.shape for a in u])
    assert [o.shape for o in out] == [a.shape for a in u]
    assert all(o.dtype == np.float32 for o in out)


def test_float32_is_exact_and_unchanged():
    u = _update()
    payload = enc.encode("float32", u)
    assert payload == enc.encode_float32(u) and len(payload) == 4 * 8
    for a, b in zip(u, enc.decode("float32", payload, [a.shape for a in u])):
        np.testing.assert_array_equal(a, b)


def test_int8_layout_and_values_by_hand():
    # One tensor [1.27, -0.635, 0]: scale = 1.27/127 = 0.01, so x/scale = [127, -63.5, 0].
    # 127 and 0 are integers: stochastic rounding leaves them; -63.5 becomes -64 or -63.
    u = [np.array([1.27, -0.635, 0.0], np.float32)]
    payload = enc.encode("int8", u, rng=np.random.default_rng(1))
    assert len(payload) == 4 + 3  # one float32 scale, three int8 values
    (scale,) = struct.unpack("<f", payload[:4])
    assert scale == pytest.approx(0.01, rel=1e-6)
    q = np.frombuffer(payload[4:], np.int8)
    assert q[0] == 127 and q[2] == 0 and q[1] in (-64, -63)
    # exact inverse on the grid: values that are multiples of the scale come back exactly
    grid = [np.array([1.27, -0.63, 0.0], np.float32)]
    back = enc.decode("int8", enc.encode("int8", grid, rng=np.random.default_rng(2)), [(3,)])
    np.testing.assert_allclose(back[0], grid[0], atol=1e-6)


def test_int8_stochastic_rounding_is_unbiased():
    # x/scale = [127, 0.3]: the second entry rounds up with probability 0.3.
    u = [np.array([1.27, 0.003], np.float32)]
    rng = np.random.default_rng(3)
    draws = [enc.decode("int8", enc.encode("int8", u, rng=rng), [(2,)])[0][1] for _ in range(4000)]
    assert np.mean(draws) == pytest.approx(0.003, abs=0.0003)
    assert set(np.round(np.asarray(draws) / 0.01).astype(int)) == {0, 1}


def test_topk_keeps_largest_per_tensor_by_hand():
    u = _update()  # tensor 0 has 6 entries, tensor 1 has 2
    # fraction 0.5: k = ceil(3) = 3 of tensor 0 (|4|, |-2|, |-1|) and ceil(1) = 1 of tensor 1 (|3|)
    out = enc.decode("topk", enc.encode("topk:0.5", u), [a.shape for a in u])
    np.testing.assert_array_equal(out[0], [[0.0, -2.0, 0.0], [4.0, 0.0, -1.0]])
    np.testing.assert_array_equal(out[1], [3.0, 0.0])
    # layout: per tensor uint32 k | uint8 format | indices | float32 values
    payload = enc.encode("topk:0.5", u)
    k, fmt = struct.unpack("<IB", payload[:5])
    assert (k, fmt) == (3, 2)  # a 1-byte bitmap beats 3 uint16 indices
    assert len(payload) == (5 + 1 + 12) + (5 + 1 + 4)


def test_topk_fraction_one_is_exact():
    u = _update()
    out = enc.decode("topk", enc.encode("topk:1.0", u), [a.shape for a in u])
    for a, b in zip(u, out):
        np.testing.assert_array_equal(a, b)


def test_topk_uses_index_list_when_sparse():
    u = [np.zeros(1000, np.float32)]
    u[0][[7, 500]] = [5.0, -6.0]
    payload = enc.encode("topk:0.002", u)  # k = 2
    k, fmt = struct.unpack("<IB", payload[:5])
    assert (k, fmt) == (2, 1) and len(payload) == 5 + 2 * 2 + 2 * 4
    np.testing.assert_array_equal(enc.decode("topk", payload, [(1000,)])[0], u[0])


def test_topk_int8_compresses_16x_on_a_large_tensor():
    rng = np.random.default_rng(0)
    u = [rng.normal(size=(512, 256)).astype(np.float32)]
    payload = enc.encode("topk_int8:0.1", u, rng=rng)
    assert 4 * u[0].size / len(payload) >= 16


@pytest.mark.parametrize("name, payload", [
    ("int8", b"\x00" * 3),
    ("topk", b"\x00" * 2),
    ("topk", struct.pack("<IB", 9, 1) + b"\x00" * 40),  # k larger than the tensor
    ("topk", struct.pack("<IB", 1, 7) + b"\x00" * 8),  # unknown index format
    ("topk", struct.pack("<IB", 2, 1) + struct.pack("<HH", 3, 1) + b"\x00" * 8),  # not increasing
    ("topk", struct.pack("<IB", 1, 1) + struct.pack("<H", 0) + struct.pack("<f", float("nan"))),
    ("topk", struct.pack("<IB", 1, 1) + struct.pack("<H", 0) + b"\x00" * 4 + b"extra"),
])
def test_decoders_refuse_malformed_payloads(name, payload):
    with pytest.raises(enc.EncodingError):
        enc.decode(name, payload, [(4,)])


def test_names_with_parameters():
    assert enc.parse_name("topk:0.25") == ("topk", 0.25)
    assert enc.base_name("topk_int8:0.1") == "topk_int8"
    for bad in ("int8:0.5", "topk:2", "topk:x", "gzip"):
        with pytest.raises(enc.EncodingError):
            enc.parse_name(bad)


def test_error_feedback_carries_the_residual_across_rounds_by_hand():
    # top-1 of a 3-vector each round (fraction 0.3: k = ceil(0.9) = 1), residual kept on the device.
    fb = ErrorFeedback([(3,)])
    codec = lambda u: enc.encode("topk:0.3", u)
    decode = lambda p: enc.decode("topk", p, [(3,)])

    # round 1: delta [3, 2, 1] -> send [3, 0, 0], keep [0, 2, 1]
    sent1 = decode(fb.step([np.array([3.0, 2.0, 1.0], np.float32)], codec, decode))
    np.testing.assert_array_equal(sent1[0], [3.0, 0.0, 0.0])
    np.testing.assert_array_equal(fb.residual[0], [0.0, 2.0, 1.0])
    # round 2: delta [1, 0.5, 2] + residual [0, 2, 1] = [1, 2.5, 3] -> send [0, 0, 3], keep [1, 2.5, 0]
    sent2 = decode(fb.step([np.array([1.0, 0.5, 2.0], np.float32)], codec, decode))
    np.testing.assert_array_equal(sent2[0], [0.0, 0.0, 3.0])
    np.testing.assert_array_equal(fb.residual[0], [1.0, 2.5, 0.0])
    # round 3: a zero delta still delivers the largest residual entry -> send [0, 2.5, 0], keep [1, 0, 0]
    sent3 = decode(fb.step([np.zeros(3, np.float32)], codec, decode))
    np.testing.assert_array_equal(sent3[0], [0.0, 2.5, 0.0])
    np.testing.assert_array_equal(fb.residual[0], [1.0, 0.0, 0.0])
    # nothing is lost, only delayed: sent + residual = everything computed
    np.testing.assert_allclose(sent1[0] + sent2[0] + sent3[0] + fb.residual[0], [4.0, 2.5, 3.0])


def test_error_feedback_rejects_wrong_shapes():
    fb = ErrorFeedback([(2,)])
    with pytest.raises(ValueError, match="shape"):
        fb.correct([np.zeros(3)])
