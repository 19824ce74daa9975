"""stored scores: overall_score and the seven dimension scores beside each analysis (additive)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 08:40:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from jobs.analysis import DIMENSIONS
from store.scores import stored_scores

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 1000
# Larger than any finite double: such a number reads as inf in Python, which stores NULL.
_FINITE = "1.7976931348623157e308"


def _dimension_sql(dialect: str, index: int) -> str:
    """The score of the first dimension named DIMENSIONS[index], truncated to an integer as
    stored_scores() does, NULL when absent or not a finite number."""
    name = f":dim_{index}"
    if dialect == "postgresql":
        return (
            "(SELECT CASE WHEN jsonb_typeof(e.v->'score') = 'number' AND abs((e.v->>'score')"
            f"::numeric) <= {_FINITE} THEN trunc((e.v->>'score')::numeric) END "
            "FROM jsonb_array_elements(CASE WHEN jsonb_typeof(d.doc->'dimensions') = 'array' "
            "THEN d.doc->'dimensions' ELSE '[]'::jsonb END) WITH ORDINALITY AS e(v, i) "
            f"WHERE jsonb_typeof(e.v->'name') = 'string' AND e.v->>'name' = {name} "
            "ORDER BY e.i LIMIT 1)"
        )
    # Over el, each row's dimensions read once into (id, position, name, score type, score).
    return (
        f"(SELECT CASE WHEN el.st IN ('integer', 'real') AND abs(el.sc) <= {_FINITE} THEN "
        "CAST(el.sc AS INTEGER) END FROM el WHERE el.id = jobs.id AND el.name = "
        f"{name} ORDER BY el.k LIMIT 1)"
    )


def _backfill_sql(dialect: str) -> str:
    """One UPDATE over every analysis the database's JSON functions can read: the same values
    as store/scores.py's stored_scores() (a document that is not an object stores NULLs)."""
    dims = ", ".join(_dimension_sql(dialect, i) for i in range(len(DIMENSIONS)))
    if dialect == "postgresql":
        # OFFSET 0 keeps the planner from inlining the jsonb cast into each of its uses.
        return (
            "UPDATE jobs SET overall_score = CASE WHEN jsonb_typeof(d.doc->'overall_score') = "
            "'number' AND abs((d.doc->>'overall_score')::numeric) <= "
            f"{_FINITE} THEN (d.doc->>'overall_score')::float8 END, "
            f"dimension_scores = json_build_array({dims}) "
            "FROM (SELECT id, llm_outputs::jsonb AS doc FROM jobs WHERE llm_outputs IS NOT NULL "
            "AND json_typeof(llm_outputs) = 'object' OFFSET 0) AS d WHERE jobs.id = d.id"
        )
    # SQLite parses a document at every JSON function: json_each reads each one once into its
    # overall_score and dimensions, el reads those dimensions once (a valid document that
    # starts with "{" is an object).
    return (
        "WITH s AS MATERIALIZED (SELECT jobs.id AS id, "
        "max(CASE WHEN t.key = 'overall_score' THEN t.type END) AS t, "
        "max(CASE WHEN t.key = 'overall_score' THEN t.atom END) AS v, "
        "coalesce(max(CASE WHEN t.key = 'dimensions' AND t.type = 'array' THEN t.value END), "
        "'[]') AS dims FROM jobs LEFT JOIN json_each(jobs.llm_outputs) AS t "
        "WHERE jobs.llm_outputs IS NOT NULL AND json_valid(jobs.llm_outputs) "
        "AND substr(ltrim(jobs.llm_outputs), 1, 1) = '{' GROUP BY jobs.id), "
        "el AS MATERIALIZED (SELECT s.id AS id, e.key AS k, json_extract(e.value, '$.name') "
        "AS name, json_type(e.value, '$.score') AS st, json_extract(e.value, '$.score') AS sc "
        "FROM s, json_each(s.dims) AS e WHERE e.type = 'object') "
        "UPDATE jobs SET overall_score = CASE WHEN s.t IN ('integer', 'real') AND "
        f"abs(s.v) <= {_FINITE} THEN s.v END, dimension_scores = json_array({dims}) "
        "FROM s WHERE jobs.id = s.id"
    )


def upgrade() -> None:
    # Nullable: a worker of the previous release writes only llm_outputs, and the report
    # reads such a row's scores from the document (producers/ops/report_rows.py).
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("overall_score", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("dimension_scores", sa.JSON(), nullable=True))
    conn = op.get_bind()
    names = {f"dim_{i}": name for i, name in enumerate(DIMENSIONS)}
    conn.execute(sa.text(_backfill_sql(conn.dialect.name)), names)
    if conn.dialect.name == "sqlite":
        _backfill_unreadable(conn)


def _backfill_unreadable(conn: sa.Connection) -> None:
    """Documents SQLite's JSON functions refuse (NaN or Infinity, as Python's json writes
    them), a batch at a time in id order through stored_scores() itself."""
    jobs = sa.table(
        "jobs",
        sa.column("id", sa.String()),
        sa.column("llm_outputs", sa.JSON()),
        sa.column("overall_score", sa.Float()),
        sa.column("dimension_scores", sa.JSON()),
    )
    unreadable = jobs.c.llm_outputs.is_not(None) & ~sa.func.json_valid(jobs.c.llm_outputs)
    after = ""
    while True:
        batch = conn.execute(
            sa.select(jobs.c.id, jobs.c.llm_outputs)
            .where(jobs.c.id > after, unreadable)
            .order_by(jobs.c.id)
            .limit(BATCH)
        ).all()
        if not batch:
            break
        conn.execute(
            jobs.update().where(jobs.c.id == sa.bindparam("job_id")),
            [{"job_id": job_id, **stored_scores(doc)} for job_id, doc in batch],
        )
        after = batch[-1].id


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("dimension_scores")
        batch_op.drop_column("overall_score")
