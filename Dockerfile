# One image for the API, the worker and the CLI: the same package the tests use.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY aggregates ./aggregates
COPY commands ./commands
COPY projections ./projections
COPY api ./api
COPY infra ./infra
RUN pip install --no-cache-dir -c constraints.txt . \
    && useradd --system --no-create-home chronik
USER chronik
EXPOSE 8000
CMD ["chronik", "api"]
