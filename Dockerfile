# CPU image of the voice service. Mount real CosyVoice weights at /models to use them;
# without them the embedded espeak-ng engine serves speech.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    COSYVOICE_DATA_DIR=/data \
    COSYVOICE_MODEL_DIR=/models/CosyVoice2-0.5B \
    XDG_CACHE_HOME=/data/.cache

WORKDIR /srv
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip install . \
    && python -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. app/api/runtime/cosyvoice.proto \
    && useradd --create-home --uid 1000 voice && mkdir -p /data && chown voice /data

USER voice
VOLUME ["/data"]
EXPOSE 8000
CMD ["python", "-m", "app.server", "--host", "0.0.0.0", "--port", "8000"]
