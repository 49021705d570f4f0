"""DICOM films: magic before Pillow, bits/sign/rescale/window/VOI LUT to 8-bit gray,
MONOCHROME1, compressed syntaxes, refusals and warnings; ingest, prepare and `cxr predict`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import get_decoder
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from cxr.data import dicom, nih
from cxr.data.prepare import open_store, prepare_store, read_gray, read_image, read_size

FILMS = Path(__file__).parent / "data" / "films"
CR_STORAGE = UID("1.2.840.10008.5.1.4.1.1.1")  # Computed Radiography Image Storage
BASIC_TEXT_SR = UID("1.2.840.10008.5.1.4.1.1.88.11")


def dataset(sop_class=CR_STORAGE, modality="CR", view="PA", syntax=ExplicitVRLittleEndian):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = modality
    ds.ViewPosition = view
    return ds


def write_film(path, pixels, photometric="MONOCHROME2", bits=None, preamble=None, compress=None,
               **attributes) -> Path:
    """A single-frame DICOM file holding ``pixels`` (its dtype sets allocation and sign)."""
    pixels = np.asarray(pixels)
    ds = dataset(**{k: attributes.pop(k) for k in ("modality", "view") if k in attributes})
    ds.set_pixel_data(pixels, photometric, bits or pixels.dtype.itemsize * 8)
    for name, value in attributes.items():
        setattr(ds, name, value)
    if compress is not None:
        ds.compress(compress)
    if preamble is not None:
        ds.preamble = preamble
    ds.save_as(path, enforce_file_format=True)
    return Path(path)


def window(values, center, width):
    """DICOM's LINEAR window (PS3.3 C.11.2.1.2.1) onto 0..255, written out independently."""
    x = np.asarray(values, dtype=np.float64)
    c, w = center - 0.5, width - 1
    y = ((x - c) / w + 0.5) * 255
    y = np.where(x <= c - w / 2, 0, np.where(x > c + w / 2, 255, y))
    return np.floor(y + 0.5).astype(np.uint8)


def full_range(values, low, high):
    x = np.asarray(values, dtype=np.float64)
    return np.floor((x - low) * 255 / (high - low) + 0.5).astype(np.uint8)


# --------------------------------------------------------------------------- real films


def test_real_cr_films_monochrome1_is_the_inverse_of_monochrome2():
    m2 = read_gray(FILMS / "siim_pa_monochrome2.dcm")
    m1 = read_gray(FILMS / "siim_pa_monochrome1.dcm")
    assert m2.dtype == np.uint8 and m2.shape == (1024, 1024)
    assert 0 < m2.mean() < 255 and m2.std() > 20  # a film, not a blank
    np.testing.assert_array_equal(m1, 255 - m2)
    assert read_size(FILMS / "siim_pa_monochrome2.dcm") == (1024, 1024)


def test_real_cr_film_8_bit_is_kept_as_stored_and_identified():
    import pydicom

    path = FILMS / "siim_pa_monochrome2.dcm"
    image = read_image(path)
    np.testing.assert_array_equal(image.pixels, pydicom.dcmread(path).pixel_array)
    film = image.dicom
    assert (film.modality, film.view_position, film.photometric_interpretation) == \
        ("CR", "PA", "MONOCHROME2")
    assert film.sop_instance_uid == "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819"
    assert "JPEG Baseline" in film.transfer_syntax and "1.2.840.10008.1.2.4.50" in \
        film.transfer_syntax
    assert image.warnings == ()


def test_png_is_not_treated_as_dicom():
    assert not dicom.is_dicom(FILMS / "00000013_003.png")
    assert dicom.is_dicom(FILMS / "siim_pa_monochrome2.dcm")
    assert read_image(FILMS / "00000013_003.png").dicom is None


# --------------------------------------------------------------------------- bits, sign, LUTs


