"""MP3 streams: the Info frame makes decoders skip LAME's delay, so decoded audio lines up with the input."""

import io

import av
import numpy as np
import pytest

from app.core.mp3 import Mp3Encoder

FRAME = 576  # samples per MPEG-2 layer III frame (16, 22.05 and 24 kHz)


def signal(n: int, rate: int, seed: int = 0) -> np.ndarray:
    """Two tones plus noise bursts: the bursts make the cross-correlation peak unique."""
    t = np.arange(n) / rate
    rng = np.random.default_rng(seed)
    bursts = rng.standard_normal(n) * (np.sin(2 * np.pi * 3 * t) > 0.6)
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.15 * np.sin(2 * np.pi * 1234 * t) + 0.1 * bursts).astype(np.float32)


def encode(x: np.ndarray, rate: int, chunk: int, kbps: int = 64) -> bytes:
    encoder = Mp3Encoder(rate, kbps)
    return b"".join(encoder.encode(x[i : i + chunk]) for i in range(0, x.size, chunk)) + encoder.flush()


def decode(data: bytes) -> tuple[np.ndarray, int, dict]:
    with av.open(io.BytesIO(data)) as container:
        assert len(container.streams) == 1 and len(container.streams.audio) == 1
        stream = container.streams.audio[0]
        frames = [frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)]
        return np.concatenate(frames), stream.codec_context.sample_rate, dict(stream.metadata)


def lag(decoded: np.ndarray, x: np.ndarray, window: int = 3000) -> int:
    """The shift of ``x`` inside ``decoded`` that correlates best, searched within +-window samples."""
    size = 1 << int(np.ceil(np.log2(decoded.size + x.size + window)))
    cc = np.fft.irfft(np.fft.rfft(decoded, size) * np.conj(np.fft.rfft(x, size)), size)
    shifts = np.r_[0 : window + 1, -window:0]
    return int(shifts[np.argmax(cc[shifts])])


@pytest.mark.parametrize("rate", [24000, 22050, 16000])
@pytest.mark.parametrize("seconds", [0.3, 1.0, 2.37])
@pytest.mark.parametrize("chunk", [100, 577, 4800])
def test_decoded_audio_matches_input_in_length_and_time(rate, seconds, chunk):
    x = signal(int(seconds * rate), rate)
    decoded, decoded_rate, metadata = decode(encode(x, rate, chunk))
    assert decoded_rate == rate
    assert metadata.get("encoder") == "LAME3.100"  # ffmpeg exports it only when the tag's CRC matches
    assert x.size <= decoded.size <= x.size + FRAME, decoded.size - x.size
    assert abs(lag(decoded, x)) <= 2
    assert np.corrcoef(decoded[: x.size], x)[0, 1] > 0.95


@pytest.mark.parametrize("rate", [24000, 22050, 16000])
@pytest.mark.parametrize("n", [FRAME * 20 + 1, FRAME * 33 + 20])
def test_frames_of_pure_padding_at_the_end_are_dropped(rate, n):
    # input ending just past a frame boundary: LAME pads it with more than a frame (up to ~630 samples)
    x = signal(n, rate, seed=n)
    decoded, _, _ = decode(encode(x, rate, 700))
    assert x.size <= decoded.size <= x.size + FRAME, decoded.size - x.size
    assert abs(lag(decoded, x)) <= 2


@pytest.mark.parametrize("kbps", [32, 128, 192])
@pytest.mark.parametrize("n", [1000, 7777, 24000 + 576 * 3 + 40])
def test_other_bitrates_and_lengths(kbps, n):
    x = signal(n, 24000, seed=n)
    decoded, _, _ = decode(encode(x, 24000, 1000, kbps))
    assert x.size <= decoded.size <= x.size + FRAME, decoded.size - x.size
    assert abs(lag(decoded, x)) <= 2


def test_a_stream_with_nothing_encoded_is_empty():
    assert Mp3Encoder(24000, 64).flush() == b""
    encoder = Mp3Encoder(24000, 64)
    assert encoder.encode(np.zeros(0, np.float32)) == b"" and encoder.flush() == b""


def test_output_does_not_depend_on_chunking():
    x = signal(30011, 22050)
    whole = encode(x, 22050, x.size)
    assert encode(x, 22050, 1) == whole
    assert encode(x, 22050, 333) == whole


def test_info_frame_is_silence_for_decoders_that_ignore_it():
    x = signal(12000, 24000)
    data = encode(x, 24000, 960)
    info, first = data[:4], data[192:196]  # 24 kHz, 64 kbps: 192-byte frames
    assert data[13:17] == b"Info" and info[:2] == first[:2] == b"\xff\xf3" and info[3] == first[3]
    assert info[2] == first[2] & ~0x02  # same bitrate and sample rate, no padding slot
    codec = av.CodecContext.create("mp3", "r")
    frames = []
    for packet in codec.parse(data) + codec.parse(None):
        frames += [frame.to_ndarray().reshape(-1) for frame in codec.decode(packet)]
    frames += [frame.to_ndarray().reshape(-1) for frame in codec.decode(None)]
    assert frames[0].size == FRAME and not frames[0].any()  # one silent frame, then the audio
    decoded = np.concatenate(frames[1:])
    assert abs(lag(decoded, x) - (576 + 529)) <= 2  # without the tag the whole delay stays
