"""Hand-checked numbers for the weighted average, clipping, noise and the wire format."""

import math

import numpy as np
import pytest

from fedmath import aggregate, encodings, privacy, wire


def test_weighted_mean_matches_hand_computation():
    a = [np.array([1.0, 2.0], np.float32), np.array([[0.0]], np.float32)]
    b = [np.array([3.0, -2.0], np.float32), np.array([[4.0]], np.float32)]
    # weights 1 and 3: (1*1 + 3*3)/4 = 2.5, (1*2 + 3*-2)/4 = -1, (0 + 12)/4 = 3
    mean = aggregate.weighted_mean([a, b], [1, 3])
    np.testing.assert_allclose(mean[0], [2.5, -1.0])
    np.testing.assert_allclose(mean[1], [[3.0]])
    assert mean[0].dtype == np.float32


def test_running_sum_is_incremental_and_counts():
    acc = aggregate.RunningSum.zeros_like([np.zeros(2)])
    acc.add([np.array([2.0, 0.0])], 2)
    acc.add([np.array([0.0, 4.0])], 2)
    assert acc.count == 2 and acc.total_weight == 4
    np.testing.assert_allclose(acc.mean()[0], [1.0, 2.0])


@pytest.mark.parametrize(
    "update, weight, message",
    [
        ([np.zeros(3)], 1, "shape"),
        ([np.zeros(2), np.zeros(2)], 1, "tensors"),
        ([np.zeros(2)], 0, "positive"),
        ([np.zeros(2)], float("nan"), "positive"),
    ],
)
def test_running_sum_rejects_bad_input_and_changes_nothing(update, weight, message):
    acc = aggregate.RunningSum.zeros_like([np.zeros(2)])
    acc.add([np.array([1.0, 1.0])], 1)
    with pytest.raises(ValueError, match=message):
        acc.add(update, weight)
    assert acc.count == 1 and acc.total_weight == 1
    np.testing.assert_allclose(acc.sums[0], [1.0, 1.0])


def test_apply_delta():
    out = aggregate.apply_delta([np.array([1.0, 1.0])], [np.array([0.5, -1.0])], 2.0)
    np.testing.assert_allclose(out[0], [2.0, -1.0])


def test_clip_scales_to_norm_and_leaves_small_updates():
    big = [np.array([3.0, 0.0]), np.array([4.0])]  # norm 5
    clipped, norm = privacy.clip_by_global_norm(big, 1.0)
    assert norm == pytest.approx(5.0)
    np.testing.assert_allclose(clipped[0], [0.6, 0.0], rtol=1e-6)
    np.testing.assert_allclose(clipped[1], [0.8], rtol=1e-6)
    assert privacy.global_l2_norm(clipped) == pytest.approx(1.0, rel=1e-6)
    small, norm = privacy.clip_by_global_norm([np.array([0.3, 0.4])], 1.0)
    np.testing.assert_allclose(small[0], [0.3, 0.4], rtol=1e-6)
    with pytest.raises(ValueError, match="clip_norm"):
        privacy.clip_by_global_norm(big, 0.0)


def test_device_noise_share_sums_to_central_noise():
    # z = 1.2, C = 0.5, 9 reports: per-device std = 1.2 * 0.5 / 3 = 0.2
    assert privacy.device_noise_std(1.2, 0.5, 9) == pytest.approx(0.2)
    rng = np.random.default_rng(0)
    sums = sum(privacy.add_gaussian_noise([np.zeros(20000)], 0.2, rng)[0] for _ in range(9))
    assert np.std(sums) == pytest.approx(1.2 * 0.5, rel=0.03)
    assert privacy.add_gaussian_noise([np.ones(3)], 0.0, rng)[0].tolist() == [1, 1, 1]


def test_max_plausible_norm_admits_honest_noised_updates():
    rng = np.random.default_rng(1)
    dim, c, std = 5000, 1.0, 0.005  # noise norm about 0.35
    bound = privacy.max_plausible_norm(c, std, dim, slack=6.0)
    for _ in range(50):
        u, _ = privacy.clip_by_global_norm([rng.normal(size=dim)], c)
        noised = privacy.add_gaussian_noise(u, std, rng)
        assert privacy.global_l2_norm(noised) <= bound
    # A device that skipped clipping (norm 3) is caught.
    assert 3.0 > bound
    assert privacy.max_plausible_norm(1.0, 0.0, dim, 6.0) == pytest.approx(1.0, rel=1e-4)


def test_wire_round_trip_and_errors():
    header = wire.UploadHeader(round=2, model_version=1, num_examples=7, encoding="float32", upload_id="u1")
    payload = encodings.encode("float32", [np.arange(6, dtype=np.float32).reshape(2, 3)])
    got, raw = wire.unpack(wire.pack(header, payload))
    assert got == header
    np.testing.assert_array_equal(encodings.decode("float32", raw, [(2, 3)])[0], np.arange(6).reshape(2, 3))
    with pytest.raises(wire.WireError, match="FKU1"):
        wire.unpack(b"nope")
    with pytest.raises(encodings.EncodingError, match="24 bytes"):
        encodings.decode("float32", raw[:-4], [(2, 3)])
    with pytest.raises(encodings.EncodingError, match="non-finite"):
        encodings.decode("float32", np.array([np.nan, 1], np.float32).tobytes(), [(2,)])
    with pytest.raises(encodings.EncodingError, match="unknown encoding"):
        encodings.decode("bf16", raw, [(2, 3)])


@pytest.mark.parametrize(
    "change, message",
    [
        ({"num_examples": 0}, "num_examples"),
        ({"round": "2"}, "integer"),
        ({"round": True}, "integer"),
        ({"encoding": ""}, "non-empty"),
    ],
)
def test_wire_header_validation(change, message):
    import json
    import struct

    fields = {"round": 1, "model_version": 0, "num_examples": 3, "encoding": "float32", "upload_id": "x"}
    fields.update(change)
    raw = json.dumps(fields).encode()
    with pytest.raises(wire.WireError, match=message):
        wire.unpack(wire.MAGIC + struct.pack("<I", len(raw)) + raw)


def test_wire_rejects_unknown_and_missing_fields():
    import json
    import struct

    raw = json.dumps({"round": 1, "extra": 2}).encode()
    with pytest.raises(wire.WireError, match="missing"):
        wire.unpack(wire.MAGIC + struct.pack("<I", len(raw)) + raw)
    assert math.isfinite(privacy.global_l2_norm([np.zeros(1)]))