def test_12_bit_without_window_scales_by_the_stored_range_and_warns(tmp_path):
    stored = np.array([[0, 1, 2048, 4095], [8, 16, 3000, 4094]], dtype=np.uint16)
    path = write_film(tmp_path / "a.dcm", stored, bits=12)
    image = read_image(path)
    np.testing.assert_array_equal(image.pixels, full_range(stored, 0, 4095))
    assert image.pixels[0].tolist() == [0, 0, 128, 255]
    assert any("no window" in w and "12-bit" in w for w in image.warnings)


def test_16_bit_without_window_scales_by_65535(tmp_path):
    stored = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    path = write_film(tmp_path / "a.dcm", stored, bits=16)
    with pytest.warns(dicom.DicomWarning, match=r"a\.dcm: no window .* 16-bit"):
        assert read_gray(path).tolist() == [[0, 1, 128, 255]]


def test_window_is_dicoms_linear_formula_onto_0_255(tmp_path):
    stored = np.array([[0, 1536, 1537, 1792, 2048, 2559, 2560, 4095]], dtype=np.uint16)
    path = write_film(tmp_path / "a.dcm", stored, bits=12, WindowCenter=2048, WindowWidth=1024)
    image = read_image(path)
    np.testing.assert_array_equal(image.pixels, window(stored, 2048, 1024))
    assert image.pixels.tolist() == [[0, 0, 0, 64, 128, 255, 255, 255]]
    assert image.warnings == ()  # a window: no fallback warning
    assert "window centre 2048 width 1024" in image.dicom.gray_rule


def test_first_of_several_windows_is_used(tmp_path):
    stored = np.array([[1000, 2000, 3000]], dtype=np.uint16)
    path = write_film(tmp_path / "a.dcm", stored, bits=12, WindowCenter=[2000, 500],
                      WindowWidth=[2000, 100])
    np.testing.assert_array_equal(read_gray(path), window(stored, 2000, 2000))


def test_signed_pixels_with_rescale_then_window(tmp_path):
    stored = np.array([[-2048, -500, 0, 300, 2047]], dtype=np.int16)
    path = write_film(tmp_path / "a.dcm", stored, bits=12, RescaleSlope=2,
                      RescaleIntercept=-1000, WindowCenter=-600, WindowWidth=3000)
    got = read_gray(path)
    np.testing.assert_array_equal(got, window(stored * 2.0 - 1000, -600, 3000))
    assert got[0, 0] == 0 and got[0, -1] == 255 and 0 < got[0, 2] < 255


def test_signed_pixels_without_window_use_the_signed_range(tmp_path):
    stored = np.array([[-2048, -1, 0, 2047]], dtype=np.int16)
    path = write_film(tmp_path / "a.dcm", stored, bits=12, RescaleSlope=1, RescaleIntercept=0)
    with pytest.warns(dicom.DicomWarning, match="no window"):
        assert read_gray(path).tolist() == [[0, 127, 128, 255]]


def test_voi_lut_sequence_is_preferred_to_the_window(tmp_path):
    stored = np.array([[0, 99, 100, 101, 200, 355, 356, 4000]], dtype=np.uint16)
    item = Dataset()
    item.LUTDescriptor = [256, 100, 10]  # 256 entries, first maps 100, 10-bit entries
    lut = (np.arange(256) * 4).astype(np.uint16)  # 0..1020 of 0..1023
    item.add_new("LUTData", "US", lut.tolist())
    path = write_film(tmp_path / "a.dcm", stored, bits=12, VOILUTSequence=Sequence([item]),
                      WindowCenter=50, WindowWidth=10)
    index = np.clip(stored.astype(np.int64) - 100, 0, 255)
    expected = full_range(lut[index], 0, 1023)
    image = read_image(path)
    np.testing.assert_array_equal(image.pixels, expected)
    assert image.pixels[0, 0] == 0 and image.pixels[0, -1] == round(1020 * 255 / 1023)
    assert "VOI LUT" in image.dicom.gray_rule


