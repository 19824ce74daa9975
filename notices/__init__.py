"""Outcome delivery: the courier that sends a finished job's notice, and the webhook sender."""
