"""Update encodings and error feedback (fedmath/encodings.py, fedmath/error_feedback.py), by hand."""

import re
import struct

import numpy as np
import pytest

from fedmath import encodings as enc
from fedmath import hadamard as had
from fedmath import rotated as rot
from fedmath.error_feedback import ErrorFeedback


def _update():
    return [np.array([[0.5, -2.0, 0.0], [4.0, 0.25, -1.0]], np.float32), np.array([3.0, -0.5], np.float32)]


@pytest.mark.parametrize("name", ["float32", "int8", "topk", "topk:0.5", "topk_int8", "topk_int8:0.3", "hadamard",
                                  "hadamard:1", "hadamard_sr", "hadamard_sr:3"])
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


# --- rotated quantization ("hadamard", "hadamard_sr"; fedmath/rotated.py) -------------------------

def test_splitmix64_matches_the_reference_outputs():
    # SplitMix64 seeded with 0 (Steele, Lea and Flood 2014; Vigna's splitmix64.c): first three outputs.
    got = [int(v) for v in rot.splitmix64(0, np.arange(3))]
    assert got == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


def test_signs_are_the_bits_of_splitmix64_least_significant_first():
    # 0xE220A8397B1DCDAF ends in byte 0xAF = 0b10101111: bits (LSB first) 1,1,1,1,0,1,0,1; a set bit is -1
    np.testing.assert_array_equal(rot.signs(0, 0, 8), [-1, -1, -1, -1, 1, -1, 1, -1])
    # tensor 1 starts at output 2^32 of the same stream
    word = int(rot.splitmix64(0, np.array([1 << 32]))[0])
    np.testing.assert_array_equal(rot.signs(0, 1, 64), [-1.0 if word >> i & 1 else 1.0 for i in range(64)])


def test_hadamard_transform_by_hand_orthogonal_and_its_own_inverse():
    # H4 (Sylvester order) rows: ++++, +-+-, ++--, +--+; orthonormal scaling 1/2
    np.testing.assert_allclose(rot.fwht(np.array([[1.0, 2.0, 3.0, 4.0]])), [[5.0, -1.0, -2.0, 0.0]])
    h = rot.fwht(np.eye(64))
    np.testing.assert_allclose(h @ h.T, np.eye(64), atol=1e-12)
    np.testing.assert_allclose(rot.fwht(h), np.eye(64), atol=1e-12)
    with pytest.raises(ValueError, match="power of two"):
        rot.fwht(np.ones((1, 6)))


def test_rotation_keeps_the_norm_and_inverts_exactly_with_padding():
    x = np.random.default_rng(0).normal(size=1000)  # 1000 values: one block of 1024, 24 padded zeros
    y = rot.rotate(x, seed=12345, tensor=3, block=1024)
    assert y.shape == (1, 1024)
    assert np.linalg.norm(y) == pytest.approx(np.linalg.norm(x), rel=1e-12)
    np.testing.assert_allclose(rot.unrotate(y, 12345, 3, 1000), x, atol=1e-12)
    # another seed is another rotation
    assert not np.allclose(rot.rotate(x, 12346, 3, 1024), y)


def test_lloyd_max_levels_for_a_standard_normal():
    # Max (1960), Table I: 2 levels +-sqrt(2/pi); 3 levels 0, +-1.2240; 4 levels +-0.4528, +-1.5104
    np.testing.assert_allclose(rot.lloyd_max_normal(2), [-np.sqrt(2 / np.pi), np.sqrt(2 / np.pi)], atol=1e-9)
    np.testing.assert_allclose(rot.lloyd_max_normal(3), [-1.2240, 0.0, 1.2240], atol=1e-4)
    np.testing.assert_allclose(rot.lloyd_max_normal(4), [-1.5104, -0.4528, 0.4528, 1.5104], atol=1e-4)
    assert rot.lloyd_max_normal(3)[1] == 0.0


