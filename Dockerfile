# The bot in one container: python -m bot, as a non-root user, listening on 8080.
# Build: docker build -t link2text .   Run: see deploy/docker-compose.yml and the README.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 bot
WORKDIR /app

COPY pyproject.toml README.md ./
COPY bot ./bot
COPY coze ./coze
COPY storage ./storage
COPY tasks ./tasks
COPY webhook ./webhook
RUN pip install ".[postgres]" && mkdir -p /app/data && chown bot:bot /app/data

COPY config.toml ./config.toml
USER bot
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request, sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4); sys.exit(0)"
CMD ["python", "-m", "bot", "--config", "/app/config.toml"]
