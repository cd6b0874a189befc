"""template.yaml is read by tests and the local runtime; its short-form tags must become long-form dicts."""

from __future__ import annotations

from pathlib import Path

import pytest
from immutable_guard.template import (
    TEMPLATE_ENV,
    EventRule,
    event_rules,
    find_template,
    load_template,
    parameter_defaults,
)

SHORT_FORMS = """
Parameters:
  Mode: {Type: String, Default: dry-run}
  Count: {Type: Number, Default: 5}
  Names: {Type: CommaDelimitedList, Default: ""}
  NoDefault: {Type: String}
Conditions:
  IsEnforce: !Equals [!Ref Mode, enforce]
  Both: !And [!Condition IsEnforce, !Or [!Not [!Condition IsEnforce], !Equals [a, a]]]
Resources:
  Thing:
    Type: AWS::Test::Thing
    Properties:
      Ref: !Ref Mode
      Dotted: !GetAtt Queue.Arn
      Listed: !GetAtt [Queue, QueueName]
      Sub: !Sub "${AWS::Region}-${Queue.Arn}"
      SubList: !Sub ["${X}", {X: !Ref Mode}]
      Join: !Join [",", [a, !Ref Mode]]
      If: !If [IsEnforce, yes-value, !Ref AWS::NoValue]
      Select: !Select [0, !Split [",", "a,b"]]
      Map: !FindInMap [M, K, V]
      B64: !Base64 text
      Azs: !GetAZs ""
      Import: !ImportValue exported
"""


@pytest.fixture
def short_form_template(tmp_path: Path) -> Path:
    path = tmp_path / "template.yaml"
    path.write_text(SHORT_FORMS, encoding="utf-8")
    return path


def test_short_form_tags_become_long_form_dicts(short_form_template: Path) -> None:
    # Given a template written with short-form tags
    # When it is loaded
    properties = load_template(short_form_template)["Resources"]["Thing"]["Properties"]
    # Then each tag is its long-form dict
    assert properties["Ref"] == {"Ref": "Mode"}
    assert properties["Dotted"] == {"Fn::GetAtt": ["Queue", "Arn"]}
    assert properties["Listed"] == {"Fn::GetAtt": ["Queue", "QueueName"]}
    assert properties["Sub"] == {"Fn::Sub": "${AWS::Region}-${Queue.Arn}"}
    assert properties["SubList"] == {"Fn::Sub": ["${X}", {"X": {"Ref": "Mode"}}]}
    assert properties["Join"] == {"Fn::Join": [",", ["a", {"Ref": "Mode"}]]}
    assert properties["If"] == {"Fn::If": ["IsEnforce", "yes-value", {"Ref": "AWS::NoValue"}]}
    assert properties["Select"] == {"Fn::Select": [0, {"Fn::Split": [",", "a,b"]}]}
    assert properties["Map"] == {"Fn::FindInMap": ["M", "K", "V"]}
    assert properties["B64"] == {"Fn::Base64": "text"}
    assert properties["Azs"] == {"Fn::GetAZs": ""}
    assert properties["Import"] == {"Fn::ImportValue": "exported"}


def test_condition_functions_become_long_form_dicts(short_form_template: Path) -> None:
    conditions = load_template(short_form_template)["Conditions"]
    assert conditions["IsEnforce"] == {"Fn::Equals": [{"Ref": "Mode"}, "enforce"]}
    assert conditions["Both"] == {
        "Fn::And": [
            {"Condition": "IsEnforce"},
            {"Fn::Or": [{"Fn::Not": [{"Condition": "IsEnforce"}]}, {"Fn::Equals": ["a", "a"]}]},
        ]
    }


def test_parameter_defaults_are_strings_as_cloudformation_passes_them(short_form_template: Path) -> None:
    defaults = parameter_defaults(load_template(short_form_template))
    assert defaults == {"Mode": "dry-run", "Count": "5", "Names": ""}


def test_event_rules_cover_sam_function_events_and_plain_rules(tmp_path: Path) -> None:
    # Given a function with an EventBridgeRule and a CloudWatchEvent, a plain rule, and a non-rule event
    path = tmp_path / "template.yaml"
    path.write_text(
        """
Resources:
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Events:
        First: {Type: EventBridgeRule, Properties: {Pattern: {source: [a]}}}
        Second: {Type: CloudWatchEvent, Properties: {Pattern: {source: [b]}}}
        Timer: {Type: Schedule, Properties: {Schedule: rate(1 minute)}}
  Plain:
    Type: AWS::Events::Rule
    Properties:
      EventPattern: {source: [c]}
      Targets: [{Id: t, Arn: !GetAtt Fn.Arn}]
""",
        encoding="utf-8",
    )
    # When the rules are listed
    rules = event_rules(load_template(path))
    # Then each is named as SAM names it and points at its function
    assert rules == [
        EventRule("FnFirst", "Fn", {"source": ["a"]}),
        EventRule("FnSecond", "Fn", {"source": ["b"]}),
        EventRule("Plain", "Fn", {"source": ["c"]}),
    ]


def test_the_project_template_routes_cloudtrail_and_config_to_detect() -> None:
    rules = event_rules(load_template(find_template()))
    assert rules, "template.yaml declares no event rules"
    # Detect takes CloudTrail and Config; the canary's recovery takes its executions' status changes, and
    # its start takes the CloudTrail records of alias moves (a deploy publishing a version); in organisation
    # mode Onboard takes the Organizations records of joined accounts.
    assert {rule.function_logical_id for rule in rules} == {
        "DetectFunction",
        "CanaryRecoverFunction",
        "CanaryStartFunction",
        "OnboardFunction",
    }
    assert "DetectFunctionNetworkOpened" in {rule.logical_id for rule in rules}


def test_find_template_prefers_the_environment(
    short_form_template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TEMPLATE_ENV, str(short_form_template))
    assert find_template() == short_form_template.resolve()


def test_find_template_searches_upward_for_a_template_beside_functions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a repository layout with a nested working directory
    monkeypatch.delenv(TEMPLATE_ENV, raising=False)
    (tmp_path / "functions").mkdir()
    (tmp_path / "template.yaml").write_text("Resources: {}\n", encoding="utf-8")
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    # When / Then
    assert find_template(nested) == tmp_path.resolve() / "template.yaml"


def test_find_template_falls_back_to_the_packages_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TEMPLATE_ENV, raising=False)
    found = find_template(tmp_path)
    assert found.name == "template.yaml"
    assert (found.parent / "functions").is_dir()


def test_a_missing_configured_template_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TEMPLATE_ENV, str(tmp_path / "nope.yaml"))
    with pytest.raises(FileNotFoundError, match=TEMPLATE_ENV):
        find_template()
