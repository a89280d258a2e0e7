#!/usr/bin/env python3
"""Simulate "a phone recording of music playing in a room" from a clean clip, reproducibly.

Chain (one function per stage; every random draw comes from the caller's `np.random.Generator`):

  1. speaker colouring  a mild resonance (+0..6 dB peak at 1-2.5 kHz) of the loudspeaker playing the music
  2. room               convolution (np.fft) with a synthetic room impulse response: the direct sound, 3-7
                        early reflections (2-25 ms) and an exponentially decaying noise tail, RT60 drawn in
                        0.3-0.7 s (highs decay 40 % faster). The direct-to-reverberant ratio follows
                        Sabine's critical distance r_c = 0.057 sqrt(Q V / RT60) for a phone r = 1-2 m from
                        the speaker, room volume V = 30-100 m^3, speaker directivity Q = 2-6:
                        DRR = 20 log10(r_c / r), about -6..+4 dB
  3. room noise         pink noise (ventilation, traffic) mixed with babble (4-8 synthetic talkers: voiced
                        harmonics with a wandering pitch + noise, speech spectrum, syllabic on/off envelope),
                        at an SNR drawn in 5-15 dB, measured inside the phone band
  4. phone microphone   band-pass 300-3400 Hz (4th-order Butterworth magnitudes, zero phase)
  5. phone processing   automatic gain + 3:1 compressor (5 ms attack, 100 ms release), then a tanh soft clip
  6. speech codec       AMR-NB 12.2 kbit/s at 8 kHz (PyAV `libopencore_amrnb`; libopus 12 kbit/s if it is
                        missing), decoded back to the input rate and re-aligned by the codec's measured delay

Output has the input's length and rate. Only numpy and PyAV are used.

CLI: writes a `phone_room` variant of every `clean` clip listed in QUERIES/ground_truth.csv (as FLAC next to
it) and QUERIES/ground_truth_phone.csv = the original rows + one `phone_room` row per clip
(ground_truth.csv itself is left untouched):

  .venv/bin/python bench/phone.py --queries /work/cache/queries [--seed 1] [--jobs 2] [--limit N]
"""

from __future__ import annotations

import argparse
import csv
import functools
import hashlib
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import numpy as np
from audiofile import write_audio

from tunescout.engine.decode import decode_all

DEGRADATION = "phone_room"
RT60_RANGE_S = (0.3, 0.7)  # s; living rooms, offices, cafés
HF_RT60_FACTOR = 0.6  # above the crossover the tail decays this much faster (air + soft furnishings)
HF_CROSSOVER_HZ = 1500.0
DISTANCE_RANGE_M = (1.0, 2.0)  # phone to loudspeaker
VOLUME_RANGE_M3 = (30.0, 100.0)
DIRECTIVITY_RANGE = (2.0, 6.0)  # Q of a small loudspeaker in the speech band (2 = hemisphere)
N_REFLECTIONS_RANGE = (3, 7)  # early reflections, inclusive bounds
REFLECTION_DELAY_MS = (2.0, 25.0)
SNR_RANGE_DB = (5.0, 15.0)
BAND_HZ = (300.0, 3400.0)
BAND_ORDER = 4  # Butterworth order of each band edge (24 dB/octave)
TALKERS_RANGE = (4, 8)  # babble talkers, inclusive bounds
COMPRESSOR_THRESHOLD_DB = -24.0  # dBFS RMS of the envelope
COMPRESSOR_RATIO = 3.0
ATTACK_S, RELEASE_S = 0.005, 0.1
ENVELOPE_HOP_S = 0.005
CODEC_RATE_HZ = 8000
AMR_BIT_RATE = 12200  # the highest AMR-NB mode (12.2 kbit/s)
OPUS_BIT_RATE = 12000


