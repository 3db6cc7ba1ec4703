"""`tinylm train`, `tinylm generate`, `tinylm eval` end to end on a tiny preset."""

import os

import pytest

from tinylm.cli import main

TINY = ["--preset", "gpt-tiny", "--max-chars", "20000"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("cli") / "run")
    return out


def test_train_generate_eval(trained, capsys):
    out = trained
    rc = main(["train"] + TINY + ["--steps", "30", "--out", out, "--sample-length", "40"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "step 30/30" in text and "tok/s" in text and "ETA" in text
    assert "best validation loss" in text and "sample (temperature" in text
    for name in ("checkpoint.npz", "best.npz", "loss.png"):
        assert os.path.exists(os.path.join(out, name))

    ckpt = os.path.join(out, "best.npz")
    assert main(["generate", ckpt, "--prompt", "The ", "--max-length", "25",
                 "--seed", "3"]) == 0
    a = capsys.readouterr().out
    assert main(["generate", ckpt, "--prompt", "The ", "--max-length", "25",
                 "--seed", "3", "--no-cache"]) == 0
    b = capsys.readouterr().out
    assert a == b and a.startswith("The ") and len(a) == 25 + 1   # + print's newline

    assert main(["generate", ckpt, "--prompt", "in", "--greedy", "--max-length", "12"]) == 0
    g = capsys.readouterr().out
    assert g.startswith("in")

    assert main(["generate", ckpt, "--prompt", "x", "--num-return-sequences", "2",
                 "--max-length", "8", "--top-k", "5", "--seed", "0"]) == 0
    two = capsys.readouterr().out
    assert two.count("=== sequence") == 2

    assert main(["eval", os.path.join(out, "checkpoint.npz")]) == 0
    ev = capsys.readouterr().out
    assert "perplexity" in ev and "step 30" in ev


def test_resume_continues(trained, capsys):
    out = trained
    if not os.path.exists(os.path.join(out, "checkpoint.npz")):
        main(["train"] + TINY + ["--steps", "30", "--out", out, "--sample-length", "0"])
    rc = main(["train", "--out", out, "--resume", "--steps", "36", "--sample-length", "0"])
    text = capsys.readouterr().out
    assert rc == 0 and "resumed from" in text and "step 36/36" in text


def test_errors_are_clear(tmp_path, capsys):
    assert main(["generate", str(tmp_path / "missing.npz")]) == 2
    assert "not found" in capsys.readouterr().err
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file at all")
    assert main(["eval", str(bad)]) == 2
    assert "bad.npz" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "nope.txt"), "--out",
                 str(tmp_path / "r")]) == 2
    assert "nope.txt" in capsys.readouterr().err
    assert main(["train", "--model", "seq2seq", "--max-chars", "5000", "--out",
                 str(tmp_path / "s")]) == 2
    assert "not a next-token language model" in capsys.readouterr().err
    assert main(["train", "--model", "nope", "--out", str(tmp_path / "n")]) == 2
    assert "unknown model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--preset", "gpt-huge"])


def test_generate_prompt_outside_vocabulary(trained, capsys):
    out = trained
    if not os.path.exists(os.path.join(out, "best.npz")):
        main(["train"] + TINY + ["--steps", "5", "--out", out, "--sample-length", "0"])
    assert main(["generate", os.path.join(out, "best.npz"), "--prompt", "héllo\u4f60"]) == 2
    err = capsys.readouterr().err
    assert "U+4F60" in err or "U+00E9" in err


def test_help_texts(capsys):
    for cmd in ("train", "generate", "eval"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
        assert "usage: tinylm %s" % cmd in capsys.readouterr().out


def test_every_train_setting_is_a_flag_and_model_config_is_generic(tmp_path, capsys):
    import dataclasses
    from tinylm.checkpoint import load_checkpoint
    from tinylm.training import TrainConfig
    out = str(tmp_path / "flags")
    rc = main(["train"] + TINY + ["--steps", "4", "--out", out, "--sample-length", "0",
                                  "--warmup", "2", "--min-lr", "1e-4", "--no-plot",
                                  "--config", "n_layer=2", "--config", "tie_weights=true"])
    capsys.readouterr()
    assert rc == 0
    meta = load_checkpoint(os.path.join(out, "checkpoint.npz"))[1]
    assert meta["train_config"]["warmup"] == 2 and meta["train_config"]["min_lr"] == 1e-4
    assert meta["train_config"]["plot"] is False and not os.path.exists(os.path.join(out, "loss.png"))
    assert meta["model_config"]["n_layer"] == 2 and meta["model_config"]["tie_weights"] is True
    from tinylm.cli import build_parser
    from tinylm.commands import train as train_cmd
    _, sub = build_parser()
    train_cmd.add_arguments(sub.choices["train"])
    usage = sub.choices["train"].format_help()
    for f in dataclasses.fields(TrainConfig):
        assert "--" + f.name.replace("_", "-") in usage, f.name


def test_bad_settings_are_clear(tmp_path, capsys):
    assert main(["train"] + TINY + ["--out", str(tmp_path / "a"), "--config", "n_layers=2"]) == 2
    assert "n_layers=2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--batch-size", "0"])
    err = capsys.readouterr().err
    assert "--batch-size" in err and "must be an integer >= 1" in err and err.count("\n") == 1
