"""Pipelines: ordered stages per entity type, stage moves, stage history and time per stage.

**Where pipelines come from.** Plugins declare them with ``crm_register_pipelines`` (the core
declares ``sales`` for deals). An admin adds more at run time (API, CLI): they are stored in
``crm_pipeline`` and live in every process at once (a change bumps the schema version, like a
custom field). A stored pipeline with the name of a plugin-declared one *customises* it: the
stored definition replaces the declaration (``customised`` is true, ``plugin`` still names the
declaring plugin); deleting the customisation brings the plugin's declaration back. A
plugin-declared pipeline itself cannot be deleted.

**A record's pipeline** is its ``pipeline`` field (entities that have one, as ``deal`` does), else
the entity's only pipeline. Its stage is its ``stage`` field.

**Stage moves** are ordinary updates of ``stage`` (and ``pipeline``) through the records service,
so permissions, audit and events hold. The core plugin's ``crm_before_save`` calls
:meth:`PipelineService.before_save`, which, inside the write's transaction,

- gives a new record without a stage its pipeline's first stage,
- refuses a stage that is not in the record's pipeline (422 on ``stage`` naming the accepted ones)
  and an unknown pipeline (422 on ``pipeline``),
- refuses a move to a *lost* stage without a ``lost_reason`` (422 on ``lost_reason``),
- sets ``probability`` from the stage unless the write gives one,
- records the move in ``crm_stage_history`` (who, when, from, to) once the row is written, in the
  same transaction (through :meth:`crmcore.Change.after_write`).

**Time per stage** is computed from the history: each entry lasts until the next one; the current
stage counts until now while it is an open stage (a won or lost record is closed: its last stage
has no duration).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import msgspec

from .auth.permissions import SYSTEM, Actor, Scope
from .contributions import Pipeline, Stage
from .entities import EntityType, FieldType
from .records.errors import FieldError, Forbidden, NotFound, ValidationError
from .storage.database import IntegrityError

if TYPE_CHECKING:
    from .deployment import Deployment
    from .entities import Registry
    from .records.service import Change

__all__ = ["PIPELINE_TABLES", "PipelineService", "declaration_problem", "stage_durations", "STAGE_KINDS"]

UTC = dt.timezone.utc
STAGE_KINDS = ("open", "won", "lost")
NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
MAX_STAGES = 100
MAX_LABEL = 200
#: Keys of a pipeline as shown that input may carry and that are ignored (set by the registry).
READ_ONLY = ("plugin", "customised", "source")

PIPELINE_TABLES: list[str] = [
    # Pipelines stored at run time: admins' own, and customisations of plugin-declared ones (same
    # name). "definition" is the Pipeline as JSON. Times as in crm_audit (ISO 8601, UTC).
    """CREATE TABLE IF NOT EXISTS crm_pipeline (
        "name" TEXT PRIMARY KEY, "entity" TEXT NOT NULL, "definition" TEXT NOT NULL,
        "created_at" TEXT NOT NULL, "updated_at" TEXT NOT NULL)""",
    # Every stage a record entered (its creation included), written in the write's transaction.
    # "at" is fixed-width ISO 8601 in UTC with microseconds, so it sorts as text.
    """CREATE TABLE IF NOT EXISTS crm_stage_history (
        "id" {serial}, "entity" TEXT NOT NULL, "record_id" BIGINT NOT NULL, "pipeline" TEXT,
        "from_stage" TEXT, "to_stage" TEXT, "user_id" BIGINT, "at" TEXT NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS crm_stage_history_record ON crm_stage_history ("entity", "record_id", "id")""",
]


def _stamp(when: dt.datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def _parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value).astimezone(UTC)


def _one_line(value: Any, limit: int = MAX_LABEL) -> bool:
    return isinstance(value, str) and 0 < len(value) <= limit and not any(c < " " or c == "\x7f" for c in value)


def stage_durations(entries: list[dict[str, Any]], now: dt.datetime, closed: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Fill ``left_at`` and ``seconds`` of history entries (oldest first, each with ``at`` and
    ``to_stage``) and return the time per stage: ``[{pipeline, stage, seconds, visits}]`` in the
    order stages were first entered. The last entry lasts until ``now`` unless its stage is in
    ``closed`` (``(pipeline, stage)`` pairs of won/lost stages): then its ``seconds`` is None."""
    closed = set(closed)
    totals: dict[tuple[str | None, str | None], dict[str, Any]] = {}
    for index, entry in enumerate(entries):
        start = _parse_time(entry["at"])
        last = index == len(entries) - 1
        if not last:
            end: dt.datetime | None = _parse_time(entries[index + 1]["at"])
        elif (entry["pipeline"], entry["to_stage"]) in closed:
            end = None
        else:
            end = max(now, start)
        entry["left_at"] = None if last else entries[index + 1]["at"]
        entry["seconds"] = None if end is None else (end - start).total_seconds()
        key = (entry["pipeline"], entry["to_stage"])
        total = totals.setdefault(key, {"pipeline": key[0], "stage": key[1], "seconds": None, "visits": 0})
        total["visits"] += 1
        if entry["seconds"] is not None:
            total["seconds"] = (total["seconds"] or 0.0) + entry["seconds"]
    return list(totals.values())


def declaration_problem(pipeline: Pipeline, registry: Registry) -> str | None:
    """What is wrong with a plugin's pipeline declaration (None: nothing)."""
    entity = registry.get(pipeline.entity)
    if entity is not None and entity.field("stage") is None:
        return f"entity {entity.name!r} has no 'stage' field"
    if not pipeline.stages:
        return "it has no stages"
    names = [s.name for s in pipeline.stages]
    if len(set(names)) != len(names):
        return "a stage name appears twice"
    if not any(s.kind == "open" for s in pipeline.stages):
        return "it needs at least one open stage"
    wrong = [s.name for s in pipeline.stages if isinstance(s.probability, bool) or not 0 <= s.probability <= 100]
    if wrong:
        return f"stage {wrong[0]!r}: the probability must be 0 to 100 (percent)"
    return None


class PipelineService:
    """Pipelines of a deployment (``deployment.pipeline_service``); the effective definitions
    are ``deployment.pipelines`` (name -> :class:`Pipeline`)."""

    def __init__(self, deployment: Deployment):
        self.deployment = deployment
        #: The plugins' own declarations (before stored customisations).
        self.declared: dict[str, Pipeline] = {}

    @property
    def db(self):
        return self.deployment.db

    def _now(self) -> dt.datetime:
        clock = getattr(self.deployment, "clock", None)
        now = getattr(clock, "now", None)
        if callable(now):
            value = now()
            if isinstance(value, dt.datetime):
                return value if value.tzinfo else value.replace(tzinfo=UTC)
        return dt.datetime.now(UTC)

    # -- reading definitions ---------------------------------------------------------------

    def list(self, entity: str | None = None) -> list[Pipeline]:
        """Pipelines (of one entity type), plugin-declared first, then stored ones."""
        return [p for p in self.deployment.pipelines.values() if entity is None or p.entity == entity]

    def get(self, name: str) -> Pipeline:
        pipeline = self.deployment.pipelines.get(name) if isinstance(name, str) else None
        if pipeline is None:
            raise NotFound("pipeline", name)
        return pipeline

    def default_for(self, entity: str) -> Pipeline | None:
        """The pipeline a record gets when it names none: the ``pipeline`` field's default, else
        the entity's first pipeline."""
        found = self.list(entity)
        if not found:
            return None
        declared = self.deployment.registry.get(entity)
        field = declared.field("pipeline") if declared else None
        if field is not None and isinstance(field.default, str):
            for pipeline in found:
                if pipeline.name == field.default:
                    return pipeline
        return found[0]

    async def merge_stored(self, declared: dict[str, Pipeline], registry: Registry) -> dict[str, Pipeline]:
        """The plugins' pipelines with the stored ones added or laid over them (for ``_build``)."""
        self.declared = dict(declared)
        pipelines = dict(declared)
        for name, definition in await self.db.fetch(
            'SELECT "name", "definition" FROM crm_pipeline ORDER BY "created_at", "name"'
        ):
            try:
                stored = msgspec.json.decode(definition, type=Pipeline)
            except (msgspec.ValidationError, msgspec.DecodeError):
                continue
            if registry.get(stored.entity) is None:  # its entity's plugin is disabled: kept, unseen
                continue
            base = declared.get(name)
            if base is not None:
                stored = msgspec.structs.replace(stored, name=name, plugin=base.plugin, customised=True)
            else:
                stored = msgspec.structs.replace(stored, name=name, plugin="custom", customised=False)
            pipelines[name] = stored
        return pipelines

    # -- validating definitions --------------------------------------------------------------

    def _parse(self, data: Any) -> Pipeline:
        """A pipeline definition from input, every problem named by its field."""
        if not isinstance(data, dict):
            raise ValidationError([FieldError("body", "invalid", "expected a JSON object: name, entity, label, stages")])
        data = {k: v for k, v in data.items() if k not in READ_ONLY}  # as read: a GET's answer may be sent back
        errors: list[FieldError] = []
        known = {"name", "entity", "label", "stages"}
        for key in data:
            if key not in known:
                errors.append(FieldError(str(key), "unknown_field", f"unknown field; a pipeline has {', '.join(sorted(known))}"))
        name = data.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            errors.append(FieldError("name", "invalid", "a name of lower-case letters, digits and _ (at most 63), starting with a letter"))
        entity_name = data.get("entity", "deal")
        entity = self.deployment.registry.get(entity_name) if isinstance(entity_name, str) else None
        if entity is None:
            with_stage = sorted(e.name for e in self.deployment.registry if e.field("stage") is not None)
            errors.append(FieldError("entity", "invalid", f"not an entity type with a stage field; use one of: {', '.join(with_stage)}"))
        elif entity.field("stage") is None or entity.field("stage").type not in (FieldType.TEXT, FieldType.CHOICE):
            errors.append(FieldError("entity", "invalid", f"{entity.name} has no text field 'stage' to hold a stage"))
        label = data.get("label")
        if label is not None and label != "" and not _one_line(label):
            errors.append(FieldError("label", "invalid", f"one line of at most {MAX_LABEL} characters"))
        stages_data = data.get("stages")
        stages: list[Stage] = []
        if not isinstance(stages_data, list) or not stages_data:
            errors.append(FieldError("stages", "required", "a list of stages: {name, label, probability, kind}"))
            stages_data = []
        elif len(stages_data) > MAX_STAGES:
            errors.append(FieldError("stages", "invalid", f"at most {MAX_STAGES} stages"))
            stages_data = []
        seen: set[str] = set()
        for index, raw in enumerate(stages_data):
            where = f"stages[{index}]"
            if not isinstance(raw, dict):
                errors.append(FieldError(where, "invalid", "expected {name, label, probability, kind}"))
                continue
            bad = [k for k in raw if k not in ("name", "label", "probability", "kind")]
            for key in bad:
                errors.append(FieldError(f"{where}.{key}", "unknown_field", "a stage has name, label, probability, kind"))
            stage_name = raw.get("name")
            if not isinstance(stage_name, str) or not NAME.match(stage_name):
                errors.append(FieldError(f"{where}.name", "invalid", "a name of lower-case letters, digits and _, starting with a letter"))
                continue
            if stage_name in seen:
                errors.append(FieldError(f"{where}.name", "duplicate", f"stage {stage_name!r} appears twice"))
                continue
            seen.add(stage_name)
            kind = raw.get("kind", "open")
            if kind not in STAGE_KINDS:
                errors.append(FieldError(f"{where}.kind", "invalid", "open, won or lost"))
                continue
            probability = raw.get("probability", 100 if kind == "won" else 0)
            if isinstance(probability, bool) or not isinstance(probability, int) or not 0 <= probability <= 100:
                errors.append(FieldError(f"{where}.probability", "invalid", "a whole number of percent from 0 to 100"))
                continue
            stage_label = raw.get("label") or ""
            if stage_label and not _one_line(stage_label):
                errors.append(FieldError(f"{where}.label", "invalid", f"one line of at most {MAX_LABEL} characters"))
                continue
            stages.append(Stage(name=stage_name, label=stage_label, probability=probability, kind=kind))
        if stages_data and not errors and not any(s.kind == "open" for s in stages):
            errors.append(FieldError("stages", "invalid", "a pipeline needs at least one open stage"))
        if errors:
            raise ValidationError(errors)
        return Pipeline(name=name, entity=entity.name, label=label or "", stages=stages)

    @staticmethod
    def _check_manager(actor: Actor) -> None:
        if not actor.has("manage_schema"):
            raise Forbidden("managing pipelines needs the manage_schema permission")

    async def _records_in(self, pipeline: Pipeline) -> dict[str | None, int]:
        """Stage -> how many records (trashed ones too: they can come back) are in ``pipeline``."""
        entity = self.deployment.registry.get(pipeline.entity)
        if entity is None:
            return {}
        if entity.field("pipeline") is not None:
            where, params = '"pipeline" = ?', [pipeline.name]
            if self.default_for(entity.name) is pipeline:
                where = '("pipeline" = ? OR "pipeline" IS NULL)'
        elif len(self.list(entity.name)) <= 1:
            where, params = '"stage" IS NOT NULL', []
        else:
            return {}
        rows = await self.db.fetch(f'SELECT "stage", COUNT(*) FROM "{entity.table}" WHERE {where} GROUP BY "stage"', params)
        return {stage: count for stage, count in rows}

    def _check_entity_room(self, pipeline: Pipeline, errors: list[FieldError], replacing: str | None = None) -> None:
        entity = self.deployment.registry.get(pipeline.entity)
        others = [p for p in self.list(pipeline.entity) if p.name not in (pipeline.name, replacing)]
        if entity is not None and entity.field("pipeline") is None and others:
            errors.append(FieldError(
                "entity", "invalid",
                f"{entity.name} has no 'pipeline' field, so it has one pipeline ({others[0].name}); customise that one",
            ))

    # -- managing definitions ----------------------------------------------------------------

    async def create(self, data: Any, *, actor: Actor = SYSTEM) -> Pipeline:
        """Store a new pipeline (``{name, entity, label, stages}``); needs ``manage_schema``."""
        self._check_manager(actor)
        pipeline = self._parse(data)
        errors: list[FieldError] = []
        existing = self.deployment.pipelines.get(pipeline.name)
        if existing is not None:
            how = f"declared by plugin {existing.plugin}; customise it with an update" if existing.plugin != "custom" else "stored"
            errors.append(FieldError("name", "taken", f"pipeline {pipeline.name!r} already exists ({how})"))
        self._check_entity_room(pipeline, errors)
        if errors:
            raise ValidationError(errors)
        await self._store(pipeline, new=True)
        return self.get(pipeline.name)

    async def update(self, name: str, data: Any, *, actor: Actor = SYSTEM) -> Pipeline:
        """Change a pipeline: relabel it, rename it (a stored one not in use), give it a new list of
        stages (added, reordered, relabelled, removed; probabilities and kinds). Keys left out
        keep their value. A plugin-declared pipeline is customised (stored over the declaration).
        A stage that records are in cannot be removed; the entity cannot change while in use."""
        self._check_manager(actor)
        current = self.get(name)
        if not isinstance(data, dict):
            raise ValidationError([FieldError("body", "invalid", "expected a JSON object: label, stages, name, entity")])
        merged = {"name": current.name, "entity": current.entity, "label": current.label,
                  "stages": [msgspec.to_builtins(s) for s in current.stages], **data}
        pipeline = self._parse(merged)
        errors: list[FieldError] = []
        used = await self._records_in(current)
        in_use = sum(used.values())
        if pipeline.name != current.name:
            if current.plugin != "custom":
                errors.append(FieldError("name", "invalid", f"pipeline {name!r} is declared by plugin {current.plugin}; relabel it instead"))
            elif pipeline.name in self.deployment.pipelines:
                errors.append(FieldError("name", "taken", f"pipeline {pipeline.name!r} already exists"))
            elif in_use:
                errors.append(FieldError("name", "in_use", f"{in_use} records are in pipeline {name!r}; relabel it instead"))
        if pipeline.entity != current.entity:
            if in_use:
                errors.append(FieldError("entity", "in_use", f"{in_use} {current.entity} records are in this pipeline"))
            self._check_entity_room(pipeline, errors, replacing=current.name)
        kept = {s.name for s in pipeline.stages}
        stranded = {stage: n for stage, n in used.items() if stage is not None and stage not in kept
                    and stage in {s.name for s in current.stages}}
        if stranded and pipeline.entity == current.entity:
            listed = ", ".join(f"{stage} ({n})" for stage, n in sorted(stranded.items()))
            errors.append(FieldError("stages", "in_use", f"records are in stages this leaves out: {listed}; move them first"))
        if errors:
            raise ValidationError(errors)
        renamed = pipeline.name != current.name
        await self._store(pipeline, new=renamed, replacing=current.name if renamed else None)
        return self.get(pipeline.name)

    async def delete(self, name: str, *, actor: Actor = SYSTEM) -> Pipeline | None:
        """Delete a stored pipeline no record is in, or drop the customisation of a plugin-declared
        one (its declaration comes back: returned). A plugin's own declaration cannot be deleted."""
        self._check_manager(actor)
        current = self.get(name)
        if current.plugin != "custom" and not current.customised:
            raise ValidationError([FieldError(
                "name", "declared", f"pipeline {name!r} is declared by plugin {current.plugin}: it can be customised, not deleted",
            )])
        used = await self._records_in(current)
        declared = self.declared.get(name)
        if declared is None and sum(used.values()):
            listed = ", ".join(f"{stage} ({n})" for stage, n in sorted(used.items(), key=lambda i: str(i[0])))
            raise ValidationError([FieldError(
                "name", "in_use", f"{sum(used.values())} records are in pipeline {name!r} ({listed}); move them first",
            )])
        if declared is not None:
            missing = {s: n for s, n in used.items() if s is not None and s not in {st.name for st in declared.stages}}
            if missing:  # the declaration lacks stages records are in
                listed = ", ".join(f"{stage} ({n})" for stage, n in sorted(missing.items()))
                raise ValidationError([FieldError(
                    "name", "in_use", f"records are in stages plugin {declared.plugin} does not declare: {listed}; move them first",
                )])
        async with self.db.transaction():
            await self.db.execute('DELETE FROM crm_pipeline WHERE "name" = ?', (name,))
        await self.deployment._schema_changed()
        return self.deployment.pipelines.get(name)

    async def _store(self, pipeline: Pipeline, *, new: bool, replacing: str | None = None) -> None:
        """Write a definition (``new``: refused when another process stored the name meanwhile),
        in place of ``replacing`` (a rename) in the same transaction; every process picks it up."""
        definition = msgspec.json.encode(
            {"name": pipeline.name, "entity": pipeline.entity, "label": pipeline.label,
             "stages": [msgspec.to_builtins(s) for s in pipeline.stages]}
        ).decode()
        stamp = _stamp(self._now())
        insert = 'INSERT INTO crm_pipeline ("name", "entity", "definition", "created_at", "updated_at") VALUES (?, ?, ?, ?, ?)'
        if not new:
            insert += (' ON CONFLICT ("name") DO UPDATE SET "entity" = excluded."entity", '
                       '"definition" = excluded."definition", "updated_at" = excluded."updated_at"')
        try:
            async with self.db.transaction():
                if replacing is not None:
                    await self.db.execute('DELETE FROM crm_pipeline WHERE "name" = ?', (replacing,))
                await self.db.execute(insert, (pipeline.name, pipeline.entity, definition, stamp, stamp))
        except IntegrityError:
            raise ValidationError([FieldError("name", "taken", f"pipeline {pipeline.name!r} already exists")]) from None
        await self.deployment._schema_changed()

    # -- stage moves: called by the core plugin's crm_before_save ------------------------------

    def before_save(self, change: Change) -> None:
        """Check and complete the stage of records being created or updated (see the module)."""
        if change.action not in ("create", "update"):
            return
        entity = self.deployment.registry.get(change.entity)
        if entity is None or entity.field("stage") is None or not self.list(entity.name):
            return
        if change.batch is not None:
            befores = change.befores if change.action == "update" else None
            if change.action == "update" and befores is None:
                return
            moves, errors = [], []
            for index, values in enumerate(change.batch):
                before = befores[index] if befores is not None else None
                try:
                    move = self._check(entity, values, before)
                except ValidationError as exc:
                    errors.extend(FieldError(f"rows[{index}].{e.field}", e.code, e.message) for e in exc.errors)
                    continue
                if move is not None:
                    moves.append((index, *move))
            if errors:
                raise ValidationError(errors)
        else:
            move = self._check(entity, change.values, change.before if change.action == "update" else None)
            moves = [] if move is None else [(0, *move)]
        if moves:
            user_id = change.user_id

            async def record(record_ids: list[int]) -> None:
                stamp = _stamp(self._now())
                await self.db.executemany(
                    'INSERT INTO crm_stage_history ("entity", "record_id", "pipeline", "from_stage", "to_stage", '
                    '"user_id", "at") VALUES (?, ?, ?, ?, ?, ?, ?)',
                    [(entity.name, record_ids[index], pipeline, old, new, user_id, stamp)
                     for index, pipeline, old, new in moves],
                )

            change.after_write(record)

    def _check(
        self, entity: EntityType, values: dict[str, Any], before: dict[str, Any] | None,
    ) -> tuple[str, str | None, str] | None:
        """Validate and complete one record's values; the move to record, if any:
        ``(pipeline, from_stage, to_stage)``."""
        has_pipeline_field = entity.field("pipeline") is not None
        if before is not None and not any(k in values for k in ("stage", "pipeline", "lost_reason")):
            return None
        old_pipeline = (before.get("pipeline") if has_pipeline_field else None) if before is not None else None
        if has_pipeline_field and "pipeline" in values:
            name = values["pipeline"]
        elif before is not None and has_pipeline_field:
            name = old_pipeline
        else:
            name = None
        if name is None:
            pipeline = self.default_for(entity.name)
            if has_pipeline_field and (before is None or "pipeline" in values or old_pipeline is None):
                values["pipeline"] = pipeline.name
        else:
            pipeline = self.deployment.pipelines.get(name)
            if pipeline is None or pipeline.entity != entity.name:
                accepted = ", ".join(p.name for p in self.list(entity.name))
                raise ValidationError([FieldError("pipeline", "invalid", f"no {entity.name} pipeline {name!r}; pipelines: {accepted}")])
        old_stage = before.get("stage") if before is not None else None
        moved_pipeline = before is not None and has_pipeline_field and pipeline.name != (old_pipeline or self.default_for(entity.name).name)
        if "stage" in values:
            stage_name = values["stage"]
        elif before is None or moved_pipeline:
            stage_name = None
        else:
            stage_name = old_stage
        if stage_name is None:
            if before is not None and "stage" in values:
                raise ValidationError([FieldError("stage", "required", self._accepted(pipeline, "a record in a pipeline needs a stage"))])
            stage_name = pipeline.stages[0].name
            values["stage"] = stage_name
        stage = next((s for s in pipeline.stages if s.name == stage_name), None)
        changed = before is None or stage_name != old_stage or moved_pipeline
        if stage is None:
            if not changed:
                return None  # left as it was (the stage was since removed from the pipeline)
            raise ValidationError([FieldError("stage", "invalid", self._accepted(pipeline, f"{stage_name!r} is not a stage of pipeline {pipeline.name!r}"))])
        if stage.kind == "lost" and entity.field("lost_reason") is not None:
            reason = values["lost_reason"] if "lost_reason" in values else (before or {}).get("lost_reason")
            if reason is None or (isinstance(reason, str) and not reason.strip()):
                raise ValidationError([FieldError("lost_reason", "required", f"moving to the lost stage {stage.name!r} needs a lost_reason")])
        if not changed:
            return None
        if entity.field("probability") is not None and values.get("probability") is None:
            values["probability"] = stage.probability
        return pipeline.name, (None if before is None else old_stage), stage.name

    @staticmethod
    def _accepted(pipeline: Pipeline, message: str) -> str:
        return f"{message}; stages of {pipeline.name}: {', '.join(s.name for s in pipeline.stages)}"

    # -- reading history and summaries -------------------------------------------------------

    def _staged_entity(self, entity_name: str) -> EntityType:
        entity = self.deployment.registry.get(entity_name)
        if entity is None or entity.field("stage") is None or not self.list(entity.name):
            raise NotFound("entity type with pipelines", entity_name)
        return entity

    async def stage_history(
        self, entity_name: str, record_id: int, *, actor: Actor = SYSTEM, now: dt.datetime | None = None,
    ) -> dict[str, Any]:
        """A record's stage history (oldest first, each entry with ``left_at`` and ``seconds``),
        the time per stage and the current stage. NotFound unless ``actor`` may read the record."""
        entity = self._staged_entity(entity_name)
        record = await self.deployment.records.as_actor(actor).get(entity.name, record_id)
        if "stage" in actor.hidden_fields(entity.name):
            raise Forbidden(f"your role may not see the stage of {entity.label_plural.lower()}")
        rows = await self.db.fetch(
            'SELECT "id", "pipeline", "from_stage", "to_stage", "user_id", "at" FROM crm_stage_history '
            'WHERE "entity" = ? AND "record_id" = ? ORDER BY "at", "id"',
            (entity.name, record_id),
        )
        entries = [{"id": i, "pipeline": p, "from_stage": f, "to_stage": t, "user_id": u, "at": at}
                   for i, p, f, t, u, at in rows]
        closed = {(p.name, s.name) for p in self.list(entity.name) for s in p.stages if s.kind != "open"}
        totals = stage_durations(entries, now or self._now(), closed)
        last = entries[-1] if entries else None
        return {
            "entity": entity.name, "record_id": record_id, "pipeline": record.get("pipeline"),
            "stage": record.get("stage"),
            "since": last["at"] if last else None,
            "history": entries, "durations": totals,
        }

    async def summary(self, name: str, *, actor: Actor = SYSTEM, durations: bool = False) -> dict[str, Any]:
        """Records per stage of a pipeline with their amounts (per currency) and the weighted
        amount (amount x probability), counting only the records ``actor`` may read; with the
        conversion: how many of them ever reached each stage (``reached``), as a percentage of
        those with a history in the pipeline (``entered``). ``durations``: also the average time
        a stay in each stage lasted (stays that ended: ``average_seconds``, ``stays``), read from
        the stage history of those records."""
        pipeline = self.get(name)
        entity = self._staged_entity(pipeline.entity)
        scope = actor.scope(entity.name, "read")
        if scope is Scope.NONE:
            raise Forbidden(f"your role may not read {entity.label_plural.lower()}")
        hidden = actor.hidden_fields(entity.name)
        if "stage" in hidden:
            raise Forbidden(f"your role may not see the stage of {entity.label_plural.lower()}")
        amount = entity.field("amount")
        money = amount is not None and amount.type is FieldType.MONEY and "amount" not in hidden
        where = ['"deleted_at" IS NULL']
        params: list[Any] = []
        if entity.field("pipeline") is not None:
            if self.default_for(entity.name) is pipeline:
                where.append('("pipeline" = ? OR "pipeline" IS NULL)')
            else:
                where.append('"pipeline" = ?')
            params.append(pipeline.name)
        if not actor.system:
            limit = actor.scope_sql(scope)
            if limit is not None:
                where.append(limit[0])
                params += limit[1]
        columns = '"stage", "amount", "amount__currency"' if money else '"stage", NULL, NULL'
        counts: dict[str | None, int] = {}
        sums: dict[str | None, dict[str, Decimal]] = {}
        for stage, value, currency in await self.db.fetch(
            f'SELECT {columns} FROM "{entity.table}" WHERE {" AND ".join(where)}', params,
        ):
            counts[stage] = counts.get(stage, 0) + 1
            if value is not None:
                per = sums.setdefault(stage, {})
                per[currency] = per.get(currency, Decimal(0)) + Decimal(str(value))

        # Conversion: of the records now in the pipeline (and readable), how many ever entered each stage.
        inside = f'SELECT "id" FROM "{entity.table}" WHERE {" AND ".join(where)}'
        reached = dict(await self.db.fetch(
            'SELECT "to_stage", COUNT(DISTINCT "record_id") FROM crm_stage_history WHERE "entity" = ? AND "pipeline" = ? '
            f'AND "record_id" IN ({inside}) GROUP BY "to_stage"', [entity.name, pipeline.name, *params],
        ))
        entered = await self.db.fetchval(
            'SELECT COUNT(DISTINCT "record_id") FROM crm_stage_history WHERE "entity" = ? AND "pipeline" = ? '
            f'AND "record_id" IN ({inside})', [entity.name, pipeline.name, *params],
        ) or 0

        stays: dict[str, list[float]] = {}
        if durations:
            previous: tuple | None = None
            for record_id, in_pipeline, stage_name, at in await self.db.fetch(
                'SELECT "record_id", "pipeline", "to_stage", "at" FROM crm_stage_history WHERE "entity" = ? '
                f'AND "record_id" IN ({inside}) ORDER BY "record_id", "at", "id"', [entity.name, *params],
            ):
                if previous is not None and previous[0] == record_id and previous[1] == pipeline.name:
                    stays.setdefault(previous[2], []).append((_parse_time(at) - _parse_time(previous[3])).total_seconds())
                previous = (record_id, in_pipeline, stage_name, at)

        def amounts(values: dict[str, Decimal], factor: Decimal = Decimal(1)) -> list[dict[str, str]]:
            return [{"amount": str((v * factor).quantize(Decimal("0.01"))), "currency": c} for c, v in sorted(values.items())]

        stages, totals, expected = [], {}, {}
        for stage in pipeline.stages:
            values = sums.get(stage.name, {})
            factor = Decimal(stage.probability) / 100
            stages.append({
                "name": stage.name, "label": stage.label, "kind": stage.kind, "probability": stage.probability,
                "count": counts.get(stage.name, 0),
                "reached": reached.get(stage.name, 0),
                "conversion": round(100 * reached.get(stage.name, 0) / entered, 1) if entered else None,
                "amount": amounts(values) if money else None,
                "weighted_amount": amounts(values, factor) if money else None,
            })
            if durations:
                ended = stays.get(stage.name, [])
                stages[-1]["stays"] = len(ended)
                stages[-1]["average_seconds"] = sum(ended) / len(ended) if ended else None
            for currency, value in values.items():
                totals[currency] = totals.get(currency, Decimal(0)) + value
                if stage.kind == "open":
                    expected[currency] = expected.get(currency, Decimal(0)) + value * factor
        known = {s.name for s in pipeline.stages}
        return {
            "pipeline": pipeline.name, "entity": entity.name, "label": pipeline.label, "stages": stages,
            "count": sum(counts.values()),
            "entered": entered,
            "other_stages": sum(n for s, n in counts.items() if s not in known),
            "amount": amounts(totals) if money else None,
            "expected_amount": amounts(expected) if money else None,
        }