@dataclass(frozen=True)
class PhoneDraw:
    """The random choices of one simulated recording."""

    rt60_s: float
    distance_m: float
    volume_m3: float
    directivity: float
    drr_db: float  # direct-to-reverberant energy ratio of the impulse response
    n_reflections: int
    speaker_peak_hz: float
    speaker_peak_db: float
    snr_db: float  # music (reverberant) to room noise, in the phone band
    babble_share: float  # fraction of the noise power that is babble (rest pink)
    n_talkers: int
    level_dbfs: float  # RMS the phone's automatic gain aims at
    codec: str


@dataclass(frozen=True)
class PhoneRecording:
    pcm: np.ndarray  # float32, same length and rate as the input
    draw: PhoneDraw
    measured_snr_db: float  # music vs noise power in the phone band, checked after mixing


# -- stage helpers ------------------------------------------------------------------------------------


def fft_convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Linear convolution cut to len(x) (the recording stops when the clip does)."""
    n = x.size + h.size - 1
    nfft = 1 << max(0, (n - 1).bit_length())
    y = np.fft.irfft(np.fft.rfft(x, nfft) * np.fft.rfft(h, nfft), nfft)
    return y[: x.size]


def _apply_gain_curve(x: np.ndarray, sr: int, gain_of_hz: np.ndarray) -> np.ndarray:
    """Zero-phase filter given its magnitude at the rfft bin frequencies of len(x) (see `_bin_hz`)."""
    return np.fft.irfft(np.fft.rfft(x) * gain_of_hz, x.size)


def _bin_hz(n: int, sr: int) -> np.ndarray:
    return np.fft.rfftfreq(n, 1.0 / sr)


def band_gain(f_hz: np.ndarray, lo_hz: float, hi_hz: float, order: int = BAND_ORDER) -> np.ndarray:
    """Butterworth band-pass magnitude (high-pass at lo_hz times low-pass at hi_hz)."""
    f = np.maximum(f_hz, 1e-3)
    return 1.0 / np.sqrt((1.0 + (lo_hz / f) ** (2 * order)) * (1.0 + (f / hi_hz) ** (2 * order)))


def peaking_gain(f_hz: np.ndarray, centre_hz: float, gain_db: float, octaves: float = 1.0) -> np.ndarray:
    """A smooth bump of gain_db at centre_hz, about `octaves` wide (Gaussian on a log-frequency axis)."""
    distance = np.log2(np.maximum(f_hz, 1.0) / centre_hz) / octaves
    return 10 ** (gain_db * np.exp(-2.0 * distance**2) / 20)


def phone_band(x: np.ndarray, sr: int) -> np.ndarray:
    return _apply_gain_curve(x, sr, band_gain(_bin_hz(x.size, sr), *BAND_HZ))


def power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64))) + 1e-20


# -- 2. room -------------------------------------------------------------------------------------------


def room_impulse_response(sr: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, float]]:
    """Direct sound at sample 0 (no added latency, so offsets stay put), early reflections, late tail."""
    rt60 = float(rng.uniform(*RT60_RANGE_S))
    distance = float(rng.uniform(*DISTANCE_RANGE_M))
    volume = float(rng.uniform(*VOLUME_RANGE_M3))
    directivity = float(rng.uniform(*DIRECTIVITY_RANGE))
    critical_distance = 0.057 * math.sqrt(directivity * volume / rt60)
    drr_db = 20 * math.log10(critical_distance / distance)

    n = int(rt60 * sr)  # 60 dB down by then
    t = np.arange(n) / sr
    reverb = np.zeros(n)
    n_reflections = int(rng.integers(N_REFLECTIONS_RANGE[0], N_REFLECTIONS_RANGE[1] + 1))
    delays = np.sort(rng.uniform(*REFLECTION_DELAY_MS, n_reflections)) / 1000
    for delay in delays:
        # each reflection travels further than the direct path: weaker by distance and absorption
        path = distance + delay * 343.0
        reverb[int(delay * sr)] += rng.uniform(0.4, 0.9) * distance / path
    decay = 3 * math.log(10) / rt60  # amplitude: -60 dB at rt60
    onset = np.clip(t / (REFLECTION_DELAY_MS[1] / 1000), 0.0, 1.0)  # diffuse tail builds up over ~25 ms
    f = _bin_hz(n, sr)
    low = _apply_gain_curve(rng.standard_normal(n), sr, (f < HF_CROSSOVER_HZ).astype(float))
    high = _apply_gain_curve(rng.standard_normal(n), sr, (f >= HF_CROSSOVER_HZ).astype(float))
    tail = low * np.exp(-decay * t) + high * np.exp(-decay / HF_RT60_FACTOR * t)
    tail *= onset
    # early reflections are ~1/3 of the reverberant energy in a small room
    early = reverb / math.sqrt(np.sum(reverb**2))
    reverb = math.sqrt(1 / 3) * early + math.sqrt(2 / 3) * tail / math.sqrt(np.sum(tail**2))
    reverb *= 10 ** (-drr_db / 20)  # direct sound has energy 1
    reverb[0] += 1.0
    info = {
        "rt60_s": rt60,
        "distance_m": distance,
        "volume_m3": volume,
        "directivity": directivity,
        "drr_db": drr_db,
        "n_reflections": n_reflections,
    }
    return reverb, info


# -- 3. noise ------------------------------------------------------------------------------------------


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """1/f power noise, unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spectrum.size, dtype=np.float64)
    f[0] = 1.0
    spectrum /= np.sqrt(f)
    spectrum[0] = 0.0
    y = np.fft.irfft(spectrum, n)
    return y / math.sqrt(power(y))


