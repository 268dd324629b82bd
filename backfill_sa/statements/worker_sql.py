"""The worker's SQL, rendered from the Core builders: do not edit by hand.

Regenerate with ``python -m backfill_sa.statements.render`` after changing
:mod:`backfill_sa.statements.jobs_runtime` or :mod:`backfill_sa.statements.workers`.
"""

# ruff: noqa: E501
from __future__ import annotations

from types import MappingProxyType

from backfill_sa.statements.rendered import RenderedSql

__all__ = [
    "job_cancel_many",
    "job_claim_batch",
    "job_complete_and_claim",
    "job_complete_many",
    "job_dead_letter_many",
    "job_find_cancel_requested",
    "job_find_stale",
    "job_promote_due",
    "job_prune_finished",
    "job_release_orphans",
    "job_retry_many",
    "leader_elect",
    "leader_resign",
    "queue_settings",
    "schema_probe",
    "worker_delete",
    "worker_delete_expired",
    "worker_heartbeat",
]

job_cancel_many = RenderedSql(
    "job_cancel_many",
    (
        "WITH kept AS \n"
        "(UPDATE __backfill_schema__.jobs SET state='cancelled', last_error=coalesce(CAST(d.error AS JSONB), __backfill_schema__.jobs.last_error), updated_at=now(), result=CAST(d.result AS JSONB), finished_at=now(), prune_at=(now() + d.keep_ms * interval '1 millisecond') FROM unnest($3::BIGINT[], $4::INTEGER[], $5::BIGINT[], $6::TEXT[], $7::TEXT[]) AS d(id, lease, keep_ms, result, error) WHERE __backfill_schema__.jobs.id = d.id AND __backfill_schema__.jobs.lease = d.lease AND __backfill_schema__.jobs.state IS NOT DISTINCT FROM 'running' AND d.keep_ms > $8::BIGINT RETURNING __backfill_schema__.jobs.id, __backfill_schema__.jobs.notify_finished), \n"
        "dropped AS \n"
        "(DELETE FROM __backfill_schema__.jobs USING unnest($3::BIGINT[], $4::INTEGER[], $5::BIGINT[], $6::TEXT[], $7::TEXT[]) AS d(id, lease, keep_ms, result, error) WHERE __backfill_schema__.jobs.id = d.id AND __backfill_schema__.jobs.lease = d.lease AND __backfill_schema__.jobs.state IS NOT DISTINCT FROM 'running' AND d.keep_ms <= $9::BIGINT RETURNING __backfill_schema__.jobs.id, __backfill_schema__.jobs.notify_finished), \n"
        "finished AS \n"
        "(SELECT kept.id AS id, kept.notify_finished AS notify_finished \n"
        "FROM kept UNION ALL SELECT dropped.id AS id, dropped.notify_finished AS notify_finished \n"
        "FROM dropped), \n"
        "notified AS \n"
        "(SELECT pg_notify($1, CASE WHEN (count(*) <= $2::INTEGER) THEN string_agg(CAST(watched.id AS TEXT), ',') ELSE '' END) AS sent \n"
        "FROM (SELECT finished.id AS id \n"
        "FROM finished \n"
        "WHERE finished.notify_finished) AS watched \n"
        "HAVING count(*) > $10::INTEGER)\n"
        " SELECT finished.id, (SELECT count(*) AS count_1 \n"
        "FROM notified) AS notified \n"
        "FROM finished"
    ),
    (
        "done_channel",
        "count_2",
        "ids",
        "leases",
        "keeps_ms",
        "results",
        "errors",
        "keep_ms_1",
        "keep_ms_2",
        "count_3",
    ),
    MappingProxyType({"count_2": 300, "keep_ms_1": 0, "keep_ms_2": 0, "count_3": 0}),
)

