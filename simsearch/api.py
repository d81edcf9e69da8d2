"""HTTP API: create_app(), JSON errors, limits.  Served by waitress (see cli)."""

from __future__ import annotations

import json
import os
import threading
import time
from contextlib import contextmanager

import numpy as np
from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from . import __version__
from .audio import wav_bytes
from .auth import allows
from .config import ApiConfig, MatchConfig
from .engine import Engine
from .errors import Busy, EmptyInput, ParameterError, SimsearchError, upload_too_large
from .openapi import openapi_document

EXT = "simsearch"


def _role(needed: str | None):
    """Mark a view as needing a `read` or `write` key (None: open to all).
    Views without a mark need `read`."""
    def mark(view):
        view.simsearch_role = needed
        return view
    return mark


# The review page talks to this server only: no other origin, no inline code.
_PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
             "media-src 'self' blob:; connect-src 'self' blob:; base-uri 'none'; form-action 'none'; "
             "frame-ancestors 'none'")


_QUERY_FIELDS = {"file", "top_k", "min_score", "hits"}
_ADD_FIELDS = {"file", "track_id", "metadata", "check", "top_k", "min_score"}
_AUDIO_FIELDS = {"start", "end"}


def create_app(engine: Engine, api_config: ApiConfig = ApiConfig()) -> Flask:
    app = Flask(__name__)
    # Never rewrite a path: "/v1/tracks//x" must not become (and redirect to) "/v1/tracks/x".
    app.url_map.merge_slashes = False
    app.config["MAX_CONTENT_LENGTH"] = api_config.max_upload_bytes
    app.extensions[EXT] = {"engine": engine, "config": api_config}

    decode_slots = threading.BoundedSemaphore(api_config.max_concurrent_decodes)

    def eng() -> Engine:
        e = app.extensions[EXT]["engine"]
        e.sync()  # sees every change any process committed before this request
        return e

    @contextmanager
    def decode_slot():
        if not decode_slots.acquire(timeout=api_config.decode_wait_s):
            raise Busy(f"all {api_config.max_concurrent_decodes} decode slot(s) of this server process stayed busy for "
                       f"{api_config.decode_wait_s:g} s; retry later")
        try:
            yield
        finally:
            decode_slots.release()

    def decoded(e: Engine, data: bytes) -> np.ndarray:
        with decode_slot():
            return e.decode(data)

    @app.before_request
    def _authorize():
        view = app.view_functions.get(request.endpoint)
        if view is None or api_config.open_access or request.endpoint == "static":
            return None  # the page's own files hold no secret
        needed = getattr(view, "simsearch_role", "read")
        if needed is None or (needed == "read" and not api_config.keys_for_reads):
            return None
        if not api_config.keys:
            return _error(403, "writes_disabled",
                          "this server has no API keys, so adding and deleting tracks is disabled; start it with "
                          "--keys-file or SIMSEARCH_API_KEYS (or --no-auth on a trusted network)")
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _unauthorized("missing_key", f"this needs a {needed} key: send 'Authorization: Bearer <key>'")
        role = api_config.keys.role_of(token.strip())
        if role is None:
            return _unauthorized("invalid_key", "the API key is not valid")
        if not allows(role, needed):
            return _error(403, "forbidden", f"this needs a {needed} key; yours is a {role} key")
        return None

    @app.after_request
    def _served_by(resp):
        resp.headers["X-Simsearch-Worker"] = str(os.getpid())  # the server process, as its log lines name it
        return resp

    @app.errorhandler(SimsearchError)
    def _simsearch_error(exc: SimsearchError):
        resp = _error(exc.status, exc.code, str(exc))
        if isinstance(exc, Busy):
            resp.headers["Retry-After"] = "1"
        return resp

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code = {413: "too_large", 404: "not_found", 405: "method_not_allowed"}.get(exc.code, "http_error")
        msg = exc.description or exc.name
        if exc.code == 413:
            msg = upload_too_large(api_config.max_upload_bytes)
        return _error(exc.code or 500, code, msg)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        app.logger.exception("unhandled error")
        return _error(500, "internal", "internal error; see the server log")

    @app.get("/")
    @_role(None)
    def review_page():
        """The moderator's review page (simsearch/static: plain HTML, CSS and JavaScript)."""
        resp = app.send_static_file("review.html")
        resp.headers["Content-Security-Policy"] = _PAGE_CSP
        return resp

    @app.get("/v1/health")
    @_role(None)
    def health():
        return jsonify({"status": "ok", "version": __version__, "tracks": len(eng().tracks)})

    @app.get("/v1/stats")
    def stats():
        return jsonify(eng().stats())

    @app.get("/v1/openapi.json")
    @_role(None)
    def openapi():
        return jsonify(openapi_document(__version__))

    @app.post("/v1/query")
    def query():
        _check_fields(_QUERY_FIELDS)
        data = _audio_bytes()
        e = eng()
        mcfg = _match_config(e.match_config, api_config)
        with_hits = _bool_param("hits", False)
        t0 = time.perf_counter()
        return jsonify(e.query_samples(decoded(e, data), mcfg, t0).to_json(with_hits))

    @app.post("/v1/tracks")
    @_role("write")
    def add_track():
        _check_fields(_ADD_FIELDS)
        track_id = _param("track_id")
        if track_id is None:
            raise ParameterError("track_id is required")
        meta = {}
        raw_meta = _param("metadata")
        if raw_meta:
            try:
                meta = json.loads(raw_meta)
            except ValueError:
                raise ParameterError("metadata must be a JSON object") from None
            if not isinstance(meta, dict):
                raise ParameterError("metadata must be a JSON object")
        data = _audio_bytes()
        body = {}
        e = eng()
        e.check_new_id(track_id)  # before the optional check query
        check = _bool_param("check", False)
        mcfg = _match_config(e.match_config, api_config)
        y = decoded(e, data)
        if check:
            body["matches"] = e.query_samples(y, mcfg).to_json()["matches"]
        info = e.add_samples(track_id, y, path="", meta=meta)
        body["track"] = info.to_json()
        return jsonify(body), 201

    @app.get("/v1/tracks/<path:track_id>")
    def get_track(track_id):
        return jsonify(eng().get(track_id).to_json())

    # Not /v1/tracks/<id>/audio: ids may contain '/', so "x/audio" would be ambiguous.
    @app.get("/v1/audio/<path:track_id>")
    def track_audio(track_id):
        _check_fields(_AUDIO_FIELDS)
        start = _seconds_param("start", 0.0)
        end = _seconds_param("end", start + api_config.max_audio_s)  # the engine cuts it at the track's end
        if end - start > api_config.max_audio_s:
            raise ParameterError(f"at most {api_config.max_audio_s:g} s of audio per request (end - start)")
        y, sr = eng().catalog_audio(track_id, start, end, api_config.media_roots)
        data = wav_bytes(y, sr)
        resp = Response(data, mimetype="audio/wav")
        return resp.make_conditional(request, accept_ranges=True, complete_length=len(data))

    @app.delete("/v1/tracks/<path:track_id>")
    @_role("write")
    def delete_track(track_id):
        info = eng().remove(track_id)
        return jsonify({"removed": info.track_id})

    return app


