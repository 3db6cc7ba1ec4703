"""Every command's arguments, fuzzed: random values never end in a traceback.

Hypothesis feeds each subcommand random values for its options (negative,
zero, huge, NaN, inf, words, and paths that are a file, a folder or missing).
Each call must either be refused with exit status 2 and ONE line
``tinylm CMD: error: ...`` on stderr, or be accepted (the expensive part -
training, loading the pretrained model, long generations - is replaced by a
stub that stops the run once the arguments have been accepted).
"""

import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tinylm.cli import main

COUNTS = {}


class Accepted(Exception):
    """Raised by the stubs: the arguments got through validation."""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    text = root / "text.txt"
    text.write_text("The quick brown fox jumps over the lazy dog.\n" * 50)
    folder = root / "folder"
    folder.mkdir()
    (folder / "a.txt").write_text("hello world\n" * 10)
    garbage = root / "garbage.npz"
    garbage.write_bytes(b"not a checkpoint at all\n" * 10)
    run = root / "run"
    assert main(["train", "--preset", "gpt-tiny", "--max-chars", "20000", "--steps", "3",
                 "--out", str(run), "--sample-length", "0"]) == 0
    return {"text": str(text), "folder": str(folder), "garbage": str(garbage),
            "missing": str(root / "missing" / "x"), "ckpt": str(run / "best.npz"),
            "root": root}


NUMBERS = st.one_of(st.integers(-10 ** 13, 10 ** 13), st.integers(0, 300), st.sampled_from(
    ["0", "-1", "1", "2", "1.5", "-0.5", "nan", "inf", "-inf", "1e999", "1e-320", "",
     "abc", "0x10", "3", "256", "1000000000000000000000"]))


def values(files):
    paths = st.sampled_from([files[k] for k in ("text", "folder", "garbage", "missing")])
    return st.one_of(NUMBERS.map(str), paths)


def _call(argv, capsys):
    """Run the CLI; -> (status, stderr).  Fails the test on any traceback."""
    try:
        status = main(argv)
    except SystemExit as e:
        status = e.code
    except Accepted:
        status = "accepted"
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, (argv, err)
    assert status in (0, 1, 2, "accepted"), (argv, status, err)
    if status == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("tinylm") and "error:" in lines[0], \
            (argv, err)
    return status, err


def _record(cmd, status):
    COUNTS.setdefault(cmd, {}).setdefault(str(status), 0)
    COUNTS[cmd][str(status)] += 1


SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))

TRAIN_OPTS = ["--steps", "--time", "--batch-size", "--lr", "--dropout", "--patience",
              "--eval-interval", "--eval-batches", "--seed", "--max-chars", "--vocab-size",
              "--sample-length", "--out", "--data", "--glob", "--tokenizer", "--preset",
              "--model"]


@pytest.fixture
def stub_training(monkeypatch):
    from tinylm.training import trainer

    def fit(self, until=None):
        raise Accepted
    monkeypatch.setattr(trainer.Trainer, "fit", fit)


def test_train_arguments(files, capsys, stub_training):
    @settings(SETTINGS, max_examples=80)
    @given(opts=st.lists(st.tuples(st.sampled_from(TRAIN_OPTS), values(files)),
                         min_size=1, max_size=2),
           resume=st.sampled_from([False, False, False, True]))
    def check(opts, resume):
        argv = ["train", "--preset", "gpt-tiny", "--max-chars", "3000"]
        for flag, v in opts:
            argv += [flag, v]
        if resume:
            argv.append("--resume")
        status, _ = _call(argv, capsys)
        _record("train", status)
    cwd = os.getcwd()
    os.chdir(files["root"])              # a default --out lands in the temporary folder
    try:
        check()
    finally:
        os.chdir(cwd)


def test_eval_arguments(files, capsys):
    @SETTINGS
    @given(ckpt=st.sampled_from(["ckpt", "text", "folder", "garbage", "missing"]),
           opts=st.lists(st.tuples(st.sampled_from(["--max-batches", "--batch-size",
                                                    "--data", "--glob"]), values(files)),
                         max_size=2),
           all_=st.booleans())
    def check(ckpt, opts, all_):
        argv = ["eval", files[ckpt]] + [x for o in opts for x in o] + (["--all"] if all_ else [])
        status, _ = _call(argv, capsys)
        _record("eval", status)
    check()


def test_generate_arguments(files, capsys, monkeypatch):
    import tinylm.generate as gen
    real = gen.generate

    def bounded(*args, **kw):           # long generations are accepted, not run
        if kw.get("max_length", 0) * kw.get("num_return_sequences", 1) > 400:
            raise Accepted
        return real(*args, **kw)
    monkeypatch.setattr(gen, "generate", bounded)

    @SETTINGS
    @given(ckpt=st.sampled_from(["ckpt", "ckpt", "garbage", "folder", "missing"]),
           opts=st.lists(st.tuples(st.sampled_from(
               ["--max-length", "--num-return-sequences", "--temperature", "--top-k",
                "--top-p", "--seed", "--prompt"]), values(files)), max_size=3),
           greedy=st.booleans())
    def check(ckpt, opts, greedy):
        argv = ["generate", files[ckpt]] + [x for o in opts for x in o] + \
            (["--greedy"] if greedy else [])
        status, _ = _call(argv, capsys)
        _record("generate", status)
    check()


