"""`tunewise serve`: one saved candidate behind an OpenAI-compatible HTTP API (FastAPI).

- `/v1/chat/completions` (streaming or not): the candidate answers the conversation as it answered
  test records in the run: for classification, the predicted label (any family); for generation,
  its greedy answer.
- `/v1/completions` (language-model candidates: fine-tuned or prompted local models): greedy
  continuation, and with `echo` + `logprobs` every prompt token's log-probability, so `tunewise run
  --prompt-model http://HOST:PORT/v1#NAME` scores labels by likelihood against this server.
- `/v1/models`, `/health`.

Requests are checked before any work: body size, `max_tokens`, prompt count and length; a bad one
gets a 4xx with an OpenAI-style error body. With an API key every /v1 route needs
`Authorization: Bearer KEY` (401 otherwise). Inference runs one request at a time (a lock): the
model is not thread-safe, and on a small CPU parallel forwards only slow each other down.
"""

from __future__ import annotations

import hmac
import json
import threading
import time
import uuid
from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from tunewise.strategies.saved import LoadedCandidate

MAX_BODY_BYTES = 1_000_000
MAX_TOKENS = 512  # new tokens per request
MAX_PROMPTS = 256  # prompts in one /v1/completions request (tunewise sends one per label)
MAX_LOGPROBS = 20


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[dict], None] = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # sampling options are accepted; answers are always greedy
    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1, le=1)


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    prompt: Union[str, list[str], list[int], list[list[int]]]
    max_tokens: int = Field(16, ge=0)
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    stream: bool = False
    n: int = Field(1, ge=1, le=1)


def create_app(candidate: LoadedCandidate, *, api_key: str | None = None, names: list[str] | None = None,
               max_body_bytes: int = MAX_BODY_BYTES, max_tokens: int = MAX_TOKENS):
    """The FastAPI app serving `candidate` under `names` (default: its own name and its model's)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse

    names = names or [candidate.name] + ([candidate.spec.model] if candidate.spec.model else [])
    lock = threading.Lock()
    app = FastAPI(title=f"tunewise: {candidate.name}", docs_url=None, redoc_url=None, openapi_url=None)
    lm = candidate.lm
    context = _context_length(lm)

    @app.exception_handler(ApiError)
    async def api_error(_, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_, exc: RequestValidationError):
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return JSONResponse(ApiError(400, f"{where or 'body'}: {first.get('msg')}", param=where or None).body(),
                            status_code=400)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        """Size and key are checked before the body is parsed."""
        try:
            if request.url.path.startswith("/v1/"):
                _check_key(request.headers.get("authorization"), api_key)
            if request.method == "POST":
                declared = request.headers.get("content-length", "0")
                if not declared.isdigit():
                    raise ApiError(400, f"Content-Length '{declared}' is not a number")
                if int(declared) > max_body_bytes:
                    raise ApiError(413, f"request body of {int(declared)} bytes is over the limit of "
                                        f"{max_body_bytes}", code="request_too_large")
                if len(await request.body()) > max_body_bytes:
                    raise ApiError(413, f"request body is over the limit of {max_body_bytes} bytes",
                                   code="request_too_large")
        except ApiError as exc:
            return JSONResponse(exc.body(), status_code=exc.status,
                                headers={"WWW-Authenticate": "Bearer"} if exc.status == 401 else None)
        return await call_next(request)

    @app.get("/health")
    def health():
        return {"status": "ok", "candidate": candidate.name, "family": candidate.family}

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "tunewise"}
                                           for n in names]}

    @app.post("/v1/chat/completions")
    def chat(body: ChatRequest):
        _check_model(body.model, names)
        wanted = body.max_completion_tokens or body.max_tokens
        if wanted is not None and wanted > max_tokens:
            raise ApiError(400, f"max_tokens {wanted} is over this server's limit of {max_tokens}", param="max_tokens")
        messages = _messages(body.messages)
        with lock:
            scored = candidate.predict_messages(messages)
        made, rid = int(time.time()), f"chatcmpl-{uuid.uuid4().hex[:24]}"
        usage = {"prompt_tokens": scored.prompt_tokens, "completion_tokens": scored.output_tokens,
                 "total_tokens": scored.prompt_tokens + scored.output_tokens}
        if body.stream:
            return StreamingResponse(_chat_stream(rid, made, body.model, scored.prediction, usage),
                                     media_type="text/event-stream")
        return {"id": rid, "object": "chat.completion", "created": made, "model": body.model,
                "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                             "message": {"role": "assistant", "content": scored.prediction}}], "usage": usage}

    @app.post("/v1/completions")
    def completions(body: CompletionRequest):
        from tunewise.deploy.completion import complete

        _check_model(body.model, names)
        if lm is None:
            raise ApiError(400, f"candidate '{candidate.name}' ({candidate.family}) is not a language model: "
                                "use /v1/chat/completions", param="model")
        if body.max_tokens > max_tokens:
            raise ApiError(400, f"max_tokens {body.max_tokens} is over this server's limit of {max_tokens}",
                           param="max_tokens")
        prompts = _prompts(body.prompt, lm, context - body.max_tokens)
        choices, used, made = [], [0, 0], 0
        with lock:
            for index, ids in enumerate(prompts):
                choice = complete(lm, ids, max_tokens=body.max_tokens, echo=body.echo, logprobs=body.logprobs)
                prompt_tokens, new_tokens = choice.pop("usage")
                used[0], used[1] = used[0] + prompt_tokens, used[1] + new_tokens
                choices.append({"index": index} | choice)
        made, rid = int(time.time()), f"cmpl-{uuid.uuid4().hex[:24]}"
        reply = {"id": rid, "object": "text_completion", "created": made, "model": body.model, "choices": choices,
                 "usage": {"prompt_tokens": used[0], "completion_tokens": used[1], "total_tokens": sum(used)}}
        if body.stream:
            return StreamingResponse(_completion_stream(reply), media_type="text/event-stream")
        return reply

    return app


def _check_key(header: str | None, api_key: str | None) -> None:
    if api_key is None:
        return
    given = (header or "").removeprefix("Bearer ").strip() if (header or "").startswith("Bearer ") else ""
    if not given or not hmac.compare_digest(given.encode(), api_key.encode()):
        raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer KEY'",
                       kind="authentication_error", code="invalid_api_key")


def _check_model(model: str, names: list[str]) -> None:
    if model not in names:
        raise ApiError(404, f"model '{model}' is not served here (GET /v1/models lists {', '.join(names)})",
                       param="model", code="model_not_found")


def _messages(messages: list[Message]) -> list[tuple[str, str]]:
    """(role, text) turns; the candidate brings its own system turn, so system turns are dropped
    by the strategy as they were for the run's records."""
    out = []
    for i, m in enumerate(messages):
        content = m.content
        if isinstance(content, list):  # content parts: only text is understood
            if any(part.get("type") != "text" for part in content):
                raise ApiError(400, f"messages.{i}.content: only text parts are supported", param=f"messages.{i}")
            content = "".join(str(part.get("text", "")) for part in content)
        out.append(("system" if m.role == "developer" else m.role, content or ""))
    if out[-1][0] != "user":
        raise ApiError(400, "the last message must be the user's turn to answer", param="messages")
    return out


