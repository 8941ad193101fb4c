"""The stage scripts' entry point: one line for a user error or an interruption, and the exit status a
shell expects."""

import os
import signal

from tqdm import tqdm

from pipeline.core import runner
from pipeline.core.errors import UserError
from pipeline.core.runner import EXIT_SIGINT, EXIT_SIGTERM, report_progress, run_stage


def stage(main):
    """``main`` as the ``main`` of a stage module named stages.fake (run_stage names it "fake")."""
    main.__module__ = "stages.fake"
    return main


def test_ctrl_c_is_one_line_saying_how_far_it_got_and_exit_130(capsys, monkeypatch):
    monkeypatch.setattr(runner, "PROGRESS", runner.Progress())

    @stage
    def main(argv):
        report_progress("unet after epoch 3 of 20", "`dvc repro` resumes after it")
        raise KeyboardInterrupt

    assert run_stage(main, []) == EXIT_SIGINT == 130
    err = capsys.readouterr().err
    assert err == "interrupted: fake unet after epoch 3 of 20; `dvc repro` resumes after it\n"


def test_sigterm_is_caught_like_ctrl_c_and_exits_143(capsys, monkeypatch):
    monkeypatch.setattr(runner, "PROGRESS", runner.Progress())
    cleaned = []

    @stage
    def main(argv):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            signal.pause()  # the handler raises before this returns
        finally:
            cleaned.append(True)  # finally blocks run, as for Ctrl-C

    assert run_stage(main, []) == EXIT_SIGTERM == 143
    assert cleaned == [True]
    assert capsys.readouterr().err == f"interrupted: fake; {runner.RERUN}\n"
    assert signal.getsignal(signal.SIGTERM) is not runner._terminate  # the handler is put back


def test_an_error_while_a_progress_bar_is_open_gets_its_own_line(capsys):
    @stage
    def main(argv):
        bar = tqdm(total=10, desc="work")
        bar.update(3)  # left open, as by an exception inside a loop over the bar
        raise UserError("data/x.png: cannot decode; replace the file")

    assert run_stage(main, []) == 1
    lines = capsys.readouterr().err.split("\n")
    assert "error: data/x.png: cannot decode; replace the file" in lines


def test_success_is_0_and_a_bug_keeps_its_traceback():
    assert run_stage(stage(lambda argv: None), []) == 0

    @stage
    def buggy(argv):
        raise ZeroDivisionError

    try:
        run_stage(buggy, [])
    except ZeroDivisionError:
        pass
    else:
        raise AssertionError("a bug must propagate")
