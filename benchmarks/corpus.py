"""The development corpus: game music shipped in Debian packages.

Five packages of freely licensed game music are installed (with apt-get when
missing) and their audio files of at least `MIN_DURATION_S` are kept, one copy
of each byte-identical file.  Files that belong together stay on the same side
of the catalog / out-of-catalog split: a Frets on Fire song directory holds the
backing track (song.ogg) and the guitar stem (guitar.ogg) of one song, so the
directory is one group; every other file is a group of its own.

Run ``python -m benchmarks.corpus [--data DIR]`` to (re)write DATA/corpus.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

import soundfile as sf

from simsearch.store import sha256_file

DEFAULT_DATA = Path("/work/data")
AUDIO_SUFFIXES = (".ogg", ".wav", ".flac", ".mp3")
MIN_DURATION_S = 45.0
CATALOG_FRACTION = 0.8
SPLIT_SEED = 0

# Files that hold the same recording as another file of the corpus but differ
# in bytes (a re-encode), so the byte hash misses them; each is dropped and the
# file it maps to is kept.  Found by querying every full track against an index
# of all of them: naev's ambient2.ogg matches ambient2_5.ogg from 0.5 s to
# 71.7 s at speed 1.000 with score 274, where unrelated tracks score at most ~30.
NEAR_DUPLICATES = {
    "/usr/share/naev/dat/snd/music/ambient2.ogg": "/usr/share/naev/dat/snd/music/ambient2_5.ogg",
}


@dataclass(frozen=True)
class Package:
    """A Debian package of music and how its files are named and grouped."""

    name: str
    prefix: str  # first part of every track id
    root: str  # track ids are paths relative to this directory
    stems: bool  # files of one directory are stems of one song (one group)


PACKAGES = (
    Package("fretsonfire-songs-muldjord", "fretsonfire/muldjord",
            "/usr/share/games/fretsonfire/data/songs/muldjord", stems=True),
    Package("fretsonfire-songs-sectoid", "fretsonfire/sectoid",
            "/usr/share/games/fretsonfire/data/songs/sectoid", stems=True),
    Package("flare-game", "flare", "/usr/share/games/flare/mods", stems=False),
    Package("naev-data", "naev", "/usr/share/naev/dat/snd/music", stems=False),
    Package("megaglest-data", "megaglest", "/usr/share/games/megaglest", stems=False),
)


@dataclass(frozen=True)
class Track:
    track_id: str
    path: str
    duration: float  # seconds
    package: str
    group: str  # tracks of one group are on the same side of the split
    split: str = ""  # "catalog" or "out"


def data_dir(cli_value: str | None = None) -> Path:
    """The data directory: --data, else $SIMSEARCH_DATA, else /work/data."""
    return Path(cli_value or os.environ.get("SIMSEARCH_DATA") or DEFAULT_DATA)


def ensure_packages(names: list[str]) -> None:
    """Install the Debian packages that `dpkg -s` reports missing."""
    missing = [n for n in names if not _installed(n)]
    if not missing:
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *missing], check=True, env=env)


def _installed(name: str) -> bool:
    proc = subprocess.run(["dpkg", "-s", name], capture_output=True, text=True)
    return proc.returncode == 0 and "Status: install ok installed" in proc.stdout


def package_audio_files(name: str) -> list[str]:
    """Audio files listed by `dpkg -L`, sorted."""
    out = subprocess.run(["dpkg", "-L", name], capture_output=True, text=True, check=True).stdout
    return sorted(p for p in out.splitlines() if p.lower().endswith(AUDIO_SUFFIXES) and os.path.isfile(p))


def track_id(pkg: Package, path: str) -> str:
    """Readable id: package prefix + path below the package root, no suffix,
    lower case, runs of blanks and odd characters turned into '_'."""
    p = PurePosixPath(path)
    rel = p.relative_to(pkg.root) if p.is_relative_to(pkg.root) else p.relative_to("/usr/share")
    slug = re.sub(r"[^a-z0-9._/-]+", "_", str(rel.with_suffix("")).lower())
    return f"{pkg.prefix}/{slug}"


def group_key(pkg: Package, path: str) -> str:
    return str(PurePosixPath(path).parent) if pkg.stems else path


def file_sha256(path: str) -> str:
    return sha256_file(Path(path))


def scan(packages: tuple[Package, ...] = PACKAGES, min_duration: float = MIN_DURATION_S) -> list[Track]:
    """Every long-enough audio file of `packages`, byte-identical copies dropped
    (the first path in sorted order is kept), and the NEAR_DUPLICATES too."""
    tracks, seen = [], set()
    for pkg in packages:
        for path in package_audio_files(pkg.name):
            if path in NEAR_DUPLICATES:
                continue
            duration = sf.info(path).duration
            if duration < min_duration:
                continue
            digest = file_sha256(path)
            if digest in seen:
                continue
            seen.add(digest)
            tracks.append(Track(track_id(pkg, path), path, round(duration, 3), pkg.name, group_key(pkg, path)))
    ids = [t.track_id for t in tracks]
    if len(set(ids)) != len(ids):
        raise RuntimeError(f"track ids collide: {sorted({i for i in ids if ids.count(i) > 1})}")
    return tracks


def split_groups(tracks: list[Track], fraction: float = CATALOG_FRACTION, seed: int = SPLIT_SEED) -> list[Track]:
    """Assign whole groups to the catalog (about `fraction` of the groups) or out of it."""
    groups = sorted({t.group for t in tracks})
    random.Random(seed).shuffle(groups)
    catalog = set(groups[: round(fraction * len(groups))])
    return [Track(**{**asdict(t), "split": "catalog" if t.group in catalog else "out"}) for t in tracks]


def build_corpus(data: Path) -> list[Track]:
    """Install the packages, scan them, split, and write DATA/corpus.json."""
    ensure_packages([p.name for p in PACKAGES])
    tracks = split_groups(scan())
    data.mkdir(parents=True, exist_ok=True)
    manifest = data / "corpus.json"
    tmp = manifest.with_name(manifest.name + ".tmp")
    tmp.write_text(json.dumps([asdict(t) for t in tracks], indent=1))
    os.replace(tmp, manifest)
    return tracks


def load_corpus(data: Path) -> list[Track]:
    return [Track(**t) for t in json.loads((data / "corpus.json").read_text())]


def summary(tracks: list[Track]) -> dict:
    def part(ts):
        return {"tracks": len(ts), "hours": round(sum(t.duration for t in ts) / 3600, 3),
                "groups": len({t.group for t in ts})}

    return {"all": part(tracks),
            "catalog": part([t for t in tracks if t.split == "catalog"]),
            "out": part([t for t in tracks if t.split == "out"])}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="data directory (default $SIMSEARCH_DATA or /work/data)")
    args = ap.parse_args(argv)
    data = data_dir(args.data)
    tracks = build_corpus(data)
    print(json.dumps(summary(tracks), indent=1))
    print(f"manifest: {data / 'corpus.json'}")


if __name__ == "__main__":
    main()
