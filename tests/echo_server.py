"""A small real OpenAI-compatible server for tests: `/v1/completions` with `echo` + `logprobs` over the
shipped model (what vLLM and llama.cpp's server offer and `transformers serve` does not), and plain
greedy `/v1/chat/completions` without log-probabilities.

Every prompt is scored by one full forward of the model (no cache, no batching): an independent
reference for tunewise's cached label scoring. Bound to 127.0.0.1 on a free port, stopped on exit.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests += 1
                route = {"/v1/completions": server.completion, "/v1/chat/completions": server.chat}.get(self.path)
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