job_claim_batch = RenderedSql(
    "job_claim_batch",
    (
        "WITH candidates AS \n"
        "(SELECT __backfill_schema__.jobs.id AS id \n"
        "FROM __backfill_schema__.jobs \n"
        "WHERE __backfill_schema__.jobs.state = 'available' AND __backfill_schema__.jobs.queue = $4::VARCHAR AND __backfill_schema__.jobs.run_at <= now() AND NOT (EXISTS (SELECT * \n"
        "FROM __backfill_schema__.queues \n"
        "WHERE __backfill_schema__.queues.name = $4::VARCHAR AND __backfill_schema__.queues.paused)) ORDER BY __backfill_schema__.jobs.priority, __backfill_schema__.jobs.run_at, __backfill_schema__.jobs.id \n"
        " LIMIT __[POSTCOMPILE_limit] FOR UPDATE SKIP LOCKED)\n"
        " UPDATE __backfill_schema__.jobs SET state='running', attempts=(__backfill_schema__.jobs.attempts + $1::SMALLINT), locked_by=$2::VARCHAR, locked_at=now(), lease=(__backfill_schema__.jobs.lease + $3::INTEGER), updated_at=now() WHERE __backfill_schema__.jobs.id = ANY (array((SELECT candidates.id \n"
        "FROM candidates))) RETURNING __backfill_schema__.jobs.id, __backfill_schema__.jobs.task, __backfill_schema__.jobs.queue, __backfill_schema__.jobs.payload, __backfill_schema__.jobs.priority, __backfill_schema__.jobs.run_at, __backfill_schema__.jobs.attempts, __backfill_schema__.jobs.max_attempts, __backfill_schema__.jobs.lease, __backfill_schema__.jobs.retry_policy, nullif(__backfill_schema__.jobs.metadata, '{}'::jsonb) AS metadata, __backfill_schema__.jobs.created_at, __backfill_schema__.jobs.locked_at"
    ),
    (
        "attempts_1",
        "worker_id",
        "lease_1",
        "claim_queue",
    ),
    MappingProxyType({"attempts_1": 1, "lease_1": 1}),
    inline=("limit",),
)

