"""The HTTP edge: the daemon's lifecycle, its ASGI app, webhook ingest and the console."""
