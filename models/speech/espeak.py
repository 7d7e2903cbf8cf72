"""Speech synthesis with phoneme timings from libespeak-ng, through ctypes.

The library runs in AUDIO_OUTPUT_SYNCHRONOUS mode with espeakINITIALIZE_PHONEME_EVENTS: espeak_Synth returns once the
whole text is synthesized, having called our callback with blocks of int16 samples (22050 Hz) and lists of
espeak_EVENT, among them one espeakEVENT_PHONEME per phoneme whose id.string holds the mnemonic. Struct layouts mirror
/usr/include/espeak-ng/speak_lib.h (API revision 12, espeak-ng 1.51); `_check_event_clock` cross-checks the
`sample` and `audio_position` fields of every event so a layout mismatch fails loudly rather than giving wrong times.

libespeak keeps one global synthesizer per process, so every call takes `_LOCK` and sets voice and parameters afresh.
Setting parameters is not enough for reproducibility: the wave generator carries its pitch-flutter phase and libc
rand() noise state from one call to the next, so the same text comes out a few samples longer or shorter each time.
A process that has never synthesized is exactly reproducible, so `synthesize` runs each request in a child forked by
multiprocessing's forkserver (a clean single-threaded server: safe to fork even when the caller runs torch threads).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import threading
from dataclasses import dataclass

import numpy as np

from models.speech.clip import PhonemeEvent, SpeechClip

# speak_lib.h constants.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE, _PARAM_WORDGAP = 1, 2, 3, 4, 7
_EE_OK = 0

RATE_MIN_WPM, RATE_MAX_WPM = 80, 450

# Silent gaps shorter than this before a phoneme event are left to the previous phoneme (sample jitter, not a gap).
_MIN_GAP_S = 0.002
# A phoneme whose event is followed only by silence (e.g. the /l/ of "world" before the closure of /d/) keeps this
# much of it, so every event keeps a visible interval.
_MIN_KEEP_S = 0.010


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms from the start of this message
        ("sample", ctypes.c_int),  # sample index of the same instant (finer than audio_position)
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


class _Voice(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),  # (priority byte, NUL-terminated name)* then a 0 byte; read by hand
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class VoiceInfo:
    """An installed espeak-ng voice or variant as reported by espeak_ListVoices."""

    name: str
    identifier: str
    languages: tuple[str, ...]
    gender: str  # "male", "female" or "unspecified"


class _Collector:
    """Receives one synthesis: int16 blocks and (sample index, audio_position ms, mnemonic) phoneme events."""

    def __init__(self) -> None:
        self.blocks: list[np.ndarray] = []
        self.phonemes: list[tuple[int, int, str]] = []


_LOCK = threading.Lock()
_state: dict = {}  # lib, sample_rate_hz, callback (kept alive here: libespeak holds only a raw pointer), collector


def _lib() -> ctypes.CDLL:
    """Load and initialize libespeak-ng once per process (caller holds _LOCK)."""
    if "lib" in _state:
        return _state["lib"]
    path = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
    try:
        lib = ctypes.CDLL(path)
    except OSError as e:
        raise RuntimeError(f"libespeak-ng not found ({e}); install the Debian package libespeak-ng1") from e
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
        ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
    ]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_ListVoices.argtypes = [ctypes.POINTER(_Voice)]
    lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))

    sample_rate_hz = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, _INITIALIZE_PHONEME_EVENTS)
    if sample_rate_hz <= 0:
        raise RuntimeError("espeak_Initialize failed: is espeak-ng-data installed (Debian espeak-ng-data)?")

    @_SynthCallback
    def on_synth(wav, n_samples, events):
        collector = _state.get("collector")
        if collector is None:
            return 0
        if wav and n_samples > 0:
            collector.blocks.append(np.ctypeslib.as_array(wav, (n_samples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type == _EVENT_PHONEME:
                mnemonic = bytes(ev.id.string).split(b"\0", 1)[0].decode("utf-8", "replace")
                collector.phonemes.append((ev.sample, ev.audio_position, mnemonic))
            i += 1
        return 0

    lib.espeak_SetSynthCallback(on_synth)
    _state.update(lib=lib, sample_rate_hz=sample_rate_hz, callback=on_synth, collector=None)
    return lib


def native_sample_rate_hz() -> int:
    """The rate libespeak-ng synthesizes at (22050 Hz for its standard voices)."""
    with _LOCK:
        _lib()
        return _state["sample_rate_hz"]


def _languages(ptr: int) -> tuple[str, ...]:
    out = []
    while ptr and ctypes.c_ubyte.from_address(ptr).value != 0:
        name = ctypes.string_at(ptr + 1)
        out.append(name.decode("utf-8", "replace"))
        ptr += 2 + len(name)
    return tuple(out)


def _list(spec: _Voice | None) -> list[VoiceInfo]:
    with _LOCK:
        lib = _lib()
        arr = lib.espeak_ListVoices(ctypes.byref(spec) if spec is not None else None)
        voices = []
        i = 0
        while arr[i]:
            v = arr[i].contents
            gender = {1: "male", 2: "female"}.get(v.gender, "unspecified")
            voices.append(VoiceInfo(v.name.decode(), v.identifier.decode(), _languages(v.languages), gender))
            i += 1
        return voices


def list_voices(language_prefix: str | None = "en") -> list[VoiceInfo]:
    """Installed language voices whose language list has an entry starting with `language_prefix` (None: all)."""
    voices = _list(None)
    if language_prefix is None:
        return voices
    prefix = language_prefix.lower()
    return [v for v in voices if any(lang.lower().startswith(prefix) for lang in v.languages)]


def _variant_names(lib: ctypes.CDLL) -> list[str]:
    """Variant file names (caller holds _LOCK); listed once, since the data directory does not change under us."""
    if "variants" not in _state:
        spec = _Voice()
        spec.languages = ctypes.cast(ctypes.c_char_p(b"variant"), ctypes.c_void_p)
        arr = lib.espeak_ListVoices(ctypes.byref(spec))
        names = []
        i = 0
        while arr[i]:
            names.append(arr[i].contents.identifier.decode().rsplit("/", 1)[-1])
            i += 1
        _state["variants"] = sorted(names)
    return _state["variants"]


def list_variants() -> list[str]:
    """Names usable after '+' in a voice name (e.g. 'f3' in 'en-us+f3'): the files in espeak-ng-data/voices/!v."""
    with _LOCK:
        return list(_variant_names(_lib()))


# Accents and timbres that differ audibly; english_voices() keeps those installed here.
ENGLISH_VOICE_CANDIDATES = (
    "en-us",
    "en",
    "en-gb-x-rp",
    "en-gb-scotland",
    "en-029",
    "en-us+f3",
    "en-us+m3",
    "en+f2",
    "en+m7",
    "en-gb-x-rp+f4",
    "en-us+klatt",
    "en-us+m1",
    "en+f5",
)


def english_voices() -> list[str]:
    """The ENGLISH_VOICE_CANDIDATES whose base voice and variant are installed."""
    bases = {lang.lower() for v in list_voices("en") for lang in v.languages}
    variants = set(list_variants())
    out = []
    for name in ENGLISH_VOICE_CANDIDATES:
        base, _, variant = name.partition("+")
        if base in bases and (not variant or variant in variants):
            out.append(name)
    return out


def _select_voice(lib: ctypes.CDLL, voice: str) -> None:
    base, plus, variant = voice.partition("+")
    if not base:
        raise ValueError(f"voice name {voice!r} has no base voice before '+'")
    if plus and variant not in _variant_names(lib):
        # espeak_SetVoiceByName silently ignores unknown variants, so check ourselves.
        raise ValueError(f"unknown espeak-ng voice variant {variant!r} in {voice!r}")
    if lib.espeak_SetVoiceByName(voice.encode("utf-8")) != _EE_OK:
        raise ValueError(f"unknown espeak-ng voice {voice!r}; see list_voices()/english_voices()")


def _check_event_clock(phonemes: list[tuple[int, int, str]], sample_rate_hz: int) -> None:
    # `sample` and `audio_position` are independent fields; if they disagree the struct layout is not what we think.
    for sample, position_ms, mnemonic in phonemes:
        if abs(sample * 1000.0 / sample_rate_hz - position_ms) > 1.5:
            raise RuntimeError(
                f"espeak event clock mismatch for {mnemonic!r}: sample {sample} vs {position_ms} ms; "
                "espeak_EVENT layout differs from speak_lib.h revision 12"
            )


def _phoneme_timeline(
    samples: np.ndarray, phonemes: list[tuple[int, int, str]], sample_rate_hz: int
) -> list[PhonemeEvent]:
    """Turn event onsets into back-to-back intervals covering [0, len(samples)).

    espeak marks a phoneme where its audible part starts and renders silent gaps before some phonemes as exact zeros
    attributed to the previous one: ~50 ms closures before p/t/k/tS (the event sits at the burst) and ~10 ms gaps at
    word boundaries. A stop's closure is part of the stop (it is when the lips are shut for /p/), so each non-pause
    phoneme that follows a non-pause phoneme starts where its run of zeros begins, leaving the previous phoneme at
    least _MIN_KEEP_S.
    """
    n = len(samples)
    nonzero = np.flatnonzero(samples)

    def zero_run_start(end: int) -> int:
        """First index of the run of exact zeros ending at `end` (== end when samples[end - 1] != 0)."""
        k = np.searchsorted(nonzero, end) - 1
        return int(nonzero[k]) + 1 if k >= 0 else 0

    onsets: list[tuple[int, str]] = []
    for sample, _, mnemonic in phonemes:
        start = min(max(sample, 0), n)
        is_pause = mnemonic.startswith("_")
        prev_pause = not onsets or onsets[-1][1].startswith("_")
        if not is_pause and not prev_pause:
            prev_start = onsets[-1][0]
            floor = prev_start + min(int(_MIN_KEEP_S * sample_rate_hz), start - prev_start)
            j = max(zero_run_start(start), floor)
            if (start - j) >= _MIN_GAP_S * sample_rate_hz:
                start = j
        elif not is_pause and not onsets:
            start = zero_run_start(start)
        while onsets and start <= onsets[-1][0]:
            # Events sharing a sample: the earlier one has no audio of its own.
            onsets.pop()
        onsets.append((start, mnemonic))
    if not onsets or onsets[0][0] > 0:
        onsets.insert(0, (0, "_"))
    events = []
    for (start, mnemonic), (end, _) in zip(onsets, onsets[1:] + [(n, "")]):
        if end > start:
            events.append(PhonemeEvent(start / sample_rate_hz, end / sample_rate_hz, mnemonic))
    return events


@dataclass(frozen=True)
class SynthesisParams:
    """espeak-ng prosody: speed in words per minute, base pitch and pitch range on espeak's 0-100 scales (50 = normal)."""

    voice: str = "en-us"
    rate_wpm: int = 175
    pitch: int = 50
    pitch_range: int = 50

    def __post_init__(self) -> None:
        if not RATE_MIN_WPM <= self.rate_wpm <= RATE_MAX_WPM:
            raise ValueError(f"rate_wpm must be in [{RATE_MIN_WPM}, {RATE_MAX_WPM}], got {self.rate_wpm}")
        if not 0 <= self.pitch <= 100:
            raise ValueError(f"pitch must be in [0, 100], got {self.pitch}")
        if not 0 <= self.pitch_range <= 100:
            raise ValueError(f"pitch_range must be in [0, 100], got {self.pitch_range}")
        if not self.voice:
            raise ValueError("voice must be a non-empty espeak-ng voice name")


