"""The model controller: the one writer of what the endpoint serves.

It reads ModelEvents from ``streamcl.models`` and asks the promotion gate about each candidate
newer than the serving version; a passing candidate becomes the serving version in the
registry (the pointer every Serve replica follows) and a ``promoted`` ModelEvent is published,
a failing one is ``rejected`` with the reason. At start it reconciles with the registry, so a
candidate whose event was missed is still decided.

Operators act through :meth:`ModelController.admin` (the HTTP admin calls reach it through the
controller actor): promote any stored version (a rejected one included: the override is
logged), roll back to the previous serving version or a named one, pin the serving version so
no automatic promotion replaces it, unpin. After an operator's promote or rollback only
candidates newer than every version stored at that moment are promoted automatically, so the
gate does not undo a rollback with an older candidate.

A serving pointer found corrupt or lost is rewritten from its copy or rebuilt from the versions
(with the floor at the newest one), counted and logged as an error before anything is decided;
while it cannot be rewritten, nothing is promoted automatically.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from learners.erasure import check_ids
from learners.registry import Registry, ServingState
from services._forget import forget, ray_calls
from services._serving_watch import watch_of
from services.audit import AuditTrail, audit_topic
from services.gate import Decision, Gate, PromoteNewer
from services.metrics import ControllerMetrics
from streaming.deadletter import DeadLetterPolicy, decode_or_dead_letter
from streaming.errors import RegistryError
from streaming.events import ModelEvent
from streaming.failpoints import failpoint
from streaming.kafka import Consumer, Producer
from streaming.pii import masker_for
from streaming.settings import StreamSettings

log = logging.getLogger(__name__)

CONTROLLER_ACTOR = "streamcl-controller"


class AdminError(Exception):
    """An operator's call that cannot be done; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


