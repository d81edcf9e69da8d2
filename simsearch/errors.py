"""One root error and a few specific ones; the API maps each to a 4xx."""


def upload_too_large(limit_bytes: int) -> str:
    """The message of a 413 for an upload over the limit (the app's and the WSGI server's)."""
    return f"upload is larger than the limit of {limit_bytes} bytes"


class SimsearchError(Exception):
    """Root of every error simsearch raises on purpose."""

    status = 400
    code = "error"


class BadAudio(SimsearchError):
    """The input is not decodable audio, or not usable audio."""

    status = 415
    code = "bad_audio"


class EmptyInput(SimsearchError):
    status = 400
    code = "empty_input"


class AudioTooLong(SimsearchError):
    status = 413
    code = "audio_too_long"


class AudioTooShort(SimsearchError):
    status = 422
    code = "audio_too_short"


class DecoderUnavailable(SimsearchError):
    """The container needs ffmpeg and ffmpeg is not installed."""

    status = 415
    code = "decoder_unavailable"


class ParameterError(SimsearchError):
    status = 400
    code = "bad_parameter"


class ConfigMismatch(SimsearchError):
    """An index was made with another feature configuration or format."""

    status = 409
    code = "config_mismatch"


class IndexNotFound(SimsearchError):
    status = 404
    code = "index_not_found"


class UnknownTrack(SimsearchError):
    status = 404
    code = "unknown_track"


class AudioUnavailable(SimsearchError):
    """The index does not know where a track's audio is, or the file is gone."""

    status = 404
    code = "audio_unavailable"


class TrackExists(SimsearchError):
    status = 409
    code = "track_exists"


class IndexCorrupt(SimsearchError):
    status = 500
    code = "index_corrupt"


class BuildInProgress(SimsearchError):
    status = 409
    code = "build_in_progress"


class DecodeTimeout(SimsearchError):
    """Decoding ran past its time bound (DecodeLimits.timeout_s)."""

    status = 422
    code = "decode_timeout"


class Busy(SimsearchError):
    """Every decode slot is taken; the client should retry later."""

    status = 503
    code = "busy"
