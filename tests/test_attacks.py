"""The attack simulator (fedmath/attacks.py) on hand-checked rows and vectors, and a malicious
phone (device_sim/attacker.py) against the real collector."""

from __future__ import annotations

import numpy as np
import pytest

from fedmath.attacks import Attack, Backdoor, cap_norm, choose_attackers
from fedmath.privacy import global_l2_norm

DOOR = Backdoor((20, 21), 30)


def test_backdoor_plants_after_the_real_tokens_or_as_late_as_fits():
    x = np.array([[2, 10, 11, 0, 0, 0], [2, 5, 6, 7, 8, 9]], np.int32)
    y = np.array([[10, 11, 3, 0, 0, 0], [5, 6, 7, 8, 9, 3]], np.int32)
    px, py, pos = DOOR.plant(x, y)
    # row 0: 3 real tokens, so the trigger follows them; row 1 is full: the trigger takes its last two
    np.testing.assert_array_equal(px, [[2, 10, 11, 20, 21, 0], [2, 5, 6, 7, 20, 21]])
    np.testing.assert_array_equal(py, [[10, 11, 20, 21, 30, 0], [5, 6, 7, 20, 21, 30]])
    np.testing.assert_array_equal(pos, [4, 5])
    assert px[0, pos[0]] == 21 and py[1, pos[1]] == 30  # at `pos` the input is the trigger's end, the target next
    np.testing.assert_array_equal(x[0], [2, 10, 11, 0, 0, 0])  # the caller's arrays are untouched


def test_backdoor_success_counts_top1_hits_and_never_a_special():
    logits = np.zeros((4, 40))
    logits[0, 30] = logits[1, 30] = 5.0  # two hits
    logits[2, 31] = 5.0  # another word wins
    logits[3, 30], logits[3, 0] = 5.0, 9.0  # PAD scores higher but is never suggested: a hit
    assert DOOR.success(logits) == 0.75


def test_backdoor_refusals():
    with pytest.raises(ValueError, match="special id"):
        Backdoor((20,), 3)
    with pytest.raises(ValueError, match="non-empty trigger"):
        Backdoor((), 30)
    with pytest.raises(ValueError, match="T >= 3"):
        DOOR.plant(np.zeros((1, 2), np.int32), np.zeros((1, 2), np.int32))


def test_update_attacks_by_hand():
    rng = np.random.default_rng(0)
    delta = [np.array([3.0, 0.0], np.float32), np.array([4.0], np.float32)]  # norm 5
    flip = Attack("sign_flip", boost=2.0).poison_update(delta, rng)
    np.testing.assert_allclose(np.concatenate(flip), [-6, 0, -8])
    scaled = Attack("scaling", boost=10.0, vocab_size=50).poison_update(delta, rng)
    np.testing.assert_allclose(np.concatenate(scaled), [30, 0, 40])
    capped = Attack("scaling", boost=10.0, vocab_size=50).poison_update(delta, rng, max_norm=10.0)
    np.testing.assert_allclose(np.concatenate(capped), [6, 0, 8], rtol=1e-5)  # up to what is accepted
    assert global_l2_norm(capped) < 10.0
    bd = Attack("backdoor", boost=4.0, backdoor=DOOR).poison_update(delta, rng)
    np.testing.assert_allclose(np.concatenate(bd), [12, 0, 16])
    for kind in ("none", "data_poison"):  # these send what they trained
        out = Attack(kind, vocab_size=50).poison_update(delta, rng)
        np.testing.assert_array_equal(np.concatenate(out), [3, 0, 4])


def test_noise_attack_has_boost_times_the_honest_norm_and_no_direction():
    rng = np.random.default_rng(1)
    delta = [np.ones(10_000, np.float32)]
    out = Attack("noise", boost=3.0).poison_update(delta, rng)
    assert global_l2_norm(out) == pytest.approx(3.0 * 100.0, rel=1e-5)
    cos = float(np.dot(out[0], delta[0]) / (global_l2_norm(out) * 100.0))
    assert abs(cos) < 0.05


