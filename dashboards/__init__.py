"""OpenSearch Dashboards saved objects for the enrichment results."""
