# syntax=docker/dockerfile:1
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, in their own layer: code changes do not reinstall them. Exactly the
# locked files (scripts/lock writes the lock; hashes checked), so a build next month installs
# what this one did; nothing of ours is built, so no build/ or *.egg-info can stay behind.
# The service runs from /app, not as an installed package.
COPY requirements/runtime.txt requirements/
RUN pip install --no-cache-dir --require-hashes --no-deps -r requirements/runtime.txt

COPY app ./app
COPY templates ./templates

RUN useradd --system --uid 10001 --home-dir /app notifier \
    && mkdir -p /app/data \
    && chown 10001 /app/data
USER 10001

VOLUME ["/app/data"]
EXPOSE 8000

HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]

# The API. The same image runs the other roles as `python -m app worker | migrate | health`
# (the `notifier` command; not installed as a script here, since nothing of ours is built):
# compose.scale.yml shows them.
CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers"]
