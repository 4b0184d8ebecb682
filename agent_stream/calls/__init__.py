"""Calls: the stream endpoint, the live-call registry, the lifecycle of one call, how it
ended, and its run's writes."""
