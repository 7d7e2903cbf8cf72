"""scripts/phone_clip.py: its phone copy is stored the way a phone stores it (sideways with a display matrix, 10-bit
HLG/PQ in BT.2020, AAC) and reads back as the original picture and sound."""

import importlib.util
from pathlib import Path

import av
import numpy as np
import pytest

from models.hdr_video import TRC_HLG, TRC_PQ
from models.media import iter_video_frames, probe_video, read_audio, write_mp4

_SPEC = importlib.util.spec_from_file_location("phone_clip",
                                               Path(__file__).resolve().parents[1] / "scripts" / "phone_clip.py")
phone_clip = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(phone_clip)


@pytest.mark.parametrize("transfer", [TRC_HLG, TRC_PQ])
def test_phone_copy_is_stored_sideways_in_hdr_and_reads_back_as_the_original(tmp_path, transfer):
    y, x = np.mgrid[0:64, 0:96]
    frames = [np.stack([(x * 2 + 8 * k) % 200 + 30, y * 3 + 20, np.full_like(x, 90)], -1).astype(np.uint8)
              for k in range(10)]
    t = np.arange(16000) / 16000
    original = tmp_path / "original.mp4"
    write_mp4(original, frames, 10.0, audio=(0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), crf=0)
    phone = tmp_path / "phone.mov"
    phone_clip.write_phone_copy(original, phone, transfer)

    info = probe_video(phone)
    assert (info.width_px, info.height_px, info.rotation_deg, info.has_audio) == (96, 64, 90, True)
    with av.open(str(phone)) as c:
        first = next(c.decode(video=0))
        assert (first.width, first.height, first.color_trc, first.color_primaries) == (64, 96, transfer, 9)
    got = np.stack([f.image for f in iter_video_frames(phone)]).astype(int)
    want = np.stack([f.image for f in iter_video_frames(original)]).astype(int)
    assert got.shape == want.shape and np.abs(got - want).mean() < 3.0  # HEVC at crf 18, 4:2:0
    sound, back = read_audio(original), read_audio(phone)
    n = min(sound.size, back.size)
    assert n > 15000 and np.corrcoef(sound[:n], back[:n])[0, 1] > 0.99
