"""schemathesis hooks for tally, loaded by `cargo xtask schemathesis`.

What they add to schemathesis' own checks:

- Auth: every operation is called with a token of a role the document's
  `x-tally-roles` names, in each header tally takes (Authorization: Bearer,
  Coder-Session-Token, and Coder-External-Proxy-Token where the operation
  lists it), taking turns.
- `tokens_are_enforced`: every call is sent again without a token (401) and
  with the token of each role the operation does not name (403 where the
  right role got a 2xx; never a 2xx or 5xx).
- Tags: every valid id in an ingest body is replaced by a fresh UUID before
  it is sent (a valid UUID stays a valid UUID, so a case keeps its kind), so
  each request's ids are its own. Every call and probe is written to the
  ledger with its status; `cargo xtask schemathesis` then checks that no id
  of a refused request was stored and every accepted one was.
- `cross_field_rules`: the relations JSON Schema cannot state (an end not
  before its start, `to` after `from`, times in range, session times
  within what the server's clock takes) are made to hold in positive
  cases, so a refusal of a case the document calls valid is a finding, not
  noise.

Settings come from TALLY_ST_CONFIG (JSON): {"tokens": {role: token},
"ledger": path}.
"""

import itertools
import json
import os
import re
import threading
import uuid
from datetime import datetime, timedelta, timezone

import requests
import schemathesis

CONFIG = json.loads(os.environ["TALLY_ST_CONFIG"])
TOKENS = CONFIG["tokens"]
ROLES_KEY = "x-tally-roles"
AUTH_HEADERS = ("authorization", "coder-session-token", "coder-external-proxy-token")
HYPHENATED_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
NIL_UUID = "00000000-0000-0000-0000-000000000000"

_ledger_lock = threading.Lock()
_turns = itertools.count()


def roles_of(operation):
    return operation.definition.raw.get(ROLES_KEY)


def schemes_of(operation):
    return {name for alternative in operation.definition.raw.get("security") or [] for name in alternative}


def record(method, url, status, body, source):
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    line = json.dumps({"method": method, "url": url, "status": status, "body": body, "source": source})
    with _ledger_lock, open(CONFIG["ledger"], "a", encoding="utf-8") as ledger:
        ledger.write(line + "\n")


# --- auth: a right role's token, in each header tally takes


@schemathesis.auth(refresh_interval=None)
class RoleToken:
    def get(self, case, context):
        roles = roles_of(case.operation)
        return TOKENS[roles[0]] if roles else None

    def set(self, case, token, context):
        headers = ["bearer", "session"]
        if "coder_external_proxy_token" in schemes_of(case.operation):
            headers.append("proxy")
        kind = headers[next(_turns) % len(headers)]
        if kind == "bearer":
            case.headers["Authorization"] = f"Bearer {token}"
        elif kind == "session":
            case.headers["Coder-Session-Token"] = token
        else:
            case.headers["Coder-External-Proxy-Token"] = token


# --- tags: each request's ids are its own


def _fresh(value):
    if isinstance(value, str) and HYPHENATED_UUID.match(value) and value != NIL_UUID:
        return str(uuid.uuid4())
    return value


def retag(body):
    """Fresh UUIDs for every valid id of an ingest body, in place."""
    if not isinstance(body, dict):
        return body
    for key in ("workspace_id", "owner_id"):
        if key in body:
            body[key] = _fresh(body[key])
    stats = body.get("stats")
    if isinstance(stats, list):
        for report in stats:
            if isinstance(report, dict):
                for key in ("user_id", "workspace_id", "agent_id", "session_id"):
                    if key in report:
                        report[key] = _fresh(report[key])
    return body


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.method.upper() == "POST":
        retag(case.body)


@schemathesis.hook
def after_call(context, case, response):
    record(response.request.method, response.request.url, response.status_code, response.request.body, "case")


# --- relations JSON Schema cannot state, in positive cases

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST_QUERY = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc)
# The session times the server takes at its defaults (docs/rules.md,
# "Session times"): a start within the usage retention (365 days), nothing more
# than the clock skew allowance (1 hour) ahead of its clock. Positive cases
# get times from 80 days ago to now, clear of both edges however late they
# are sent.
SESSION_AGE = timedelta(days=80)


def _parse(value):
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None


def _within(value, earliest, latest, step=timedelta(days=1), steps=20000):
    """`value` if its instant is in [earliest, latest], else a time that is
    (`earliest` and some of `steps` times `step`)."""
    t = _parse(value)
    if t is None or t.tzinfo is None:
        return value
    try:
        utc = t.astimezone(timezone.utc)
    except (OverflowError, ValueError):
        utc = None
    if utc is not None and earliest <= utc <= latest:
        return value
    return (earliest + step * (t.toordinal() % steps)).isoformat().replace("+00:00", "Z")