def test_monochrome1_is_inverted_after_the_window(tmp_path):
    stored = np.array([[0, 1792, 2048, 4095]], dtype=np.uint16)
    m2 = write_film(tmp_path / "m2.dcm", stored, bits=12, WindowCenter=2048, WindowWidth=1024)
    m1 = write_film(tmp_path / "m1.dcm", stored, "MONOCHROME1", bits=12, WindowCenter=2048,
                    WindowWidth=1024)
    np.testing.assert_array_equal(read_gray(m1), 255 - window(stored, 2048, 1024))
    np.testing.assert_array_equal(read_gray(m1), 255 - read_gray(m2))


def test_tiff_header_in_the_preamble_is_read_as_dicom(tmp_path):
    """A CR whose preamble starts like a little-endian TIFF: 15 bits in 16, MONOCHROME1."""
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 2 ** 15, (20, 24), dtype=np.uint16)
    path = write_film(tmp_path / "cr", stored, "MONOCHROME1", bits=15,
                      preamble=b"II*\x00" + bytes(124), WindowCenter=15000, WindowWidth=20000)
    assert path.read_bytes()[:4] == b"II*\x00" and path.read_bytes()[128:132] == b"DICM"
    expected = 255 - window(stored, 15000, 20000)
    np.testing.assert_array_equal(read_gray(path), expected)
    assert read_size(path) == (24, 20)


# --------------------------------------------------------------------------- compressed syntaxes


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_lossless_compressed_films_decode_to_the_uncompressed_gray(tmp_path, syntax):
    rng = np.random.default_rng(1)
    stored = rng.integers(0, 4096, (32, 40), dtype=np.uint16)
    plain = write_film(tmp_path / "plain.dcm", stored, bits=12, WindowCenter=2000,
                       WindowWidth=3000)
    packed = write_film(tmp_path / "packed.dcm", stored, bits=12, WindowCenter=2000,
                        WindowWidth=3000, compress=syntax)
    image = read_image(packed)
    assert syntax in image.dicom.transfer_syntax
    np.testing.assert_array_equal(image.pixels, read_gray(plain))


@pytest.mark.parametrize("syntax", [DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_deflated_and_implicit_vr_films_are_read(tmp_path, syntax):
    import pydicom

    stored = np.arange(64, dtype=np.uint8).reshape(8, 8)
    path = write_film(tmp_path / "a.dcm", stored)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = syntax
    ds.save_as(path, enforce_file_format=True)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(read_gray(path), stored)


def test_a_syntax_pydicom_cannot_decode_is_named(tmp_path):
    import pydicom
    from pydicom.encaps import encapsulate

    path = write_film(tmp_path / "a.dcm", np.zeros((4, 4), np.uint8))
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.100")  # MPEG2 video
    ds.PixelData = encapsulate([b"\x00" * 16])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(ValueError, match=r"a\.dcm: DICOM transfer syntax MPEG2 .*"
                                         r"\(1\.2\.840\.10008\.1\.2\.4\.100\).*no pixel-data"):
        read_gray(path)


def test_a_syntax_whose_decoder_is_not_installed_names_the_packages(tmp_path, monkeypatch):
    import pydicom
    from pydicom.encaps import encapsulate

    path = write_film(tmp_path / "a.dcm", np.zeros((4, 4), np.uint8))
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.PixelData = encapsulate([b"\x00" * 16])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    decoder = get_decoder(JPEGLSLossless)
    # as on a machine without the plugins: no available plugin, the reasons pydicom lists
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable",
                        {"pylibjpeg": ("pylibjpeg>=2.0", "pylibjpeg-libjpeg>=2.1")})
    with pytest.raises(ValueError, match=r"a\.dcm: DICOM transfer syntax JPEG-LS Lossless .*"
                                         r"1\.2\.840\.10008\.1\.2\.4\.80.*no decoder installed"
                                         r".*pylibjpeg-libjpeg"):
        read_gray(path)



@pytest.mark.parametrize("syntax", ["JPEGBaseline8Bit", "JPEG2000Lossless", "JPEGLosslessSV1",
                                    "JPEGLSLossless", "RLELossless"])
def test_the_syntaxes_archives_use_have_an_installed_decoder(syntax):
    """The locked dependencies decode what CR/DX archives hold (JPEG Lossless and JPEG-LS
    through GDCM): a lock without a plugin would refuse those films."""
    import pydicom.uid

    assert get_decoder(getattr(pydicom.uid, syntax)).is_available, syntax


# --------------------------------------------------------------------------- refused / warned


def test_no_pixel_data_is_refused(tmp_path):
    ds = dataset(sop_class=BASIC_TEXT_SR, modality="SR")
    path = tmp_path / "report.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(ValueError, match=r"report\.dcm: DICOM file has no pixel data "
                                         r"\(SOP class Basic Text SR"):
        read_gray(path)