def test_lloyd_quantizer_and_eden_scale_by_hand():
    # y = [2, -1, 0.1, -0.5]: ||y||^2 = 5.26, rms = sqrt(5.26 / 4) = 1.14673; y / rms =
    # [1.744, -0.872, 0.087, -0.436] -> nearest of (-1.224, 0, 1.224) (cuts at +-0.612): indices [2, 0, 1, 1]
    # <y, c[q]> = 2 * 1.2240 + 1 * 1.2240 = 3.6720; scale = 5.26 / 3.6720
    c = rot.lloyd_max_normal(3)
    scales, q = rot.quantize_lloyd(np.array([[2.0, -1.0, 0.1, -0.5]]), c)
    np.testing.assert_array_equal(q, [[2, 0, 1, 1]])
    assert scales[0] == pytest.approx(5.26 / (3 * c[2]), rel=1e-12)
    y_hat = scales[0] * c[q[0]]
    assert float(np.dot(y_hat, [2.0, -1.0, 0.1, -0.5])) == pytest.approx(5.26)  # <y_hat, y> = ||y||^2
    # a zero block gets scale 0 (it decodes to zeros)
    assert rot.quantize_lloyd(np.zeros((1, 4)), c)[0][0] == 0.0


def test_stochastic_rounding_is_unbiased_over_many_draws():
    # y = [1, -0.5, 0.2, 0]: s = max|y| = 1; 5 levels on [-1, 1] are spaced 0.5, so 0.2 rounds to
    # 0.5 with probability 0.4 and to 0 otherwise; 1, -0.5 and 0 are on the grid and never move.
    y = np.array([[1.0, -0.5, 0.2, 0.0]])
    levels = rot.uniform_levels(5)
    rng = np.random.default_rng(0)
    scales, q = rot.quantize_stochastic(np.repeat(y, 10000, axis=0), 5, rng)  # 10000 draws at once
    draws = scales[:, None] * levels[q]
    np.testing.assert_array_equal(draws[:, [0, 1, 3]], np.tile([1.0, -0.5, 0.0], (10000, 1)))
    assert set(draws[:, 2]) == {0.0, 0.5}
    assert draws[:, 2].mean() == pytest.approx(0.2, abs=0.01)  # 4 standard errors (0.5 * 0.49 / 100)


def test_packing_base_three_by_hand():
    # five ternary digits per byte, first digit least significant: 2 + 1*3 + 0*9 + 2*27 + 1*81 = 140
    assert rot.digits_per_byte(2) == 8 and rot.digits_per_byte(3) == 5 and rot.digits_per_byte(4) == 4
    assert rot.digits_per_byte(6) == 3 and rot.digits_per_byte(16) == 2
    assert rot.block_bytes(3, 1024) == 205 and rot.block_bytes(2, 1024) == 128
    raw = rot.pack_blocks(np.array([[2, 1, 0, 2, 1, 2], [0, 0, 0, 0, 0, 1]]), 3)
    # each block on its own: its sixth digit starts a second byte whose unused digits are 0
    np.testing.assert_array_equal(raw, [[140, 2], [0, 1]])
    np.testing.assert_array_equal(rot.unpack_blocks(raw, 3, 6), [[2, 1, 0, 2, 1, 2], [0, 0, 0, 0, 0, 1]])
    with pytest.raises(ValueError, match="not 5 base-3 digits"):
        rot.unpack_blocks(np.array([[243, 2]], np.uint8), 3, 6)  # 3^5 = 243 is one past the largest group
    with pytest.raises(ValueError, match="unused digits"):
        rot.unpack_blocks(np.array([[140, 2 + 3]], np.uint8), 3, 6)


def test_lloyd_error_of_the_unbiased_quantizer():
    # EDEN: Lloyd-Max error e (0.3634 for 2 levels = 1 - 2/pi; 0.1902 for 3; 0.1175 for 4), scaled
    # up to e / (1 - e) by the unbiasing scale
    assert rot.lloyd_error(2) == pytest.approx((1 - 2 / np.pi) / (2 / np.pi), rel=1e-6)
    assert rot.lloyd_error(3) == pytest.approx(0.1902 / 0.8098, rel=1e-3)
    assert rot.lloyd_error(4) == pytest.approx(0.1175 / 0.8825, rel=1e-3)