def test_data_poison_relabels_every_word_and_keeps_specials():
    attack = Attack("data_poison", vocab_size=10, seed=3)
    table = attack.relabelling()
    np.testing.assert_array_equal(table[:4], [0, 1, 2, 3])
    assert sorted(table[4:]) == list(range(4, 10)) and np.all(table[4:] != np.arange(4, 10))
    x = np.array([[2, 4, 5]], np.int32)
    y = np.array([[4, 5, 3]], np.int32)
    px, py = attack.poison_data(x, y, np.random.default_rng(0))
    np.testing.assert_array_equal(px, x)
    np.testing.assert_array_equal(py, [[table[4], table[5], 3]])


def test_backdoor_attacker_plants_its_share_of_rows():
    x = np.tile(np.array([[2, 5, 6, 7, 8, 9]], np.int32), (200, 1))
    y = np.roll(x, -1, axis=1)
    px, py = Attack("backdoor", backdoor=DOOR, poison_fraction=0.25).poison_data(x, y, np.random.default_rng(0))
    planted = np.sum(py[:, 5] == 30)
    assert 30 <= planted <= 70  # about a quarter of 200
    assert np.all(px[py[:, 5] != 30] == x[0])  # the rest are untouched
    one = Attack("backdoor", backdoor=DOOR, poison_fraction=0.01).poison_data(x[:2], y[:2], np.random.default_rng(0))
    assert np.sum(one[1][:, 5] == 30) >= 1  # at least one row always carries the backdoor


def test_attack_refusals_and_attacker_choice():
    with pytest.raises(ValueError, match="attack kind"):
        Attack("label_flip")
    with pytest.raises(ValueError, match="needs a Backdoor"):
        Attack("backdoor")
    with pytest.raises(ValueError, match="boost"):
        Attack("sign_flip", boost=-1.0)
    with pytest.raises(ValueError, match="max_norm"):
        cap_norm([np.ones(2)], 0.0)
    users = [f"u{i:03d}" for i in range(240)]
    assert choose_attackers(users, 0.0) == []
    assert len(choose_attackers(users, 0.01)) == 2 and len(choose_attackers(users, 0.1)) == 24
    assert choose_attackers(users, 0.1, seed=4) == choose_attackers(list(reversed(users)), 0.1, seed=4)
    assert len(choose_attackers(users[:5], 0.01)) == 1
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        choose_attackers(users, 1.0)


def test_attacking_phone_sends_the_largest_update_the_collector_accepts(tmp_path):
    """A sign-flip phone boosts its (hand-known) delta ([2, 4], [4], norm 6) by -10, then shrinks it
    to the plan's clip 1.5, which the noise-free collector accepts; the published step is the
    honest clipped step's opposite."""
    from device_sim.attacker import AttackingPhone
    from device_sim.fleet import fetch_published_weights
    from device_sim.transport import Transport
    from tests.test_device_phone import INITIAL, SHAPES, FakeFactory, LiveServer, make_bundle, server_config

    cfg = server_config(tmp_path, make_bundle(tmp_path / "bundle"),
                        privacy={"mode": "device", "clip_norm": 1.5, "noise_multiplier": 0.0, "delta": 1e-5})
    srv = LiveServer(cfg)
    try:
        x = np.arange(1, 13, dtype=np.int32).reshape(3, 4) % 50 + 4
        phone = AttackingPhone("mallory", x, np.roll(x, -1, axis=1), Transport(srv.url), FakeFactory(),
                               np.random.default_rng(0), attack=Attack("sign_flip", boost=10.0))
        out = phone.run_round()
        assert out.status == "accepted", out
        new = fetch_published_weights(srv.url, 1, SHAPES)
        step = np.concatenate([n - i for n, i in zip(new, INITIAL)])
        np.testing.assert_allclose(step, [-0.5, -1.0, -1.0], rtol=1e-4)
    finally:
        srv.close()