job_complete_and_claim = RenderedSql(
    "job_complete_and_claim",
    (
        "WITH candidates AS \n"
        "(SELECT __backfill_schema__.jobs.id AS id \n"
        "FROM __backfill_schema__.jobs \n"
        "WHERE __backfill_schema__.jobs.state = 'available' AND __backfill_schema__.jobs.queue = $4::VARCHAR AND __backfill_schema__.jobs.run_at <= now() AND NOT (EXISTS (SELECT * \n"
        "FROM __backfill_schema__.queues \n"
        "WHERE __backfill_schema__.queues.name = $4::VARCHAR AND __backfill_schema__.queues.paused)) ORDER BY __backfill_schema__.jobs.priority, __backfill_schema__.jobs.run_at, __backfill_schema__.jobs.id \n"
        " LIMIT __[POSTCOMPILE_limit] FOR UPDATE SKIP LOCKED), \n"
        "claimed AS \n"
        "(UPDATE __backfill_schema__.jobs SET state='running', attempts=(__backfill_schema__.jobs.attempts + $1::SMALLINT), locked_by=$2::VARCHAR, locked_at=now(), lease=(__backfill_schema__.jobs.lease + $3::INTEGER), updated_at=now() WHERE __backfill_schema__.jobs.id = ANY (array((SELECT candidates.id \n"
        "FROM candidates))) RETURNING __backfill_schema__.jobs.id, __backfill_schema__.jobs.task, __backfill_schema__.jobs.queue, __backfill_schema__.jobs.payload, __backfill_schema__.jobs.priority, __backfill_schema__.jobs.run_at, __backfill_schema__.jobs.attempts, __backfill_schema__.jobs.max_attempts, __backfill_schema__.jobs.lease, __backfill_schema__.jobs.retry_policy, nullif(__backfill_schema__.jobs.metadata, '{}'::jsonb) AS metadata, __backfill_schema__.jobs.created_at, __backfill_schema__.jobs.locked_at), \n"
        "done_kept AS \n"
        "(UPDATE __backfill_schema__.jobs SET state='completed', last_error=coalesce(CAST(d.error AS JSONB), __backfill_schema__.jobs.last_error), updated_at=now(), result=CAST(d.result AS JSONB), finished_at=now(), prune_at=(now() + d.keep_ms * interval '1 millisecond') FROM unnest($5::BIGINT[], $6::INTEGER[], $7::BIGINT[], $8::TEXT[], $9::TEXT[]) AS d(id, lease, keep_ms, result, error) WHERE __backfill_schema__.jobs.id = d.id AND __backfill_schema__.jobs.lease = d.lease AND __backfill_schema__.jobs.state IS NOT DISTINCT FROM 'running' AND d.keep_ms > $10::BIGINT RETURNING __backfill_schema__.jobs.id, __backfill_schema__.jobs.notify_finished), \n"
        "done_dropped AS \n"
        "(DELETE FROM __backfill_schema__.jobs USING unnest($5::BIGINT[], $6::INTEGER[], $7::BIGINT[], $8::TEXT[], $9::TEXT[]) AS d(id, lease, keep_ms, result, error) WHERE __backfill_schema__.jobs.id = d.id AND __backfill_schema__.jobs.lease = d.lease AND __backfill_schema__.jobs.state IS NOT DISTINCT FROM 'running' AND d.keep_ms <= $11::BIGINT RETURNING __backfill_schema__.jobs.id, __backfill_schema__.jobs.notify_finished), \n"
        "done_finished AS \n"
        "(SELECT done_kept.id AS id, done_kept.notify_finished AS notify_finished \n"
        "FROM done_kept UNION ALL SELECT done_dropped.id AS id, done_dropped.notify_finished AS notify_finished \n"
        "FROM done_dropped), \n"
        "done_notified AS \n"
        "(SELECT pg_notify($12, CASE WHEN (count(*) <= $13::INTEGER) THEN string_agg(CAST(done_watched.id AS TEXT), ',') ELSE '' END) AS sent \n"
        "FROM (SELECT done_finished.id AS id \n"
        "FROM done_finished \n"
        "WHERE done_finished.notify_finished) AS done_watched \n"
        "HAVING count(*) > $14::INTEGER)\n"
        " SELECT claimed.id, claimed.task, claimed.queue, claimed.payload, claimed.priority, claimed.run_at, claimed.attempts, claimed.max_attempts, claimed.lease, claimed.retry_policy, claimed.metadata, claimed.created_at, claimed.locked_at, CAST(NULL AS BIGINT) AS done_id \n"
        "FROM claimed UNION ALL SELECT CAST(NULL AS BIGINT) AS id, CAST(NULL AS TEXT) AS task, CAST(NULL AS TEXT) AS queue, CAST(NULL AS JSONB) AS payload, CAST(NULL AS SMALLINT) AS priority, CAST(NULL AS TIMESTAMP WITH TIME ZONE) AS run_at, CAST(NULL AS SMALLINT) AS attempts, CAST(NULL AS SMALLINT) AS max_attempts, CAST(NULL AS INTEGER) AS lease, CAST(NULL AS JSONB) AS retry_policy, CAST(NULL AS JSONB) AS metadata, CAST(NULL AS TIMESTAMP WITH TIME ZONE) AS created_at, CAST(NULL AS TIMESTAMP WITH TIME ZONE) AS locked_at, done_finished.id AS done_id \n"
        "FROM done_finished \n"
        "WHERE (SELECT count(*) AS count_1 \n"
        "FROM done_notified) >= $15::INTEGER"
    ),
    (
        "attempts_1",
        "worker_id",
        "lease_1",
        "claim_queue",
        "ids",
        "leases",
        "keeps_ms",
        "results",
        "errors",
        "keep_ms_1",
        "keep_ms_2",
        "done_channel",
        "count_2",
        "count_3",
        "param_1",
    ),
    MappingProxyType(
        {
            "attempts_1": 1,
            "lease_1": 1,
            "keep_ms_1": 0,
            "keep_ms_2": 0,
            "count_2": 300,
            "count_3": 0,
            "param_1": 0,
        }
    ),
    inline=("limit",),
)

