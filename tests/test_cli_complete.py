"""`tinylm complete` and `tinylm generate --num-beams` end to end on a tiny trained checkpoint."""

import json
import os

import pytest

from tinylm.cli import main


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("complete") / "run")
    assert main(["train", "--preset", "gpt-tiny", "--max-chars", "5000", "--steps", "3",
                 "--out", out, "--sample-length", "5"]) == 0
    return os.path.join(out, "best.npz")


def test_complete_prints_choices_and_json(ckpt, capsys):
    capsys.readouterr()
    assert main(["complete", ckpt, "--prompt", "The ", "--max-tokens", "12", "--n", "2",
                 "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "=== choice 0" in out and "=== choice 1" in out
    assert main(["complete", ckpt, "--prompt", "The ", "--max-tokens", "12", "--temperature",
                 "0", "--stop", "\\n", "--stop", "e", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    c = r["choices"][0]
    assert "\n" not in c["text"] and "e" not in c["text"]
    assert c["finish_reason"] in ("stop", "length") and r["usage"]["prompt_tokens"] == 4


def test_complete_errors_are_one_line(ckpt, tmp_path, capsys):
    assert main(["complete", str(tmp_path / "missing.npz"), "--prompt", "x"]) == 2
    with pytest.raises(SystemExit) as exit_:        # refused by argparse, before loading
        main(["complete", ckpt, "--prompt", "x", "--max-tokens", "0"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("tinylm complete: error:") == 2 and "Traceback" not in err


def test_generate_with_beams(ckpt, capsys):
    capsys.readouterr()
    assert main(["generate", ckpt, "--prompt", "The ", "--max-length", "20", "--num-beams",
                 "3", "--num-return-sequences", "2", "--no-repeat-ngram-size", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("=== sequence") == 2
    assert main(["generate", ckpt, "--prompt", "The ", "--max-length", "20", "--num-beams",
                 "2", "--num-return-sequences", "3"]) == 2          # more than num_beams


def test_gru_preset_trains_then_completes_and_beam_searches(tmp_path, capsys):
    out = str(tmp_path / "gru")
    assert main(["train", "--preset", "gru-tiny", "--max-chars", "5000", "--steps", "3",
                 "--out", out, "--sample-length", "5"]) == 0
    ckpt = os.path.join(out, "best.npz")
    capsys.readouterr()
    assert main(["complete", ckpt, "--prompt", "The ", "--max-tokens", "8", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "gru"
    assert main(["generate", ckpt, "--prompt", "The ", "--max-length", "16",
                 "--num-beams", "3"]) == 0
