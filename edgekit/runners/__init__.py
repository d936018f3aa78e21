"""Runners, one module per runtime: load an artifact, time prompt processing and generation."""