def _synthesize_here(text: str, params: SynthesisParams) -> tuple[np.ndarray, list[tuple[int, int, str]], int]:
    """Synthesize in this process: (int16 samples, raw phoneme events, native rate). Output depends on earlier calls."""
    encoded = text.encode("utf-8") + b"\0"
    with _LOCK:
        lib = _lib()
        native_hz = _state["sample_rate_hz"]
        _select_voice(lib, params.voice)
        for param, value in (
            (_PARAM_RATE, params.rate_wpm),
            (_PARAM_PITCH, params.pitch),
            (_PARAM_RANGE, params.pitch_range),
            (_PARAM_VOLUME, 100),
            (_PARAM_WORDGAP, 0),
        ):
            if lib.espeak_SetParameter(param, value, 0) != _EE_OK:
                raise RuntimeError(f"espeak_SetParameter({param}, {value}) failed")
        collector = _Collector()
        _state["collector"] = collector
        try:
            err = lib.espeak_Synth(encoded, len(encoded), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        finally:
            _state["collector"] = None
    if err != _EE_OK:
        raise RuntimeError(f"espeak_Synth failed with error {err}")
    pcm = np.concatenate(collector.blocks) if collector.blocks else np.zeros(0, np.int16)
    return pcm, collector.phonemes, native_hz


def _child_main(text: str, params: SynthesisParams, conn) -> None:
    try:
        conn.send(("ok", _synthesize_here(text, params)))
    except (ValueError, RuntimeError) as e:
        conn.send((type(e).__name__, str(e)))
    finally:
        conn.close()


def _synthesize_fresh(text: str, params: SynthesisParams) -> tuple[np.ndarray, list[tuple[int, int, str]], int]:
    ctx = multiprocessing.get_context("forkserver")
    # Takes effect only if the forkserver is not running yet: it then imports this module once and every worker
    # forks with it loaded, instead of importing numpy and this module afresh per call.
    ctx.set_forkserver_preload([__name__])
    receiver, sender = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child_main, args=(text, params, sender), daemon=True)
    child.start()
    sender.close()
    try:
        status, payload = receiver.recv()
    except EOFError as e:
        raise RuntimeError(f"espeak worker process died (exit code {child.exitcode})") from e
    finally:
        receiver.close()
        child.join()
    if status == "ok":
        return payload
    raise (ValueError if status == "ValueError" else RuntimeError)(payload)