job_complete_many = RenderedSql(
    "job_complete_many",
    (
        "WITH kept AS \n"
        "(UPDATE __backfill_schema__.jobs SET state='completed', last_error=coalesce(CAST(d.error AS JSONB), __backfill_schema__.jobs.last_error), updated_at=now(), result=CAST(d.result AS JSONB), finished_at=now(), prune_at=(now() + d.keep_ms * interval '1 millisecond') FROM unnest($3::BIGINT[], $4::INTEGER[], $5::BIGINT[], $6::TEXT[], $7::TEXT[]) AS d(id, lease, keep_ms, result, error) WHERE __backfill_schema__.jobs.id = d.id AND __backfill_schema__.jobs.lease = d.lease AND __backfill_schema__.jobs.state IS NOT DISTINCT FROM 'running' AND d.keep_ms > $8::BIGINT RETURNING __backfill_schema__.jobs.id, __backfill_schema__.jobs.notify_finished), \n"
        "dropped AS \n"
        "(DELETE FROM __backfill_schema__.jobs USING unnest($3::BIGINT[], $4::INTEGER[], $5::BIGINT[], $6::TEXT[], $7::TEXT[]) AS d(id, lease, keep_ms, result, error) WHERE __backfill_schema__.jobs.id = d.id AND __backfill_schema__.jobs.lease = d.lease AND __backfill_schema__.jobs.state IS NOT DISTINCT FROM 'running' AND d.keep_ms <= $9::BIGINT RETURNING __backfill_schema__.jobs.id, __backfill_schema__.jobs.notify_finished), \n"
        "finished AS \n"
        "(SELECT kept.id AS id, kept.notify_finished AS notify_finished \n"
        "FROM kept UNION ALL SELECT dropped.id AS id, dropped.notify_finished AS notify_finished \n"
        "FROM dropped), \n"
        "notified AS \n"
        "(SELECT pg_notify($1, CASE WHEN (count(*) <= $2::INTEGER) THEN string_agg(CAST(watched.id AS TEXT), ',') ELSE '' END) AS sent \n"
        "FROM (SELECT finished.id AS id \n"
        "FROM finished \n"
        "WHERE finished.notify_finished) AS watched \n"
        "HAVING count(*) > $10::INTEGER)\n"
        " SELECT finished.id, (SELECT count(*) AS count_1 \n"
        "FROM notified) AS notified \n"
        "FROM finished"
    ),
    (
        "done_channel",
        "count_2",
        "ids",
        "leases",
        "keeps_ms",
        "results",
        "errors",
        "keep_ms_1",
        "keep_ms_2",
        "count_3",
    ),
    MappingProxyType({"count_2": 300, "keep_ms_1": 0, "keep_ms_2": 0, "count_3": 0}),
)

