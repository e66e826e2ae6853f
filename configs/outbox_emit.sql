-- outbox_emit: the table-free outbox.
--
-- Instead of inserting into an outbox table, a service calls
--
--     SELECT outbox_emit('Order', order_id::text, 'OrderCreated', '{"total": 42}'::jsonb);
--
-- in the same transaction as its business writes. The event is written to the
-- WAL as a transactional logical decoding message, so it is decoded only if
-- that transaction commits, and in commit order with everything else, exactly
-- like an outbox row. Nothing is stored in a table: no table to vacuum, prune
-- or bloat.
--
-- The relay picks these messages up when relay.yaml lists the prefix:
--
--     messages:
--       - prefix: outbox                         # topic defaults to outbox.event.${routedByValue}
--
-- and publishes each as a record with topic from aggregatetype, key
-- aggregateid, value payload (jsonb text; a JSON string is published as its
-- contents, SQL NULL as a null value), and headers id, type and every key of
-- headers. Requires PostgreSQL 13+ (gen_random_uuid in core) and
-- wal_level = logical.
--
-- Load with: psql -d app -f configs/outbox_emit.sql
-- Re-running it replaces the function, so it is safe in migrations.

CREATE OR REPLACE FUNCTION outbox_emit(
    aggregatetype text,
    aggregateid   text,
    type          text,
    payload       jsonb,
    id            uuid  DEFAULT gen_random_uuid(),
    headers       jsonb DEFAULT '{}'::jsonb,
    prefix        text  DEFAULT 'outbox'
) RETURNS uuid
LANGUAGE plpgsql
VOLATILE
AS $fn$
BEGIN
    IF aggregatetype IS NULL OR id IS NULL THEN
        -- The relay stops on an envelope it cannot route; refuse it here,
        -- where the caller's transaction can still handle the error.
        RAISE EXCEPTION 'outbox_emit: aggregatetype and id must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF headers IS NOT NULL AND jsonb_typeof(headers) <> 'object' THEN
        RAISE EXCEPTION 'outbox_emit: headers must be a JSON object, got %', jsonb_typeof(headers)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- true: transactional. A non-transactional message would be emitted even
    -- if the caller's transaction rolled back, and the relay ignores those.
    PERFORM pg_catalog.pg_logical_emit_message(
        true,
        prefix,
        pg_catalog.jsonb_build_object(
            'id',            id,
            'aggregatetype', aggregatetype,
            'aggregateid',   aggregateid,
            'type',          type,
            'payload',       payload,
            'headers',       coalesce(headers, '{}'::jsonb)
        )::text
    );
    RETURN id;
END
$fn$;

COMMENT ON FUNCTION outbox_emit(text, text, text, jsonb, uuid, jsonb, text) IS
    'Emit an outbox event as a transactional logical decoding message for the relay (table-free outbox).';
