"""The OpenAPI 3.1 document of the HTTP API."""

from __future__ import annotations

from .config import MatchConfig

_ERROR = {"$ref": "#/components/schemas/Error"}


def _err(desc: str) -> dict:
    return {"description": desc, "content": {"application/json": {"schema": _ERROR}}}


_AUDIO_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
            "file": {"type": "string", "format": "binary", "description": "the audio file"},
            "top_k": {"type": "integer", "minimum": 1, "maximum": 50},
            "min_score": {"type": "number", "minimum": 0},
            "hits": {"type": "boolean", "description": "also return each match's aligned hits"}},
            "additionalProperties": False}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}

_QUERY_PARAMS = [
    {"name": "top_k", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 50}},
    {"name": "min_score", "in": "query", "schema": {"type": "number", "minimum": 0}},
    {"name": "hits", "in": "query", "schema": {"type": "boolean"}},
]

_TRACK_ID = {"name": "track_id", "in": "path", "required": True,
             "schema": {"type": "string", "minLength": 1, "maxLength": 256}}


def openapi_document(version: str) -> dict:
    # Reads need a key only on a server started with --keys-for-reads; writes always do.
    auth = {"401": _err("no API key, or not a valid one"), "403": _err("the key's role does not allow this")}
    bad_audio = {
        "400": _err("bad parameter, unknown field or empty upload"),
        "413": _err("upload or audio too large / too long"),
        "415": _err("not decodable audio"),
        "422": _err("audio too short, or decoding ran past its time bound"),
        "503": _err("every decode slot is busy; retry after the Retry-After header's seconds"),
        **auth,
    }
    read_key = [{}, {"apiKey": []}]
    write_key = [{"apiKey": []}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "simsearch", "version": version,
                 "description": "Find which catalog track an audio upload copies or derives from."},
        "paths": {
            "/v1/query": {"post": {
                "summary": "Match an audio upload against the catalog",
                "security": read_key,
                "parameters": _QUERY_PARAMS,
                "requestBody": _AUDIO_BODY,
                "responses": {"200": {"description": "matches above the decision threshold",
                                      "content": {"application/json": {"schema": {"$ref": "#/components/schemas/QueryResult"}}}},
                              **bad_audio}}},
            "/v1/tracks": {"post": {
                "summary": "Add a track to the catalog (durable before the response)",
                "security": write_key,
                "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                    "type": "object", "required": ["file", "track_id"], "additionalProperties": False,
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "track_id": {"type": "string", "minLength": 1, "maxLength": 256},
                        "metadata": {"type": "string", "description": "a JSON object, stored with the track"},
                        "check": {"type": "boolean", "description": "also return what the upload matches before it is added"},
                        "top_k": {"type": "integer", "minimum": 1, "maximum": 50},
                        "min_score": {"type": "number", "minimum": 0}}}}}},
                "responses": {"201": {"description": "added", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {
                        "track": {"$ref": "#/components/schemas/Track"},
                        "matches": {"type": "array", "items": {"$ref": "#/components/schemas/Match"}}}}}}},
                              "409": _err("track id already taken"), **bad_audio}}},
            "/v1/tracks/{track_id}": {
                "get": {"summary": "A track's record", "parameters": [_TRACK_ID], "security": read_key,
                        "responses": {"200": {"description": "the track", "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/Track"}}}}, "404": _err("unknown track"),
                            **auth}},
                "delete": {"summary": "Remove a track", "parameters": [_TRACK_ID], "security": write_key,
                           "responses": {"200": {"description": "removed", "content": {"application/json": {
                               "schema": {"type": "object", "properties": {"removed": {"type": "string"}}}}}},
                               "404": _err("unknown track"), **auth}}},
            "/v1/audio/{track_id}": {"get": {
                "summary": "An excerpt of a catalog track's own audio, as 16-bit PCM WAV",
                "description": "Read from the source file the index recorded when the track was built or added "
                               "from files (tracks added over HTTP keep none); at the file's own sample rate, "
                               "one or two channels, at most 60 s per request.",
                "security": read_key,
                "parameters": [_TRACK_ID,
                               {"name": "start", "in": "query", "schema": {"type": "number", "minimum": 0,
                                                                           "default": 0}, "description": "seconds"},
                               {"name": "end", "in": "query", "schema": {"type": "number"},
                                "description": "seconds, cut at the track's end (default: start + 60 s)"}],
                "responses": {"200": {"description": "the excerpt", "content": {"audio/wav": {"schema": {
                                  "type": "string", "format": "binary"}}}},
                              "400": _err("bad start or end, or more than 60 s"),
                              "404": _err("unknown_track, or audio_unavailable: the index knows no source file "
                                          "for the track, it is gone, or it lies outside the "
                                          "server's --media-root directories"), **auth}}},
            "/v1/health": {"get": {"summary": "Liveness", "responses": {"200": {"description": "ok",
                "content": {"application/json": {"schema": {"type": "object"}}}}}}},
            "/v1/stats": {"get": {"summary": "Index size and configuration", "security": read_key, "responses": {"200": {
                "description": "stats", "content": {"application/json": {"schema": {"type": "object"}}}}, **auth}}},
            "/v1/openapi.json": {"get": {"summary": "This document", "responses": {"200": {
                "description": "OpenAPI document", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
        },
        "components": {"securitySchemes": {"apiKey": {
            "type": "http", "scheme": "bearer",
            "description": "an API key (read or write role) as 'Authorization: Bearer <key>'"}}, "schemas": {
            "Error": {"type": "object", "required": ["error", "message"], "properties": {
                "error": {"type": "string", "description": "machine-readable code"},
                "message": {"type": "string"}}},
            "Match": {"type": "object", "required": ["track_id", "score", "query_start", "query_end",
                                                     "ref_start", "ref_end", "speed", "pitch_semitones", "kind",
                                                     "repeats"],
                      "properties": {
                          "track_id": {"type": "string"},
                          "score": {"type": "number", "description": f"verification z-score: how many standard deviations the catalog track's own peaks found along the alignment lie above the query's chance rate; compare with min_score (default {MatchConfig().min_score:g})"},
                          "query_start": {"type": "number", "description": "seconds"},
                          "query_end": {"type": "number"},
                          "ref_start": {"type": "number", "description": "seconds in the catalog track"},
                          "ref_end": {"type": "number"},
                          "speed": {"type": "number", "description": "time scale of the reference inside the query (1.25 = 25% faster)"},
                          "pitch_semitones": {"type": "number", "description": "pitch of the query minus pitch of the reference"},
                          "kind": {"type": "string", "enum": ["duplicate", "modified", "partial"]},
                          "repeats": {"type": "array", "description": "other ranges of the catalog track that the matched query range fits nearly as well at the same speed and pitch (a passage the track repeats: a chorus, a loop), each verified like a match and scoring at least 0.8 of it (repeat_min_ratio); best first, disjoint from ref_start..ref_end",
                                      "items": {"type": "object", "required": ["ref_start", "ref_end", "score"], "properties": {
                                          "ref_start": {"type": "number", "description": "seconds in the catalog track"},
                                          "ref_end": {"type": "number"},
                                          "score": {"type": "number", "description": "verification z-score of this range"}}}},
                          "hits": {"type": "array", "items": {"type": "array", "items": {"type": "number"}},
                                   "description": "aligned (query s, reference s) pairs, when hits=true"}}},
            "QueryResult": {"type": "object", "required": ["duration_s", "matches", "elapsed_ms"], "properties": {
                "duration_s": {"type": "number"},
                "matches": {"type": "array", "items": {"$ref": "#/components/schemas/Match"}},
                "elapsed_ms": {"type": "number"}}},
            "Track": {"type": "object", "properties": {
                "track_id": {"type": "string"}, "duration": {"type": "number"}, "path": {"type": "string"},
                "meta": {"type": "object"}, "n_triplets": {"type": "integer"}}},
        }},
    }