@schemathesis.hook
def map_case(context, case):
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return case
    label = f"{case.method.upper()} {case.operation.path}"
    if label == "POST /api/v2/workspaceproxies/me/app-stats" and isinstance(case.body, dict):
        now = datetime.now(timezone.utc)
        for report in case.body.get("stats") or []:
            if not isinstance(report, dict):
                continue
            seconds = int(SESSION_AGE.total_seconds())
            start = _within(report.get("session_started_at"), now - SESSION_AGE, now, timedelta(seconds=1), seconds)
            report["session_started_at"] = start
            end = report.get("session_ended_at")
            end_t, start_t = _parse(end), _parse(start)
            if end_t is None or start_t is None or end_t.year == 1:
                continue
            if end_t.astimezone(timezone.utc) < start_t.astimezone(timezone.utc) or end_t.astimezone(timezone.utc) > now:
                report["session_ended_at"] = start
    if label == "GET /api/v2/insights/apps" and isinstance(case.query, dict):
        q = case.query
        q["from"] = _within(q.get("from"), EPOCH.replace(year=1), LATEST_QUERY - timedelta(days=1))
        q["to"] = _within(q.get("to"), EPOCH.replace(year=1), LATEST_QUERY)
        f, t = _parse(q.get("from")), _parse(q.get("to"))
        if f and t and f.tzinfo and t.tzinfo and not f < t:
            q["to"] = (f.astimezone(timezone.utc) + timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    if label in INSIGHTS_RANGE_READS and isinstance(case.query, dict):
        _insights_range(case.query)
    if label == "GET /api/v2/insights/app-stats/export" and isinstance(case.query, dict):
        q = case.query
        q["start_time"] = _within(q.get("start_time"), EPOCH.replace(year=1), LATEST_QUERY - timedelta(days=1))
        q["end_time"] = _within(q.get("end_time"), EPOCH.replace(year=1), LATEST_QUERY)
        f, t = _parse(q.get("start_time")), _parse(q.get("end_time"))
        if f and t and f.tzinfo and t.tzinfo and not f < t:
            q["end_time"] = (f.astimezone(timezone.utc) + timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
        elif f and t and f.tzinfo and t.tzinfo and t - f > timedelta(days=31):
            # One export covers at most 31 days.
            q["end_time"] = (f.astimezone(timezone.utc) + timedelta(days=31)).isoformat().replace("+00:00", "Z")
    return case


INSIGHTS_RANGE_READS = {
    "GET /api/v2/insights/app-usage",
    "GET /api/v2/insights/active-users",
    "GET /api/v2/insights/user-activity",
}


def _utc(t):
    return t.isoformat().replace("+00:00", "Z")


# The longest range a rollup read takes at the server's default usage
# retention (365 days): the retention plus a day.
MAX_RANGE_DAYS = 366


def _insights_range(q):
    """Coder's range rules: both at midnight, not in the future, start
    before end; with `week`, whole weeks; at most MAX_RANGE_DAYS long. The
    generated start picks the day (up to 420 days back: a range may lie
    before the retention)."""
    t = _parse(q.get("start_time"))
    seed = t.toordinal() if t else 0
    today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    back = 7 * (1 + seed % 60)
    start = today - timedelta(days=back)
    longest = min(back, MAX_RANGE_DAYS)
    days = 7 * (1 + seed % (longest // 7)) if q.get("interval") == "week" else 1 + seed % longest
    q["start_time"] = _utc(start)
    q["end_time"] = _utc(start + timedelta(days=days))


# --- every route refuses a missing token and every wrong role's token


def _probe(request, role_token, header, source):
    headers = {k: v for k, v in request.headers.items() if k.lower() not in AUTH_HEADERS and k.lower() != "content-length"}
    if role_token is not None:
        headers[header] = f"Bearer {role_token}" if header == "Authorization" else role_token
    body = request.body
    if body:
        try:
            body = json.dumps(retag(json.loads(body))).encode()
        except (ValueError, TypeError):
            pass
    response = requests.request(request.method, request.url, headers=headers, data=body, timeout=30)
    record(request.method, request.url, response.status_code, body, source)
    return response


@schemathesis.check
def tokens_are_enforced(ctx, response, case):
    roles = roles_of(case.operation)
    if roles is None:
        return None
    request = response.request
    if response.status_code in (404, 405):
        # Routing answered before any route could look at the token.
        return None
    missing = _probe(request, None, None, "no-token")
    if missing.status_code != 401:
        raise AssertionError(f"{case.operation.label} answered {missing.status_code}, not 401, without a token")
    for role, token in TOKENS.items():
        if role in roles:
            continue
        for header in ("Authorization", "Coder-Session-Token"):
            wrong = _probe(request, token, header, f"role:{role}")
            if 200 <= response.status_code < 300 and wrong.status_code != 403:
                raise AssertionError(
                    f"{case.operation.label} answered {wrong.status_code}, not 403, to the {role} role's token in {header}"
                )
            if not 400 <= wrong.status_code < 500:
                raise AssertionError(
                    f"{case.operation.label} answered {wrong.status_code} to the {role} role's token in {header}"
                )
    return None