def _smooth_noise(n: int, sr: int, cutoff_hz: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise low-passed at cutoff_hz, unit RMS: a slowly wandering control signal."""
    y = _apply_gain_curve(rng.standard_normal(n), sr, (_bin_hz(n, sr) < cutoff_hz).astype(float))
    return y / math.sqrt(power(y))


def speech_spectrum(f_hz: np.ndarray) -> np.ndarray:
    """Long-term average speech spectrum: flat to ~500 Hz, then about -9 dB/octave; nothing below 100 Hz."""
    f = np.maximum(f_hz, 1.0)
    return 1.0 / np.sqrt(1.0 + (f / 500.0) ** 3) / np.sqrt(1.0 + (100.0 / f) ** 4)


def babble(n: int, sr: int, n_talkers: int, rng: np.random.Generator) -> np.ndarray:
    """Several talkers at once: voiced harmonics on a wandering pitch plus breath noise, each switched on
    and off at syllable rate (3-6 Hz). Unit RMS."""
    total = np.zeros(n)
    for _ in range(n_talkers):
        f0 = rng.uniform(90.0, 240.0) * (1 + 0.08 * _smooth_noise(n, sr, 3.0, rng))  # intonation
        cycles = np.cumsum(f0) / sr + rng.uniform()
        # a sawtooth has the 1/k harmonics of a glottal pulse train; its aliases are ~30 dB down: harmless
        voiced = 2 * (cycles % 1.0) - 1
        breath = rng.standard_normal(n) * 0.3
        syllables = np.maximum(_smooth_noise(n, sr, float(rng.uniform(3.0, 6.0)), rng) + 0.3, 0.0)
        voice = (voiced / math.sqrt(power(voiced)) + breath) * syllables
        total += voice / math.sqrt(power(voice)) * rng.uniform(0.5, 1.0)  # talkers at different distances
    shaped = _apply_gain_curve(total, sr, speech_spectrum(_bin_hz(n, sr)))
    return shaped / math.sqrt(power(shaped))


# -- 5. phone processing -------------------------------------------------------------------------------


def compress(x: np.ndarray, sr: int, level_dbfs: float) -> np.ndarray:
    """Automatic gain to `level_dbfs` RMS, a 3:1 compressor above the threshold, then a tanh soft clip."""
    x = x * (10 ** (level_dbfs / 20) / math.sqrt(power(x)))
    hop = max(1, int(ENVELOPE_HOP_S * sr))
    n_frames = -(-x.size // hop)
    padded = np.zeros(n_frames * hop)
    padded[: x.size] = x
    frame_rms = np.sqrt(np.mean(padded.reshape(n_frames, hop) ** 2, axis=1) + 1e-12)
    attack = math.exp(-ENVELOPE_HOP_S / ATTACK_S)
    release = math.exp(-ENVELOPE_HOP_S / RELEASE_S)
    envelope = np.empty(n_frames)
    level = frame_rms[0]
    for i, value in enumerate(frame_rms):  # one step per 5 ms: a Python loop is cheap enough
        coefficient = attack if value > level else release
        level = coefficient * level + (1 - coefficient) * value
        envelope[i] = level
    over_db = np.maximum(20 * np.log10(envelope) - COMPRESSOR_THRESHOLD_DB, 0.0)
    gain_db = -over_db * (1 - 1 / COMPRESSOR_RATIO)
    centres = (np.arange(n_frames) + 0.5) * hop
    gain = 10 ** (np.interp(np.arange(x.size), centres, gain_db) / 20)
    y = x * gain
    y *= 10 ** (level_dbfs / 20) / math.sqrt(power(y))  # make-up gain back to the target level
    return np.tanh(y)


# -- 6. speech codec -----------------------------------------------------------------------------------


@functools.cache
def speech_codec_name() -> str:
    return "libopencore_amrnb" if "libopencore_amrnb" in av.codecs_available else "libopus"


def _resample(x: np.ndarray, rate_in: int, rate_out: int, sample_format: str) -> list[av.AudioFrame]:
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(x, np.float32).reshape(1, -1), format="flt", layout="mono"
    )
    frame.sample_rate = rate_in
    resampler = av.AudioResampler(format=sample_format, layout="mono", rate=rate_out)
    return [*resampler.resample(frame), *resampler.resample(None)]


def _codec_round_trip(x: np.ndarray, sr: int) -> np.ndarray:
    """x at sr -> 8 kHz -> encode -> decode -> sr, without any alignment."""
    name = speech_codec_name()
    encoder = av.CodecContext.create(name, "w")
    encoder.sample_rate = CODEC_RATE_HZ
    encoder.layout = "mono"
    encoder.format = "s16"
    encoder.bit_rate = AMR_BIT_RATE if name == "libopencore_amrnb" else OPUS_BIT_RATE
    encoder.open()
    packets = []
    pts = 0
    for frame in _resample(x, sr, CODEC_RATE_HZ, "s16"):
        frame.pts = pts
        pts += frame.samples
        packets += encoder.encode(frame)
    packets += encoder.encode(None)
    decoder = av.CodecContext.create("amrnb" if name == "libopencore_amrnb" else "libopus", "r")
    decoder.sample_rate = CODEC_RATE_HZ
    decoder.layout = "mono"
    decoded = [f.to_ndarray().reshape(-1) for p in packets for f in decoder.decode(p)]
    decoded += [f.to_ndarray().reshape(-1) for f in decoder.decode(None)]
    narrow = np.concatenate(decoded).astype(np.float32) if decoded else np.zeros(0, np.float32)
    frames = _resample(narrow, CODEC_RATE_HZ, sr, "flt") if narrow.size else []
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]) if frames else np.zeros(0, np.float32)


@functools.cache
def codec_delay_samples(sr: int) -> int:
    """The round trip's delay at rate sr, measured once on a band-limited noise probe (cross-correlation)."""
    rng = np.random.default_rng(0)
    probe = phone_band(rng.standard_normal(sr), sr) * 0.2
    out = _codec_round_trip(probe, sr).astype(np.float64)
    nfft = 1 << (2 * probe.size - 1).bit_length()
    correlation = np.fft.irfft(np.fft.rfft(out, nfft) * np.conj(np.fft.rfft(probe, nfft)), nfft)
    return int(np.argmax(correlation[: sr // 10]))  # the delay is a few tens of ms at most


def speech_codec(x: np.ndarray, sr: int) -> np.ndarray:
    delay = codec_delay_samples(sr)
    out = _codec_round_trip(x, sr)[delay : delay + x.size]
    if out.size < x.size:
        out = np.concatenate((out, np.zeros(x.size - out.size, out.dtype)))
    return out


# -- the chain -----------------------------------------------------------------------------------------


def simulate(pcm: np.ndarray, sr: int, rng: np.random.Generator) -> PhoneRecording:
    """The whole chain, with what was drawn and the in-band SNR actually reached."""
    x = np.asarray(pcm, np.float64)
    n = x.size
    f = _bin_hz(n, sr)
    speaker_peak_hz = float(rng.uniform(1000.0, 2500.0))
    speaker_peak_db = float(rng.uniform(0.0, 6.0))
    played = _apply_gain_curve(x, sr, peaking_gain(f, speaker_peak_hz, speaker_peak_db))
    rir, room = room_impulse_response(sr, rng)
    music = fft_convolve(played, rir)

    snr_db = float(rng.uniform(*SNR_RANGE_DB))
    babble_share = float(rng.uniform(0.3, 0.9))
    n_talkers = int(rng.integers(TALKERS_RANGE[0], TALKERS_RANGE[1] + 1))
    noise = math.sqrt(babble_share) * babble(n, sr, n_talkers, rng) + math.sqrt(
        1 - babble_share
    ) * pink_noise(n, rng)
    music_band, noise_band = phone_band(music, sr), phone_band(noise, sr)
    noise_band *= math.sqrt(power(music_band) / (power(noise_band) * 10 ** (snr_db / 10)))
    measured_snr_db = 10 * math.log10(power(music_band) / power(noise_band))
    recorded = music_band + noise_band  # the band-pass is linear: filtering the sum = summing filtered parts

    level_dbfs = float(rng.uniform(-18.0, -14.0))
    processed = compress(recorded, sr, level_dbfs)
    out = speech_codec(processed, sr)
    draw = PhoneDraw(
        rt60_s=room["rt60_s"],
        distance_m=room["distance_m"],
        volume_m3=room["volume_m3"],
        directivity=room["directivity"],
        drr_db=room["drr_db"],
        n_reflections=int(room["n_reflections"]),
        speaker_peak_hz=speaker_peak_hz,
        speaker_peak_db=speaker_peak_db,
        snr_db=snr_db,
        babble_share=babble_share,
        n_talkers=n_talkers,
        level_dbfs=level_dbfs,
        codec=speech_codec_name(),
    )
    return PhoneRecording(pcm=out.astype(np.float32), draw=draw, measured_snr_db=measured_snr_db)


def phone_room(pcm: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """`pcm` (mono float, rate sr) as a phone 1-2 m from a loudspeaker in a noisy room would record it."""
    return simulate(pcm, sr, rng).pcm


# -- sanity checks (no listening needed) ---------------------------------------------------------------


def band_energy_shares(x: np.ndarray, sr: int) -> dict[str, float]:
    """Fractions of the clip's energy below, inside and above the phone band."""
    spectrum = np.abs(np.fft.rfft(np.asarray(x, np.float64))) ** 2
    f = _bin_hz(x.size, sr)
    total = float(spectrum.sum()) + 1e-20
    lo, hi = BAND_HZ
    return {
        f"<{lo:g} Hz": float(spectrum[f < lo].sum()) / total,
        f"{lo:g}-{hi:g} Hz": float(spectrum[(f >= lo) & (f <= hi)].sum()) / total,
        f">{hi:g} Hz": float(spectrum[f > hi].sum()) / total,
    }


def distortion_snr_db(clean: np.ndarray, degraded: np.ndarray, sr: int) -> float:
    """In-band SNR of `degraded` against the clean clip (least-squares gain): everything that is not the
    clean music (reverb, noise, codec) counts as noise."""
    reference = phone_band(np.asarray(clean, np.float64), sr)
    y = phone_band(np.asarray(degraded, np.float64), sr)
    gain = float(np.dot(y, reference) / (np.dot(reference, reference) + 1e-20))
    return 10 * math.log10(power(gain * reference) / power(y - gain * reference))


# -- CLI -----------------------------------------------------------------------------------------------


def clip_seed(seed: int, query_file: str) -> int:
    """One seed per excerpt (q0001_10s_clean and q0001_05s_clean share a room), stable across runs."""
    excerpt = Path(query_file).name.split("_", 1)[0]
    return int.from_bytes(hashlib.sha256(f"{seed}:{excerpt}".encode()).digest()[:8], "little")


def _make_clip(job: tuple[str, str, int, bool]) -> tuple[str, float, dict[str, object] | None]:
    """(clean clip path, output path, seed, report) -> (output path, drawn SNR, sanity report or None)."""
    src, dst, seed, report = job
    probe = av.open(src)
    try:
        sr = int(probe.streams.audio[0].sample_rate)
    finally:
        probe.close()
    pcm, _ = decode_all(src, sample_rate_hz=sr)
    recording = simulate(pcm, sr, np.random.default_rng(seed))
    write_audio(dst, [recording.pcm], sr, codec="flac")
    details = None
    if report:
        written, _ = decode_all(dst, sample_rate_hz=sr)
        details = {
            "draw": asdict(recording.draw),
            "measured_in_band_snr_db": recording.measured_snr_db,
            "band_energy_shares": band_energy_shares(written, sr),
            "clean_band_energy_shares": band_energy_shares(pcm, sr),
            "distortion_snr_db": distortion_snr_db(pcm, written, sr),
            "peak": float(np.max(np.abs(written))),
            "rms_dbfs": 10 * math.log10(power(written)),
        }
    return dst, recording.draw.snr_db, details


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--queries", required=True, type=Path, help="queries dir holding ground_truth.csv and clips/"
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="only the first N clean clips (0 = all)")
    args = ap.parse_args()

    truth_path = args.queries / "ground_truth.csv"
    if not truth_path.exists():
        sys.exit(f"{truth_path} not found: generate the queries first (see bench/README.md)")
    with truth_path.open(newline="") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        rows = [r for r in reader if r["degradation"] != DEGRADATION]
    clean = [r for r in rows if r["degradation"] == "clean"]
    if args.limit:
        clean = clean[: args.limit]
    jobs = []
    for i, row in enumerate(clean):
        out_name = (
            Path(row["query_file"]).with_suffix("").as_posix().removesuffix("_clean") + f"_{DEGRADATION}.flac"
        )
        jobs.append(
            (
                str(args.queries / row["query_file"]),
                str(args.queries / out_name),
                clip_seed(args.seed, row["query_file"]),
                i == 0,
            )
        )
    print(
        f"{len(jobs)} clean clips -> {DEGRADATION} with codec {speech_codec_name()} "
        f"(delay {codec_delay_samples(22050)} samples at 22050 Hz)"
    )
    started = time.perf_counter()
    new_rows = []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for row, (dst, snr_db, details) in zip(clean, pool.map(_make_clip, jobs, chunksize=4), strict=True):
            new_rows.append(
                {
                    **row,
                    "query_file": Path(dst).relative_to(args.queries).as_posix(),
                    "degradation": DEGRADATION,
                    "source_span_s": row["duration_s"],
                    "speed": "1",
                    "snr_db": f"{snr_db:.1f}",
                }
            )
            if details is not None:
                print(f"sanity check of {dst}:")
                for key, value in details.items():
                    print(f"  {key}: {value}")
    out_path = args.queries / "ground_truth_phone.csv"
    tmp = out_path.with_name(out_path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        writer.writerows(new_rows)
    os.replace(tmp, out_path)
    print(f"wrote {len(new_rows)} clips and {out_path} in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
