"""The CLI's boundary: bad input exits 2 with a message naming the problem; --dry-run sizes the model."""

import pytest

from fedkeys.cli import main


def test_unknown_source_is_a_clear_error(tmp_path, capsys):
    assert main(["data", "--preset", "tiny", "--source", "nope:x", "--out", str(tmp_path / "d")]) == 2
    assert "nope:x" in capsys.readouterr().err


def test_bad_override_is_a_clear_error(tmp_path, capsys):
    assert main(["data", "--preset", "tiny", "--set", "train.nosuch=1", "--out", str(tmp_path / "d")]) == 2
    assert "no field 'nosuch'" in capsys.readouterr().err


def test_later_stage_needs_an_earlier_stage_directory(tmp_path, capsys):
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "b")]) == 2
    assert "no config.json" in capsys.readouterr().err


@pytest.mark.slow
def test_gboard_dry_run_prints_the_gboard_size(capsys):
    assert main(["train", "--preset", "gboard", "--dry-run"]) == 0
    assert "1,422,250 trainable parameters" in capsys.readouterr().out