def test_bit_allocation_by_hand():
    # Blocks of 1024 with energies [100, 1, 0, 0]. Bits per block: 2 levels 1024, 3 levels 1640
    # (205 bytes), 4 levels 2048, 6 levels 2736, 16 levels 4096. At 1.75 bits per value the four
    # blocks may spend 7168 bits: the cheapest choice (4 x 1024) leaves 3072, exactly what lifting
    # block 0 to 16 levels costs. Its gains per bit (100 * error drop / extra bits, each step
    # >= 0.0038) all beat block 1's first step (1 * 0.336 / 616 = 0.00055).
    energy = np.array([100.0, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(rot.allocate(energy, 1024, 1.75, (2, 3, 4, 6, 16)), [16, 2, 2, 2])
    # At 1.6 bits (6553.6) block 0 stops at 6 levels (5808 bits); lifting block 1 would fit the
    # budget but not the price at which block 0 stops (reverse water-filling leaves the slack).
    np.testing.assert_array_equal(rot.allocate(energy, 1024, 1.6, (2, 3, 4, 6, 16)), [6, 2, 2, 2])
    # all the same energy: everyone gets the same, the most the budget allows
    np.testing.assert_array_equal(rot.allocate(np.ones(4), 1024, 2.0, (2, 3, 4, 6, 16)), [4, 4, 4, 4])
    np.testing.assert_array_equal(rot.allocate(np.ones(4), 1024, 4.0, (2, 3, 4, 6, 16)), [16] * 4)
    with pytest.raises(ValueError, match="below the cheapest"):
        rot.allocate(energy, 1024, 0.9, (2, 3, 4, 6, 16))


def _big_update(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(32, 64)).astype(np.float32), rng.normal(size=10).astype(np.float32)]


def test_hadamard_payload_layout_by_hand():
    u = [np.ones(2048, np.float32), np.arange(10, dtype=np.float32)]
    payload = had.encode_hadamard(u, levels=3, rng=np.random.default_rng(0))
    # header 12 + one codebook (1 + 3 * 4); tensor 0: kind 1 + 2 scales * 4 + 2 codebook numbers +
    # 2 blocks * ceil(1024 / 5) = 205 bytes of levels; tensor 1 (10 values, smaller than a block):
    # kind 1 + 10 float32
    assert len(payload) == 25 + (1 + 8 + 2 + 410) + (1 + 40)
    version, log2_block, books, reserved, _seed = struct.unpack("<BBBBQ", payload[:12])
    assert (version, log2_block, books, reserved) == (1, 10, 1, 0)
    assert payload[12] == 3
    np.testing.assert_allclose(np.frombuffer(payload[13:25], "<f4"), [-1.2240, 0.0, 1.2240], atol=1e-4)
    assert payload[25] == 1 and payload[34:36] == b"\x00\x00" and payload[25 + 421] == 0
    out = enc.decode("hadamard", payload, [(2048,), (10,)])
    np.testing.assert_array_equal(out[1], u[1])  # the small tensor is exact
    # the same seed and input give the same payload; the seed travels in the header
    assert had.encode_hadamard(u, levels=3, seed=_seed) == payload


def test_hadamard_allocates_levels_by_block_energy():
    # one quiet block and one loud one: at 1.6 bits the loud block gets more levels than 3 and
    # the quiet one fewer, and the error is far below three levels everywhere
    rng = np.random.default_rng(5)
    u = [np.concatenate([0.01 * rng.normal(size=1024), rng.normal(size=1024)]).astype(np.float32)]
    payload = enc.encode("hadamard:1.6", u, rng)
    books = payload[2]
    sizes, pos = [], 12
    for _ in range(books):
        sizes.append(payload[pos])
        pos += 1 + 4 * payload[pos]
    ids = payload[pos + 1 + 8 : pos + 1 + 8 + 2]
    assert sizes[ids[0]] == 2 and sizes[ids[1]] >= 4
    assert len(payload) <= 12 + sum(1 + 4 * n for n in sizes) + 1 + 8 + 2 + 2 * 1024 * 1.6 / 8
    out = enc.decode("hadamard", payload, [(2048,)])[0]
    fixed = enc.decode("hadamard", had.encode_hadamard(u, levels=3, rng=rng), [(2048,)])[0]
    assert np.sum((out - u[0]) ** 2) < 0.7 * np.sum((fixed - u[0]) ** 2)


@pytest.mark.parametrize("levels, low, high", [(2, 0.5, 0.65), (3, 0.2, 0.27), (4, 0.11, 0.16), (16, 0.005, 0.015)])
def test_hadamard_error_is_what_the_levels_allow(levels, low, high):
    # Gaussian-like rotated values: the unbiased EDEN errors 0.571, 0.235, 0.133, 0.0096
    u = _big_update()
    out = enc.decode("hadamard", had.encode_hadamard(u, levels=levels, rng=np.random.default_rng(1)),
                     [a.shape for a in u])
    err = float(np.sum((out[0] - u[0]) ** 2) / np.sum(u[0] ** 2))
    assert low < err < high


def test_hadamard_sr_error_is_several_times_larger():
    # stochastic rounding on [-max, max] (max about 3.3 rms in a block of 1024): 4 levels
    # leave ~0.9 of the energy, 16 levels ~0.035, against 0.133 and 0.0096 for "hadamard"
    u = _big_update()
    for levels, low, high in ((4, 0.6, 1.2), (16, 0.02, 0.05)):
        out = enc.decode("hadamard_sr", had.encode_hadamard_sr(u, levels, np.random.default_rng(1)),
                         [a.shape for a in u])
        assert low < float(np.sum((out[0] - u[0]) ** 2) / np.sum(u[0] ** 2)) < high


def test_hadamard_is_unbiased_over_seeds_and_averaging_shrinks_the_error():
    # One 256-value tensor, block 256. One draw is off by ~48% of ||x|| (relative error 0.23); the
    # mean of 1000 independently seeded draws by sqrt(0.23 / 1000) = 1.5% plus the bias, which
    # the randomized Hadamard transform (not a uniformly random rotation) leaves at about 1%.
    x = np.random.default_rng(2).normal(size=256).astype(np.float32)
    draws = [enc.decode("hadamard", had.encode_hadamard([x], levels=3, block=256, seed=s), [(256,)])[0]
             for s in range(1000)]
    one = np.linalg.norm(draws[0] - x) / np.linalg.norm(x)
    mean = np.linalg.norm(np.mean(draws, axis=0) - x) / np.linalg.norm(x)
    assert 0.3 < one < 0.7 and mean < 0.04


def test_hadamard_sr_is_unbiased_for_a_fixed_rotation():
    x = np.random.default_rng(3).normal(size=64).astype(np.float32)
    rng = np.random.default_rng(4)
    draws = [enc.decode("hadamard_sr", had.encode_hadamard_sr([x], 4, rng, block=64, seed=99), [(64,)])[0]
             for _ in range(1000)]
    per_draw = np.mean([np.sum((d - x) ** 2) for d in draws])
    # the mean of n unbiased draws has squared error per_draw / n: check within 2x of it
    assert np.sum((np.mean(draws, axis=0) - x) ** 2) < 2 * per_draw / 1000


def test_hadamard_max_norm_bounds_the_decoded_update():
    u = _big_update()
    norm = np.sqrt(sum(np.sum(a.astype(np.float64) ** 2) for a in u))
    for name in ("hadamard:1", "hadamard:1.75", "hadamard_sr:4"):
        free = enc.decode(name, enc.encode(name, u, np.random.default_rng(0)), [a.shape for a in u])
        assert np.sqrt(sum(np.sum(a.astype(np.float64) ** 2) for a in free)) > norm  # unbiased: longer
        out = enc.decode(name, enc.encode(name, u, np.random.default_rng(0), max_norm=norm), [a.shape for a in u])
        assert norm * 0.99 < np.sqrt(sum(np.sum(a.astype(np.float64) ** 2) for a in out)) <= norm


def _hadamard_payload():
    return had.encode_hadamard([np.linspace(-1, 1, 1024, dtype=np.float32), np.ones(3, np.float32)], levels=3,
                               seed=7)


def _patched(offset, raw):
    p = bytearray(_hadamard_payload())
    p[offset : offset + len(raw)] = raw
    return bytes(p)


# layout of _hadamard_payload(): header 0..12, codebook size at 12, levels 13..25, tensor 0 kind at
# 25, its scale 26..30, its codebook number at 30, levels 31..236 (ceil(1024 / 5) = 205 bytes),
# tensor 1 kind at 236, values 237..249
@pytest.mark.parametrize("payload, message", [
    pytest.param(_hadamard_payload()[:-1], "ends early: tensor 1 float32 values needs 12 bytes", id="truncated values"),
    pytest.param(_hadamard_payload()[:200], "ends early: tensor 0 levels needs 205 bytes", id="truncated levels"),
    pytest.param(_hadamard_payload()[:10], "ends early: header", id="truncated header"),
    pytest.param(_hadamard_payload()[:20], "ends early: codebook 0 needs 12 bytes", id="truncated codebook"),
    pytest.param(_hadamard_payload() + b"\x00", "1 bytes after the last tensor", id="extra byte"),
    pytest.param(_patched(0, b"\x02"), "version must be 1", id="version"),
    pytest.param(_patched(1, b"\x11"), "block size must be 2^1 to 2^16", id="block size"),
    pytest.param(_patched(2, b"\x00"), "codebook count must be in [1, 8]", id="no codebook"),
    pytest.param(_patched(3, b"\x01"), "reserved header byte", id="reserved byte"),
    pytest.param(_patched(12, b"\x11"), "codebook 0: levels must be in [2, 16], got 17", id="codebook size"),
    pytest.param(_patched(13, struct.pack("<f", 5.0)), "strictly increasing", id="codebook order"),
    pytest.param(_patched(17, struct.pack("<f", float("nan"))), "strictly increasing", id="codebook nan"),
    pytest.param(_patched(25, b"\x07"), "kind must be 0", id="tensor kind"),
    pytest.param(_patched(26, struct.pack("<f", float("nan"))), "tensor 0 block 0: scale must be a finite number >= 0",
                 id="scale nan"),
    pytest.param(_patched(26, struct.pack("<f", float("inf"))), "scale must be a finite number >= 0", id="scale inf"),
    pytest.param(_patched(26, struct.pack("<f", -1.0)), "scale must be a finite number >= 0", id="scale negative"),
    pytest.param(_patched(30, b"\x01"), "codebook numbers must be below 1, got 1", id="codebook number"),
    pytest.param(_patched(31, b"\xff"), "not 5 base-3 digits", id="packed byte"),
    pytest.param(_patched(235, bytes([3**4])), "unused digits at the end of a block", id="unused digit"),
])
def test_hadamard_decode_refuses_malformed_payloads(payload, message):
    with pytest.raises(enc.EncodingError, match=re.escape(message)):
        enc.decode("hadamard", payload, [(1024,), (3,)])


def test_hadamard_decode_flags_non_finite_values():
    with pytest.raises(enc.NonFiniteError, match="tensor 1: 1 non-finite"):
        enc.decode("hadamard", _patched(237, struct.pack("<f", float("inf"))), [(1024,), (3,)])
    # a finite scale whose product with the codebook overflows float32
    with pytest.raises(enc.NonFiniteError, match="decodes to"):
        enc.decode("hadamard", _patched(26, struct.pack("<f", 3e38)), [(1024,), (3,)])
    # shapes that do not match the payload
    with pytest.raises(enc.EncodingError, match="ends early"):
        enc.decode("hadamard", _hadamard_payload(), [(1024,), (4,)])


def test_hadamard_names():
    assert enc.parse_name("hadamard:1.75") == ("hadamard", 1.75)
    assert enc.parse_name("hadamard_sr:16") == ("hadamard_sr", 16)
    assert enc.parse_name("hadamard") == ("hadamard", None)
    assert enc.base_name("hadamard_sr:16") == "hadamard_sr"
    for bad in ("hadamard:0.5", "hadamard:4.5", "hadamard:x", "hadamard:nan"):
        with pytest.raises(enc.EncodingError, match="bits per value"):
            enc.parse_name(bad)
    for bad in ("hadamard_sr:1", "hadamard_sr:17", "hadamard_sr:2.5", "hadamard_sr:x"):
        with pytest.raises(enc.EncodingError, match="levels"):
            enc.parse_name(bad)
    assert enc.DECODERS["hadamard"] is enc.DECODERS["hadamard_sr"]
