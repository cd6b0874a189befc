"""`--help` is the first thing a newcomer types: it works for the command and every subcommand."""

from __future__ import annotations

import pytest
from immutable_guard.cli import build_parser, main


def _subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)  # type: ignore[arg-type]


def _canary_subcommands() -> list[str]:
    from immutable_guard.canary.cli import SUBCOMMANDS

    return list(SUBCOMMANDS)


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        *[[name, "--help"] for name in _subcommands()],
        *[["canary", name, "--help"] for name in _canary_subcommands()],
    ],
)
def test_help_prints_usage_and_exits_0(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    # When help is asked for
    with pytest.raises(SystemExit) as exited:
        main(argv)
    # Then it is printed, not a traceback
    assert exited.value.code == 0
    assert "usage: immutable-guard" in capsys.readouterr().out


def test_every_subcommand_is_checked() -> None:
    assert {"explain", "drill", "canary", "doctor", "incidents", "release"} <= set(_subcommands())


def test_every_canary_subcommand_is_checked() -> None:
    assert set(_canary_subcommands()) == {
        "start",
        "status",
        "watch",
        "pause",
        "resume",
        "promote",
        "abort",
        "revert",
    }


def test_doctor_help_names_the_organisation_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["doctor", "--help"])
    out = capsys.readouterr().out
    assert "--organization" in out and "--regions" in out and "--mark-verified" in out


def test_doctor_organization_without_a_stack_says_what_it_needs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--organization"]) == 2
    assert "needs --stack" in capsys.readouterr().out
