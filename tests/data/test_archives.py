"""The raw dataset as its two archives (pipeline/data/archives.py): reproducible packing, the scratch
extraction of the split and preprocess stages, the checks at download time, hard links."""

import errno
import gzip
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

import pipeline.data.archives
import stages.preprocess
import stages.split
from pipeline.core.errors import UserError
from pipeline.core.runner import run_stage
from pipeline.data.archives import ARCHIVES, check_archives, extract, is_packed, opened, pack, place
from pipeline.data.layout import LIST_FILES, check_layout
from tests.support import preprocess_reports, write_params

PACKED = sorted(ARCHIVES.values())


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _pack_all(root: Path, raw: Path) -> Path:
    """``raw`` holding the two archives of the official-layout folder ``root``, as the download stage writes."""
    raw.mkdir(parents=True)
    for sub, name in ARCHIVES.items():
        pack(root, [sub], raw / name)
    return raw


@pytest.fixture(scope="module")
def packed(synthetic_root, tmp_path_factory) -> Path:
    """The two archives of the 16-pet synthetic set, shared read-only (tests link them, see ``raw``)."""
    return _pack_all(synthetic_root, tmp_path_factory.mktemp("packed") / "raw")


@pytest.fixture
def raw(packed, tmp_path) -> Path:
    """This test's own data/raw holding the two archives (hard links of ``packed``)."""
    folder = tmp_path / "data" / "raw"
    folder.mkdir(parents=True)
    for name in PACKED:
        os.link(packed / name, folder / name)
    return folder


def _set_times(root: Path, seconds: int) -> None:
    for path in [root, *root.rglob("*")]:
        os.utime(path, (seconds, seconds))


# --- pack ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("sub", ["images", "annotations"])
def test_pack_is_byte_identical_whatever_the_times_modes_and_place_of_the_files(synthetic_root, tmp_path, sub):
    first, second, moved = tmp_path / "first.tar.gz", tmp_path / "second.tar.gz", tmp_path / "moved.tar.gz"
    copy = tmp_path / "copy"
    shutil.copytree(synthetic_root, copy)
    _set_times(copy, 1_000_000_000)
    pack(copy, [sub], first)
    _set_times(copy, 1_700_000_000)
    next(p for p in (copy / sub).rglob("*") if p.is_file()).chmod(0o600)
    pack(copy, [sub], second)
    pack(synthetic_root, [sub], moved)  # the same files elsewhere, with the times they were written at
    assert first.read_bytes() == second.read_bytes() == moved.read_bytes()
    with gzip.open(first) as gz:
        gz.read(1)
        assert gz.mtime == 0  # no time in the gzip header either


def test_pack_members_are_sub_paths_in_sorted_order_without_times_or_owners(synthetic_root, tmp_path):
    pack(synthetic_root, ["annotations"], tmp_path / "a.tar.gz")
    with tarfile.open(tmp_path / "a.tar.gz") as tar:
        infos = tar.getmembers()
    names = [info.name for info in infos]
    assert names[0] == "annotations"
    assert all(name.startswith("annotations/") for name in names[1:])
    assert names[1:] == sorted(names[1:], key=lambda name: name.split("/"))
    expected = {p.relative_to(synthetic_root).as_posix() for p in (synthetic_root / "annotations").rglob("*")}
    assert set(names[1:]) == expected
    assert {(i.mtime, i.uid, i.gid, i.uname, i.gname) for i in infos} == {(0, 0, 0, "", "")}
    assert {i.mode for i in infos if i.isdir()} == {0o755} and {i.mode for i in infos if i.isfile()} == {0o644}


def test_pack_then_extract_gives_back_the_same_files(synthetic_root, tmp_path):
    for sub in ARCHIVES:
        pack(synthetic_root, [sub], tmp_path / f"{sub}.tar.gz")
        extract(tmp_path / f"{sub}.tar.gz", tmp_path / "out")
    assert _files(tmp_path / "out") == _files(synthetic_root)


def test_pack_follows_links_and_stores_no_link_member(synthetic_root, tmp_path):
    """A folder whose images/ and annotations/trimaps/ are symbolic links (to another disk, say), with
    a file linked in from elsewhere and one hard-linked, packs to the bytes of the plain folder, which
    extraction accepts."""
    plain = tmp_path / "plain"
    shutil.copytree(synthetic_root, plain)
    elsewhere = tmp_path / "elsewhere" / "trimaps"
    shutil.copytree(plain / "annotations" / "trimaps", elsewhere)
    trimaps = sorted(elsewhere.iterdir())
    trimaps[0].unlink()
    trimaps[0].symlink_to(plain / "annotations" / "trimaps" / trimaps[0].name)
    trimaps[1].unlink()
    os.link(plain / "annotations" / "trimaps" / trimaps[1].name, trimaps[1])
    linked = tmp_path / "linked"
    (linked / "annotations").mkdir(parents=True)
    (linked / "images").symlink_to(plain / "images", target_is_directory=True)
    (linked / "annotations" / "trimaps").symlink_to(Path("..", "..", "elsewhere", "trimaps"), target_is_directory=True)
    for name in LIST_FILES:
        (linked / "annotations" / name).symlink_to(Path("..", "..", "plain", "annotations", name))
    for sub in ARCHIVES:
        pack(linked, [sub], tmp_path / f"linked-{sub}.tar.gz")
        pack(plain, [sub], tmp_path / f"plain-{sub}.tar.gz")
        assert (tmp_path / f"linked-{sub}.tar.gz").read_bytes() == (tmp_path / f"plain-{sub}.tar.gz").read_bytes()
        with tarfile.open(tmp_path / f"linked-{sub}.tar.gz") as tar:
            assert all(info.isfile() or info.isdir() for info in tar.getmembers())
        extract(tmp_path / f"linked-{sub}.tar.gz", tmp_path / "out")
    assert _files(tmp_path / "out") == _files(synthetic_root)


