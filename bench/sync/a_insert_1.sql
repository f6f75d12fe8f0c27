-- mix a: one metric_hist row per transaction (the plant's 1 Hz telemetry, unbatched)
\set m random(1, :ndefs)
INSERT INTO factory_telemetry.metric_hist (metric_def_id, ts, value_real)
SELECT id, clock_timestamp(), random() * 100 FROM public.bench_defs WHERE n = :m;
