-- Group commit's append (infra/group_commit.py): a batch of commands' events
-- and idempotency records in one statement, so the event table's lock is held
-- for the server's own work, never across a round trip to the API process.
-- Each command runs in a block of its own (a subtransaction): a unique
-- violation (a version or id taken, an idempotency key used) undoes that
-- command alone and is reported as its failure. It takes the same lock the
-- eventsourcing library takes, with the caller's lock timeout (the library's),
-- so positions are handed out in commit order.
CREATE FUNCTION chronik_append_commands(
    p_originator_ids uuid[],
    p_originator_versions bigint[],
    p_topics text[],
    p_states bytea[],
    p_event_commands integer[],
    p_idempotency_teams uuid[],
    p_idempotency_keys text[],
    p_idempotency_fingerprints text[],
    p_idempotency_statuses integer[],
    p_idempotency_responses jsonb[],
    p_idempotency_commands integer[],
    p_command_count integer,
    p_lock_timeout_seconds integer
) RETURNS TABLE (command integer, positions bigint[], failure text)
LANGUAGE plpgsql AS $$
DECLARE
    c integer;
    ids bigint[];
BEGIN
    PERFORM set_config('lock_timeout', p_lock_timeout_seconds || 's', true);
    LOCK TABLE chronik_events IN EXCLUSIVE MODE;
    NOTIFY chronik_events;
    FOR c IN 1..p_command_count LOOP
        BEGIN
            WITH inserted AS (
                INSERT INTO chronik_events (originator_id, originator_version, topic, state)
                SELECT e.oid, e.version, e.topic, e.state
                FROM unnest(p_originator_ids, p_originator_versions, p_topics, p_states,
                            p_event_commands) WITH ORDINALITY AS e(oid, version, topic, state, k, n)
                WHERE e.k = c
                ORDER BY e.n
                RETURNING notification_id
            )
            SELECT array_agg(inserted.notification_id ORDER BY inserted.notification_id)
            INTO ids FROM inserted;
            INSERT INTO idempotency_records
                (team_id, idempotency_key, request_fingerprint, status_code, response)
            SELECT i.team, i.key, i.fingerprint, i.status,
                   i.response || jsonb_build_object('position', ids[cardinality(ids)])
            FROM unnest(p_idempotency_teams, p_idempotency_keys, p_idempotency_fingerprints,
                        p_idempotency_statuses, p_idempotency_responses, p_idempotency_commands)
                 AS i(team, key, fingerprint, status, response, k)
            WHERE i.k = c;
            command := c;
            positions := ids;
            failure := NULL;
        EXCEPTION WHEN unique_violation THEN
            command := c;
            positions := NULL;
            failure := SQLERRM;
        END;
        RETURN NEXT;
    END LOOP;
END
$$;