# --- opened -------------------------------------------------------------------------------------


def test_opened_extracted_layout_is_the_folder_itself_and_creates_nothing(synthetic_root):
    before = _names(synthetic_root.parent)
    assert not is_packed(synthetic_root)
    with opened(synthetic_root) as root:
        assert root == synthetic_root
        assert _names(synthetic_root.parent) == before
    assert _names(synthetic_root.parent) == before


def test_opened_packed_extracts_beside_raw_and_removes_it_after(raw, synthetic_root):
    assert is_packed(raw)
    with opened(raw) as root:
        assert root == raw.parent / ".raw-extracted"
        check_layout(root)
        assert _files(root) == _files(synthetic_root)
        assert _names(raw.parent) == [".raw-extracted", "raw"]
    assert _names(raw.parent) == ["raw"]
    assert _names(raw) == PACKED  # the archives are only read


def test_opened_removes_the_scratch_folder_when_the_block_raises(raw):
    with pytest.raises(RuntimeError, match="boom"):
        with opened(raw) as root:
            assert (root / "images").is_dir()
            raise RuntimeError("boom")
    assert _names(raw.parent) == ["raw"]


def test_opened_replaces_a_scratch_folder_left_by_a_killed_run(raw, synthetic_root):
    stale = raw.parent / ".raw-extracted"
    (stale / "images").mkdir(parents=True)
    (stale / "images" / "stale_1.jpg").write_bytes(b"left by a killed run")
    (stale / "stale.txt").write_text("stale")
    with opened(raw) as root:
        assert root == stale
        assert _files(root) == _files(synthetic_root)  # not merged: the stale files are gone
    assert _names(raw.parent) == ["raw"]


def test_opened_refuses_an_unsafe_archive_with_one_line_and_leaves_nothing(raw, tmp_path):
    (raw / "images.tar.gz").unlink()
    with tarfile.open(raw / "images.tar.gz", "w:gz") as tar:
        tar.addfile(tarfile.TarInfo("images/../../evil.txt"))
    with pytest.raises(UserError, match="images.tar.gz: refused unsafe member") as info:
        with opened(raw):
            pytest.fail("the block must not run")
    assert len(str(info.value).splitlines()) == 1
    assert _names(raw.parent) == ["raw"]
    assert list(tmp_path.rglob("evil.txt")) == []


def test_opened_archives_not_in_the_official_layout_raise_one_line_and_leave_nothing(synthetic_root, tmp_path):
    """Archives the download stage did not check (another tool's data/raw) fail before the block runs."""
    copy = tmp_path / "copy"
    shutil.copytree(synthetic_root, copy)
    shutil.rmtree(copy / "annotations" / "trimaps")
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    pack(copy, ["images"], raw / "images.tar.gz")
    with tarfile.open(raw / "annotations.tar.gz", "w:gz") as tar:
        tar.add(copy / "annotations", arcname="annotations")
    with pytest.raises(UserError, match="missing annotations/trimaps;") as info:
        with opened(raw):
            pytest.fail("the block must not run")
    assert len(str(info.value).splitlines()) == 1
    assert _names(raw.parent) == ["raw"]


# --- check_archives -----------------------------------------------------------------------------


def test_check_archives_accepts_packed_official_layout(raw):
    check_archives(raw)


def _drop_list(root: Path) -> None:
    (root / "annotations" / "test.txt").unlink()


def _drop_trimaps(root: Path) -> None:
    shutil.rmtree(root / "annotations" / "trimaps")
    (root / "annotations" / "trimaps").mkdir()  # an empty folder is no trimaps


def _drop_images(root: Path) -> None:
    shutil.rmtree(root / "images")
    (root / "images").mkdir()


