"""OpenSearch enrichment worker: reads logs, groups them, scores them, writes anomaly labels back."""