def synthesize(
    text: str,
    params: SynthesisParams = SynthesisParams(),
    sample_rate_hz: int | None = 16000,
    fresh_process: bool = True,
) -> SpeechClip:
    """Speak `text`; returns the clip at `sample_rate_hz` (None: espeak's native 22050 Hz) with phoneme intervals.

    Phoneme times are derived at the native rate and are in seconds, so they hold at any output rate. With
    `fresh_process` (default) the same text and params always give bit-identical samples, at ~20 ms extra per call;
    without it synthesis runs in this process and varies by a few samples with what was synthesized before.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("synthesize needs non-empty text")
    if "\0" in text:
        raise ValueError("synthesize text must not contain NUL characters")
    if sample_rate_hz is not None and sample_rate_hz <= 0:
        raise ValueError(f"sample_rate_hz must be positive, got {sample_rate_hz}")
    pcm, raw_phonemes, native_hz = (_synthesize_fresh if fresh_process else _synthesize_here)(text, params)
    if len(pcm) == 0:
        raise ValueError(f"espeak produced no audio for text {text!r}")
    _check_event_clock(raw_phonemes, native_hz)
    phonemes = _phoneme_timeline(pcm, raw_phonemes, native_hz)
    samples = pcm.astype(np.float32) / 32768.0
    out_hz = native_hz if sample_rate_hz is None else int(sample_rate_hz)
    if out_hz != native_hz:
        # Imported here so worker processes, which only synthesize, do not pay for importing scipy.
        from models.audio.resample import resample

        samples = resample(samples, native_hz, out_hz)
    return SpeechClip(samples, out_hz, phonemes, text, params.voice)