def test_gradcheck_embed_search_info_arguments(files, capsys, monkeypatch):
    import tinylm.gradcheck as ex
    import tinylm.pretrained as pre

    def stop(*a, **k):
        raise Accepted
    monkeypatch.setattr(ex, "check_example", stop)
    monkeypatch.setattr(pre, "load_sentence_encoder", stop)

    @SETTINGS
    @given(cmd=st.sampled_from(["gradcheck", "embed", "search", "info"]),
           opts=st.lists(st.tuples(st.sampled_from(
               ["--seed", "--max-entries", "--batch-size", "--file", "--out", "-k",
                "--min-words", "--width", "--corpus", "--dtype"]), values(files)),
               max_size=2),
           pos=st.lists(st.sampled_from(["linear", "lstm", "nosuchlayer", "all", "hello"]),
                        max_size=2))
    def check(cmd, opts, pos):
        argv = [cmd] + pos + [x for o in opts for x in o]
        status, _ = _call(argv, capsys)
        _record(cmd, status)
    check()


def test_complete_arguments(files, capsys, monkeypatch):
    import tinylm.complete as comp
    real = comp.complete

    def bounded(*args, **kw):           # long completions are accepted, not run
        if kw.get("max_tokens", 0) * kw.get("n", 1) > 400:
            raise Accepted
        return real(*args, **kw)
    monkeypatch.setattr(comp, "complete", bounded)

    @SETTINGS
    @given(ckpt=st.sampled_from(["ckpt", "ckpt", "garbage", "folder", "missing"]),
           opts=st.lists(st.tuples(st.sampled_from(
               ["--max-tokens", "--n", "--temperature", "--top-p", "--seed", "--stop",
                "--prompt"]), values(files)), max_size=3),
           as_json=st.booleans())
    def check(ckpt, opts, as_json):
        argv = ["complete", files[ckpt], "--prompt", "The "] + \
            [x for o in opts for x in o] + (["--json"] if as_json else [])
        status, _ = _call(argv, capsys)
        _record("complete", status)
    check()


def test_assignment_grade_arguments(files, capsys, monkeypatch):
    """grade and gradescope: --timeout, --memory, --seed (and the paths) are checked
    before anything runs; the grading itself is stubbed once accepted."""
    from tinylm.assignments import gradescope, grader

    def stop(*a, **k):
        raise Accepted
    monkeypatch.setattr(grader, "grade", stop)
    monkeypatch.setattr(gradescope, "make_autograder", stop)

    @SETTINGS
    @given(action=st.sampled_from(["grade", "gradescope"]),
           opts=st.lists(st.tuples(st.sampled_from(["--timeout", "--memory", "--seed"]),
                                   values(files)), min_size=1, max_size=3))
    def check(action, opts):
        first = [files["folder"]] if action == "grade" else ["backprop"]
        argv = ["assignment", action] + first + ["--out", str(files["root"] / "out.json")] + \
            [x for o in opts for x in o if action == "grade" or o[0] != "--seed"]
        status, _ = _call(argv, capsys)
        _record("assignment " + action, status)
    check()


def test_assignment_make_arguments(files, capsys):
    @settings(SETTINGS, max_examples=15)
    @given(name=st.sampled_from(["backprop", "1", "99", "nosuch", "", "-1"]),
           out=st.sampled_from(["text", "folder", "garbage", "missing"]),
           flags=st.lists(st.sampled_from(["--solutions", "--force"]), max_size=2))
    def check(name, out, flags):
        status, _ = _call(["assignment", "make", name, "--out", files[out]] + flags, capsys)
        _record("assignment make", status)
    check()


def test_assignment_limits_are_range_checked(files, capsys):
    """The limits' edges: refused below/above, with the option named."""
    for flag, bad in [("--timeout", "0"), ("--timeout", "-1"), ("--timeout", "nan"),
                      ("--timeout", "1e300"), ("--memory", "255"), ("--memory", "1e3"),
                      ("--memory", str(2 ** 40))]:
        status, err = _call(["assignment", "grade", files["folder"], "--out",
                             str(files["root"] / "r.json"), flag, bad], capsys)
        assert status == 2 and flag in err, (flag, bad, err)
    for flag, bad in [("--max-tokens", "0"), ("--n", "0"), ("--temperature", "-1"),
                      ("--temperature", "nan"), ("--top-p", "0"), ("--top-p", "1.5"),
                      ("--seed", "-1")]:
        status, err = _call(["complete", files["ckpt"], "--prompt", "x", flag, bad], capsys)
        assert status == 2 and flag in err, (flag, bad, err)


def test_report_counts():
    """Not a check: prints how many argument lists each command got (run with -s)."""
    for cmd, c in sorted(COUNTS.items()):
        print("cli fuzz %-9s %s" % (cmd, c))
