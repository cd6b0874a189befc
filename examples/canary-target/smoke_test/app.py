"""Sample canary hook: prices one known order on the version under test (pre-traffic) or through the
alias (post-traffic) and answers {"status": "Succeeded" | "Failed", "reason": ...} synchronously."""

from __future__ import annotations

import json
import os
from typing import Any

import boto3

EXPECTED = {"quantity": 2, "total_cents": 2500}


def handler(event: dict[str, Any], context: Any) -> dict[str, str]:
    function = os.environ.get("TARGET_FUNCTION") or event["function"]
    qualifier = event["version"] if event.get("phase") == "PreTraffic" else event["alias"]
    response = boto3.client("lambda").invoke(
        FunctionName=f"{function}:{qualifier}", Payload=json.dumps({"quantity": 2}).encode()
    )
    body = json.loads(response["Payload"].read() or b"null")
    if response.get("FunctionError"):
        return {"status": "Failed", "reason": f"{function}:{qualifier} raised {body.get('errorType')}"}
    if not isinstance(body, dict) or any(body.get(k) != v for k, v in EXPECTED.items()):
        return {
            "status": "Failed",
            "reason": f"{function}:{qualifier} answered {body!r}, expected {EXPECTED}",
        }
    return {"status": "Succeeded", "reason": f"{function}:{qualifier} priced the known order correctly"}
