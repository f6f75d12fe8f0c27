-- mix d: one UPDATE and one DELETE of metric_hist rows by id per transaction
\set u random(:minid, :maxid)
\set d random(:minid, :maxid)
BEGIN;
UPDATE factory_telemetry.metric_hist SET value_real = value_real + 1, value_int = :u WHERE id = :u;
DELETE FROM factory_telemetry.metric_hist WHERE id = :d;
END;
