-- One plant write per transaction, through PgBouncer: a telemetry sample into metric_hist
-- (marked, so the rows pgbench committed can be counted on both servers) and the metric's
-- latest value upserted into metric_latest. Metric ids are the fixture's md5('metric_def:' || k).
\set k random(0, :ndefs - 1)
BEGIN;
INSERT INTO factory_telemetry.metric_hist (metric_def_id, ts, value_real, value_int, value_text)
VALUES (md5('metric_def:' || :k)::uuid, clock_timestamp(), random() * 100, :tps, 'bench-cutover');
INSERT INTO factory_telemetry.metric_latest AS t (metric_def_id, ts, value_real)
VALUES (md5('metric_def:' || :k)::uuid, clock_timestamp(), random() * 100)
ON CONFLICT (metric_def_id) DO UPDATE SET ts = EXCLUDED.ts, value_real = EXCLUDED.value_real;
END;
