"""Real OpenAI-compatible servers for tests and benchmarks, bound to 127.0.0.1, stopped on exit.

- EchoServer: `/v1/completions` with `echo` + `logprobs` over the shipped model (what vLLM and
  llama.cpp's server offer and `transformers serve` does not), and greedy `/v1/chat/completions`.
  Every prompt is scored by one full forward (no cache, no batching): an independent reference for
  tunewise's cached label scoring.
- CannedServer: answers every chat request at once with the same reply (client and transport cost).
- TransformersServe: a `transformers serve` process serving a local model folder.
- TunewiseServe: a `tunewise serve` process serving a run's candidate.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch


class EchoServer:
    def __init__(self, lm):
        self.lm = lm  # tunewise.models.lm.LanguageModel (its model and tokenizer)
        self.lock = threading.Lock()  # one forward at a time
        self.requests = 0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> "EchoServer":
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- the work ----------------------------------------------------------------------------
    @torch.inference_mode()
    def completion(self, body: dict) -> dict:
        prompts = body["prompt"]
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        tok = self.lm.tokenizer
        choices, used = [], 0
        for index, prompt in enumerate(prompts):
            ids = prompt if isinstance(prompt, list) else self.lm.encode(prompt)
            with self.lock:
                logits = self.lm.model(torch.tensor([ids])).logits[0].float()
            logp = torch.log_softmax(logits, -1)
            nxt = int(logp[-1].argmax())
            token_logprobs = [None] + [float(logp[i - 1, t]) for i, t in enumerate(ids) if i > 0]
            all_ids = ids + [nxt]
            token_logprobs.append(float(logp[-1, nxt]))
            tokens = [tok.decode([t]) for t in all_ids]
            offsets = [sum(len(x) for x in tokens[:i]) for i in range(len(tokens))]
            choices.append({"index": index, "text": "".join(tokens), "finish_reason": "length",
                            "logprobs": {"tokens": tokens, "token_logprobs": token_logprobs,
                                         "text_offset": offsets, "top_logprobs": None}})
            used += len(ids)
        return {"id": "cmpl-test", "object": "text_completion", "created": int(time.time()), "model": body["model"],
                "choices": choices, "usage": {"prompt_tokens": used, "completion_tokens": len(prompts),
                                              "total_tokens": used + len(prompts)}}

    def chat(self, body: dict) -> dict:
        messages = [(m["role"], m["content"]) for m in body["messages"]]
        with self.lock:
            s = self.lm.generate_one(messages, int(body.get("max_tokens") or 16))
        return {"id": "chat-test", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": s.prediction}}],
                "usage": {"prompt_tokens": s.prompt_tokens, "completion_tokens": s.output_tokens,
                          "total_tokens": s.prompt_tokens + s.output_tokens}}

    def _handler(self):
        return _json_handler(self, {"/v1/completions": self.completion, "/v1/chat/completions": self.chat})


class CannedServer(EchoServer):
    """Every chat request answered at once with `text`: what the client, JSON and loopback cost alone."""

    def __init__(self, text: str = "positive"):
        self.text, self.requests = text, 0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _json_handler(self, {"/v1/chat/completions": self.chat}))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def chat(self, body: dict) -> dict:
        return {"id": "chat-test", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": self.text}}],
                "usage": {"prompt_tokens": 50, "completion_tokens": 2, "total_tokens": 52}}


def _json_handler(server, routes: dict):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
        disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

        def do_POST(self):  # noqa: N802 (http.server's name)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            server.requests += 1
            route = routes.get(self.path)
            if route is None:
                self.send_error(404)
                return
            data = json.dumps(route(body)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):  # keep test output clean
            pass

    return Handler


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _ServerProcess:
    """A server subprocess on a free port of 127.0.0.1, up once /health answers, stopped (terminated,
    then killed) on exit. Subclasses give the command line and the environment."""

    name, poll_s, stop_s = "server", 1.0, 20

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict:
        return dict(os.environ)

    def __enter__(self):
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True, env=self.env())
        deadline = time.monotonic() + self.startup_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}): {self.log.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2)
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError(f"{self.name} not up after {self.startup_s:.0f} s: "
                                       f"{self.log.read_text()[-2000:]}") from None
                time.sleep(self.poll_s)

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=self.stop_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class TransformersServe(_ServerProcess):
    """`transformers serve FOLDER` on 127.0.0.1 with the local candidate's numerics (dtype, eager attention
    on CPU), so greedy answers can agree token for token; `url` once /health answers."""

    name = "transformers serve"

    def __init__(self, folder: str, log: Path, dtype: str, startup_s: float = 180, threads: int | None = None):
        self.folder, self.log, self.dtype, self.startup_s, self.threads = folder, log, dtype, startup_s, threads
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.binary = Path(sys.executable).with_name("transformers")

    def command(self) -> list[str]:
        return [str(self.binary), "serve", self.folder, "--host", "127.0.0.1", "--port", str(self.port),
                "--dtype", self.dtype, "--attn-implementation", "eager", "--device", "cpu"]

    def env(self) -> dict:
        return os.environ | {"HF_HUB_OFFLINE": "1"} | ({"OMP_NUM_THREADS": str(self.threads)} if self.threads else {})


class TunewiseServe(_ServerProcess):
    """`tunewise serve RUN_DIR --candidate NAME` as a user runs it, on a free port of 127.0.0.1; `url` once
    /health answers; stopped (terminated, then killed) on exit."""

    name, poll_s, stop_s = "tunewise serve", 0.5, 30

    def __init__(self, run_dir: Path, candidate: str, log: Path, startup_s: float = 180):
        self.run_dir, self.candidate, self.log, self.startup_s = run_dir, candidate, log, startup_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "tunewise.cli", "serve", str(self.run_dir), "--candidate", self.candidate,
                "--port", str(self.port)]

    def env(self) -> dict:
        return os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "HF_HUB_OFFLINE": "1"}


class AppServer:
    """An ASGI app (e.g. `tunewise serve`'s) under uvicorn in a thread on 127.0.0.1; `url` once it is up."""

    def __init__(self, app, startup_s: float = 30):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.startup_s = startup_s

    def __enter__(self) -> "AppServer":
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + self.startup_s
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the app server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