class ModelController:
    name = "controller"
    _pointer_ok = True  # False while a lost or corrupt serving pointer cannot be read or rewritten
    _audit: AuditTrail | None = None

    def __init__(
        self,
        stream: StreamSettings,
        registry: Registry,
        metrics: ControllerMetrics,
        model: str = "default",
        gate: Gate | None = None,
        shadow: Any = None,
    ) -> None:
        self.stream = stream
        self.registry = registry
        self.metrics = metrics
        self.model = model
        self.gate = gate or PromoteNewer()
        self.shadow = shadow  # a services.shadow.Shadow: candidates score live traffic before the gate
        self._waiting: int | None = None  # the newest candidate waiting for its shadow
        self.decided = 0
        self._lock = threading.RLock()  # admin calls arrive on another thread than step()
        self._pinned_seen = registry.serving_state().pinned
        self._producer = Producer(stream, client_id="streamcl-controller", metrics=metrics)
        self._dlq_policy = DeadLetterPolicy(stream.dlq_payload_bytes, masker_for(stream))  # STREAMCL_DLQ_*, _PII
        self._consumer = Consumer(stream, group_id=stream.group("controller"), client_id="streamcl-controller")
        self._consumer.assign([stream.topics.models])
        self.check_pointer()
        self.reconcile()

    # automatic decisions --------------------------------------------------------------------
    def reconcile(self) -> None:
        """Decide the newest candidate the registry holds that may be promoted automatically."""
        floor = _automatic_floor(self.registry.serving_state())
        waiting = [m for m in self.registry.versions() if m.status == "candidate" and m.version > floor]
        if waiting:
            self._queue(waiting[-1].version)
        self._publish_gauges()

    def check_pointer(self) -> ServingState | None:
        """Rewrite a corrupt or lost serving pointer (counted, logged as an error); the serving
        state, or None while the pointer cannot be read or rewritten."""
        try:
            read = self.registry.repair_serving()
        except RegistryError as exc:
            if self._pointer_ok:
                log.error("the serving pointer cannot be read or repaired; no automatic promotion: %s", exc)
            self._pointer_ok = False
            return None
        if read.problem is not None:
            self.metrics.pointer_recoveries.labels(read.source).inc()
            log.error("the serving pointer was %s and was rewritten: %s", read.problem, read.detail)
        if not self._pointer_ok:
            self._pointer_ok = True
            self.reconcile()  # candidates that waited for the pointer
        return read.state

    def step(self) -> int:
        state = self.check_pointer()
        pinned = state.pinned if state is not None else self._pinned_seen
        if self._pinned_seen and not pinned:
            self._pinned_seen = False
            self.reconcile()  # unpinned: candidates that waited are decided now
        self._pinned_seen = pinned
        records = self._consumer.poll(0.5, max_records=100)
        newest = None
        dlq, limit, policy = self.stream.topics.dlq, self.stream.max_text_chars, self._dlq_policy
        for rec in records:
            event = decode_or_dead_letter(ModelEvent, rec, limit, self._producer, dlq, self.metrics, policy=policy)
            if event is None:
                continue
            if event.model == self.model and event.status == "candidate":
                self.metrics.model_version.labels("candidate").set(event.version)
                newest = max(newest or 0, event.version)
        if newest is not None:
            self._queue(newest)  # a burst of candidates: the newest is the one to judge
        if records:
            self._consumer.commit(self._consumer.positions())
        self._shadow_step()
        return len(records)

    def _queue(self, version: int) -> None:
        """Decide ``version`` now, or after its shadow in shadow mode."""
        if self.shadow is None:
            self.consider(version)
        else:
            self._waiting = max(self._waiting or 0, version)

    def _shadow_step(self) -> None:
        """Shadow mode: feed the shadow, start the newest waiting candidate's shadow when none
        runs, and hand a finished one to the gate with its figures. A candidate that arrives
        during a shadow waits for it to end (so a steady stream of versions still promotes)."""
        if self.shadow is None:
            return
        self.shadow.poll(0.1)
        if not self.shadow.active and self._waiting is not None:
            version, self._waiting = self._waiting, None
            try:
                status = self.registry.meta(version).status
            except RegistryError:
                status = None
            if status == "candidate" and version > _automatic_floor(self.registry.serving_state()):
                self.shadow.start(version)
        if self.shadow.done():
            version = self.shadow.version
            figures = self.shadow.stop()
            log.info("version %d shadowed: %s", version, figures)
            self.consider(version, figures)

    def consider(self, version: int, shadowed: dict[str, Any] | None = None) -> None:
        try:
            candidate = self.registry.meta(version)
        except RegistryError as exc:
            log.warning("candidate %d cannot be read: %s", version, exc)
            return
        state = self.registry.serving_state()
        if candidate.status != "candidate" or version <= state.floor:
            return  # already decided, or older than an operator's decision
        if not self._pointer_ok:
            log.warning("version %d waits: the serving pointer is being recovered", version)
            return
        if state.pinned:
            log.info("version %d waits: serving version %s is pinned", version, state.version)
            return
        current = state.version
        started = time.perf_counter()
        try:
            serving = self.registry.meta(current) if current is not None else None
            decision = self.gate.decide(candidate, serving)
        except RegistryError as exc:
            decision = Decision(False, f"cannot be scored: {exc}")
        with self._lock:
            now = self.registry.serving_state()
            if now.version != current or now.pinned or version <= now.floor:
                log.info("version %d: the serving version changed while it was scored; left for later", version)
                return
            figures = {**decision.figures, **(shadowed or {}), "gate_seconds": round(time.perf_counter() - started, 3)}
            if decision.ok:
                try:
                    self._promote(version, decision.reason, figures)
                except RegistryError as exc:
                    decision = Decision(False, f"its files cannot be served: {exc}")
            if not decision.ok:
                self.registry.update(version, status="rejected", reason=decision.reason, gate=figures)
                self.metrics.rejections.inc()
                self._announce(version, "rejected", {"reason": decision.reason, **_numbers(figures)})
                log.info("version %d rejected: %s", version, decision.reason)
            self.decided += 1

    def _promote(self, version: int, reason: str, figures: dict[str, Any], **pointer: Any) -> ServingState:
        self.registry.local_path(version)  # refuses missing or corrupt files (checked once per file state)
        failpoint("controller.before_pointer_write")
        state = self.registry.set_serving(version, **pointer)
        watch_of(self).changed()  # replicas waiting in wait_serving swap now
        self.registry.update(version, status="promoted", reason=reason, gate=figures)
        self.metrics.promotions.inc()
        self._announce(version, "promoted", {"reason": reason, **_numbers(figures)})
        self._publish_gauges()
        log.info("version %d promoted: %s", version, reason)
        return state

    # operators --------------------------------------------------------------------------------
    @property
    def audit(self) -> AuditTrail:
        """The audit trail of operators' actions (services/audit.py)."""
        if self._audit is None:
            producer = getattr(self, "_producer", None)
            stream = getattr(self, "stream", None)
            topic = audit_topic(stream.topics, stream.topic_prefix) if stream is not None else None
            self._audit = AuditTrail(self.registry, self.model, producer, topic, self.metrics.audit_failures)
        return self._audit

    def admin(self, action: str, version: int | None = None, who: str = "operator") -> dict[str, Any]:
        """An operator's ``promote``/``rollback``/``pin``/``unpin``, recorded in the audit trail;
        returns the serving state or ``{"error", "status", "detail"}`` (and ``audit`` when its
        record could not be written: the action stands)."""
        serving = self.registry.serving_state().version if action in ("rollback", "unpin", "pin") else None
        result = self._admin(action, version, who)
        written = self.audit.record(action, who, result, version=version, serving_before=serving)
        return result if written["recorded"] else {**result, "audit": written}

    def forget(self, ids: list[str], who: str = "operator") -> dict[str, Any]:
        """An operator's erasure of ``ids`` (services/_forget.py), recorded in the audit trail."""
        try:
            ids = check_ids(ids)
        except ValueError as exc:
            result: dict[str, Any] = {"error": "invalid_request", "status": 422, "detail": str(exc)}
        else:
            result = forget(ids, self.model, self.registry, *ray_calls(self.model))
        trained = result.get("trained_in", {}).get("versions")
        written = self.audit.record("forget", who, result, ids=ids, versions=trained)
        return result if written["recorded"] else {**result, "audit": written}

    def _admin(self, action: str, version: int | None, who: str) -> dict[str, Any]:
        try:
            with self._lock:
                if action == "promote":
                    state = self._admin_promote(self._version(version), who)
                elif action == "rollback":
                    state = self._admin_rollback(version, who)
                elif action == "pin":
                    state = self._admin_pin(version, who)
                elif action == "unpin":
                    state = self.registry.set_pinned(False)
                    log.warning("%s unpinned serving version %s", who, state.version)
                else:
                    raise AdminError(400, "unknown_action", f"unknown admin action {action!r}")
        except AdminError as exc:
            return {"error": exc.error, "status": exc.status, "detail": exc.detail}
        except RegistryError as exc:
            return {"error": "registry_error", "status": 409, "detail": str(exc)}
        return {"serving": state.version, "pinned": state.pinned, "history": state.history}

    def _version(self, version: int | None) -> int:
        if version is None:
            raise AdminError(422, "invalid_request", "'version' is required")
        try:
            self.registry.meta(version)
        except RegistryError:
            raise AdminError(404, "unknown_version", f"there is no version {version}") from None
        try:
            self.registry.local_path(version)
        except RegistryError as exc:
            raise AdminError(409, "version_unavailable", str(exc)) from None
        return version

    def _floor(self) -> int:
        versions = self.registry.versions()
        return versions[-1].version if versions else 0

    def _admin_promote(self, version: int, who: str) -> ServingState:
        meta = self.registry.meta(version)
        override = meta.status == "rejected"
        reason = f"promoted by {who}" + (f" over the gate's rejection ({meta.reason})" if override else "")
        if override:
            log.warning("version %d: %s", version, reason)
        return self._promote(version, reason, {"override": override, "operator": True}, floor=self._floor())

    def _admin_rollback(self, version: int | None, who: str) -> ServingState:
        state = self.registry.serving_state()
        current = state.version
        if version is None:
            history = [v for v in state.history if v != current]
            for candidate in reversed(history):
                try:
                    self.registry.local_path(candidate)
                except RegistryError:
                    continue
                version = candidate
                break
            if version is None:
                raise AdminError(409, "no_previous_version", "no earlier serving version with files to roll back to")
        target = self._version(version)
        if target == current:
            raise AdminError(409, "already_serving", f"version {target} is already serving")
        new_state = self.registry.set_serving(target, floor=self._floor())
        watch_of(self).changed()  # replicas waiting in wait_serving swap now
        if current is not None:
            self.registry.update(current, status="rolled_back", reason=f"rolled back to {target} by {who}")
            self._announce(current, "rolled_back", {"to": target})
        self.metrics.rollbacks.inc()
        self._publish_gauges()
        log.warning("%s rolled back from version %s to %d", who, current, target)
        return new_state

    def _admin_pin(self, version: int | None, who: str) -> ServingState:
        current = self.registry.serving()
        if version is not None and version != current:
            self._version(version)
            state = self._promote(version, f"pinned by {who}", {"operator": True}, pinned=True, floor=self._floor())
        else:
            state = self.registry.set_pinned(True)
        log.warning("%s pinned version %s", who, state.version)
        return state

    # replicas ----------------------------------------------------------------------------------
    def wait_serving(self, known: int | None, timeout_s: float) -> int | None:
        """The serving version as soon as it differs from ``known``, else after ``timeout_s``:
        replicas long-poll this to swap the moment a version is promoted or rolled back."""
        return watch_of(self).wait(self.registry.serving, known, timeout_s)

    # reporting ----------------------------------------------------------------------------------
    def _announce(self, version: int, status: str, extra: dict[str, Any]) -> None:
        meta = self.registry.meta(version)
        event = ModelEvent(
            model=self.model,
            version=version,
            status=status,  # type: ignore[arg-type]
            parent=meta.parent,
            metrics={**meta.metrics.to_json(), **extra},
            uri=meta.uri,
        )
        self._producer.publish(self.stream.topics.models, event, key=self.model)
        self._producer.flush()

    def _publish_gauges(self) -> None:
        serving = self.registry.serving()
        if serving is not None:
            self.metrics.model_version.labels("serving").set(serving)
        self.metrics.unreadable_versions.set(len(self.registry.unreadable))  # as of the last listing

    def status(self) -> dict[str, Any]:
        state = self.registry.serving_state()
        return {"serving": state.version, "pinned": state.pinned, "decided": self.decided}

    def close(self) -> None:
        try:
            self._consumer.close()
            if self.shadow is not None:
                self.shadow.close()
        finally:
            self._producer.close()


def _automatic_floor(state: ServingState) -> int:
    """Candidates at or below this version are not decided automatically: the serving version
    and an operator's floor."""
    return max(state.version or 0, state.floor)


def _numbers(figures: dict[str, Any]) -> dict[str, Any]:
    """The flat figures of a decision, for a ModelEvent's ``metrics``."""
    return {k: v for k, v in figures.items() if isinstance(v, (int, float, str, bool))}


__all__ = ["CONTROLLER_ACTOR", "AdminError", "ModelController"]
