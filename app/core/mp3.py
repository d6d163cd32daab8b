"""Streaming MP3: one LAME encoder per stream, with an Info frame so decoders skip the encoder delay."""

import struct

import lameenc
import numpy as np

from app.core.audio import to_int16

# MPEG audio layer III tables, indexed by the header's bitrate / sample-rate fields.
_MP3_KBPS = {
    True: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),  # MPEG-1
    False: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),  # MPEG-2 and 2.5
}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
_LAME_DELAY = 576  # lameenc 1.9.0 (LAME 3.100) encoder delay, measured at 16, 22.05 and 24 kHz
_DECODER_DELAY = 529  # decoder delay (528 + 1) that tag-aware decoders such as ffmpeg skip on top of the tag's


def _frame_info(header: bytes) -> tuple[int, int, int] | None:
    """(frame size in bytes, samples per frame, side-info size) of a layer III header, or None."""
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE6 != 0xE2:
        return None
    version, mpeg1 = header[1] >> 3 & 3, bool(header[1] & 0x08)
    kbps = _MP3_KBPS[mpeg1][header[2] >> 4] if header[2] >> 4 < 15 else 0
    rates = _MP3_RATES.get(version)
    if not kbps or not rates or header[2] >> 2 & 3 == 3:
        return None
    mono = header[3] >> 6 == 3
    size = (144 if mpeg1 else 72) * kbps * 1000 // rates[header[2] >> 2 & 3] + (header[2] >> 1 & 1)
    return size, 1152 if mpeg1 else 576, (17 if mono else 32) if mpeg1 else (9 if mono else 17)


def _crc16(data: bytes) -> int:
    """CRC-16 (polynomial 0x8005, reflected, initial 0): the LAME tag checksum."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = crc >> 1 ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def _info_frame(first_header: bytes) -> bytes:
    """A silent CBR "Info" frame with a LAME tag giving the encoder delay, matching ``first_header``.

    Decoders that read the tag (ffmpeg, hence PyAV and Chrome) drop this frame and skip the encoder +
    decoder delay, so the audio starts at sample 0; a decoder that ignores it plays one silent frame.
    Only the "bytes" field is set, to 0xFFFFFFFF: with neither frames nor bytes ffmpeg decodes this
    frame as audio (everything 576 samples late); the frame count is unknown while streaming and a
    wrong one cuts the audio or the duration; a byte count past the end makes ffmpeg's fast seek fall
    back to an exact seek instead of scaling by a wrong size. End padding is unknown too: 0.
    """
    # same stream parameters, but no CRC and no padding slot
    header = bytes([first_header[0], first_header[1] | 0x01, first_header[2] & ~0x02, first_header[3]])
    info = _frame_info(header)
    if info is None:
        return b""
    size, _, side_info = info
    kbps = _MP3_KBPS[bool(header[1] & 0x08)][header[2] >> 4]
    tag = b"Info" + struct.pack(">II", 0x2, 0xFFFFFFFF)
    tag += struct.pack(">9sBB4xHHBB", b"LAME3.100", 0x01, 0, 0, 0, 0, min(kbps, 255))  # revision 0, CBR
    tag += (_LAME_DELAY << 12).to_bytes(3, "big") + bytes(10)  # delay | padding 0, misc ... music CRC
    frame = header + bytes(side_info) + tag
    if len(frame) + 2 > size:  # a frame this small cannot carry the tag (LAME omits it too)
        return b""
    frame += struct.pack(">H", _crc16(frame))
    return frame + bytes(size - len(frame))


class Mp3Encoder:
    """One LAME encoder for one whole stream: chunks in, MP3 frames out, one flush at the end.

    The stream starts with an Info frame (see ``_info_frame``) so decoders skip LAME's start delay,
    and ``flush`` leaves out trailing frames that hold only padding, so the decoded length is within
    one frame of the input.
    """

    def __init__(self, rate: int, bitrate_kbps: int):
        self._lame = lameenc.Encoder()
        self._lame.set_bit_rate(bitrate_kbps)
        self._lame.set_in_sample_rate(rate)
        self._lame.set_out_sample_rate(rate)
        self._lame.set_channels(1)
        self._lame.set_quality(2)
        self._samples = 0  # samples given to LAME
        self._frames = 0  # audio frames whose header has been produced
        self._samples_per_frame = 0
        self._scan_at = 0  # offset of the next frame header from the start of ``_scan_buf``; -1: stopped
        self._scan_buf = b""  # the start of a header split between two outputs
        self._held = b""  # output kept back until the Info frame can be built (its first 4 bytes)
        self._tagged = False

    def encode(self, chunk: np.ndarray) -> bytes:
        self._samples += chunk.size
        return self._emit(bytes(self._lame.encode(to_int16(chunk).tobytes())), final=False)

    def flush(self) -> bytes:
        if self._samples == 0:  # nothing was spoken (a task whose text had nothing to say): an empty stream
            return b""
        return self._emit(bytes(self._lame.flush()), final=True)

    def close(self) -> None:
        pass  # lameenc frees its encoder with the object

    def _emit(self, data: bytes, final: bool) -> bytes:
        starts = self._scan(data)
        if final:
            # a last frame whose decoded samples all lie after the input's last one holds only padding
            end = _LAME_DELAY + _DECODER_DELAY + self._samples
            while starts and starts[-1] >= 0 and (self._frames - 1) * self._samples_per_frame >= end:
                data = data[: starts.pop()]
                self._frames -= 1
        if self._tagged:
            return data
        data, self._held = self._held + data, b""
        if len(data) < 4 and not final:
            self._held = data
            return b""
        self._tagged = True
        return _info_frame(data) + data if len(data) >= 4 else data

    def _scan(self, data: bytes) -> list[int]:
        """Count the frames whose header is in ``data``; return the headers' offsets in ``data``
        (negative for a header that began in the previous output)."""
        if self._scan_at < 0:
            return []
        carried = len(self._scan_buf)
        buf, pos, starts = self._scan_buf + data, self._scan_at, []
        while pos + 4 <= len(buf):
            info = _frame_info(buf[pos : pos + 4])
            if info is None:  # not the stream of frames expected: stop counting, never trim
                self._scan_at = -1
                return []
            starts.append(pos - carried)
            self._frames += 1
            self._samples_per_frame = info[1]
            pos += info[0]
        self._scan_buf, self._scan_at = (buf[pos:], 0) if pos < len(buf) else (b"", pos - len(buf))
        return starts
