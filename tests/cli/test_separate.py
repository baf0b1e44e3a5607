"""The `mss-jobs` command line, driven through click's runner and once as a real process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from click.testing import CliRunner

from mss_jobs.cli import main


def _track(path: Path, seconds: float = 1.0, channels: int = 2) -> Path:
    rng = np.random.default_rng(0)
    sf.write(path, (rng.standard_normal((int(44100 * seconds), channels)) * 0.1), 44100)
    return path


def test_bad_inputs_print_one_line_each_and_others_still_run(tmp_path: Path) -> None:
    good = _track(tmp_path / "good.wav")
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio")
    empty = tmp_path / "empty.flac"
    empty.write_bytes(b"")
    result = CliRunner().invoke(
        main,
        [
            "separate",
            str(text),
            str(good),
            str(empty),
            str(tmp_path / "missing.mp3"),
            "-o",
            str(tmp_path / "out"),
            "--model",
            "identity",
            "--quiet",
        ],
    )
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 3
    assert "audio.decode_failed" in errors[0]
    assert "notes.wav" in errors[0]
    assert "audio.empty" in errors[1]
    assert "input.not_found" in errors[2]
    assert "3 of 4 input(s) failed" in result.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["good"]
    assert [p.name for p in (tmp_path / "out" / "good").iterdir()] == ["mixture.flac"]


def test_all_options_reach_the_output(tmp_path: Path) -> None:
    src = _track(tmp_path / "song.wav", seconds=0.5, channels=1)
    result = CliRunner().invoke(
        main,
        [
            "separate",
            str(src),
            "-o",
            str(tmp_path / "out"),
            "--model",
            "identity",
            "--format",
            "wav",
            "--bit-depth",
            "16",
            "--sample-rate",
            "22050",
            "--chunk-seconds",
            "0.1",
            "--overlap",
            "0.25",
            "--window",
            "blackman",
            "--batch-size",
            "2",
            "--device",
            "cpu",
            "--derive",
            "quiet=mixture-mixture",
            "--stems",
            "mixture,quiet",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in (tmp_path / "out" / "song").iterdir())
    assert files == ["mixture.wav", "quiet.wav"]
    info = sf.info(str(tmp_path / "out" / "song" / "mixture.wav"))
    assert (info.samplerate, info.channels, info.subtype) == (22050, 1, "PCM_16")
    assert info.frames == 11025


def test_same_track_name_in_two_formats_gets_two_directories(tmp_path: Path) -> None:
    a = _track(tmp_path / "a.wav", seconds=0.2)
    b = tmp_path / "a.flac"
    sf.write(b, sf.read(a)[0], 44100)
    result = CliRunner().invoke(
        main,
        ["separate", str(a), str(b), "-o", str(tmp_path / "out"), "--model", "identity", "-q"],
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_flac", "a_wav"]


def test_usage_errors_exit_2_with_the_reason(tmp_path: Path) -> None:
    src = _track(tmp_path / "x.wav", seconds=0.1)
    runner = CliRunner()
    for args, needle in [
        (["--model", "nope"], "model.unknown"),
        (["--derive", "bad"], "config.derived_stems"),
        (["--derive", "x=mixture-vocals", "--model", "identity"], "vocals"),
        (["--overlap", "1.0"], "overlap"),
        (["--format", "mp3", "--bit-depth", "24", "--model", "identity"], "mp3"),
        (["--device", "cuda:7"] if not _has_cuda() else ["--device", "bogus"], "device"),
    ]:
        result = runner.invoke(main, ["separate", str(src), "-o", str(tmp_path / "o"), *args])
        assert result.exit_code != 0, args
        assert needle in result.output + result.stderr, (args, result.output)
    assert not (tmp_path / "o").exists()


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def test_models_and_demo_track(tmp_path: Path) -> None:
    runner = CliRunner()
    listing = runner.invoke(main, ["models"])
    assert listing.exit_code == 0
    assert "dsp-hpss" in listing.output
    assert "identity" in listing.output
    demo = runner.invoke(main, ["demo-track", str(tmp_path / "d.flac"), "--seconds", "1.5"])
    assert demo.exit_code == 0, demo.output
    info = sf.info(str(tmp_path / "d.flac"))
    assert (info.samplerate, info.channels, info.frames) == (44100, 2, 66150)


def test_console_script_runs_as_a_process(tmp_path: Path) -> None:
    src = _track(tmp_path / "p.wav", seconds=0.3)
    exe = Path(sys.executable).with_name("mss-jobs")
    proc = subprocess.run(
        [
            str(exe),
            "separate",
            str(src),
            "-o",
            str(tmp_path / "out"),
            "--model",
            "dsp-hpss",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "out" / "p").iterdir()) == [
        "harmonic.flac",
        "percussive.flac",
    ]


def test_output_impossible_for_one_input_fails_only_that_input(tmp_path: Path) -> None:
    six = _track(tmp_path / "six.wav", seconds=0.2, channels=6)  # mp3 holds at most 2 channels
    two = _track(tmp_path / "two.wav", seconds=0.2, channels=2)
    result = CliRunner().invoke(
        main,
        [
            "separate",
            str(six),
            str(two),
            "-o",
            str(tmp_path / "out"),
            "--model",
            "identity",
            "--format",
            "mp3",
            "-q",
        ],
    )
    assert result.exit_code == 1
    assert "error:" in result.stderr
    assert "config.invalid" in result.stderr
    assert "channels=6" in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["two"]
    assert [p.name for p in (tmp_path / "out" / "two").iterdir()] == ["mixture.mp3"]
