-- mix b: 100 metric_hist rows per transaction (one multi-row INSERT)
\set m random(1, :ndefs)
INSERT INTO factory_telemetry.metric_hist (metric_def_id, ts, value_real)
SELECT d.id, clock_timestamp(), random() * 100
  FROM generate_series(1, 100) g JOIN public.bench_defs d ON d.n = 1 + (g + :m) % :ndefs;