@pytest.mark.parametrize(
    ("drop", "missing"),
    [(_drop_list, "annotations/test.txt"), (_drop_trimaps, "annotations/trimaps/"), (_drop_images, "images/")],
    ids=["list-file", "trimaps", "images"],
)
def test_check_archives_names_exactly_what_is_missing_in_one_line(synthetic_root, tmp_path, drop, missing):
    copy = tmp_path / "copy"
    shutil.copytree(synthetic_root, copy)
    drop(copy)
    raw = _pack_all(copy, tmp_path / "raw")
    with pytest.raises(UserError) as info:
        check_archives(raw)
    message = str(info.value)
    assert len(message.splitlines()) == 1
    assert message.startswith(f"{raw}: the archives hold neither the official Oxford-IIIT Pet layout")
    assert f"missing {missing};" in message


def test_check_archives_names_every_missing_part(synthetic_root, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(synthetic_root, copy)
    for drop in (_drop_list, _drop_trimaps, _drop_images):
        drop(copy)
    raw = _pack_all(copy, tmp_path / "raw")
    with pytest.raises(UserError, match="missing images/, annotations/test.txt, annotations/trimaps/;"):
        check_archives(raw)


@pytest.mark.parametrize("name", PACKED)
def test_check_archives_truncated_archive_is_one_line_naming_it(raw, name):
    data = (raw / name).read_bytes()
    (raw / name).unlink()  # a hard link of the shared archive: write a new file, not through it
    (raw / name).write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(UserError) as info:
        check_archives(raw)
    message = str(info.value)
    assert len(message.splitlines()) == 1
    assert message.startswith(f"{raw / name}: cannot read (") and "download it again" in message


# --- place --------------------------------------------------------------------------------------


def test_place_hard_links_on_one_file_system(tmp_path):
    source = tmp_path / "downloads" / "images.tar.gz"
    source.parent.mkdir()
    source.write_bytes(b"tarball bytes")
    (tmp_path / "raw").mkdir()
    place(source, tmp_path / "raw" / "images.tar.gz")
    assert (tmp_path / "raw" / "images.tar.gz").stat().st_ino == source.stat().st_ino
    assert source.stat().st_nlink == 2


def test_place_copies_when_a_hard_link_is_impossible(tmp_path, monkeypatch):
    def no_link(src, dst, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link", str(src), None, str(dst))

    monkeypatch.setattr(pipeline.data.archives.os, "link", no_link)
    source, dest = tmp_path / "images.tar.gz", tmp_path / "raw" / "images.tar.gz"
    source.write_bytes(bytes(range(256)) * 100)
    dest.parent.mkdir()
    place(source, dest)
    assert dest.read_bytes() == source.read_bytes()
    assert not os.path.samefile(dest, source)
    assert source.stat().st_nlink == 1


# --- the split and preprocess stages read the archives ------------------------------------------


def _run_stages(raw: Path, out: Path) -> None:
    """The split and preprocess stages, in process, on ``raw``; their outputs under ``out``."""
    params = write_params(
        out / "params.yaml",
        image_size=32,
        split={"valid_fraction": 0.25, "seed": 0},
        preprocess={"workers": 1},
    )
    splits, cache, report = out / "splits", out / "cache", out / "data.json"
    assert run_stage(stages.split.main, ["--params", str(params), "--raw", str(raw), "--out", str(splits)]) == 0
    argv = ["--params", str(params), "--raw", str(raw), "--splits", str(splits), "--out", str(cache)]
    assert (
        run_stage(
            stages.preprocess.main,
            [*argv, *preprocess_reports(report)],
        )
        == 0
    )


def test_split_and_preprocess_give_the_same_outputs_from_the_archives_as_from_the_folder(synthetic_root, raw, tmp_path):
    folder_out, packed_out = tmp_path / "from_folder", tmp_path / "from_archives"
    folder_out.mkdir()
    packed_out.mkdir()
    before = _names(synthetic_root.parent)
    _run_stages(synthetic_root, folder_out)
    _run_stages(raw, packed_out)

    assert _names(raw.parent) == ["raw"]  # no .raw-extracted left behind
    assert _names(raw) == PACKED
    assert _names(synthetic_root.parent) == before  # the extracted layout is read where it is
    for name in ("splits", "cache"):
        assert _files(packed_out / name) == _files(folder_out / name)
    assert sorted(_files(packed_out / "cache")) == sorted(
        f"{split}/{file}" for split in ("train", "valid", "test") for file in _names(packed_out / "cache" / split)
    )
    assert json.loads((packed_out / "data.json").read_text()) == json.loads((folder_out / "data.json").read_text())
    assert json.loads((packed_out / "data.json").read_text())["total"]["used"] == 16


def test_split_stage_on_a_corrupt_archive_fails_with_one_line_and_leaves_no_scratch(raw, tmp_path, capsys):
    data = (raw / "annotations.tar.gz").read_bytes()
    (raw / "annotations.tar.gz").unlink()
    (raw / "annotations.tar.gz").write_bytes(data[: len(data) // 2])
    params = write_params(tmp_path / "params.yaml")
    code = run_stage(stages.split.main, ["--params", str(params), "--raw", str(raw), "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 1
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {raw / 'annotations.tar.gz'}: cannot extract (")
    assert _names(raw.parent) == ["raw"]
    assert not (tmp_path / "s").exists()
