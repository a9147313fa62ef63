"""OME-XML read with the OME data model, and the NGFF metadata built from it."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import tifffile

from fluoden_batch.errors import InputError
from fluoden_batch.io import ome
from fluoden_batch.io.ngff import ImageMeta
from fluoden_batch.io.ome import (
    ChannelInfo,
    OmeDescription,
    Quantity,
    channel_windows,
    describe_ngff,
    ngff_meta,
    read_ome_xml,
)

BLUE, GREEN = 0x0000FFFF, 0x00FF00FF  # OME colours: RGBA, alpha in the low byte


def ome_xml(tmp_path: Path, data: np.ndarray, **metadata: object) -> str:
    """The OME-XML tifffile writes for ``data`` with ``metadata``, read back from the file."""
    path = tmp_path / "x.ome.tif"
    tifffile.imwrite(path, data, ome=True, photometric="minisblack", metadata=metadata)
    with tifffile.TiffFile(path) as tf:
        assert tf.ome_metadata is not None
        return tf.ome_metadata


def test_channels_sizes_units_and_time_increment_are_read(tmp_path):
    xml = ome_xml(
        tmp_path,
        np.zeros((3, 2, 4, 8, 8), np.uint16),
        axes="TCZYX",
        PhysicalSizeX=0.1625,
        PhysicalSizeXUnit="µm",
        PhysicalSizeY=0.2,
        PhysicalSizeZ=350,
        PhysicalSizeZUnit="nm",
        TimeIncrement=250,
        TimeIncrementUnit="ms",
        Channel={
            "Name": ["DAPI", "GFP"],
            "Color": [BLUE, GREEN],
            "EmissionWavelength": [461, 510],
        },
    )
    description = read_ome_xml(xml, "x.ome.tif")
    assert description == OmeDescription(
        channels=(
            ChannelInfo("DAPI", BLUE, Quantity(461.0, "nanometer")),
            ChannelInfo("GFP", GREEN, Quantity(510.0, "nanometer")),
        ),
        physical={
            "x": Quantity(0.1625, "micrometer"),
            "y": Quantity(0.2, "micrometer"),  # OME's default unit
            "z": Quantity(350.0, "nanometer"),
            "t": Quantity(250.0, "millisecond"),
        },
    )
    assert [c.hex for c in description.channels] == ["0000FF", "00FF00"]


def test_colours_and_labels_follow_ome():
    assert ChannelInfo(color=-16776961).hex == "FF0000"  # 0xFF0000FF as a signed int32
    assert ChannelInfo().hex == "FFFFFF"  # OME's default colour, white
    assert ChannelInfo("GFP").label(0) == "GFP"
    assert ChannelInfo(emission_wavelength=Quantity(510.0, "nanometer")).label(1) == "510 nm"
    assert ChannelInfo().label(2) == "Channel 2"


def test_a_unit_ngff_has_no_name_for_keeps_the_size_without_unit(tmp_path):
    xml = ome_xml(tmp_path, np.zeros((8, 8), np.uint8), PhysicalSizeX=1, PhysicalSizeXUnit="pixel")
    description = read_ome_xml(xml, "x.ome.tif")
    assert description is not None and description.physical["x"] == Quantity(1.0, None)
    scale, units, _ = ngff_meta(description, "yx", np.zeros((8, 8), np.uint8), "x")
    assert scale == [1.0, 1.0] and units == {}


@pytest.mark.parametrize(
    ("attribute", "bad", "phrase"),
    [
        ('PhysicalSizeX="0.5"', 'PhysicalSizeX="abc"', "PhysicalSizeX 'abc' is not a number"),
        ('PhysicalSizeX="0.5"', 'PhysicalSizeX="-1"', "PhysicalSizeX -1.0: input should be"),
        ('TimeIncrement="2"', 'TimeIncrement="x"', "TimeIncrement 'x' is not a number"),
        (
            'PhysicalSizeXUnit="nm"',
            'PhysicalSizeXUnit="furlong"',
            "PhysicalSizeXUnit 'furlong' is not a unit the OME schema knows",
        ),
    ],
)
def test_a_wrong_scale_value_is_refused_by_name(tmp_path, attribute, bad, phrase):
    xml = ome_xml(
        tmp_path,
        np.zeros((2, 8, 8), np.uint16),
        axes="TYX",
        PhysicalSizeX=0.5,
        PhysicalSizeXUnit="nm",
        TimeIncrement=2,
    )
    assert attribute in xml
    with pytest.raises(InputError, match=phrase):
        read_ome_xml(xml.replace(attribute, bad), "x.ome.tif")


@pytest.mark.parametrize("case", ["not xml", "broken xml", "no image"])
def test_unreadable_ome_xml_is_one_warning_and_no_description(tmp_path, caplog, case):
    xml = ome_xml(tmp_path, np.zeros((8, 8), np.uint8), PhysicalSizeX=0.5)
    text = {
        "not xml": "garbage",
        "broken xml": xml.replace("</Pixels>", "</Pixelz>"),
        "no image": xml[: xml.index("<Image ")] + "</OME>",
    }[case]
    with caplog.at_level(logging.WARNING, logger="fluoden_batch.io.ome"):
        assert read_ome_xml(text, "x.ome.tif") is None
    assert len(caplog.records) == 1
    assert "x.ome.tif: OME-XML not readable" in caplog.records[0].getMessage()


INSTRUMENT = '<Instrument ID="Instrument:0"><Objective ID="Objective:0" NominalMagnification="x"/>'


@pytest.mark.parametrize(
    ("case", "channels", "phrase"),
    [
        ("bad objective", ("DAPI", "GFP"), "Objective.nominal_magnification"),
        ("bad colour", (), "not a valid color"),
    ],
)
def test_partly_unreadable_ome_xml_keeps_the_pixel_sizes(tmp_path, caplog, case, channels, phrase):
    xml = ome_xml(
        tmp_path,
        np.zeros((2, 8, 8), np.uint16),
        axes="CYX",
        PhysicalSizeX=0.5,
        Channel={"Name": ["DAPI", "GFP"], "Color": [BLUE, GREEN]},
    )
    text = {
        "bad objective": xml.replace("<Image ", INSTRUMENT + "</Instrument><Image ", 1),
        "bad colour": xml.replace(f'Color="{BLUE}"', 'Color="no-such-colour"'),
    }[case]
    with caplog.at_level(logging.WARNING, logger="fluoden_batch.io.ome"):
        description = read_ome_xml(text, "x.ome.tif")
    assert description is not None
    assert description.physical == {"x": Quantity(0.5, "micrometer")}
    assert tuple(c.name for c in description.channels) == channels
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "x.ome.tif: OME-XML partly unreadable" in message and phrase in message


def test_a_wrong_size_beside_a_bad_colour_is_still_refused(tmp_path):
    xml = ome_xml(
        tmp_path, np.zeros((8, 8), np.uint8), PhysicalSizeX=0.5, Channel={"Color": [BLUE]}
    )
    text = xml.replace(f'Color="{BLUE}"', 'Color="no-such-colour"').replace('X="0.5"', 'X="a"')
    with pytest.raises(InputError, match="PhysicalSizeX 'a' is not a number"):
        read_ome_xml(text, "x.ome.tif")


def test_windows_are_percentiles_of_central_crops_of_three_planes(monkeypatch):
    monkeypatch.setattr(ome, "SAMPLE_YX", 8)
    rng = np.random.default_rng(0)
    data = rng.integers(100, 200, (2, 5, 20, 16)).astype(np.uint16)  # c, z, y, x
    data[:, :, 0, 0] = 60000  # outside the central 8 x 8 crop: not sampled
    data[:, 1] = 0  # plane 1 is not sampled (planes 0, 2 and 4 are)
    data[1, 2, 6:14, 4:12] = 7  # a constant channel-1 plane inside the crop
    windows = channel_windows(data, "czyx")
    for ch in range(2):
        sample = data[ch, [0, 2, 4], 6:14, 4:12].astype(float)
        start, end = np.percentile(sample, ome.WINDOW_PERCENTILES)
        assert windows[ch] == {"start": start, "end": end, "min": sample.min(), "max": sample.max()}
    assert windows[1]["min"] == 7


def test_windows_of_float_data_ignore_nan_and_a_constant_channel_gets_width_one():
    data = np.full((2, 4, 4), 3.0, np.float32)
    data[0, 0, 0] = np.nan
    assert channel_windows(data, "zyx") == [{"start": 3.0, "end": 4.0, "min": 3.0, "max": 4.0}]


class Unreadable:
    """An array whose planes cannot be read (a corrupt file)."""

    shape, dtype = (2, 4, 4), np.dtype(np.uint16)

    def __getitem__(self, key: object) -> np.ndarray:
        raise OSError("corrupt")


def test_unreadable_data_gets_the_dtype_range():
    window = {"start": 0.0, "end": 65535.0, "min": 0.0, "max": 65535.0}
    assert channel_windows(Unreadable(), "cyx") == [window, window]


def test_a_channel_count_that_does_not_match_the_data_is_one_warning(caplog):
    description = OmeDescription((ChannelInfo("a", BLUE),) * 3)
    with caplog.at_level(logging.WARNING, logger="fluoden_batch.io.ome"):
        _, _, omero = ngff_meta(description, "cyx", np.ones((2, 4, 4), np.uint8), "in.tif")
    assert [c["label"] for c in omero["channels"]] == ["Channel 0", "Channel 1"]
    assert [c["color"] for c in omero["channels"]] == ["FFFFFF", "FFFFFF"]
    assert len(caplog.records) == 1 and "3 channel(s) for 2" in caplog.records[0].getMessage()


def test_the_ngff_metadata_describes_the_same_image_again():
    description = OmeDescription(
        (ChannelInfo("DAPI", BLUE), ChannelInfo("GFP", GREEN)),
        {"x": Quantity(0.2, "micrometer"), "t": Quantity(2.5, "second")},
    )
    data = np.arange(2 * 3 * 2 * 4 * 4, dtype=np.uint16).reshape(3, 2, 2, 4, 4)
    scale, units, omero = ngff_meta(description, "tczyx", data, "in.tif")
    assert scale == [2.5, 1.0, 1.0, 1.0, 0.2]
    assert units == {"t": "second", "x": "micrometer"}
    assert [(c["label"], c["color"], c["active"]) for c in omero["channels"]] == [
        ("DAPI", "0000FF", True),
        ("GFP", "00FF00", True),
    ]
    meta = ImageMeta("tczyx", scale, units=units, omero=omero)
    assert describe_ngff(meta) == description


def test_a_malformed_omero_block_describes_what_it_can():
    omero = {"channels": [{"label": "a", "color": "zzz"}, None, {"color": "00FF00", "label": 3}]}
    meta = ImageMeta("cyx", [1.0, 0.5, 0.5], units={"y": "micrometer"}, omero=omero)
    assert describe_ngff(meta) == OmeDescription(
        (ChannelInfo("a"), ChannelInfo(), ChannelInfo(color=GREEN)),
        {"y": Quantity(0.5, "micrometer")},
    )
