"""The algorithm core (fedcore/): numbers worked out by hand, and a new rule run through the collector."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from configs import preset
from fedcore import aggregator as aggregators
from fedcore import optimizers, schedules
from fedcore.algorithm import aggregator_name, build, server_optimizer_name
from fedcore.dp import CentralGaussian, ServerClip
from fedcore.mean import UniformMean, WeightedMean
from fedcore.messages import ClientUpdate, Plan
from fedcore.policy import SyncRounds


def _step(name, g_steps, lr=0.5, **kw):
    """Run optimizer `name` on one scalar weight (start 1.0) with mean deltas -g for each g."""
    opt = optimizers.build(name, **kw)
    w = [np.array([1.0], np.float32)]
    state = opt.init(w)
    for g in g_steps:
        state, w = opt.step(state, w, [np.array([-g], np.float32)], lr)
    return float(w[0][0]), state


# -- server optimizers ----------------------------------------------------------------------------
def test_sgd_and_momentum_by_hand():
    assert _step("sgd", [2.0])[0] == pytest.approx(1.0 - 0.5 * 2.0)
    # heavy ball: a1 = 2, a2 = 0.9*2 + 1 = 2.8; w = 1 - 0.5 (2 + 2.8)
    assert _step("momentum", [2.0, 1.0], momentum=0.9)[0] == pytest.approx(1.0 - 0.5 * 4.8)
    # Nesterov: step1 = g + m a1 = 2 + 1.8; a2 = 2.8, step2 = 1 + 0.9 * 2.8 = 3.52
    w, state = _step("nesterov", [2.0, 1.0], momentum=0.9)
    assert w == pytest.approx(1.0 - 0.5 * (3.8 + 3.52))
    assert int(state["step"]) == 2 and state["accumulator/0"][0] == pytest.approx(2.8)


def test_adam_and_yogi_first_steps_by_hand():
    b1, b2, eps, g = 0.9, 0.99, 1e-3, 2.0
    lr_t = 0.5 * math.sqrt(1 - b2) / (1 - b1)
    a, p = (1 - b1) * g, (1 - b2) * g * g
    assert _step("adam", [g], beta_1=b1, beta_2=b2, epsilon=eps)[0] == pytest.approx(1 - lr_t * a / (math.sqrt(p) + eps),
                                                                                     rel=1e-6)
    p0 = optimizers.INITIAL_PRECONDITIONER
    p_yogi = p0 + (1 - b2) * np.sign(g * g - p0) * g * g
    assert _step("yogi", [g], beta_1=b1, beta_2=b2, epsilon=eps)[0] == pytest.approx(
        1 - lr_t * a / (math.sqrt(p_yogi) + eps), rel=1e-6)


def test_optimizer_state_must_fit_the_model():
    opt = optimizers.build("adam")
    state = opt.init([np.zeros(3, np.float32)])
    with pytest.raises(ValueError, match="expected shape"):
        opt.step(state, [np.zeros(4, np.float32)], [np.zeros(4, np.float32)], 0.1)
    with pytest.raises(ValueError, match="must be one of"):
        optimizers.build("lion")
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        optimizers.build("nesterov", momentum=1.0)


def test_schedules():
    assert schedules.learning_rate("constant", 0.3, 7, 10) == 0.3
    assert schedules.learning_rate("cosine", 1.0, 0, 4) == 1.0
    assert schedules.learning_rate("cosine", 1.0, 2, 4) == pytest.approx(0.5)
    assert schedules.learning_rate("cosine", 1.0, 9, 4) == 0.0
    with pytest.raises(ValueError, match="schedule must be one of"):
        schedules.learning_rate("step", 1.0, 0, 4)


# -- aggregation rules ----------------------------------------------------------------------------
def test_means_and_wrappers_by_hand():
    u1, u2 = [np.array([1.0, 0.0], np.float32)], [np.array([0.0, 4.0], np.float32)]
    for rule, expected in ((WeightedMean(), [0.25, 3.0]), (UniformMean(), [0.5, 2.0])):
        s = rule.init(u1)
        rule.add(s, u1, rule.weight(1))
        rule.add(s, u2, rule.weight(3))
        np.testing.assert_allclose(rule.result(s).delta[0], expected)
        assert rule.linear
    clipped = ServerClip(UniformMean(), clip_norm=1.0)  # u2 (norm 4) enters as [0, 1]
    s = clipped.init(u1)
    clipped.add(s, u1, 1.0)
    clipped.add(s, u2, 1.0)
    np.testing.assert_allclose(clipped.result(s).delta[0], [0.5, 0.5])
    noisy = CentralGaussian(UniformMean(), clip_norm=2.0, noise_multiplier=0.5, max_weight=1.0,
                            rng=np.random.default_rng(7))
    s = noisy.init(u1)
    noisy.add(s, u1, 1.0)
    noise = np.random.default_rng(7).normal(0.0, 1.0, size=2)  # std z * C * w_max = 1
    np.testing.assert_allclose(noisy.result(s).delta[0], u1[0] + noise, rtol=1e-6)
    with pytest.raises(ValueError, match="linear"):
        import tests.fedcore_toy_median  # noqa: F401
        CentralGaussian(aggregators.build("toy_median"), 1.0, 1.0, 1.0)


def test_registry_names_and_import_paths():
    assert {"weighted_mean", "uniform_mean"} <= set(aggregators.names())
    assert aggregators.build("tests.fedcore_toy_median:ToyMedian").name == "toy_median"
    with pytest.raises(ValueError, match="unknown aggregator"):
        aggregators.build("no_such_rule")
    with pytest.raises(ValueError, match="cannot import"):
        aggregators.build("tests.nosuch:Rule")
    with pytest.raises(ValueError, match="not a fedcore Aggregator"):
        aggregators.build("collections:OrderedDict")


# -- the composition ------------------------------------------------------------------------------
def test_algorithm_table_and_auto_rule():
    assert [server_optimizer_name(a, 0.9) for a in ("fedavg", "fedavgm", "fedadam", "fedyogi", "fedprox")] == \
        ["momentum", "nesterov", "adam", "yogi", "momentum"]
    assert server_optimizer_name("fedavg", 0.0) == "sgd"
    assert aggregator_name("auto", dp_noise=True) == "uniform_mean"
    assert aggregator_name("auto", dp_noise=False) == "weighted_mean"
    with pytest.raises(ValueError, match="train.algorithm must be one of"):
        server_optimizer_name("fedsgd", 0.0)


def test_a_round_in_memory_is_weighted_mean_then_step():
    train = dataclasses.replace(preset("tiny").train, algorithm="fedavgm", server_momentum=0.5,
                                server_learning_rate=2.0)
    alg = build(train)
    w = [np.zeros(2, np.float32)]
    ups = [ClientUpdate([np.array([1.0, 1.0], np.float32)], 1), ClientUpdate([np.array([4.0, 0.0], np.float32)], 3)]
    state, w, agg = alg.round(alg.init_state(w), w, ups)
    mean = np.array([13 / 4, 1 / 4])
    np.testing.assert_allclose(agg.delta[0], mean)
    np.testing.assert_allclose(w[0], 2.0 * (mean + 0.5 * mean), rtol=1e-6)  # Nesterov's first step
    assert alg.describe()["server_optimizer"] == {"name": "nesterov", "momentum": 0.5, "nesterov": True,
                                                  "learning_rate": 2.0, "schedule": "constant",
                                                  "schedule_steps": train.rounds}


def test_sync_round_policy():
    p = SyncRounds(goal_count=4, over_selection=1.3, report_deadline_s=10.0, min_reports=2)
    assert p.slots == 6 and p.may_select(5) and not p.may_select(6)
    assert p.outcome(4, None, 0.0) == "publish"
    assert p.outcome(3, 10.0, 5.0) == "open"
    assert p.outcome(2, 10.0, 11.0) == "publish"
    assert p.outcome(1, 10.0, 11.0) == "abandon"
    assert SyncRounds(3, 1.0, 1.0).outcome(0, 1.0, 2.0) == "abandon"  # nothing to publish
    with pytest.raises(ValueError, match="min_reports"):
        SyncRounds(3, 1.0, 1.0, min_reports=4)


def test_plan_round_trip_and_errors():
    plan = Plan(1, 2, 1, 8, 0.5, 1.0, 0.0, "float32", 32, 0.0)
    assert Plan.from_json(plan.to_json()) == plan
    with pytest.raises(ValueError, match="malformed"):
        Plan.from_json({"round": 1})
    with pytest.raises(ValueError, match="JSON object"):
        Plan.from_json([1])


# -- a new rule through the real collector ---------------------------------------------------------
def test_a_rule_added_as_one_module_runs_through_the_collector(tmp_path):
    """tests/fedcore_toy_median.py registers itself; the collector publishes w0 + median."""
    import tests.fedcore_toy_median  # noqa: F401  (its registration is the whole integration)
    from server.app import create_app
    from server.testing import TINY_SHAPES, config_dict, make_bundle, upload_body

    bundle = str(tmp_path / "bundle")
    w0 = make_bundle(bundle)
    shapes = [s for _, s in TINY_SHAPES]
    cfg = config_dict(bundle, str(tmp_path / "state"), server={"goal_count": 3, "over_selection": 1.0},
                      privacy={"mode": "none", "clip_norm": 1e4},
                      collector={"checkpoint_every": 1},  # due every update: a linear rule would checkpoint
                      train={"aggregator": "toy_median", "max_examples_per_client": 100})
    col = create_app(test_config=cfg).extensions["fedkeys"]["collector"]
    rng = np.random.default_rng(0)
    ups = [[rng.normal(size=s).astype(np.float32) for s in shapes] for _ in range(3)]
    ups[2] = [u * 100 for u in ups[2]]  # an outlier the median ignores
    for i, u in enumerate(ups):
        col.register(f"d{i}")
        col.checkin(f"d{i}", {"idle": True, "charging": True, "unmetered": True, "num_examples": 5})
        col.accept(f"d{i}", 0, upload_body(0, 0, u, 5))
    assert col.model_info()["version"] == 1
    meta = col.model_meta(1)
    assert meta["algorithm"]["aggregator"] == {"name": "toy_median", "linear": False} and meta["reports"] == 3
    from fedmath import encodings

    w1 = encodings.decode_float32(col.weights_payload(1)[0], shapes)
    for t in range(len(shapes)):
        np.testing.assert_allclose(w1[t], w0[t] + np.median(np.stack([u[t] for u in ups]), axis=0), rtol=1e-6,
                                   atol=1e-6)


def test_the_collector_refuses_dp_noise_with_a_non_linear_rule(tmp_path):
    """Its epsilon would describe a sum the rule never computes."""
    from server.settings import settings_from_dict
    from server.testing import config_dict, make_bundle

    bundle = str(tmp_path / "bundle")
    make_bundle(bundle)
    raw = config_dict(bundle, str(tmp_path / "state"), privacy={"mode": "device", "noise_multiplier": 0.5},
                      train={"aggregator": "median"})
    with pytest.raises(ValueError, match="needs a linear aggregation rule"):
        settings_from_dict(raw)
    raw["privacy"]["noise_multiplier"] = 0.0
    assert settings_from_dict(raw).train.aggregator == "median"


def test_a_restart_with_another_server_optimizer_starts_its_state_afresh(tmp_path):
    """A state directory run with sgd, restarted with fedadam: the saved state (a step count
    only) does not fit Adam, so the collector starts Adam's moments at zero instead of failing
    every publication."""
    from server.app import create_app
    from server.testing import TINY_SHAPES, config_dict, make_bundle, random_update, upload_body

    bundle = str(tmp_path / "bundle")
    make_bundle(bundle)
    shapes = [s for _, s in TINY_SHAPES]
    rng = np.random.default_rng(1)

    def one_round(algorithm, r):
        cfg = config_dict(bundle, str(tmp_path / "state"), server={"goal_count": 1, "over_selection": 1.0},
                          privacy={"mode": "none", "clip_norm": 10.0},
                          train={"algorithm": algorithm, "server_learning_rate": 0.1, "max_examples_per_client": 10})
        col = create_app(test_config=cfg).extensions["fedkeys"]["collector"]
        col.register("d")
        col.checkin("d", {"idle": True, "charging": True, "unmetered": True, "num_examples": 5})
        col.accept("d", r, upload_body(r, r, random_update(shapes, 0.5, rng), 5))
        return col

    one_round("fedavg", 0)
    col = one_round("fedadam", 1)
    assert col.model_info()["version"] == 2
    assert col.model_meta(2)["algorithm"]["server_optimizer"]["name"] == "adam"


@pytest.mark.slow
def test_cosine_schedule_matches_the_tff_simulation():
    """fedcore.schedules (the collector's) and federated.optimizers (TFF's, in TensorFlow) agree."""
    from federated.optimizers import cosine_learning_rate

    tff_schedule = cosine_learning_rate(0.7, 5)
    for step in range(8):
        assert float(tff_schedule(step)) == pytest.approx(schedules.learning_rate("cosine", 0.7, step, 5), abs=1e-6)
