# One image for the shared services (gateway, Flower, migrations); EXTRAS=gateway,flower,worker
# adds MLX's Linux CPU build for a development worker. Mac workers run natively, not here.
FROM python:3.11-slim

ARG EXTRAS=gateway,flower

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# OpenBLAS: the mlx[cpu] wheel bundles a slow reference BLAS (see advisor_worker/blas.py).
RUN case ",${EXTRAS}," in \
      *,worker,*) apt-get update \
        && apt-get install -y --no-install-recommends libopenblas0-pthread \
        && rm -rf /var/lib/apt/lists/* ;; \
    esac

RUN useradd --create-home --uid 10001 advisor \
    && mkdir -p /models \
    && chown advisor /models

WORKDIR /app
COPY pyproject.toml README.md ./
COPY jobs ./jobs
COPY photos ./photos
COPY notices ./notices
COPY store ./store
COPY producers ./producers
COPY advisor_worker ./advisor_worker
# The migrations: the wheel carries them as store/_alembic, for `advisor db upgrade`.
COPY alembic ./alembic
RUN pip install ".[${EXTRAS}]"
# The registry and adapters are data, mounted at run time; ADVISOR_REGISTRY must name a file.
RUN mkdir -p /app/adapters

USER advisor
EXPOSE 8000 5555
CMD ["advisor-gateway", "--host", "0.0.0.0", "--port", "8000"]