def _prompts(prompt, lm, limit: int) -> list[list[int]]:
    """Token ids per prompt: text is tokenised as given (no special tokens added), ids are taken as they are."""
    if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)):
        prompt = [prompt]
    if not prompt:
        raise ApiError(400, "prompt: empty", param="prompt")
    if len(prompt) > MAX_PROMPTS:
        raise ApiError(400, f"prompt: {len(prompt)} prompts in one request, over the limit of {MAX_PROMPTS}",
                       param="prompt")
    vocab = len(lm.tokenizer)
    out = []
    for i, p in enumerate(prompt):
        ids = lm.encode(p) if isinstance(p, str) else list(p)
        if not ids:
            raise ApiError(400, f"prompt {i}: no tokens", param="prompt")
        if any(t < 0 or t >= vocab for t in ids):
            raise ApiError(400, f"prompt {i}: token ids must be in [0, {vocab})", param="prompt")
        if len(ids) > limit:
            raise ApiError(400, f"prompt {i}: {len(ids)} tokens, over the {limit} the model's context leaves "
                                "with max_tokens", param="prompt", code="context_length_exceeded")
        out.append(ids)
    return out


def _context_length(lm) -> int:
    if lm is None:
        return 0
    config = lm.model.config
    return int(getattr(config, "max_position_embeddings", None) or 2048)


def _sse(data) -> str:
    return f"data: {json.dumps(data) if not isinstance(data, str) else data}\n\n"


def _chat_stream(rid: str, made: int, model: str, text: str, usage: dict):
    """The answer as OpenAI chat chunks: the role, the text, the finish reason, then [DONE]. The answer
    is computed before streaming starts (a label is scored whole, not token by token)."""
    head = {"id": rid, "object": "chat.completion.chunk", "created": made, "model": model}
    yield _sse(head | {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
    yield _sse(head | {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})
    yield _sse(head | {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": usage})
    yield _sse("[DONE]")


def _completion_stream(reply: dict):
    for choice in reply["choices"]:
        yield _sse({k: reply[k] for k in ("id", "object", "created", "model")} | {"choices": [choice]})
    yield _sse("[DONE]")
