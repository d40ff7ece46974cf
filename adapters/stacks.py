"""CloudFormation stacks: create or update one from a template and wait, or preview it.

- `deploy` creates a missing stack; for an existing one it first asks a change set what
  would change, and updates the stack only if anything would; it waits for the stack to
  settle and reports each new stack event through a callback (resource, status, reason).
  An unchanged stack ("The submitted information didn't contain changes" / "No updates
  are to be performed") is a success that reports `changed=False`, not an error;
- `preview` creates the change set, reads its changes and deletes it again; previewing a
  stack that does not exist yet leaves no empty REVIEW_IN_PROGRESS stack behind.

botocore's exceptions become engine errors at this edge (`aws_errors`); a stack that ends
rolled back or failed raises `FlotillaError` naming the first resource that failed and why.
Waits poll through an injected `Clock`, bounded by a deadline.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from botocore.exceptions import ClientError

from flotilla.adapters.aws_errors import error_code, error_message, translated_errors
from flotilla.engine.clock import Clock
from flotilla.engine.errors import ConfigurationError, FlotillaError, TransientError

logger = logging.getLogger(__name__)

SERVICE = "CloudFormation"
# Roles and instance profiles without custom names: CAPABILITY_IAM is enough.
CAPABILITIES = ["CAPABILITY_IAM"]
SUCCEEDED = frozenset({"CREATE_COMPLETE", "UPDATE_COMPLETE", "IMPORT_COMPLETE"})
# A stack whose creation failed can only be deleted, never updated.
ONLY_DELETABLE = frozenset({"ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "CREATE_FAILED"})
NO_CHANGES = ("didn't contain changes", "No updates are to be performed")


@dataclass(frozen=True)
class StackEvent:
    """One line of progress: a resource (or the stack itself) reached a status."""

    resource: str
    resource_type: str
    status: str
    reason: str | None = None


@dataclass(frozen=True)
class StackChange:
    """One change a change set would make."""

    action: str  # Add, Modify, Remove, Import, Dynamic
    resource: str
    resource_type: str
    replacement: str | None = None  # True, False or Conditional, for Modify


@dataclass(frozen=True)
class StackResult:
    name: str
    status: str
    changed: bool
    changes: list[StackChange] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)


EventCallback = Callable[[StackEvent], None]


def _parameters(values: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"ParameterKey": key, "ParameterValue": value} for key, value in values.items()]


def _is_empty_change_set(reason: str) -> bool:
    return any(text in reason for text in NO_CHANGES)


class CloudFormationStacks:
    """Stacks through one CloudFormation client."""

    def __init__(
        self,
        client: Any,
        clock: Clock,
        *,
        poll_seconds: float = 5.0,
        timeout: timedelta = timedelta(hours=1),
    ) -> None:
        self._client = client
        self._clock = clock
        self._poll_seconds = poll_seconds
        self._timeout = timeout

    # --- reading ------------------------------------------------------------------

    def status(self, name: str) -> str | None:
        """The stack's status, or None if there is no such stack (or only a preview of one)."""
        stack = self._describe(name)
        if stack is None or stack["StackStatus"] == "REVIEW_IN_PROGRESS":
            return None
        return str(stack["StackStatus"])

    def parameters(self, name: str) -> dict[str, str]:
        """The stack's current parameter values ({} if there is no such stack)."""
        stack = self._describe(name)
        if stack is None or stack["StackStatus"] == "REVIEW_IN_PROGRESS":
            return {}
        return {
            p["ParameterKey"]: str(p.get("ParameterValue", "")) for p in stack.get("Parameters", [])
        }

    def outputs(self, name: str) -> dict[str, str]:
        stack = self._describe(name)
        if stack is None:
            raise ConfigurationError(f"there is no CloudFormation stack {name!r}")
        return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}

    def _describe(self, name: str) -> dict[str, Any] | None:
        with translated_errors(SERVICE, f"reading stack {name!r}"):
            try:
                stacks = self._client.describe_stacks(StackName=name)["Stacks"]
            except ClientError as exc:
                if error_code(exc) == "ValidationError" and "does not exist" in error_message(exc):
                    return None
                raise
        return dict(stacks[0]) if stacks else None

    # --- changing -----------------------------------------------------------------

    def preview(
        self,
        name: str,
        template_body: str,
        parameters: Mapping[str, str],
    ) -> list[StackChange] | None:
        """What deploying would change, or None for nothing at all; changes nothing.

        An empty list means a change without resource changes (parameters or outputs).
        """
        existed = self.status(name) is not None
        change_set = self._create_change_set(name, template_body, parameters)
        if change_set is None:
            return None
        try:
            return self._wait_for_change_set(change_set)
        finally:
            self._discard(name, change_set, delete_stack=not existed)

    def deploy(
        self,
        name: str,
        template_body: str,
        parameters: Mapping[str, str],
        on_event: EventCallback | None = None,
    ) -> StackResult:
        """Create or update the stack and wait until it is complete.

        Parameters not given take the template's defaults, not the stack's current values:
        pass every parameter you mean to keep (see `parameters`).
        """
        report = on_event or (lambda _event: None)
        stack = self._describe(name)
        status = None if stack is None else str(stack["StackStatus"])
        if status == "REVIEW_IN_PROGRESS":  # an empty stack left by an interrupted preview
            self._delete_preview_stack(name)
            status = None
        if status is None:
            with translated_errors(SERVICE, f"creating stack {name!r}"):
                self._client.create_stack(
                    StackName=name,
                    TemplateBody=template_body,
                    Parameters=_parameters(parameters),
                    Capabilities=CAPABILITIES,
                    OnFailure="ROLLBACK",
                )
            final = self._wait_for_stack(name, set(), report)
            return StackResult(name, final, changed=True, outputs=self.outputs(name))
        # An update: ask a change set first whether anything would change at all (and
        # what), then update. Executing that change set would save a call, but moto, which
        # the demo and the tests run on, neither records the parameters nor the exports of
        # an executed change set.
        changes = self.preview(name, template_body, parameters)
        if changes is None:
            return self._unchanged(name)
        seen = self._event_ids(name)
        with translated_errors(SERVICE, f"updating stack {name!r}"):
            try:
                self._client.update_stack(
                    StackName=name,
                    TemplateBody=template_body,
                    Parameters=_parameters(parameters),
                    Capabilities=CAPABILITIES,
                )
            except ClientError as exc:
                if error_code(exc) == "ValidationError" and _is_empty_change_set(
                    error_message(exc)
                ):
                    return self._unchanged(name)
                raise
        final = self._wait_for_stack(name, seen, report)
        return StackResult(name, final, changed=True, changes=changes, outputs=self.outputs(name))

    def _delete_preview_stack(self, name: str) -> None:
        with translated_errors(SERVICE, f"deleting the empty stack {name!r}"):
            self._client.delete_stack(StackName=name)
        deadline = self._clock.now() + self._timeout
        while self._status_raw(name) not in (None, "DELETE_COMPLETE"):
            self._pause(deadline, f"the deletion of the empty stack {name!r}")

    def _unchanged(self, name: str) -> StackResult:
        stack = self._describe(name)
        if stack is None:
            return StackResult(name, "UNKNOWN", changed=False)
        return StackResult(
            name,
            str(stack["StackStatus"]),
            changed=False,
            outputs={o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])},
        )

    def _create_change_set(
        self,
        name: str,
        template_body: str,
        parameters: Mapping[str, str],
    ) -> str | None:
        """The new change set's id, or None when CloudFormation says nothing would change."""
        stack = self._describe(name)
        status = None if stack is None else str(stack["StackStatus"])
        if status in ONLY_DELETABLE:
            raise ConfigurationError(
                f"stack {name!r} failed to create earlier ({status}) and can only be deleted: "
                f"run `aws cloudformation delete-stack --stack-name {name}`, then try again"
            )
        if (
            status is not None
            and status.endswith("_IN_PROGRESS")
            and status != "REVIEW_IN_PROGRESS"
        ):
            raise TransientError(
                f"stack {name!r} is busy ({status}); wait for it to finish and try again"
            )
        kind = "CREATE" if status in (None, "REVIEW_IN_PROGRESS") else "UPDATE"
        change_set_name = f"flotilla-{kind.lower()}-{int(self._clock.now().timestamp() * 1000)}"
        with translated_errors(SERVICE, f"preparing a change set for stack {name!r}"):
            try:
                created = self._client.create_change_set(
                    StackName=name,
                    ChangeSetName=change_set_name,
                    ChangeSetType=kind,
                    TemplateBody=template_body,
                    Parameters=_parameters(parameters),
                    Capabilities=CAPABILITIES,
                    Description="flotilla",
                )
            except ClientError as exc:
                # Some paths refuse an empty change set at once instead of failing it.
                if error_code(exc) == "ValidationError" and _is_empty_change_set(
                    error_message(exc)
                ):
                    return None
                raise
        return str(created["Id"])

    def _wait_for_change_set(self, change_set: str) -> list[StackChange] | None:
        """The change set's changes, or None if it would change nothing at all.

        An empty list is not "nothing": a change set that only changes outputs lists no
        resource changes, yet must be executed.
        """
        deadline = self._clock.now() + self._timeout
        while True:
            with translated_errors(SERVICE, "reading a change set"):
                pages = []
                request: dict[str, Any] = {"ChangeSetName": change_set}
                while True:
                    page = self._client.describe_change_set(**request)
                    pages.append(page)
                    if not page.get("NextToken") or page["Status"] != "CREATE_COMPLETE":
                        break
                    request["NextToken"] = page["NextToken"]
            status = pages[0]["Status"]
            if status == "CREATE_COMPLETE":
                return [_change(change) for page in pages for change in page.get("Changes", [])]
            if status == "FAILED":
                reason = str(pages[0].get("StatusReason", ""))
                if _is_empty_change_set(reason):
                    return None
                raise FlotillaError(f"CloudFormation refused the change: {reason}")
            self._pause(deadline, "the change set")

    def _discard(self, name: str, change_set: str, *, delete_stack: bool) -> None:
        """Delete the change set, and the empty stack a CREATE change set leaves behind."""
        with translated_errors(SERVICE, f"deleting a change set of stack {name!r}"):
            self._client.delete_change_set(ChangeSetName=change_set, StackName=name)
            if delete_stack and self._status_raw(name) == "REVIEW_IN_PROGRESS":
                self._client.delete_stack(StackName=name)

    def _status_raw(self, name: str) -> str | None:
        stack = self._describe(name)
        return None if stack is None else str(stack["StackStatus"])

    # --- waiting ------------------------------------------------------------------

    def _event_ids(self, name: str) -> set[str]:
        if self._describe(name) is None:
            return set()
        return {event["EventId"] for event in self._new_events(name, set())}

    def _new_events(self, name: str, seen: set[str]) -> list[dict[str, Any]]:
        """Events not seen yet, oldest first (CloudFormation lists newest first)."""
        fresh: list[dict[str, Any]] = []
        request: dict[str, Any] = {"StackName": name}
        with translated_errors(SERVICE, f"reading the events of stack {name!r}"):
            while True:
                page = self._client.describe_stack_events(**request)
                for event in page.get("StackEvents", []):
                    if event["EventId"] in seen:
                        return list(reversed(fresh))
                    fresh.append(event)
                if not page.get("NextToken"):
                    return list(reversed(fresh))
                request["NextToken"] = page["NextToken"]

    def _wait_for_stack(self, name: str, seen: set[str], on_event: EventCallback) -> str:
        deadline = self._clock.now() + self._timeout
        failures: list[StackEvent] = []
        while True:
            # The status first, then the events: every event up to a final status is read
            # (and reported) before that status ends the wait.
            status = self._status_raw(name) or "DELETE_COMPLETE"
            for raw in self._new_events(name, seen):
                seen.add(raw["EventId"])
                event = StackEvent(
                    resource=str(raw.get("LogicalResourceId", "")),
                    resource_type=str(raw.get("ResourceType", "")),
                    status=str(raw.get("ResourceStatus", "")),
                    reason=raw.get("ResourceStatusReason") or None,
                )
                if event.status.endswith("_FAILED"):
                    failures.append(event)
                on_event(event)
            if status in SUCCEEDED:
                return status
            if not status.endswith("_IN_PROGRESS"):
                first = next((f for f in failures if f.reason), None)
                why = f": {first.resource} {first.status}: {first.reason}" if first else ""
                raise FlotillaError(
                    f"stack {name!r} ended {status}{why}; see its events in the CloudFormation "
                    "console"
                )
            self._pause(deadline, f"stack {name!r}")

    def _pause(self, deadline: Any, what: str) -> None:
        if self._clock.now() >= deadline:
            raise TransientError(
                f"gave up waiting for {what} after {self._timeout}; CloudFormation may still "
                "be working on it"
            )
        self._clock.sleep(self._poll_seconds)


def _change(raw: Mapping[str, Any]) -> StackChange:
    resource: Mapping[str, Any] = raw.get("ResourceChange", {})
    replacement = resource.get("Replacement")
    return StackChange(
        action=str(resource.get("Action", raw.get("Type", ""))),
        resource=str(resource.get("LogicalResourceId", "")),
        resource_type=str(resource.get("ResourceType", "")),
        replacement=None if replacement is None else str(replacement),
    )


def change_summary(changes: Sequence[StackChange]) -> str:
    """`3 to add, 1 to modify, 0 to remove`."""
    counts = dict.fromkeys(("Add", "Modify", "Remove"), 0)
    for change in changes:
        counts[change.action] = counts.get(change.action, 0) + 1
    return f"{counts['Add']} to add, {counts['Modify']} to modify, {counts['Remove']} to remove"
