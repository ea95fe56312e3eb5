import pytest

from kingmaker import cli


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


def test_user_errors_are_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    assert cli.main(["train", "--data", str(tmp_path / "missing.csv")]) == 2
    err = capsys.readouterr().err
    assert err == f"kingmaker train: error: data file {tmp_path / 'missing.csv'} does not exist\n"