job_dead_letter_many = RenderedSql(
    "job_dead_letter_many",
    (
        "WITH moved AS \n"
        "(DELETE FROM __backfill_schema__.jobs USING unnest($4::BIGINT[], $5::INTEGER[], $6::TEXT[], $7::TEXT[]) AS d(id, lease, reason, error) WHERE __backfill_schema__.jobs.id = d.id AND __backfill_schema__.jobs.lease = d.lease AND __backfill_schema__.jobs.state IS NOT DISTINCT FROM 'running' RETURNING __backfill_schema__.jobs.id, __backfill_schema__.jobs.task, __backfill_schema__.jobs.queue, __backfill_schema__.jobs.payload, __backfill_schema__.jobs.priority, __backfill_schema__.jobs.run_at, __backfill_schema__.jobs.state, __backfill_schema__.jobs.attempts, __backfill_schema__.jobs.max_attempts, __backfill_schema__.jobs.job_key, __backfill_schema__.jobs.locked_by, __backfill_schema__.jobs.locked_at, __backfill_schema__.jobs.lease, __backfill_schema__.jobs.last_error, __backfill_schema__.jobs.retry_policy, __backfill_schema__.jobs.metadata, __backfill_schema__.jobs.created_at, __backfill_schema__.jobs.updated_at, __backfill_schema__.jobs.result, __backfill_schema__.jobs.finished_at, __backfill_schema__.jobs.prune_at, __backfill_schema__.jobs.cancel_requested_at, __backfill_schema__.jobs.notify_finished, d.reason AS reason, d.error AS error)\n"
        " INSERT INTO __backfill_schema__.dead_letter_jobs (original_job_id, task, queue, payload, priority, job_key, max_attempts, failure_reason, failure_count, last_error, retry_policy, metadata, original_created_at, original_run_at, requeued_count, last_requeued_at, notes) SELECT moved.id, moved.task, moved.queue, moved.payload, moved.priority, moved.job_key, moved.max_attempts, moved.reason, moved.attempts, coalesce(CAST(moved.error AS JSONB), moved.last_error) AS coalesce_1, moved.retry_policy, moved.metadata, moved.created_at, moved.run_at, coalesce(CAST(jsonb_path_query_first(moved.metadata, '$.backfill.requeued_count ? (@.type() == \"number\" && @ >= 0 && @ <= 2147483647)', '{}', true) AS INTEGER), $1::INTEGER) AS coalesce_2, CAST(jsonb_path_query_first(moved.metadata, '$.backfill.last_requeued_at.datetime()', '{}', true) #>> '{}' AS TIMESTAMP WITH TIME ZONE) AS anon_1, (moved.metadata[$2::TEXT]) ->> $3::TEXT AS anon_2 \n"
        "FROM moved RETURNING __backfill_schema__.dead_letter_jobs.original_job_id, __backfill_schema__.dead_letter_jobs.id"
    ),
    (
        "coalesce_3",
        "metadata_1",
        "param_1",
        "ids",
        "leases",
        "reasons",
        "errors",
    ),
    MappingProxyType({"coalesce_3": 0, "metadata_1": "backfill", "param_1": "dead_letter_notes"}),
)

job_find_cancel_requested = RenderedSql(
    "job_find_cancel_requested",
    (
        "SELECT __backfill_schema__.jobs.id \n"
        "FROM __backfill_schema__.jobs \n"
        "WHERE __backfill_schema__.jobs.state = 'running' AND __backfill_schema__.jobs.locked_by = $1::VARCHAR AND __backfill_schema__.jobs.cancel_requested_at IS NOT NULL"
    ),
    ("worker_id",),
)

job_find_stale = RenderedSql(
    "job_find_stale",
    (
        "SELECT __backfill_schema__.jobs.id, __backfill_schema__.jobs.lease, __backfill_schema__.jobs.attempts, __backfill_schema__.jobs.max_attempts, __backfill_schema__.jobs.locked_by, __backfill_schema__.jobs.task, __backfill_schema__.jobs.queue \n"
        "FROM __backfill_schema__.jobs \n"
        "WHERE __backfill_schema__.jobs.state = 'running' AND (NOT (EXISTS (SELECT * \n"
        "FROM __backfill_schema__.workers \n"
        "WHERE __backfill_schema__.workers.id = __backfill_schema__.jobs.locked_by AND __backfill_schema__.workers.last_heartbeat_at > now() - $1::BIGINT * interval '1 millisecond')) OR __backfill_schema__.jobs.locked_at < now() - $2::BIGINT * interval '1 millisecond') ORDER BY __backfill_schema__.jobs.id \n"
        " LIMIT $3::INTEGER FOR UPDATE SKIP LOCKED"
    ),
    (
        "heartbeat_expiry_ms",
        "stale_job_lock_ms",
        "limit",
    ),
)

