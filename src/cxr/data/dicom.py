"""DICOM chest films -> the 8-bit gray image the models were trained on (NIH's windowed PNGs).

:func:`cxr.data.prepare.read_gray` dispatches here when :func:`is_dicom` finds the ``DICM``
magic at byte 128. That test comes before any image library sees the file: a DICOM's
128-byte preamble is free-form and some vendors put a TIFF header in it, which Pillow then
opens as a (wrong, un-windowed, un-inverted) 16-bit TIFF.

The gray rule, in DICOM's own order (PS3.3 C.11 / C.8.11.3.1.5, PS3.4 N.2.1.1):

1. stored values, sign-extended from ``BitsStored`` when ``PixelRepresentation`` is 1
   (pydicom's ``pixel_array``);
2. the Modality LUT: ``RescaleSlope``/``RescaleIntercept`` or a Modality LUT Sequence
   (``apply_modality_lut``);
3. the VOI: the first VOI LUT (preferred, as DICOM does, when both are present) or the first
   ``WindowCenter``/``WindowWidth`` pair with its ``VOILUTFunction`` (``apply_voi_lut``). Its
   output range (0..2**n-1 for a LUT of n-bit entries; the modality-LUT range of the stored
   bits for a window, as pydicom computes it) maps linearly onto 0..255;
4. no VOI at all: the full range of the stored bits, through the modality LUT, maps linearly
   onto 0..255 (a pixel's gray does not depend on the rest of the film, an 8-bit film is kept
   as stored, as torchxrayvision scales by ``BitsStored``). A film of more than 8 bits without a
   window gets a warning: its contrast may differ from the windowed training films;
5. ``MONOCHROME1`` (low values are white) is inverted last, ``255 - gray``.

Refused (ValueError naming the file): no pixel data, float pixel data, more than one frame,
colour (anything but MONOCHROME1/2 with one sample per pixel), ``BitsStored`` outside 8..16,
a transfer syntax without an installed decoder (the message names it and the packages that
decode it). Warned, still read: a Modality other than CR/DX, a ViewPosition other than PA/AP
(or none recorded), raw ``FOR PROCESSING`` detector data, and the no-window fallback above.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
# PS3.10 7.1: a 128-byte preamble, then these four bytes, then the file meta information.
MAGIC_OFFSET = 128
MAGIC = b"DICM"
# What the models were trained on: NIH ChestX-ray14's frontal radiographs.
CHEST_MODALITIES = frozenset({"CR", "DX"})
FRONTAL_VIEWS = frozenset({"PA", "AP"})
MONOCHROME = frozenset({"MONOCHROME1", "MONOCHROME2"})


class DicomWarning(UserWarning):
    """A DICOM film that was read but may not be what the models were trained on."""


@dataclass(frozen=True)
class DicomFilm:
    """A decoded DICOM film: ``pixels`` (2-D uint8 gray), where it came from, and warnings."""

    pixels: np.ndarray
    sop_instance_uid: str
    modality: str
    view_position: str
    photometric_interpretation: str
    bits_stored: int
    transfer_syntax: str
    gray_rule: str  # which step 3/4 of the module docstring made the gray, in words
    warnings: tuple[str, ...] = ()

    def identity(self) -> dict:
        """The DICOM attributes a prediction reports, JSON-ready."""
        return {"sop_instance_uid": self.sop_instance_uid, "modality": self.modality,
                "view_position": self.view_position,
                "photometric_interpretation": self.photometric_interpretation,
                "bits_stored": self.bits_stored, "transfer_syntax": self.transfer_syntax,
                "gray": self.gray_rule}


def is_dicom(path) -> bool:
    """True when the file has the DICOM Part 10 magic ``DICM`` at byte 128 (any extension)."""
    try:
        with open(path, "rb") as stream:
            stream.seek(MAGIC_OFFSET)
            return stream.read(len(MAGIC)) == MAGIC
    except OSError:
        return False  # the caller's own open reports the error, naming the file


def _refuse(where: str, reason: str) -> ValueError:
    return ValueError(f"{where}: DICOM {reason}")


def read_dicom_header(path):
    """The dataset without its pixel data (for the film's size); ValueError naming the file."""
    import pydicom

    where = os.fspath(path)
    try:
        return pydicom.dcmread(where, stop_before_pixels=True)
    except Exception as error:  # pydicom raises anything from EOFError to struct.error
        raise _refuse(where, f"file cannot be read ({error})") from error


def read_size(path) -> tuple[int, int]:
    """``(width, height)`` of a DICOM film from its header (``Columns``, ``Rows``)."""
    where = os.fspath(path)
    ds = read_dicom_header(where)
    if "Rows" not in ds or "Columns" not in ds:
        raise _refuse(where, "file has no Rows/Columns: no image in it")
    return int(ds.Columns), int(ds.Rows)


def read_dicom(path) -> DicomFilm:
    """Decode one DICOM film (see the module docstring for the rule); ValueError if refused."""
    import pydicom

    where = os.fspath(path)
    try:
        ds = pydicom.dcmread(where)
    except Exception as error:  # pydicom raises anything from EOFError to struct.error
        raise _refuse(where, f"file cannot be read ({error})") from error
    _check_image(ds, where)
    stored = _decode_pixels(ds, where)
    gray, rule, fallback_warning = _to_gray(stored, ds, where)
    photometric = str(ds.PhotometricInterpretation).strip()
    if photometric == "MONOCHROME1":
        gray = 255 - gray
    warnings = _identity_warnings(ds)
    if fallback_warning:
        warnings.append(fallback_warning)
    syntax = ds.file_meta.get("TransferSyntaxUID")
    return DicomFilm(
        pixels=gray, sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        modality=str(ds.get("Modality", "") or ""),
        view_position=str(ds.get("ViewPosition", "") or ""),
        photometric_interpretation=photometric, bits_stored=int(ds.BitsStored),
        transfer_syntax=f"{syntax.name} ({syntax})" if syntax else "",
        gray_rule=rule, warnings=tuple(warnings))


def _check_image(ds, where: str) -> None:
    """Refuse what is not one gray film before decoding anything."""
    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise _refuse(where, "file holds float pixel data; expected an integer radiograph")
        sop_class = ds.get("SOPClassUID")
        kind = f"SOP class {sop_class.name}" if sop_class else "no SOP class"
        raise _refuse(where, f"file has no pixel data ({kind}): not an image (a structured "
                             "report, a presentation state or another non-image object)")
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames > 1:
        raise _refuse(where, f"file is multi-frame ({frames} frames); expected a single film")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    samples = int(ds.get("SamplesPerPixel") or 1)
    if photometric not in MONOCHROME or samples != 1:
        raise _refuse(where, f"image is colour (PhotometricInterpretation {photometric or '?'}, "
                             f"{samples} sample(s) per pixel); expected a gray MONOCHROME1 or "
                             "MONOCHROME2 film")
    bits = ds.get("BitsStored")
    if bits is None or not 8 <= int(bits) <= 16:
        raise _refuse(where, f"image has BitsStored {bits}; expected 8 to 16 bits")


def _decode_pixels(ds, where: str) -> np.ndarray:
    from pydicom.pixels import get_decoder

    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax is None:
        raise _refuse(where, "file has no TransferSyntaxUID in its file meta information")
    named = f"transfer syntax {syntax.name} ({syntax})"
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as error:
        raise _refuse(where, f"{named}: pydicom has no pixel-data decoder for it") from error
    if not decoder.is_available:
        needs = "; ".join(decoder.missing_dependencies) or "a pydicom pixel-data plugin"
        raise _refuse(where, f"{named}: no decoder installed; it needs {needs}")
    try:
        stored = ds.pixel_array
    except Exception as error:  # each plugin raises its own exception types
        raise _refuse(where, f"pixel data cannot be decoded ({named}): {error}") from error
    if stored.ndim != 2:
        raise _refuse(where, f"pixel data decoded to shape {stored.shape}; expected one 2-D film")
    return stored


def _stored_range(ds) -> tuple[float, float]:
    """The range of the stored bits: 0..2**n-1, or -2**(n-1)..2**(n-1)-1 when signed."""
    bits = int(ds.BitsStored)
    if int(ds.get("PixelRepresentation") or 0) == 1:
        return -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    return 0.0, 2.0 ** bits - 1


def _modality_range(ds) -> tuple[float, float]:
    """The stored range after the modality LUT (the same rule as pydicom's apply_windowing)."""
    if ds.get("ModalityLUTSequence"):
        return 0.0, 2.0 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1
    low, high = _stored_range(ds)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        low, high = low * float(slope) + float(intercept), high * float(slope) + float(intercept)
    return low, high


def _scale(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Linear low..high -> 0..255, rounded half up, clipped (a window clips by definition)."""
    scaled = (np.asarray(values, dtype=np.float64) - low) * 255.0 / (high - low)
    return np.clip(np.floor(scaled + 0.5), 0, 255).astype(np.uint8)


def _to_gray(stored: np.ndarray, ds, where: str) -> tuple[np.ndarray, str, str | None]:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        values = apply_modality_lut(stored, ds)
        if ds.get("VOILUTSequence"):
            item = ds.VOILUTSequence[0]
            depth = int(item.LUTDescriptor[2])
            voi = apply_voi_lut(values, ds, index=0, prefer_lut=True)
            return _scale(voi, 0.0, 2.0 ** depth - 1), f"VOI LUT ({depth}-bit entries)", None
        if "WindowCenter" in ds and "WindowWidth" in ds:
            voi = apply_voi_lut(values, ds, index=0, prefer_lut=False)
            center, width = (_first(ds.WindowCenter), _first(ds.WindowWidth))
            function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
            low, high = _modality_range(ds)
            return (_scale(voi, low, high),
                    f"window centre {center:g} width {width:g} ({function})", None)
    except (ValueError, NotImplementedError, AttributeError, IndexError, KeyError) as error:
        raise _refuse(where, f"VOI LUT / window cannot be applied ({error})") from error
    low, high = _modality_range(ds)
    bits = int(ds.BitsStored)
    warning = None
    if bits > 8:
        warning = (f"no window or VOI LUT: gray scaled by the full {bits}-bit stored range, "
                   "so its contrast may differ from the windowed films the models were "
                   "trained on")
    return _scale(values, low, high), f"full {bits}-bit stored range (no window)", warning


def _first(value) -> float:
    """The first of a multi-valued DS (DICOM: the first window is the default one)."""
    from pydicom.multival import MultiValue

    return float(value[0] if isinstance(value, MultiValue | list | tuple) else value)


def _identity_warnings(ds) -> list[str]:
    warnings = []
    modality = str(ds.get("Modality", "") or "").strip()
    if modality not in CHEST_MODALITIES:
        warnings.append(f"Modality {modality or 'not recorded'}; the models were trained on "
                        "chest radiographs (CR/DX)")
    view = str(ds.get("ViewPosition", "") or "").strip()
    if not view:
        warnings.append("ViewPosition not recorded; the models were trained on frontal "
                        "(PA/AP) films: check this is one")
    elif view not in FRONTAL_VIEWS:
        warnings.append(f"ViewPosition {view}; the models were trained on frontal (PA/AP) "
                        "films")
    if str(ds.get("PresentationIntentType", "")).strip().upper() == "FOR PROCESSING":
        warnings.append("PresentationIntentType FOR PROCESSING: raw detector data, not the "
                        "processed film the models were trained on")
    return warnings
