"""Running a rollout in waves: `flotilla weights SERVICE REV=W --waves A,B` and
`flotilla rollout waves SERVICE` (docs/regions.md).

`stage` resolves the weights in every region of the service (revisions are sealed with
each region's key, so a label has an id per region), checks each region's weights as
`weights` would, and stores the plan on the home region's record; any region that
cannot be reached, or refuses, changes nothing anywhere. `run` then carries the plan
out, one step at a time as `engine.operations.waves` decides, recording each step on the
home record before or after taking it, so that a command that dies anywhere is picked up
by the next `flotilla rollout waves SERVICE` where it stopped. The waves advance only
while such a command runs; each region's own scheduler runs its rollout either way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import click

from flotilla.cli.follow import rollout_ended
from flotilla.cli.output import print_json
from flotilla.cli.progress import read_progress
from flotilla.cli.regional_status import waves_json
from flotilla.cli.regional_weights import resolve_everywhere
from flotilla.cli.regions import RegionUnreachable, in_region, parse_regions, read_everywhere
from flotilla.cli.rollout_waits import gate_readings
from flotilla.cli.wiring import Wiring
from flotilla.engine.errors import FlotillaError, TransientError, ValidationError
from flotilla.engine.operations import waves as rules
from flotilla.engine.operations.names import find_service, weights_text
from flotilla.engine.operations.rules import runs_nothing
from flotilla.engine.records import FailureAction, Service, WavePlan, WaveStatus
from flotilla.engine.updates import modify_service


def parse_waves(text: str) -> tuple[str, ...]:
    regions = parse_regions(text, "--waves")
    if len(regions) < 2:
        raise ValidationError(
            f"invalid --waves {text[:60]!r}: name two regions or more in order, like "
            "eu-west-1,us-east-1"
        )
    return regions


def stage(
    wiring: Wiring,
    name: str,
    pairs: Sequence[tuple[str, int]],
    waves: Sequence[str],
    *,
    bake_seconds: int,
    stop_all: bool,
    by: str,
) -> WavePlan:
    """Resolve and check the weights in every region, then store the plan (nothing else)."""
    regional = read_everywhere(wiring, name)
    if sorted(waves) != sorted(regional.regions):
        raise ValidationError(
            f"--waves must name each region of {name} once, in the order to roll out: it is "
            f"in {', '.join(regional.regions)}"
        )
    chosen, _ = resolve_everywhere(regional, name, pairs, stop_all=stop_all)
    targets = {region: chosen[region] for region in waves}  # in the waves' order
    home = regional.home
    home_wiring = regional.wirings[home]

    def with_plan(current: Service) -> Service:
        plan = rules.new_plan(
            current.waves,
            targets,
            bake_seconds=bake_seconds,
            failure_action=current.rollout.failure_action,
            by=by,
            now=home_wiring.clock.now(),
            stop_all=stop_all,
        )
        return replace(current, waves=plan)

    stored = in_region(
        home, modify_service, home_wiring.store, name, with_plan, current=regional.services[home]
    )
    assert stored.waves is not None  # with_plan set it
    return stored.waves


def home_of(wiring: Wiring, name: str) -> tuple[Wiring, Service]:
    """The wiring of `name`'s home region (where its waves are kept), and its record there."""
    environment = wiring.settings.environment
    entry = in_region(wiring.region, find_service, wiring.store, name, environment)
    home = wiring.in_region((entry.regions or (wiring.region,))[0])
    if home is wiring:
        return home, entry
    return home, in_region(home.region, find_service, home.store, name, environment)


def stop(wiring: Wiring, name: str, reason: str) -> WavePlan:
    """An operator's stop: later waves never start; every region keeps what it runs.
    Only the home region is needed: a stop is how waves held by a dark region end."""
    home, service = home_of(wiring, name)
    plan = service.waves
    if plan is None or plan.finished:
        raise FlotillaError(
            f"{name} has no rollout in waves under way"
            + ("" if plan is None else f" (the last is {rules.describe(plan)})")
        )
    return _record(home, name, plan.number, lambda p: rules.stopped(p, reason, by_operator=True))


