"""Server settings: which model, where to listen, and the limits every request is held to.

Read from the environment with the DEEPDIVE_ prefix (DEEPDIVE_MODEL, DEEPDIVE_HOST, ...);
`python -m app` flags override them. Which model is loaded is server configuration
only: no request can name a file.
"""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "model" / "checkpoints" / "deepdive-tiny"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DEEPDIVE_", extra="ignore")

    model: str = str(DEFAULT_MODEL)
    host: str = "127.0.0.1"
    port: int = 8000
    threads: int = 0  # torch threads; 0 leaves torch's default

    max_text_chars: int = 100_000      # longest text any endpoint accepts
    max_body_bytes: int = 1_000_000    # request bodies beyond this get 413
    max_new_tokens: int = 512          # cap on one generation
    max_batch: int = 64                # streams decoded together in one forward
    max_waiting_streams: int = 64      # streams queued for a place in the batch; more get 503
    max_queue: int = 64                # analysis requests waiting for the model; more get 503
    max_activation_values: int = 500_000  # numbers one /api/activations answer may hold (about 5 MB)
    per_client_requests: int = 4       # model requests (streams included) one client address runs at once; more
                                       # wait their turn (0: no share)
    max_waiting_requests: int = 256    # requests waiting for their address's turn, in all; more get 503
    request_timeout_s: float = 30.0    # longest wait for one analysis answer; then 503
    generation_timeout_s: float = 120.0  # longest one generation may run; then it ends with a message
    cors_origins: list[str] = []       # origins other sites' pages may call the API from; empty: CORS off

    # more models for the Inference, Playground and Training pages (app/serving/sources.py)
    second_model: str = ""             # a second local model shown beside the first: a directory, .gguf file, smollm2 or hub name
    remote_url: str = ""               # a server speaking the OpenAI completions protocol (vLLM, llama.cpp, TGI)
    remote_model: str = ""             # the model name that server serves
    remote_api_key: str = ""           # sent as a Bearer token when set
    remote_timeout_s: float = 30.0     # longest wait for the remote server's answer (or its next streamed token)
    remote_logprobs: int = 5           # alternatives the server lists per token: OpenAI and Deep Dive 5, vLLM 20

    redis_url: str = ""                # class sessions in Redis (redis://host:6379/0), shared by several processes
    redis_timeout_s: float = 1.0       # longest wait for Redis to connect or answer one call: a class cannot wait
                                       # long per click while Redis is away
    redis_retries: int = 1             # a failed Redis call is tried this many times more
    teacher_key: str = ""              # when set, starting a class session asks for it
    public_url: str = ""               # the address phones use to reach this server (http://192.168.1.20:8000);
                                       # empty: the request's host, else this machine's network address
    class_ttl_s: float = 7200.0        # a class session ends after this long without activity
    max_class_sessions: int = 50       # class sessions held at once; more are refused
    max_class_students: int = 200      # students in one class session; more are refused
