"""Operations over the jobs: report and stats, guard, sweep, capacity, metrics, rollout.

Each takes what it works on (an engine, a Repository, the RolloutStore, the Registry,
Settings, an Outbox or a Celery app) as parameters; the CLI and the gateway build those.
"""
