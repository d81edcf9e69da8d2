"""SOURCE arguments of the command line: audio files, directories, TSV lists."""

from __future__ import annotations

import csv
from pathlib import Path

from .errors import ParameterError

AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".mp3", ".m4a", ".aac", ".opus", ".webm",
                    ".mp4", ".aif", ".aiff", ".wma", ".mka"}


def expand_sources(sources: list[str]) -> list[tuple[str, str]]:
    """(track_id, path) for every SOURCE.

    * an audio file: its id is its name without extension;
    * a directory: every audio file below it, its id the path relative to the
      directory without extension;
    * a .tsv file: one `track_id<TAB>path` line each (relative paths are taken
      from the TSV file's directory).
    """
    out: list[tuple[str, str]] = []
    for s in sources:
        p = Path(s)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS)
            out += [(f.relative_to(p).with_suffix("").as_posix(), str(f)) for f in files]
        elif p.suffix.lower() == ".tsv" and p.is_file():
            with open(p, newline="", encoding="utf-8") as fh:
                for n, row in enumerate(csv.reader(fh, delimiter="\t"), 1):
                    if not row or row[0].startswith("#"):
                        continue
                    if len(row) != 2:
                        raise ParameterError(f"{p}:{n}: expected track_id<TAB>path")
                    path = Path(row[1])
                    out.append((row[0], str(path if path.is_absolute() else p.parent / path)))
        elif p.is_file():
            out.append((p.stem, str(p)))
        else:
            raise ParameterError(f"no such file or directory: {s}")
    return out