def test_multi_frame_is_refused(tmp_path):
    path = write_film(tmp_path / "cine.dcm", np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"cine\.dcm: DICOM file is multi-frame \(3 frames\)"):
        read_gray(path)


def test_colour_is_refused(tmp_path):
    path = write_film(tmp_path / "rgb.dcm", np.zeros((8, 8, 3), np.uint8), "RGB")
    with pytest.raises(ValueError, match=r"rgb\.dcm: DICOM image is colour "
                                         r"\(PhotometricInterpretation RGB, 3 sample"):
        read_gray(path)


def test_other_modality_and_lateral_view_are_warned_not_refused(tmp_path):
    stored = np.full((8, 8), 100, np.uint8)
    path = write_film(tmp_path / "lat.dcm", stored, modality="CT", view="LL",
                      SOPClassUID=CTImageStorage)
    image = read_image(path)
    np.testing.assert_array_equal(image.pixels, stored)
    assert any(w.startswith("Modality CT;") for w in image.warnings)
    assert any(w.startswith("ViewPosition LL;") for w in image.warnings)
    with pytest.warns(dicom.DicomWarning) as issued:
        np.testing.assert_array_equal(read_gray(path), stored)
    assert [str(w.message).split(": ", 1)[1].split(";")[0] for w in issued] == \
        ["Modality CT", "ViewPosition LL"]
    assert all(str(w.message).startswith(str(path)) for w in issued)


def test_frontal_cr_and_dx_are_not_warned(tmp_path):
    for modality, view in (("CR", "PA"), ("DX", "AP")):
        path = write_film(tmp_path / f"{modality}.dcm", np.zeros((4, 4), np.uint8),
                          modality=modality, view=view)
        assert read_image(path).warnings == ()


# --------------------------------------------------------------------------- ingest and prepare


def test_ingest_finds_dcm_files_and_prepare_stores_them_like_the_png(tmp_path):
    assert nih.DICOM_SUFFIXES == dicom.DICOM_SUFFIXES
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, (48, 40), dtype=np.uint8)
    folder = tmp_path / "imgs" / "images_001"
    folder.mkdir(parents=True)
    Image.fromarray(pixels).save(folder / "a.png")
    write_film(folder / "b.dcm", pixels)
    write_film(folder / "c.DICOM", 255 - pixels, "MONOCHROME1")
    found = nih.find_images(tmp_path / "imgs")
    assert sorted(found) == ["a.png", "b.dcm", "c.DICOM"]
    names = sorted(found)
    prepare_store([found[n] for n in names], names, 32, tmp_path / "store", progress=None)
    store = open_store(tmp_path / "store")
    assert store.images.dtype == np.uint8
    np.testing.assert_array_equal(store.images[1], store.images[0])
    np.testing.assert_array_equal(store.images[2], store.images[0])
    assert store.index["source_width"].tolist() == [40, 40, 40]


