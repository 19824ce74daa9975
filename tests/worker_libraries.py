"""Imported once by the suite's fork server (tests/forkserver.py): what every worker imports.

OpenBLAS goes in first, as `advisor-worker run` loads it before MLX. Only libraries: the
project's own modules read settings at import (the Celery app), so each worker imports them
itself, under its own environment.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # read by huggingface_hub at import

from advisor_worker import blas  # noqa: E402 - OpenBLAS before mlx.core

blas.load_openblas()

import celery.apps.worker  # noqa: E402, F401
import celery.bin.celery  # noqa: E402, F401 - with its command plugins (click-repl, Flower's)
import kombu.transport.redis  # noqa: E402, F401
import kombu.transport.sqlalchemy  # noqa: E402, F401
import llguidance  # noqa: E402, F401
import mlx.core  # noqa: E402, F401
import mlx_vlm  # noqa: E402, F401
import mlx_vlm.utils  # noqa: E402, F401
import psycopg  # noqa: E402, F401
import pydantic  # noqa: E402, F401
import pydantic_settings  # noqa: E402, F401
import sqlalchemy.dialects.postgresql.psycopg  # noqa: E402, F401
import sqlalchemy.dialects.sqlite  # noqa: E402, F401
import sqlalchemy.orm  # noqa: E402, F401
import transformers  # noqa: E402, F401
