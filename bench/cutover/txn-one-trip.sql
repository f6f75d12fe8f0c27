-- The rows of txn.sql (a marked metric_hist sample and its metric_latest upsert) written by
-- one statement in one round trip, as a plant client sending each sample as one autocommit
-- statement would: what a transaction on the wire at the PAUSE costs is one round trip.
\set k random(0, :ndefs - 1)
WITH sample AS (
  INSERT INTO factory_telemetry.metric_hist (metric_def_id, ts, value_real, value_int, value_text)
  VALUES (md5('metric_def:' || :k)::uuid, clock_timestamp(), random() * 100, :tps, 'bench-cutover')
  RETURNING metric_def_id, ts, value_real)
INSERT INTO factory_telemetry.metric_latest AS t (metric_def_id, ts, value_real)
SELECT metric_def_id, ts, value_real FROM sample
ON CONFLICT (metric_def_id) DO UPDATE SET ts = EXCLUDED.ts, value_real = EXCLUDED.value_real;
