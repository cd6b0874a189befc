"""`immutable-guard doctor --organization`: one row per registered account x region, pass or fail with the
reasons. The checks run in the Onboard function of the security stack (onboarding.py), the one principal
the member Reader roles trust besides Detect, so whoever may invoke that function may run this; nothing
changes unless ``--mark-verified`` is given."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from immutable_guard.errors import AwsCallFailed

Invoke = Callable[[dict[str, Any]], Mapping[str, Any]]


def doctor_request(regions: list[str] | None, mark_verified: bool) -> dict[str, Any]:
    """The Onboard function's payload for a doctor run (regions None: the function's VERIFY_REGIONS)."""
    return {"doctor": {"regions": regions or [], "mark_verified": mark_verified}}


def run(invoke: Invoke, regions: list[str] | None, mark_verified: bool, as_json: bool) -> tuple[str, int]:
    """The report and the exit code: 1 when any account-region fails."""
    result = invoke(doctor_request(regions, mark_verified))
    if "rows" not in result:
        raise AwsCallFailed(f"the Onboard function did not return a verification: {str(result)[:300]}")
    code = 1 if any(not row["ok"] for row in result["rows"]) else 0
    return (json.dumps(result, indent=2, default=str) if as_json else render(result)), code


def render(result: Mapping[str, Any]) -> str:
    rows = result["rows"]
    lines = [f"immutable-guard doctor --organization: {len(result['registered'])} registered account(s)"]
    if not rows:
        lines.append("  no registered account: nothing to verify")
    for row in rows:
        failing = [c for c in row["checks"] if not c["ok"]]
        verdict = "FAIL" if failing else "PASS"
        said = "; ".join(f"{c['check']}: {c['reason']}" for c in failing) or "trail, recorder, rules, roles"
        lines.append(f"  {verdict}  {row['account']}  {row['region']:<14}  {said}")
    failing_accounts = result.get("failing", {})
    lines.append(
        f"{sum(1 for r in rows if not r['ok'])} account-region(s) failed, "
        f"{sum(1 for r in rows if r['ok'])} passed; {len(failing_accounts)} account(s) failing"
    )
    if result.get("marked"):
        lines.append(
            f"marked verified: {', '.join(result.get('newly_verified', [])) or 'none'}; "
            f"back to dry-run: {', '.join(result.get('unverified', [])) or 'none'}"
        )
    else:
        lines.append("nothing changed (--mark-verified marks the accounts that pass)")
    return "\n".join(lines)


def lambda_invoke(lambda_client: Any, function_name: str) -> Invoke:
    """Invoke the deployed Onboard function and return its result."""

    def invoke(payload: dict[str, Any]) -> Mapping[str, Any]:
        try:
            response = lambda_client.invoke(FunctionName=function_name, Payload=json.dumps(payload).encode())
        except (ClientError, BotoCoreError) as exc:
            raise AwsCallFailed(f"cannot invoke {function_name}: {exc}") from exc
        body = json.loads(response["Payload"].read() or b"{}")
        if response.get("FunctionError"):
            raise AwsCallFailed(f"{function_name} failed: {str(body)[:300]}")
        return dict(body)

    return invoke
