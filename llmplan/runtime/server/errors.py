"""OpenAI-shaped errors: ``{"error": {"message", "type", "param", "code"}}``.

Clients (the ``openai`` package, vLLM's benchmark scripts, llmplan's own front end) parse
this shape; every non-2xx answer of the server uses it, including FastAPI's own
validation failures, so a caller never has to handle two formats. The front end
(llmplan.frontend.proxy) builds its errors here too, so each status has one ``type``
whichever process answers, in a JSON body or as a server-sent event mid-stream.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from llmplan.runtime.server.sse import sse

M = TypeVar("M", bound=BaseModel)

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
}


class APIError(Exception):
    """An error the client should see, with its HTTP status and the offending field."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.headers = headers


def error_type(status: int) -> str:
    """The one OpenAI ``type`` for an HTTP status (the server and the front end both use it)."""
    return _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


def error_body(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": error_type(status),
            "param": param,
            "code": status,
        }
    }


def error_json(
    status: int, message: str, param: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """A non-2xx answer in the OpenAI shape."""
    return JSONResponse(error_body(status, message, param), status, headers=headers)


def sse_error(status: int, message: str, param: str | None = None) -> bytes:
    """The same envelope as one server-sent event, for a failure after the stream started."""
    return sse(error_body(status, message, param))


def error_response(err: APIError) -> JSONResponse:
    return error_json(err.status, err.message, err.param, err.headers)


def _loc_to_param(loc: tuple[Any, ...] | list[Any]) -> str | None:
    """("body", "messages", 0, "content") -> "messages[0].content"."""
    parts = [p for p in loc if p != "body"]
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            # pydantic names union members ("str", "list[int]", "function-after[...]"): not a field.
            if "[" in str(p) or str(p) in {"str", "int", "float", "bool", "list", "dict"}:
                continue
            out += ("." if out else "") + str(p)
    return out or None


def validation_error(errors: list[Any]) -> APIError:
    """Pydantic/FastAPI error list -> one 400 naming the first offending field."""
    if not errors:
        return APIError(400, "invalid request body")
    first = errors[0]
    if first.get("type") == "json_invalid":
        ctx = first.get("ctx") or {}
        return APIError(
            400,
            f"malformed JSON body: {ctx.get('error', 'invalid JSON')}; send one JSON object",
        )
    param = _loc_to_param(first.get("loc", ()))
    if first.get("type") == "missing":
        return APIError(400, f"'{param}' is required", param=param)
    if first.get("type") in ("model_attributes_type", "model_type") and param is None:
        return APIError(400, "the request body must be a JSON object")
    # A union field fails once per member; report them together.
    msgs = list(dict.fromkeys(
        e.get("msg", "invalid value") for e in errors if _loc_to_param(e.get("loc", ())) == param
    ))
    given = first.get("input")
    shown = json.dumps(given)[:80] if isinstance(given, str | int | float | bool | type(None)) else None
    text = f"invalid '{param}': " if param else "invalid request: "
    text += "; or ".join(msgs)
    if shown is not None:
        text += f" (got {shown})"
    return APIError(400, text, param=param)


def parse_body(model: type[M], raw: bytes) -> M:
    """Parse and validate a JSON body whatever its Content-Type (``curl -d`` sends form type)."""
    try:
        return model.model_validate_json(raw or b"null")
    except ValidationError as exc:
        raise validation_error(exc.errors(include_url=False)) from None


def install_error_handlers(app: FastAPI) -> None:
    """Route every error path through the OpenAI shape (400 rather than FastAPI's 422)."""

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(APIError(exc.status_code, str(exc.detail), headers=exc.headers))