# --------------------------------------------------------------------------- cxr predict


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> str:
    """The 32 px simple_cnn with metadata, as tests/test_cli.py builds it."""
    from cxr.labels import LABELS
    from cxr.models import build
    from cxr.models.metadata import model_metadata, write_metadata

    root = tmp_path_factory.mktemp("dicom_predict")
    model = build("simple_cnn", image_size=32)
    model.save(root / "model.keras")
    operating = [round(float(t), 3) for t in np.linspace(0.02, 0.98, len(LABELS))]
    write_metadata(root, model_metadata("simple_cnn", LABELS, 32, "block3_conv", "youden",
                                        operating))
    return str(root / "model.keras")


def predict_json(capsys, *argv):
    from cxr.cli import main

    code = main(["predict", *map(str, argv), "--passes", "3", "--json"])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if captured.out else []), captured.err


def test_predict_png_and_monochrome1_2_dicoms_of_one_film_agree(capsys, model_path, tmp_path):
    pixels = np.asarray(Image.open(FILMS / "00000013_003.png").convert("L").resize((96, 96)))
    png, m2, m1 = tmp_path / "film.png", tmp_path / "film_m2.dcm", tmp_path / "film_m1.dcm"
    Image.fromarray(pixels).save(png)
    write_film(m2, pixels, view="AP")
    write_film(m1, 255 - pixels, "MONOCHROME1", view="AP")
    from cxr.cli import decode_images

    names, images, failures, films = decode_images([png, m2, m1], 32)
    assert failures == [] and films[0] is None and films[2].photometric_interpretation \
        == "MONOCHROME1"
    np.testing.assert_array_equal(images[1], images[0])
    np.testing.assert_array_equal(images[2], images[0])
    rows = []
    for path in (png, m2, m1):  # one run each, same seed: the same dropout masks
        code, (row,), err = predict_json(capsys, path, "--model", model_path)
        assert code == 0, err
        rows.append(row)
    means = np.array([[f["mean"] for f in row["findings"]] for row in rows])
    np.testing.assert_allclose(means[1], means[0], atol=0.01)
    np.testing.assert_allclose(means[2], means[0], atol=0.01)
    assert rows[0]["dicom"] is None and rows[0]["warnings"] == []
    identity = rows[2]["dicom"]
    assert identity["view_position"] == "AP" and identity["modality"] == "CR"
    assert identity["photometric_interpretation"] == "MONOCHROME1"
    import pydicom

    assert identity["sop_instance_uid"] == pydicom.dcmread(m1).SOPInstanceUID
    assert rows[1]["warnings"] == []


def test_predict_finds_extensionless_dicoms_and_skips_one_without_pixels(capsys, model_path,
                                                                         tmp_path):
    folder = tmp_path / "study"
    folder.mkdir()
    write_film(folder / "IM0001", np.full((40, 40), 90, np.uint8), view="LL")
    Image.fromarray(np.full((40, 40), 90, np.uint8)).save(folder / "x.png")
    sr = dataset(sop_class=BASIC_TEXT_SR, modality="SR")
    sr.save_as(folder / "SR0001", enforce_file_format=True)
    (folder / "notes.txt").write_text("not a film")
    code, rows, err = predict_json(capsys, folder, "--model", model_path)
    assert code == 1  # one file refused, the others scored
    assert [Path(row["image"]).name for row in rows] == ["IM0001", "x.png"]
    assert f"skipped {folder / 'SR0001'}: DICOM file has no pixel data" in err
    assert "notes.txt" not in err
    assert any(w.startswith("ViewPosition LL") for w in rows[0]["warnings"])
    assert f"warning: {folder / 'IM0001'}: ViewPosition LL" in err


def test_predict_table_shows_identity_and_warnings(capsys, model_path, tmp_path):
    from cxr.cli import main

    path = write_film(tmp_path / "lat.dcm", np.full((40, 40), 90, np.uint8), view="LL")
    assert main(["predict", str(path), "--model", model_path, "--passes", "2"]) == 0
    out = capsys.readouterr().out
    assert "DICOM  SOP Instance UID " in out and "view LL  modality CR" in out
    assert "  warning: ViewPosition LL;" in out
