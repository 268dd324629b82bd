"""A worker and a producer exporting backfill_sa's metrics to Prometheus."""
