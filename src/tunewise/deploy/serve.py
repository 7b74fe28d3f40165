"""`tunewise serve RUN_DIR`: load the chosen candidate, print how to query it, serve until stopped."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

from tunewise.errors import ConfigError

EXAMPLE_INPUT = "The medicine worked well and I had no side effects."


def api_key_from_env(var: str | None) -> str | None:
    """The key in the environment variable named by --api-key-env (the key never goes on a command line)."""
    if var is None:
        return None
    key = os.environ.get(var)
    if not key:
        raise ConfigError(f"--api-key-env {var}: the environment variable is not set or empty",
                          fix=f"export {var}=... before `tunewise serve`, or leave --api-key-env out")
    return key


def curl_command(host: str, port: int, model: str, api_key_env: str | None) -> str:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": EXAMPLE_INPUT}]})
    auth = f' -H "Authorization: Bearer ${api_key_env}"' if api_key_env else ""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return (f"curl -s http://{shown}:{port}/v1/chat/completions -H 'Content-Type: application/json'{auth} "
            f"-d {shlex.quote(body)}")


def load_chosen(run_dir: Path, name: str | None, device: str = "auto"):
    """(candidate name, loaded candidate) for `name` or the verdict's candidate."""
    from tunewise.deploy.run_folder import choose_candidate
    from tunewise.strategies.saved import load_candidate

    _, name, folder = choose_candidate(run_dir, name)
    return name, load_candidate(folder, device=device)


def serve(run_dir: Path, name: str | None, host: str, port: int, api_key_env: str | None, device: str,
          say=print) -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise ConfigError(f"tunewise serve needs {exc.name}, not installed", fix="pip install 'tunewise[serve]'") from None
    from tunewise.deploy.server import create_app

    key = api_key_from_env(api_key_env)
    name, candidate = load_chosen(run_dir, name, device)
    app = create_app(candidate, api_key=key)
    say(f"serving candidate '{name}' ({candidate.family}) of {run_dir} on http://{host}:{port}/v1"
        + (f" (bearer key from ${api_key_env})" if key else "") + "; stop with Ctrl-C")
    say("query it with:\n  " + curl_command(host, port, name, api_key_env))
    uvicorn.run(app, host=host, port=port, log_level="warning")
