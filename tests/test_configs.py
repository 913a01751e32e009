import json

import pytest

from configs import RunConfig, preset, read_config, resolve, write_config


def test_presets_and_overrides(tmp_path):
    cfg = resolve("tiny", ["train.rounds=7", "privacy.noise_multiplier=0.5", "data.source=jsonl:x.gz"])
    assert cfg.train.rounds == 7 and cfg.privacy.noise_multiplier == 0.5 and cfg.data.source == "jsonl:x.gz"
    write_config(cfg, str(tmp_path))
    assert read_config(str(tmp_path)) == cfg
    assert json.loads((tmp_path / "config.json").read_text())["preset"] == "tiny"


def test_a_finished_run_is_reused_only_with_its_own_config(tmp_path):
    from configs.io import finished_result

    cfg = resolve("tiny")
    assert finished_result(str(tmp_path), cfg, "summary.json") is None  # nothing there
    write_config(cfg, str(tmp_path))
    assert finished_result(str(tmp_path), cfg, "summary.json") is None  # started, not finished
    (tmp_path / "summary.json").write_text('{"top1": 0.2}')
    assert finished_result(str(tmp_path), cfg, "summary.json") == {"top1": 0.2}
    assert finished_result(str(tmp_path), resolve("tiny", ["train.rounds=7"]), "summary.json") is None


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.rounds", "SECTION.FIELD=VALUE"),
        ("nosuch.rounds=1", "unknown section"),
        ("train.nosuch=1", "no field 'nosuch'"),
        ("train.rounds=many", "expected int"),
    ],
)
def test_bad_overrides_name_the_problem(override, message):
    with pytest.raises(ValueError, match=message):
        resolve("tiny", [override])


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        preset("huge")
    assert isinstance(preset("gboard"), RunConfig)
