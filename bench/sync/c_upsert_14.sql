-- mix c: metric_latest upserts, one machine's 14 metrics per transaction (as the plant does)
\set k random(0, (:ndefs - 1) / 14)
INSERT INTO factory_telemetry.metric_latest AS t (metric_def_id, ts, value_real)
SELECT id, clock_timestamp(), random() * 100 FROM public.bench_defs
 WHERE n > :k * 14 AND n <= :k * 14 + 14
ON CONFLICT (metric_def_id) DO UPDATE SET ts = EXCLUDED.ts, value_real = EXCLUDED.value_real;
