"""The command line, run as a real process: build, info, query, add, remove."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from audio_tools import CATALOG, clip_path, excerpt, load_clip, resample, write_audio
from simsearch.engine import Engine

pytestmark = pytest.mark.slow


def simsearch(*args, cwd):
    """Run `python -m simsearch ARGS` to completion."""
    return subprocess.run([sys.executable, "-m", "simsearch", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=180)


def _json_lines(stdout):
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """A music directory: catalog clips in nested folders, plus a non-audio file."""
    root = tmp_path_factory.mktemp("library")
    (root / "themes" / "calm").mkdir(parents=True)
    (root / "themes" / "loud").mkdir(parents=True)
    for name, sub in zip(CATALOG, ["themes/loud", "themes/calm", "themes/calm", "."]):
        shutil.copy(clip_path(name), root / sub / f"{name}.ogg")
    (root / "themes" / "README.txt").write_text("not music")
    return root


@pytest.fixture(scope="module")
def built(library, tmp_path_factory):
    """`simsearch build INDEX DIRECTORY`, run once: (index dir, finished process)."""
    work = tmp_path_factory.mktemp("cli")
    index_dir = work / "index"
    proc = simsearch("build", index_dir, library, "--jobs", "1", "--quiet", cwd=work)
    return index_dir, proc


DIR_IDS = {"themes/loud/flare_battle_theme": "flare_battle_theme",
           "themes/calm/flare_cave_theme": "flare_cave_theme",
           "themes/calm/flare_forest_theme": "flare_forest_theme",
           "flare_town_theme": "flare_town_theme"}
DIR_IDS_BY_NAME = {name: track_id for track_id, name in DIR_IDS.items()}


@pytest.fixture
def cli_index(built, tmp_path):
    """A private copy of the CLI-built index."""
    dst = tmp_path / "index"
    shutil.copytree(built[0], dst)
    return dst


def _excerpt_file(tmp_path, name, fmt="flac", offset=4.0):
    y, sr = load_clip(name)
    return write_audio(tmp_path / f"{name}-excerpt.{fmt}", excerpt(y, sr, offset, 9.0), sr, fmt, 2)


def test_build_from_a_directory_names_tracks_by_relative_path(built):
    index_dir, proc = built
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["tracks"] == len(CATALOG) and summary["failed"] == 0 and summary["resumed"] == 0
    assert summary["generation"].startswith("gen-")
    assert sorted(Engine(index_dir).tracks) == sorted(DIR_IDS)


def test_build_records_absolute_source_paths(library, tmp_path):
    """A relative SOURCE is stored resolved: a server started elsewhere still finds the audio."""
    proc = simsearch("build", tmp_path / "index", "themes/calm", "--jobs", "1", "--quiet", cwd=library)
    assert proc.returncode == 0, proc.stderr
    paths = {t: info.path for t, info in Engine(tmp_path / "index").tracks.items()}
    assert paths == {name: str((library / "themes/calm" / f"{name}.ogg").resolve())
                     for name in ("flare_cave_theme", "flare_forest_theme")}


def test_info(built, tmp_path):
    proc = simsearch("info", built[0], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["tracks"] == len(CATALOG)
    assert info["hours"] == pytest.approx(len(CATALOG) * 25 / 3600, abs=0.002)
    assert info["vectors"] > 0 and info["bytes_on_disk"] > 0
    assert info["feature_config"]["bins_per_octave"] > 0
    assert info["faiss_parameters"]["list_target"] == 16


def test_list_target_option_sizes_the_serving_table(built, tmp_path):
    default = json.loads(simsearch("info", built[0], cwd=tmp_path).stdout)["faiss_parameters"]
    proc = simsearch("info", built[0], "--list-target", "4", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)["faiss_parameters"]
    assert got["list_target"] == 4 and got["nlist"] == 4 * default["nlist"]
    query = simsearch("query", built[0], clip_path(CATALOG[0]), "--json", "--list-target", "4", cwd=tmp_path)
    assert _json_lines(query.stdout)[0]["matches"][0]["track_id"] == DIR_IDS_BY_NAME[CATALOG[0]]
    bad = simsearch("info", built[0], "--list-target", "0", cwd=tmp_path)
    assert bad.returncode == 2 and "list_target" in bad.stderr


def test_query_json_one_line_per_query(built, tmp_path):
    sources = [_excerpt_file(tmp_path, "flare_cave_theme", "wav", 6.0),
               _excerpt_file(tmp_path, "flare_town_theme", "flac", 12.0),
               _excerpt_file(tmp_path, "flare_boss_theme", "ogg")]
    proc = simsearch("query", built[0], *sources, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = _json_lines(proc.stdout)
    assert [line["query"] for line in lines] == [str(s) for s in sources]
    for line in lines:
        assert set(line) == {"query", "matches", "elapsed_ms"} and line["elapsed_ms"] > 0
    cave, town, boss = (line["matches"] for line in lines)
    assert [m["track_id"] for m in cave] == ["themes/calm/flare_cave_theme"]
    assert cave[0]["ref_start"] - cave[0]["query_start"] == pytest.approx(6.0, abs=0.2)
    assert cave[0]["kind"] == "duplicate" and "hits" not in cave[0]
    assert [m["track_id"] for m in town] == ["flare_town_theme"]
    assert boss == []


def test_query_a_directory_in_text_form(built, tmp_path):
    queries = tmp_path / "queries"
    queries.mkdir()
    _excerpt_file(queries, "flare_forest_theme", "wav")
    _excerpt_file(queries, "flare_dungeon_theme", "wav")
    proc = simsearch("query", built[0], queries, "--top-k", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2
    dungeon, forest = sorted(lines)
    assert "flare_dungeon_theme-excerpt.wav" in dungeon and "no match" in dungeon
    assert "themes/calm/flare_forest_theme" in forest and "duplicate" in forest


def test_query_reports_bad_files_and_goes_on(built, tmp_path):
    text = tmp_path / "notes.mp3"
    text.write_text("not audio\n" * 100)
    good = _excerpt_file(tmp_path, "flare_battle_theme")
    proc = simsearch("query", built[0], text, good, "--json", "--hits", cwd=tmp_path)
    assert proc.returncode == 1
    bad_line, good_line = _json_lines(proc.stdout)
    assert bad_line["query"] == str(text) and bad_line["error"] == "bad_audio" and bad_line["message"]
    assert good_line["matches"][0]["track_id"] == "themes/loud/flare_battle_theme"
    assert len(good_line["matches"][0]["hits"]) >= good_line["matches"][0]["score"]


def test_build_from_a_tsv(tmp_path):
    music = tmp_path / "music"
    music.mkdir()
    shutil.copy(clip_path("flare_cave_theme"), music / "cave.ogg")
    tsv = tmp_path / "tracks.tsv"
    tsv.write_text("# track_id<TAB>path\n"
                   "label/0001\tmusic/cave.ogg\n"                       # relative to the TSV's directory
                   f"label/0002 forest\t{clip_path('flare_forest_theme')}\n"  # absolute
                   "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = simsearch("build", tmp_path / "index", tsv, "--jobs", "1", "--quiet", cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    eng = Engine(tmp_path / "index")
    assert sorted(eng.tracks) == ["label/0001", "label/0002 forest"]
    y, sr = load_clip("flare_forest_theme")
    res = eng.query_samples(resample(excerpt(y, sr, 3.0, 9.0), sr, eng.config.sample_rate))
    assert [m.track_id for m in res.matches] == ["label/0002 forest"]


def test_build_from_files_reports_a_bad_one(tmp_path):
    text = tmp_path / "fake.ogg"
    text.write_text("this is text\n" * 100)
    proc = simsearch("build", tmp_path / "index", clip_path("flare_town_theme"), text, "--jobs", "1", "--quiet",
                     cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["failed"] == 1
    assert any(line.startswith("failed\tfake\t") for line in proc.stderr.splitlines())
    assert sorted(Engine(tmp_path / "index").tracks) == ["flare_town_theme"]
    # Nothing usable at all is a failed build.
    proc = simsearch("build", tmp_path / "index2", text, "--jobs", "1", "--quiet", cwd=tmp_path)
    assert proc.returncode == 1


def test_add_then_remove(cli_index, tmp_path):
    new = tmp_path / "new"
    new.mkdir()
    shutil.copy(clip_path("flare_dungeon_theme"), new / "dungeon.ogg")
    proc = simsearch("add", cli_index, new / "dungeon.ogg", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"tracks": len(CATALOG) + 1, "failed": 0}
    query = _excerpt_file(tmp_path, "flare_dungeon_theme")
    proc = simsearch("query", cli_index, query, "--json", cwd=tmp_path)
    assert [m["track_id"] for m in _json_lines(proc.stdout)[0]["matches"]] == ["dungeon"]

    proc = simsearch("remove", cli_index, "dungeon", "no/such/track", cwd=tmp_path)
    assert proc.returncode == 1
    assert json.loads(proc.stdout) == {"tracks": len(CATALOG), "not_found": 1}
    assert "no/such/track" in proc.stderr
    eng = Engine(cli_index)
    assert "dungeon" not in eng.tracks
    assert sorted(eng.tracks) == sorted(DIR_IDS)


def test_add_reports_a_taken_id_and_adds_the_rest(cli_index, tmp_path):
    # Two files with one name in different folders: one id, twice.  The batch
    # must go on past the second, as build does, and keep the other files.
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
    shutil.copy(clip_path("flare_dungeon_theme"), tmp_path / "a" / "theme.ogg")
    shutil.copy(clip_path("flare_boss_theme"), tmp_path / "b" / "theme.ogg")
    shutil.copy(clip_path("flare_boss_theme"), tmp_path / "boss.ogg")
    proc = simsearch("add", cli_index, tmp_path / "a" / "theme.ogg", tmp_path / "b" / "theme.ogg",
                     tmp_path / "boss.ogg", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "theme" in proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == {"tracks": len(CATALOG) + 2, "failed": 1}
    assert {"theme", "boss"} <= set(Engine(cli_index).tracks)


def test_add_creates_a_missing_index(tmp_path):
    proc = simsearch("add", tmp_path / "fresh", clip_path("flare_cave_theme"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(Engine(tmp_path / "fresh").tracks) == ["flare_cave_theme"]


def test_missing_index_is_a_clear_error(tmp_path):
    proc = simsearch("query", tmp_path / "nowhere", clip_path("flare_cave_theme"), cwd=tmp_path)
    assert proc.returncode == 2
    assert "no index" in proc.stderr and "simsearch build" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = simsearch("build", tmp_path / "index", tmp_path / "missing.ogg", cwd=tmp_path)
    assert proc.returncode == 2 and "no such file" in proc.stderr