job_promote_due = RenderedSql(
    "job_promote_due",
    (
        "WITH due AS \n"
        "(SELECT __backfill_schema__.jobs.id AS id \n"
        "FROM __backfill_schema__.jobs \n"
        "WHERE __backfill_schema__.jobs.state = 'scheduled' AND __backfill_schema__.jobs.run_at <= now() ORDER BY __backfill_schema__.jobs.run_at \n"
        " LIMIT __[POSTCOMPILE_limit] FOR UPDATE SKIP LOCKED), \n"
        "promoted AS \n"
        "(UPDATE __backfill_schema__.jobs SET state='available', updated_at=now() WHERE __backfill_schema__.jobs.id = ANY (array((SELECT due.id \n"
        "FROM due))) RETURNING __backfill_schema__.jobs.queue)\n"
        " SELECT q.queue, pg_notify($1, q.queue) AS pg_notify_1 \n"
        "FROM (SELECT DISTINCT promoted.queue AS queue \n"
        "FROM promoted) AS q"
    ),
    ("channel",),
    inline=("limit",),
)

job_prune_finished = RenderedSql(
    "job_prune_finished",
    (
        "WITH doomed AS \n"
        "(SELECT __backfill_schema__.jobs.id AS id \n"
        "FROM __backfill_schema__.jobs \n"
        "WHERE __backfill_schema__.jobs.state IN ('completed', 'cancelled') AND __backfill_schema__.jobs.prune_at <= now() ORDER BY __backfill_schema__.jobs.prune_at \n"
        " LIMIT __[POSTCOMPILE_limit] FOR UPDATE SKIP LOCKED), \n"
        "pruned AS \n"
        "(DELETE FROM __backfill_schema__.jobs WHERE __backfill_schema__.jobs.id = ANY (array((SELECT doomed.id \n"
        "FROM doomed))) RETURNING __backfill_schema__.jobs.id)\n"
        " SELECT count(*) AS pruned \n"
        "FROM pruned"
    ),
    (),
    inline=("limit",),
)

job_release_orphans = RenderedSql(
    "job_release_orphans",
    (
        "UPDATE __backfill_schema__.jobs SET state='available', attempts=greatest(__backfill_schema__.jobs.attempts - $1::SMALLINT, $2::INTEGER), locked_by=$3::VARCHAR, locked_at=$4::TIMESTAMP WITH TIME ZONE, updated_at=now() WHERE __backfill_schema__.jobs.state = 'running' AND __backfill_schema__.jobs.locked_by = $5::VARCHAR AND __backfill_schema__.jobs.queue = $6::VARCHAR AND __backfill_schema__.jobs.id != ALL ($7::BIGINT[]) RETURNING __backfill_schema__.jobs.id"
    ),
    (
        "attempts_1",
        "greatest_1",
        "locked_by",
        "locked_at",
        "worker_id",
        "claim_queue",
        "known_ids",
    ),
    MappingProxyType({"attempts_1": 1, "greatest_1": 0, "locked_by": None, "locked_at": None}),
)

