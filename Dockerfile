# Deep Dive on the CPU, serving the shipped default model.
#   docker build -t deepdive .
#   docker run --rm -p 8000:8000 deepdive        then open http://localhost:8000
# Another checkpoint: mount it and name it, e.g.
#   docker run --rm -p 8000:8000 -v /path/to/gpt2:/models/gpt2:ro -e DEEPDIVE_MODEL=/models/gpt2 deepdive
# A class session's QR code must carry the address phones reach, which a container cannot see:
#   docker run --rm -p 8000:8000 -e DEEPDIVE_PUBLIC_URL=http://192.168.1.20:8000 deepdive
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1

WORKDIR /app

# The CPU build of torch, pinned, before anything that depends on it: PyPI's default build carries CUDA (GBs).
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

COPY pyproject.toml README.md ./
COPY app ./app
COPY model ./model
COPY templates ./templates
COPY static ./static
# editable, so templates/ and static/ are found beside the code in /app
RUN pip install -e . \
 && useradd --create-home --uid 10001 deepdive

USER deepdive
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
# Inside a container the server must listen on all interfaces for -p to reach it.
CMD ["python", "-m", "app", "--host", "0.0.0.0", "--port", "8000"]
