"""The CPU guard through the validate stage: the shipped defaults on a machine without a GPU stop there, before
the download, in one line with the estimate and both ways on; `device: cpu` goes on; a run that is let through
after measuring says its estimate."""

import json
import subprocess

import pytest

import pipeline.train.estimate
import stages.validate
from tests.support import DVC, TINY_ARCH, copy_repo, dvc_env, edit_params, new_project, run, stages_run, write_params


@pytest.fixture(scope="module")
def defaults(tmp_path_factory):
    """A project with the shipped params. One thread: two OpenMP threads on a pair of cores that other work
    shares wait on each other (docs/performance.md, Threads), which would slow the timed steps tenfold."""
    return new_project(tmp_path_factory.mktemp("guard") / "repo", {"threads": 1})


@pytest.mark.e2e
def test_the_defaults_without_a_gpu_stop_in_validate_before_the_download(defaults):
    proc = subprocess.run([str(DVC), "repro"], cwd=defaults, env=dvc_env(), capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and stages_run(output) == {"validate"}, output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in output, output
    assert errors[0].startswith("error: device: cpu (auto: ")
    assert " h (UNet " in errors[0] and "3312 train and 368 valid images at 256 px" in errors[0]
    assert "`make repro-cpu`" in errors[0] and "`dvc exp run -S device=cpu`" in errors[0]
    assert not (defaults / "data" / "raw").exists() and not (defaults / "data" / "downloads").exists()


@pytest.mark.e2e
def test_asking_for_the_cpu_passes_validate(defaults, tmp_path):
    repo = copy_repo(defaults, tmp_path / "repo")
    edit_params(repo, {"device": "cpu"})
    output = run(repo, "dvc", "repro", "validate")
    assert stages_run(output) == {"validate"} and "would take" not in output
    assert json.loads((repo / "data" / "download.json").read_text())["source"] == "oxford-iiit-pet"


def test_a_run_let_through_after_measuring_says_its_estimate(tmp_path, monkeypatch, capsys):
    # The official pets at 64 px for 6 epochs of tiny models: too many FLOPs for the bound, under an hour here.
    monkeypatch.setattr(pipeline.train.estimate, "measure_rate", lambda *args: 1e11)
    params = write_params(tmp_path / "params.yaml", image_size=64, epochs=6, **TINY_ARCH)
    stages.validate.main(["--params", str(params), "--download-inputs", str(tmp_path / "download.json")])
    said = capsys.readouterr().out
    assert "validate: training both models on this CPU would take about " in said and " min (UNet " in said
    assert (tmp_path / "download.json").is_file()