@dataclass
class Run:
    """One command carrying out plan `number` of `name`'s waves, from where it stands."""

    wiring: Wiring  # the entry region's
    name: str
    number: int
    interval: float
    timeout: float
    output: str
    sleep: Callable[[float], None] | None = None

    def __post_init__(self) -> None:
        self._said: set[str] = set()

    def run(self) -> WavePlan:
        """Until the plan completes (returned) or stops (FlotillaError), or `timeout`."""
        clock = self.wiring.clock
        wait = self.sleep or clock.sleep
        deadline = clock.now() + timedelta(seconds=self.timeout)
        home, _ = home_of(self.wiring, self.name)
        while True:
            plan = self._step(home)
            if plan is not None and plan.finished and not rules.to_undo(plan):
                return self._ended(plan)
            remaining = (deadline - clock.now()).total_seconds()
            if remaining <= 0:
                shown = "unknown" if plan is None else rules.describe(plan)
                raise FlotillaError(
                    f"gave up following the waves of {self.name} after {self.timeout:g} s "
                    f"({shown}); each region's rollout goes on, but the next wave starts only "
                    f"while `flotilla rollout waves {self.name}` runs: run it to carry on"
                )
            wait(min(self.interval, remaining))

    def _step(self, home: Wiring) -> WavePlan | None:
        """One look and at most one change; the plan as it stands after it (None: the home
        region did not answer, so nothing could be read or recorded)."""
        try:
            plan = self._plan(home)
        except RegionUnreachable as exc:
            self._say(f"the waves are held: the home region cannot be read ({exc.message})")
            return None
        try:
            for undo in rules.to_undo(plan):  # also a stop whose undoing was cut short
                plan = self._undo(home, plan, undo)
            if plan.finished:
                return plan
            return self._advance(home, plan)
        except RegionUnreachable as exc:
            reason = exc.message
            if plan.status is WaveStatus.HELD and plan.reason == reason:
                return plan
            self._say(f"the waves are held: {reason}")
            try:
                return self._record(home, lambda p: rules.held(p, reason))
            except RegionUnreachable:
                return plan
        except TransientError:
            raise
        except FlotillaError as refused:  # the region refused the step: it cannot go on
            index = plan.current
            where = "" if index is None else f"{plan.waves[index].region}: "
            return self._stop(home, f"{where}{refused.message}")

    def _advance(self, home: Wiring, plan: WavePlan) -> WavePlan:
        index = plan.current
        if index is None:
            return self._record(home, lambda p: replace(p, status=WaveStatus.COMPLETE))
        wave = plan.waves[index]
        there = home.in_region(wave.region)
        position = f"wave {index + 1} of {len(plan.waves)}"
        service = in_region(
            wave.region, find_service, there.store, self.name, there.settings.environment
        )
        if not wave.applied:
            start = rules.starts_at(plan, index)
            now = there.clock.now()
            if start is None or now < start:  # None: cannot be, the wave before completed
                until = "" if start is None else f" until {start:%H:%M:%S} UTC"
                self._say(f"baking{until}, then {wave.region}")
                return plan
            plan = self._record(home, lambda p: rules.before_recorded(p, index, service.weights))
            if plan.finished:  # stopped meanwhile: this wave never starts
                return plan
            labels = {
                r.id: r.label for r in in_region(wave.region, there.store.list_revisions, self.name)
            }
            in_region(
                wave.region,
                there.operations.set_weights,
                service,
                list(wave.weights.items()),
                stop_all=plan.stop_all,
            )
            self._say(
                f"{wave.region}: {position}: weights set ({weights_text(wave.weights, labels)})"
            )
            return self._record(home, lambda p: rules.applied(p, index, there.clock.now()))
        failure = self._failure(there, service, wave.weights, wave.applied_at)
        if failure is not None:
            return self._stop(home, f"{wave.region}: {failure}")
        progress = read_progress(
            there.store, service, there.clock.now(), readings=gate_readings(there, service)
        )
        applied_at = wave.applied_at
        try:
            ended = rollout_ended(
                progress, lambda entry: applied_at is not None and entry.at >= applied_at
            )
        except FlotillaError as failed:
            return self._stop(home, f"{wave.region}: {failed.message}")
        if not ended:
            self._say(f"{wave.region}: {position}: rolling out")
            return self._record(home, rules.going_on)
        self._say(f"{wave.region}: {position}: rollout complete")
        return self._record(home, lambda p: rules.completed(p, index, there.clock.now()))

    def _failure(
        self, there: Wiring, service: Service, weights: dict[str, int], since: datetime | None
    ) -> str | None:
        """Why the region no longer runs this wave's weights, if it does not."""
        if all(service.weights.get(r, 0) == w for r, w in weights.items()):
            return None
        changed = [e for e in service.history if since is None or e.at >= since]
        why = f" ({changed[-1].kind}: {changed[-1].reason})" if changed else ""
        return f"the weights of {self.name} were changed outside the waves{why}"

    def _stop(self, home: Wiring, reason: str) -> WavePlan:
        self._say(f"the waves stop: {reason}")
        plan = self._record(home, lambda p: rules.stopped(p, reason))
        for index in rules.to_undo(plan):
            plan = self._undo(home, plan, index)
        return plan

    def _undo(self, home: Wiring, plan: WavePlan, index: int) -> WavePlan:
        """Set a region done back to its weights from before the waves (failure action
        `revert`), then record that it was."""
        wave = plan.waves[index]
        there = home.in_region(wave.region)
        service = in_region(
            wave.region, find_service, there.store, self.name, there.settings.environment
        )
        in_region(
            wave.region,
            there.operations.set_weights,
            service,
            rules.restoring(wave),
            stop_all=runs_nothing(wave.before or {}),  # restoring what ran before: maybe nothing
        )
        self._say(f"{wave.region}: set back to its weights from before the waves")
        return self._record(home, lambda p: rules.undone(p, index))

    def _ended(self, plan: WavePlan) -> WavePlan:
        if self.output == "json":
            print_json(waves_json(plan, self.wiring.clock.now()))
        if plan.status is WaveStatus.COMPLETE:
            if self.output != "json":
                click.echo(f"waves of {self.name} {rules.describe(plan)}")
            return plan
        kept = "kept" if plan.failure_action is FailureAction.HOLD else "set back"
        raise FlotillaError(
            f"the waves of {self.name} stopped: {plan.reason or 'no reason recorded'}; the "
            f"regions done were {kept} (failure action {plan.failure_action.value})"
        )

    def _plan(self, home: Wiring) -> WavePlan:
        service = in_region(
            home.region, find_service, home.store, self.name, home.settings.environment
        )
        return _followed(service, self.number)

    def _record(self, home: Wiring, change: Callable[[WavePlan], WavePlan]) -> WavePlan:
        return _record(home, self.name, self.number, change)

    def _say(self, text: str) -> None:
        """Each line once: a poll that finds the same state says nothing new."""
        if text in self._said:
            return
        self._said.add(text)
        click.echo(text, err=self.output == "json")


def _followed(service: Service, number: int) -> WavePlan:
    """Plan `number` of `service`, refused once a newer plan replaced it."""
    plan = service.waves
    if plan is None or plan.number != number:
        raise FlotillaError(
            f"the waves of {service.name} this command followed were replaced by newer ones; "
            f"see `flotilla rollout waves {service.name}`"
        )
    return plan


def _record(
    home: Wiring, name: str, number: int, change: Callable[[WavePlan], WavePlan]
) -> WavePlan:
    """Apply `change` to plan `number` on the home record (conditional, retried)."""

    def on_record(current: Service) -> Service:
        return replace(current, waves=change(_followed(current, number)))

    stored = in_region(home.region, modify_service, home.store, name, on_record)
    assert stored.waves is not None
    return stored.waves