job_retry_many = RenderedSql(
    "job_retry_many",
    (
        "UPDATE __backfill_schema__.jobs SET run_at=(now() + d.delay_ms * interval '1 millisecond'), state=CASE WHEN (__backfill_schema__.jobs.cancel_requested_at IS NOT NULL) THEN 'cancelled' WHEN (d.delay_ms > $1::BIGINT) THEN 'scheduled' ELSE 'available' END, attempts=greatest(__backfill_schema__.jobs.attempts - d.refund, $2::INTEGER), locked_by=$3::VARCHAR, locked_at=$4::TIMESTAMP WITH TIME ZONE, last_error=coalesce(CAST(d.error AS JSONB), __backfill_schema__.jobs.last_error), updated_at=now(), finished_at=CASE WHEN (__backfill_schema__.jobs.cancel_requested_at IS NOT NULL) THEN now() ELSE NULL END, prune_at=CASE WHEN (__backfill_schema__.jobs.cancel_requested_at IS NOT NULL) THEN now() + d.keep_ms * interval '1 millisecond' ELSE NULL END FROM unnest($5::BIGINT[], $6::INTEGER[], $7::BIGINT[], $8::TEXT[], $9::INTEGER[], $10::BIGINT[]) AS d(id, lease, delay_ms, error, refund, keep_ms) WHERE __backfill_schema__.jobs.id = d.id AND __backfill_schema__.jobs.lease = d.lease AND __backfill_schema__.jobs.state IS NOT DISTINCT FROM 'running' RETURNING __backfill_schema__.jobs.id, __backfill_schema__.jobs.queue, __backfill_schema__.jobs.run_at, __backfill_schema__.jobs.state"
    ),
    (
        "delay_ms_1",
        "greatest_1",
        "locked_by",
        "locked_at",
        "ids",
        "leases",
        "delays_ms",
        "errors",
        "refunds",
        "keeps_ms",
    ),
    MappingProxyType({"delay_ms_1": 0, "greatest_1": 0, "locked_by": None, "locked_at": None}),
)

leader_elect = RenderedSql(
    "leader_elect",
    (
        "INSERT INTO __backfill_schema__.leader (name, worker_id, expires_at) VALUES ($1::VARCHAR, $2::VARCHAR, (now() + $3::BIGINT * interval '1 millisecond')) ON CONFLICT (name) DO UPDATE SET worker_id = excluded.worker_id, elected_at = CASE WHEN (__backfill_schema__.leader.worker_id = excluded.worker_id) THEN __backfill_schema__.leader.elected_at ELSE now() END, expires_at = excluded.expires_at WHERE __backfill_schema__.leader.worker_id = excluded.worker_id OR __backfill_schema__.leader.expires_at < now() RETURNING __backfill_schema__.leader.worker_id"
    ),
    (
        "name",
        "worker_id",
        "ttl_ms",
    ),
)

leader_resign = RenderedSql(
    "leader_resign",
    (
        "DELETE FROM __backfill_schema__.leader WHERE __backfill_schema__.leader.name = $1::VARCHAR AND __backfill_schema__.leader.worker_id = $2::VARCHAR"
    ),
    (
        "name",
        "worker_id",
    ),
)

queue_settings = RenderedSql(
    "queue_settings",
    (
        "SELECT __backfill_schema__.queues.name, __backfill_schema__.queues.paused, __backfill_schema__.queues.concurrency \n"
        "FROM __backfill_schema__.queues"
    ),
    (),
)

schema_probe = RenderedSql(
    "schema_probe",
    ("SELECT CAST(to_regclass($1::VARCHAR) AS TEXT) AS to_regclass_1"),
    ("qualified_name",),
)

worker_delete = RenderedSql(
    "worker_delete",
    ("DELETE FROM __backfill_schema__.workers WHERE __backfill_schema__.workers.id = $1::VARCHAR"),
    ("worker_id",),
)

worker_delete_expired = RenderedSql(
    "worker_delete_expired",
    (
        "DELETE FROM __backfill_schema__.workers WHERE __backfill_schema__.workers.last_heartbeat_at < now() - $1::BIGINT * interval '1 millisecond' RETURNING __backfill_schema__.workers.id"
    ),
    ("expiry_ms",),
)

worker_heartbeat = RenderedSql(
    "worker_heartbeat",
    (
        "INSERT INTO __backfill_schema__.workers (id, hostname, pid, queues) VALUES ($1::VARCHAR, $2::VARCHAR, $3::INTEGER, $4::JSONB) ON CONFLICT (id) DO UPDATE SET last_heartbeat_at = now()"
    ),
    (
        "worker_id",
        "hostname",
        "pid",
        "queues",
    ),
)
