"""The daemon (``rulekit run``): HTTP ingest, processing, dispatch, live feed, reload."""