def _error(status: int, code: str, message: str):
    resp = jsonify({"error": code, "message": message})
    resp.status_code = status
    return resp


def _unauthorized(code: str, message: str):
    resp = _error(401, code, message)
    resp.headers["WWW-Authenticate"] = 'Bearer realm="simsearch"'
    return resp


def _is_multipart() -> bool:
    return request.mimetype == "multipart/form-data"


def _param(name: str) -> str | None:
    """A parameter from the query string or, for multipart uploads, a form field.
    Any other body is the audio itself and is never parsed as a form."""
    if name in request.args:
        return request.args[name]
    if _is_multipart():
        return request.form.get(name)
    return None


def _check_fields(allowed: set[str]) -> None:
    names = set(request.args)
    if _is_multipart():
        names |= set(request.form) | set(request.files)
    unknown = names - allowed
    if unknown:
        raise ParameterError(f"unknown fields: {sorted(unknown)}; allowed: {sorted(allowed)}")


def _audio_bytes() -> bytes:
    """The upload: multipart field `file`, or else the raw body."""
    if _is_multipart():
        f = request.files.get("file")
        if f is None:
            raise ParameterError("multipart upload needs a field named 'file'")
        data = f.read()
    else:
        data = request.get_data(cache=False)
    if not data:
        raise EmptyInput("empty upload: send the audio as multipart field 'file' or as the body")
    return data


def _bool_param(name: str, default: bool) -> bool:
    v = _param(name)
    if v is None:
        return default
    if v.lower() in ("1", "true", "yes"):
        return True
    if v.lower() in ("0", "false", "no"):
        return False
    raise ParameterError(f"{name} must be true or false")


def _seconds_param(name: str, default: float) -> float:
    v = _param(name)
    if v is None:
        return default
    try:
        return float(v)
    except ValueError:
        raise ParameterError(f"{name} must be a number of seconds") from None


def _match_config(base: MatchConfig, api_config: ApiConfig) -> MatchConfig:
    changes = {}
    if _param("top_k") is not None:
        try:
            k = int(_param("top_k"))
        except ValueError:
            raise ParameterError("top_k must be an integer") from None
        if not 1 <= k <= api_config.max_top_k:
            raise ParameterError(f"top_k must be between 1 and {api_config.max_top_k}")
        changes["top_k"] = k
    if _param("min_score") is not None:
        try:
            s = float(_param("min_score"))
        except ValueError:
            raise ParameterError("min_score must be a number") from None
        if not np.isfinite(s) or s < 0:
            raise ParameterError("min_score must be a finite number >= 0")
        changes["min_score"] = s
    return base.replace(**changes) if changes else base
