"""cxr.data.nih: both Data_Entry variants, every format error, image discovery, BBox list."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxr.data import nih
from cxr.data.nih import NIHFormatError
from cxr.labels import LABELS

V2020_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
    "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)
OLD_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
    "View Position,OriginalImageWidth,OriginalImageHeight,OriginalImagePixelSpacing_x,"
    "OriginalImagePixelSpacing_y,"
)
# (name, labels, follow-up, patient, age v2020, age older file, gender, view, w, h, sx, sy)
ROWS = [
    ("00000003_001.png", "Hernia|Infiltration", 1, 3, "74", "074Y", "F", "PA", 2500, 2048,
     0.168, 0.168),
    ("00000001_000.png", "Cardiomegaly", 0, 1, "58", "058Y", "M", "PA", 2682, 2749, 0.143,
     0.143),
    ("00000001_001.png", "Cardiomegaly|Emphysema", 1, 1, "58", "058Y", "M", "PA", 2894, 2729,
     0.143, 0.143),
    ("00000002_000.png", "No Finding", 0, 2, "0", "006M", "M", "AP", 2500, 2048, 0.171, 0.171),
    ("00000003_000.png", "Hernia", 0, 3, "1", "400D", "F", "PA", 2582, 2991, 0.143, 0.143),
]


def v2020_lines(rows=ROWS) -> list[str]:
    return [V2020_HEADER] + [
        ",".join(str(v) for v in (*r[:4], r[4], *r[6:])) for r in rows
    ]


def old_lines(rows=ROWS, header=OLD_HEADER) -> list[str]:
    return [header] + [",".join(str(v) for v in (*r[:4], r[5], *r[6:])) + "," for r in rows]


def write(path: Path, lines: list[str], newline: str = "\n", prefix: str = "") -> Path:
    path.write_text(prefix + newline.join(lines) + newline, encoding="utf-8", newline="")
    return path


@pytest.fixture
def v2020(tmp_path) -> Path:
    return write(tmp_path / "Data_Entry_2017_v2020.csv", v2020_lines())


# ---------------------------------------------------------------------------------------------
# Both variants, one table
# ---------------------------------------------------------------------------------------------


def test_both_variants_give_the_same_normalized_table(tmp_path, v2020):
    old = write(tmp_path / "Data_Entry_2017.csv", old_lines())
    bracketed = write(tmp_path / "bracketed.csv",
                      old_lines(header=V2020_HEADER + ","), newline="\r\n", prefix="\ufeff")
    expected = nih.read_data_entry(v2020)
    pd.testing.assert_frame_equal(nih.read_data_entry(old), expected)
    pd.testing.assert_frame_equal(nih.read_data_entry(bracketed), expected)


def test_normalized_columns_types_and_values(v2020):
    table = nih.read_data_entry(v2020)
    assert list(table.columns) == list(nih.DATA_ENTRY_COLUMNS)
    assert table.index.name == "line" and table.index.tolist() == [2, 3, 4, 5, 6]
    assert table["Patient ID"].dtype == np.int64
    assert table["OriginalImagePixelSpacing x"].dtype == np.float64
    first = table.loc[2]
    assert first["Image Index"] == "00000003_001.png"
    assert first["OriginalImage Width"] == 2500 and first["OriginalImage Height"] == 2048
    assert table["Patient Age"].tolist() == [74, 58, 58, 0, 1]


def test_age_suffixes_convert_to_completed_years(tmp_path):
    rows = [ROWS[1][:5] + (age,) + ROWS[1][6:] for age in ("058Y", "030M", "800D", "7")]
    rows = [(f"0000000{i}_000.png", *r[1:]) for i, r in enumerate(rows)]
    table = nih.read_data_entry(write(tmp_path / "d.csv", old_lines(rows)))
    assert table["Patient Age"].tolist() == [58, 2, 2, 7]


def test_blank_lines_are_skipped_but_rows_keep_their_line_numbers(tmp_path):
    lines = v2020_lines()
    lines.insert(2, "")
    table = nih.read_data_entry(write(tmp_path / "d.csv", lines + [""]))
    assert table.index.tolist() == [2, 4, 5, 6, 7]


# ---------------------------------------------------------------------------------------------
# Every bad input names file, row and value
# ---------------------------------------------------------------------------------------------


def with_field(row_index: int, field: int, value: str) -> list[str]:
    """v2020 lines with one field of one data row replaced."""
    lines = v2020_lines()
    fields = lines[row_index + 1].split(",")
    fields[field] = value
    lines[row_index + 1] = ",".join(fields)
    return lines


BAD_ROWS = {
    "path separator": (with_field(1, 0, "images/00000001_000.png"), 3, "images/00000001_000.png"),
    "backslash": (with_field(1, 0, "a\\b.png"), 3, "a\\\\b.png"),
    "parent dir": (with_field(1, 0, "..png"), 3, "..png"),
    "empty name": (with_field(2, 0, ""), 4, "''"),
    "duplicate": (with_field(2, 0, "00000001_000.png"), 4, "00000001_000.png"),
    "unknown label": (with_field(0, 1, "Flu"), 2, "Flu"),
    "no finding with finding": (with_field(3, 1, "No Finding|Mass"), 5, "No Finding|Mass"),
    "empty finding": (with_field(3, 1, "Mass|"), 5, "Mass|"),
    "follow-up": (with_field(1, 2, "-1"), 3, "-1"),
    "patient id": (with_field(4, 3, "P3"), 6, "P3"),
    "age": (with_field(0, 4, "58X"), 2, "58X"),
    "empty age": (with_field(0, 4, ""), 2, "''"),
    "gender": (with_field(0, 5, "X"), 2, "'X'"),
    "view": (with_field(0, 6, ""), 2, "View Position"),
    "width": (with_field(1, 7, "wide"), 3, "wide"),
    "spacing": (with_field(1, 10, "n/a"), 3, "n/a"),
    "too few fields": (v2020_lines()[:3] + [v2020_lines()[3].rsplit(",", 1)[0]], 4, "10"),
    "too many fields": (v2020_lines()[:2] + [v2020_lines()[2] + ",1,2"], 3, "13"),
    "extra non-empty field": (v2020_lines()[:2] + [v2020_lines()[2] + ",1"], 3, "'1'"),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_row_names_file_row_and_value(tmp_path, case):
    lines, row, value = BAD_ROWS[case]
    path = write(tmp_path / "bad.csv", lines)
    with pytest.raises(NIHFormatError) as caught:
        nih.read_data_entry(path)
    message = str(caught.value)
    assert str(path) in message
    assert f"row {row}" in message and caught.value.row == row
    assert value in message


def test_missing_column_is_named(tmp_path):
    lines = [",".join(f for i, f in enumerate(line.split(",")) if i != 4)
             for line in v2020_lines()]
    path = write(tmp_path / "d.csv", lines)
    with pytest.raises(NIHFormatError, match=r"row 1: missing column 'Patient Age'"):
        nih.read_data_entry(path)


def test_unexpected_header_column_is_named(tmp_path):
    lines = v2020_lines()
    lines[0] += ",Comment"
    with pytest.raises(NIHFormatError, match="unexpected column 'Comment'"):
        nih.read_data_entry(write(tmp_path / "d.csv", lines))


def test_error_counts_all_affected_rows(tmp_path):
    lines = [line if i == 0 else line.replace(",M,", ",male,").replace(",F,", ",female,")
             for i, line in enumerate(v2020_lines())]
    with pytest.raises(NIHFormatError, match=r"row 2: .*'female'.*\(5 rows affected\)"):
        nih.read_data_entry(write(tmp_path / "d.csv", lines))


def test_missing_file_is_a_format_error(tmp_path):
    with pytest.raises(NIHFormatError, match="cannot read"):
        nih.read_data_entry(tmp_path / "absent.csv")


# ---------------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------------


def test_encode_labels_appends_canonical_uint8_columns(v2020):
    table = nih.encode_labels(nih.read_data_entry(v2020), v2020)
    assert list(table.columns[-len(LABELS):]) == list(LABELS)
    assert (table[list(LABELS)].dtypes == np.uint8).all()
    first = table.loc[2, list(LABELS)]
    assert first[first == 1].index.tolist() == ["Hernia", "Infiltration"]
    assert table.loc[5, list(LABELS)].sum() == 0


def test_encode_labels_accepts_aliases_and_names_row_on_error():
    df = pd.DataFrame({"Finding Labels": ["Infiltrate", "Mass|Pleural Thickening", "Cold"]},
                      index=pd.Index([10, 11, 12], name="line"))
    with pytest.raises(NIHFormatError, match=r"src.csv, row 12: .*'Cold'"):
        nih.encode_labels(df, "src.csv")
    encoded = nih.encode_labels(df.iloc[:2], "src.csv")
    assert encoded.loc[10, "Infiltration"] == 1
    assert encoded.loc[11, ["Mass", "Pleural_Thickening"]].tolist() == [1, 1]


# ---------------------------------------------------------------------------------------------
# Images and the label table
# ---------------------------------------------------------------------------------------------


def make_images(root: Path, names, nested=True) -> None:
    for i, name in enumerate(names):
        folder = root / f"images_{i % 2 + 1:03d}" / "images" if nested else root
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"png")


def test_find_images_is_recursive_and_ignores_other_files(tmp_path):
    make_images(tmp_path / "imgs", [r[0] for r in ROWS])
    (tmp_path / "imgs" / "README.txt").write_text("not an image")
    found = nih.find_images(tmp_path / "imgs")
    assert sorted(found) == sorted(r[0] for r in ROWS)
    assert found["00000001_000.png"].parent.parent.name == "images_002"


def test_find_images_rejects_a_name_found_twice(tmp_path):
    make_images(tmp_path / "imgs", ["a.png"])
    make_images(tmp_path / "imgs" / "copy", ["a.png"])
    with pytest.raises(NIHFormatError, match=r"'a.png' found twice: .*a.png and .*a.png"):
        nih.find_images(tmp_path / "imgs")


def test_find_images_requires_a_directory(tmp_path):
    with pytest.raises(NIHFormatError, match="not a directory"):
        nih.find_images(tmp_path / "absent")


def test_build_label_table_columns_paths_and_order(tmp_path, v2020, monkeypatch):
    make_images(tmp_path / "imgs", [r[0] for r in ROWS])
    monkeypatch.chdir(tmp_path)
    table = nih.build_label_table(v2020, "imgs")
    assert list(table.columns) == list(nih.LABEL_TABLE_COLUMNS)
    assert table["Image Index"].tolist() == sorted(r[0] for r in ROWS)
    assert table.index.tolist() == list(range(len(ROWS)))
    assert table.loc[0, "path"] == "imgs/images_002/images/00000001_000.png"
    assert all(Path(p).is_file() for p in table["path"])


def test_build_label_table_reports_missing_images(tmp_path, v2020):
    make_images(tmp_path / "imgs", [r[0] for r in ROWS[:2]])
    with pytest.raises(NIHFormatError, match=r"3 of 5 images .* e\.g\. 00000001_001.png"):
        nih.build_label_table(v2020, tmp_path / "imgs")


def test_labels_only_mode_touches_no_image_folder(tmp_path, v2020):
    table = nih.build_label_table(v2020, tmp_path / "does-not-exist", check_images=False)
    assert (table["path"] == "").all() and len(table) == len(ROWS)
    assert table.loc[table["Image Index"] == "00000003_001.png", "Hernia"].item() == 1


# ---------------------------------------------------------------------------------------------
# BBox list and official image lists
# ---------------------------------------------------------------------------------------------

BBOX_LINES = [
    "Image Index,Finding Label,Bbox [x,y,w,h],,,",
    "00013118_008.png,Atelectasis,225.08475,547.0169,86.779661,79.186441,,,",
    "00014716_007.png,Infiltrate,686.0,349.86666,172.5,108.9777,,,",
]


def test_read_bbox_list_canonical_labels_and_floats(tmp_path):
    table = nih.read_bbox_list(write(tmp_path / "BBox_List_2017.csv", BBOX_LINES))
    assert list(table.columns) == list(nih.BBOX_COLUMNS)
    assert table["Finding Label"].tolist() == ["Atelectasis", "Infiltration"]
    assert table.loc[2, "x"] == pytest.approx(225.08475) and table["h"].dtype == np.float64


@pytest.mark.parametrize(("row", "value"), [
    ("00000001_000.png,Flu,1,2,3,4,,,", "Flu"),
    ("00000001_000.png,Mass,1,two,3,4,,,", "two"),
    ("00000001_000.png,Mass,1,2,0,4,,,", "0.0"),
    ("00000001_000.png,Mass,1,2,3,4,,,oops", "oops"),
    ("../x.png,Mass,1,2,3,4,,,", "../x.png"),
    ("00000001_000.png,Mass,1,2,3", "5"),
])
def test_read_bbox_list_bad_rows(tmp_path, row, value):
    path = write(tmp_path / "b.csv", BBOX_LINES + [row])
    with pytest.raises(NIHFormatError, match=r"b\.csv, row 4") as caught:
        nih.read_bbox_list(path)
    assert value in str(caught.value)


def test_read_image_list(tmp_path):
    path = write(tmp_path / "test_list.txt", ["00000003_000.png", "", "00000001_000.png"])
    assert nih.read_image_list(path) == ["00000003_000.png", "00000001_000.png"]
    bad = write(tmp_path / "bad.txt", ["00000003_000.png", "x/../y.png"])
    with pytest.raises(NIHFormatError, match=r"bad\.txt, row 2: .*'x/\.\./y\.png'"):
        nih.read_image_list(bad)


# ---------------------------------------------------------------------------------------------
# Full size: the real CSV has 112,120 rows and must ingest in seconds
# ---------------------------------------------------------------------------------------------


def full_size_rows(n_images: int = 112_120, seed: int = 0) -> list[tuple]:
    rng = np.random.default_rng(seed)
    combos = ["No Finding", "Infiltration", "Effusion|Infiltration", "Atelectasis",
              "Cardiomegaly|Edema|Effusion", "Hernia", "Mass|Nodule"]
    picks = rng.integers(len(combos), size=n_images)
    return [(f"{i // 4 + 1:08d}_{i % 4:03d}.png", combos[p], i % 4, i // 4 + 1, "45", "045Y",
             "MF"[i % 2], "PA", 2500, 2048, 0.143, 0.143) for i, p in enumerate(picks)]


def test_full_size_csv_ingests_in_seconds(tmp_path):
    rows = full_size_rows()
    new = write(tmp_path / "new.csv", v2020_lines(rows))
    old = write(tmp_path / "old.csv", old_lines(rows))
    start = time.perf_counter()
    table = nih.build_label_table(new, "unused", check_images=False)
    elapsed = time.perf_counter() - start
    assert len(table) == 112_120
    assert elapsed < 5.0, f"parsing 112,120 rows took {elapsed:.2f} s"
    pd.testing.assert_frame_equal(nih.read_data_entry(old), nih.read_data_entry(new))
