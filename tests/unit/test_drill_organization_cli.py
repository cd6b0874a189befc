"""`immutable-guard drill --organization`: its help says what it does, and what it cannot be combined with is
refused before anything starts (the drill itself: tests/e2e/test_drill_organization.py)."""

from __future__ import annotations

import pytest
from immutable_guard.cli import main


def test_the_help_says_what_the_organisation_drill_does(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["drill", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--organization" in text
    for said in ("management, security and two member accounts", "member roles", "security account"):
        assert said in text


@pytest.mark.parametrize(
    "arguments",
    [
        ["--organization", "--stack", "immutable-guard"],
        ["--organization", "--region", "eu-west-1"],
        ["--organization", "--scenario", "ssh-key-pushed"],
        ["--scenario", "outside-account"],
    ],
)
def test_what_the_organisation_drill_cannot_do_is_refused(
    arguments: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["drill", *arguments]) == 2
    assert "--organization" in capsys.readouterr().err
