"""Deploy rows from OTLP JSON spans: what `cli.otlp_file` and the collector's file exporter write.

The runner records one span per state visit (`deploy.<state>`, attributes `flotilla.*`,
error status with the reason), a root `deploy` span when the deploy is created, and a
`resume` span, linked to the last span of the interrupted agent, when a restarted agent
takes over. A killed agent never ends its open span, so the interrupted visit is rebuilt
from the resume span as the history records it: a zero-length visit at the moment of the
last checkpoint (the end of the linked span), followed by the crash gap. A lifecycle
hook's run is a `hook.<name>` span, a child of its state's span (`flotilla.hook.*`
attributes): it is shown in that state's visit.

Accepted: one `{"resourceSpans": [...]}` request per line (both exporters), or one such
document for the whole file; ids in hex (OTLP JSON) or base64 (protobuf's JSON mapping);
status codes as numbers or names.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from flotilla.cli.trace.model import INTERRUPTED_ERROR, RUNNING, DeployRow, Segment
from flotilla.engine.checkpoint import HookOutcome
from flotilla.engine.errors import ValidationError
from flotilla.machines import deploy as machine

_STEP_PREFIX = "deploy."
_HOOK_PREFIX = "hook."
_ERROR_CODES = (2, "2", "STATUS_CODE_ERROR")


@dataclass(frozen=True)
class Span:
    name: str
    trace_id: str
    span_id: str
    start: datetime
    end: datetime
    attributes: dict[str, Any]
    error: str | None
    links: tuple[str, ...]  # span ids
    parent_id: str = ""

    def text(self, key: str) -> str:
        value = self.attributes.get(key)
        return "" if value is None else str(value)

    @property
    def attempt(self) -> int:
        try:
            return int(self.attributes.get("flotilla.attempt", 1))
        except (TypeError, ValueError):
            return 1


def rows_from_otlp(lines: Iterable[str]) -> list[DeployRow]:
    by_deploy: dict[str, list[Span]] = {}
    hooks: dict[str, list[HookOutcome]] = {}  # parent (state) span id -> its hooks' runs
    for span in _deploy_spans(lines):
        if span.name.startswith(_HOOK_PREFIX):
            run = _hook_run(span)
            if run is not None:
                hooks.setdefault(span.parent_id, []).append(run)
            continue
        by_deploy.setdefault(span.text("flotilla.deploy"), []).append(span)
    rows = (_row(deploy_id, spans, hooks) for deploy_id, spans in by_deploy.items())
    return [row for row in rows if row is not None]


def _hook_run(span: Span) -> HookOutcome | None:
    try:
        status = span.attributes.get("flotilla.hook.exit_status")
        return HookOutcome(
            hook=span.text("flotilla.hook"),
            revision=span.text("flotilla.hook.revision"),
            timeout_seconds=int(span.attributes.get("flotilla.hook.timeout_seconds", 0)),
            result=span.text("flotilla.hook.result") or "unknown",
            exit_status=None if status is None else int(status),
            duration_seconds=float(span.attributes.get("flotilla.hook.duration_seconds", 0.0)),
        )
    except (TypeError, ValueError):
        return None


def _row(
    deploy_id: str, spans: list[Span], hooks: dict[str, list[HookOutcome]]
) -> DeployRow | None:
    # An exporter may export a span twice (a retried batch): the span id decides.
    unique = {span.span_id: span for span in spans}
    ordered = sorted(unique.values(), key=lambda s: (s.start, s.end))
    by_id = {span.span_id: span for span in ordered}
    root = next((s for s in ordered if s.name == "deploy"), None)
    steps = [s for s in ordered if s.name != "deploy"]
    if not steps and root is None:
        return None
    resumes = [(s.text("flotilla.state"), s.attempt) for s in steps if s.name == "resume"]
    segments: list[Segment] = []
    pending_resume = False
    for span in steps:
        if span.name == "resume":
            state, attempt = span.text("flotilla.state"), span.attempt
            linked = next((by_id[i] for i in span.links if i in by_id), None)
            at = linked.end if linked is not None else span.start
            segments.append(
                Segment(
                    state,
                    at,
                    at,
                    attempt - 1,
                    INTERRUPTED_ERROR,
                    resumed=pending_resume,  # interrupted again after a resume
                    interrupted=True,
                )
            )
            pending_resume = True
            continue
        state = span.name.removeprefix(_STEP_PREFIX)
        if (state, span.attempt + 1) in resumes:
            # The visit a crash (or an outage) interrupted: the history keeps it only as
            # the interrupted visit that the resume span rebuilds.
            continue
        segments.append(
            Segment(
                state=state,
                start=span.start,
                end=span.end,
                attempt=span.attempt,
                error=span.error,
                skipped=span.attributes.get("flotilla.skipped") is True,
                resumed=pending_resume,
                span_id=span.span_id,
                hooks=tuple(sorted(hooks.get(span.span_id, ()), key=_hook_order)),
            )
        )
        pending_resume = False
    if not segments and root is not None:
        segments.append(Segment(machine.INITIAL_STATE, root.start, None))
    first = root or steps[0]
    if root is not None and segments[0].state == machine.INITIAL_STATE:
        # The history's first visit begins when the deploy was created (the root span).
        segments[0] = _replace_start(segments[0], root.start)
    error = next(
        (
            s.error
            for s in segments
            if s.error and not s.interrupted and s.state != machine.ROLLING_BACK_STATE
        ),
        None,
    )
    rollback_error = next(
        (s.error for s in segments if s.error and s.state == machine.ROLLING_BACK_STATE), None
    )
    last = segments[-1]
    done = last.state == machine.UNLOCKED_STATE and last.end is not None and not last.error
    if done:
        failed = error is not None
        outcome = str(
            machine.outcome(failed=failed, rollback_failed=failed and bool(rollback_error))
        )
    else:
        outcome = RUNNING
    return DeployRow(
        deploy_id=deploy_id,
        instance_id=first.text("flotilla.instance"),
        service=first.text("flotilla.service"),
        from_revision=first.text("flotilla.from_revision") or None,
        to_revision=first.text("flotilla.to_revision"),
        trace_id=first.trace_id,
        outcome=outcome,
        segments=tuple(segments),
        error=error,
        rollback_error=rollback_error,
    )


def _hook_order(run: HookOutcome) -> int:
    order = ("before-stop", "after-start", "validate")
    return order.index(run.hook) if run.hook in order else len(order)


def _replace_start(segment: Segment, start: datetime) -> Segment:
    return replace(segment, start=min(start, segment.start))


def _deploy_spans(lines: Iterable[str]) -> Iterator[Span]:
    names = {"deploy", "resume"} | {_STEP_PREFIX + s for s in machine.STEP_STATES}
    for request in _requests(lines):
        for resource in request.get("resourceSpans") or []:
            for scope in resource.get("scopeSpans") or []:
                for raw in scope.get("spans") or []:
                    name = str(raw.get("name"))
                    if name.startswith(_HOOK_PREFIX):
                        hook = _span(raw)
                        if hook is not None and hook.text("flotilla.hook"):
                            yield hook
                        continue
                    if name not in names:
                        continue
                    span = _span(raw)
                    if span is not None and span.text("flotilla.deploy"):
                        yield span


def _requests(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    buffered: list[str] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if buffered:
            buffered.append(line)
            continue
        try:
            parsed = json.loads(line)
        except json.JSONDecodeError:
            buffered.append(line)  # perhaps one pretty-printed document
            first_bad = number
            continue
        if isinstance(parsed, dict):
            yield parsed
    if buffered:
        try:
            parsed = json.loads("".join(buffered))
        except json.JSONDecodeError as exc:
            raise ValidationError(
                f"line {first_bad} of the OTLP file is not JSON ({exc.msg}); give a file of "
                "OTLP JSON export requests, e.g. from `flotilla agent --trace-file`"
            ) from exc
        if isinstance(parsed, dict):
            yield parsed


def _span(raw: dict[str, Any]) -> Span | None:
    try:
        start = _time(raw["startTimeUnixNano"])
        end = _time(raw.get("endTimeUnixNano") or raw["startTimeUnixNano"])
    except (KeyError, TypeError, ValueError, OverflowError, OSError):  # out of datetime's range
        return None
    status = raw.get("status") or {}
    failed = status.get("code") in _ERROR_CODES
    return Span(
        name=str(raw.get("name")),
        trace_id=_hex(raw.get("traceId")),
        span_id=_hex(raw.get("spanId")),
        start=start,
        end=end,
        attributes=_attributes(raw.get("attributes") or []),
        error=(status.get("message") or "error") if failed else None,
        links=tuple(_hex(link.get("spanId")) for link in raw.get("links") or []),
        parent_id=_hex(raw.get("parentSpanId")),
    )


def _time(nanos: str | int) -> datetime:
    value = int(nanos)
    return datetime.fromtimestamp(value // 1_000_000_000, UTC).replace(
        microsecond=(value % 1_000_000_000) // 1000
    )


def _hex(value: Any) -> str:
    text = str(value or "")
    if len(text) in (16, 32) and all(c in "0123456789abcdefABCDEF" for c in text):
        return text.lower()
    try:
        return base64.b64decode(text, validate=True).hex()
    except (binascii.Error, ValueError):
        return text


def _attributes(raw: list[dict[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for item in raw:
        value = item.get("value") or {}
        if "stringValue" in value:
            found[item["key"]] = value["stringValue"]
        elif "intValue" in value:
            found[item["key"]] = int(value["intValue"])
        elif "boolValue" in value:
            found[item["key"]] = bool(value["boolValue"])
        elif "doubleValue" in value:
            found[item["key"]] = float(value["doubleValue"])
    return found
