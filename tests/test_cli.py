import json

import pytest

from part.cli import main


def test_prepare_then_train_from_the_command_line(tmp_path, capsys):
    main(["prepare", "--dataset", "digits", "--out", str(tmp_path / "prepared")])
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"dataset: digits\ndata_dir: {tmp_path / 'prepared'}\ndevice: cpu\nmethod: part\n")
    main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--set", "epochs=2",
          "--set", "warmup_epochs=1", "--set", "attack.steps=2"])
    out = capsys.readouterr().out
    assert "epoch   2/2 part" in out and "refresh" in out
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["config"]["epochs"] == 2 and info["config"]["attack"]["steps"] == 2


def test_bad_config_exits_with_the_key_named(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("dataset: digits\nattack: {eps: 4/255}\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", str(cfg), "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "run.yaml: key 'attack.eps_low'" in err and "expected eps_low <= eps" in err
    assert not (tmp_path / "run").exists()


def test_malformed_override_is_rejected(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--config", str(tmp_path / "x.yaml"), "--out", str(tmp_path), "--set", "epochs"])
    assert "expected KEY=VALUE" in capsys.readouterr().err
