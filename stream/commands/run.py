"""relitcam run: the live avatar. Audio from a microphone, a file or the browser; video to a virtual camera, the
web page, an MP4 file and/or a delayed virtual microphone; lighting from hotkeys and the page."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from pathlib import Path

from stream.cli import UserError

DEFAULT_PORT = 8080


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT in px, e.g. 1280x720; got {text!r}") from None
    return w, h


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="relitcam run", description=__doc__)
    p.add_argument("--avatar", help="the name given to relitcam enroll, an avatar bundle folder, or a renderer as "
                                    "module.path:factory (see docs/pipeline.md); default: the shipped avatar "
                                    "models/avatars/default")
    p.add_argument("--backend", default="onnxruntime", help="where a bundle's nets run (default onnxruntime, CPU)")
    src = p.add_argument_group("audio source")
    src.add_argument("--source", choices=("mic", "file", "browser"), default="mic")
    src.add_argument("--mic", help="microphone name (or part of it) or index; default: the system default")
    src.add_argument("--audio", help="WAV or video file for --source file")
    src.add_argument("--loop", action="store_true", help="repeat the file")
    src.add_argument("--offline", action="store_true", help="file source as fast as possible, every frame (MP4)")
    look = p.add_argument_group("picture")
    look.add_argument("--fps", type=float, choices=(25.0, 30.0), default=30.0)
    look.add_argument("--canvas", type=_size, default=(1280, 720), help="output size WxH px (default 1280x720)")
    look.add_argument("--avatar-height", type=float, default=None,
                      help="avatar height as a fraction of the canvas height (default: the last run's, else 1: fills "
                           "it, as a webcam)")
    look.add_argument("--light", default=None,
                      help="starting lighting: preset name, L.json, an .hdr/.exr environment map, a photo (lit like "
                           "the place it shows), or 'background' to be lit like the background picture (and follow "
                           "it when it changes; the l key toggles this live); default: the last run's, else "
                           "soft_front")
    look.add_argument("--shine", type=float, default=None,
                      help="skin highlights, 0 (matte) to 2 (glossy), 1 = as enrolled ([ and ] change it live); "
                           "default: the last run's, else 1")
    look.add_argument("--background", action="append", help="built-in name or image path (repeat to offer several)")
    look.add_argument("--hdr", action="append",
                      help="HDR/EXR maps the h key steps through (repeat for several; default: Blender's studio "
                           "lights); --light MAP.exr starts with one")
    look.add_argument("--latency-budget-ms", type=float, default=100.0)
    src.add_argument("--voice-gate-db", type=float, default=None,
                     help="treat sound this many dB under your voice's level as silence, so the avatar does not "
                          "mouth other people in the room (e.g. 15; default off)")
    out = p.add_argument_group("outputs (several at once; default --web)")
    out.add_argument("--virtualcam", action="store_true", help="send to a virtual camera (pyvirtualcam)")
    out.add_argument("--camera-device", help="virtual camera device, e.g. /dev/video10")
    out.add_argument("--camera-backend", help="pyvirtualcam backend name")
    out.add_argument("--web", action="store_true", help="serve the page + WebRTC")
    out.add_argument("--host", default="127.0.0.1", help="address to serve on (non-loopback needs --token)")
    out.add_argument("--port", type=int, default=DEFAULT_PORT)
    out.add_argument("--token", help="access token for the page (required off loopback)")
    out.add_argument("--max-sessions", type=int, default=4)
    out.add_argument("--mp4", help="record to this .mp4 (audio + video in sync)")
    out.add_argument("--virtual-mic", action="store_true", help="delayed PulseAudio virtual microphone")
    p.add_argument("--no-hotkeys", action="store_true")
    p.add_argument("--no-settings", action="store_true",
                   help="start from the built-in look and do not save this run's (by default a run starts from the "
                        "lighting, shine, background and size last set live, where no flag names them, and saves "
                        "them on the way out if they were changed)")
    p.add_argument("--stats", help="write the final stage timings / drop counters to this JSON file")
    return p


def load_avatar(spec: str | None, backend: str = "onnxruntime", avatars_dir=None):
    """The renderer for --avatar: the default bundle, a bundle folder, an enrolled avatar's name, or
    module.path:factory (avatars_dir: where enrolled avatars are looked up; default: where enroll writes them)."""
    from models.enroll.enroll import enrolled_avatars
    from stream.avatar import load_renderer
    from stream.bundle_renderer import DEFAULT_BUNDLE, BundleRenderer

    if spec is None:
        if not (DEFAULT_BUNDLE / "manifest.json").is_file():
            raise UserError(f"the default avatar {DEFAULT_BUNDLE} is not installed; make it with "
                            "scripts/make_default_avatar.py, or pass --avatar BUNDLE_FOLDER")
        return BundleRenderer(DEFAULT_BUNDLE, backend)
    path = Path(spec).expanduser()
    if path.is_dir():
        return BundleRenderer(path, backend)
    if ":" in spec:
        return load_renderer(spec)
    enrolled = enrolled_avatars(avatars_dir)
    if spec in enrolled:
        return BundleRenderer(enrolled[spec], backend)
    names = ", ".join(enrolled) if enrolled else "none yet (relitcam enroll VIDEO --name NAME makes one)"
    raise ValueError(f"--avatar {spec!r} is neither an enrolled avatar's name (enrolled: {names}), nor an avatar "
                     "bundle folder (no such folder), nor a renderer as module.path:factory")


def checked_hdr_map(spec: str) -> Path:
    """An --hdr map, read once now: a missing or broken one is said before the stream starts, not when the h key
    reaches it mid-call."""
    from models.lighting.files import read_environment_map

    try:
        read_environment_map(spec)
    except (OSError, ValueError) as e:
        raise UserError(f"--hdr {spec}: {e}") from None
    return Path(spec)


def starting_avatar(spec: str | None, saved_name: str | None, available: dict) -> tuple[str | None, str | None]:
    """(what to load: an --avatar spec or None for the default bundle, the avatar's name in the page's list or None).

    --avatar wins; without it, the avatar last switched to (saved), if it is still there."""
    from stream.avatar_choice import DEFAULT_NAME

    if spec is not None:
        folder = Path(spec).expanduser()
        if folder.is_dir():
            named = [name for name, path in available.items() if path.resolve() == folder.resolve()]
            return spec, (named[0] if named else None)
        return spec, (spec if spec in available else None)
    if saved_name is not None and saved_name != DEFAULT_NAME:
        if saved_name in available:
            print(f"relitcam: starting with avatar {saved_name!r}, the last one used (--avatar to choose another)")
            return str(available[saved_name]), saved_name
        print(f"relitcam run: the avatar last used, {saved_name!r}, is no longer enrolled; starting with the default",
              file=sys.stderr)
    return None, (DEFAULT_NAME if DEFAULT_NAME in available else None)


async def _run(args) -> int:
    from models.lighting.files import resolve_lighting
    from models.lighting.sources import preset_names
    from stream.backgrounds import BackgroundSet
    from stream.checks import finite_number_in
    from stream.clock import MonotonicClock
    from stream.controls import Controls
    from stream.hotkeys import HELP, GlobalHotkeys, TerminalHotkeys
    from stream.lighting_state import MAX_SHINE, LightingControls, LightingState
    from stream.pipeline import Pipeline, PipelineConfig
    from stream.settings import BACKGROUND_LIGHT, load_settings, remember_look, settings_path, starting_look
    from stream.sink import SinkUnavailable

    if args.shine is not None:
        try:
            finite_number_in(args.shine, 0.0, MAX_SHINE, "--shine")
        except ValueError:
            raise UserError(f"--shine must be a number from 0 (matte) to {MAX_SHINE:g} (glossy), got {args.shine}") from None
    hdr_maps = [checked_hdr_map(h) for h in args.hdr] if args.hdr else None
    saved_path = None if args.no_settings else settings_path()
    saved = load_settings(saved_path) if saved_path else None
    look = starting_look(saved, args.light, args.shine, args.avatar_height, preset_names())
    clock = MonotonicClock()
    from stream.avatar_choice import AvatarChoice, available_avatars

    avatar_spec, avatar_name = starting_avatar(args.avatar, saved.avatar if saved else None, available_avatars())
    renderer = load_avatar(avatar_spec, args.backend)
    realtime = not args.offline
    if args.offline and args.source != "file":
        raise UserError("--offline needs --source file")
    browser_mic = None
    if args.source == "file":
        if not args.audio:
            raise UserError("--source file needs --audio PATH")
        from stream.file_source import FileSource

        source = FileSource.from_path(args.audio, realtime=realtime, loop=args.loop)
    elif args.source == "browser":
        from stream.webrtc import BrowserMicSource

        source = browser_mic = BrowserMicSource()
        args.web = True
    else:
        from stream.mic import MicrophoneSource

        source = MicrophoneSource(args.mic)

    if not (args.virtualcam or args.web or args.mp4 or args.virtual_mic):
        args.web = True
    sinks = []
    if args.virtualcam:
        from stream.virtualcam import VirtualCameraSink

        try:
            sinks.append(VirtualCameraSink(args.canvas, args.fps, args.camera_device, args.camera_backend))
        except SinkUnavailable as e:
            raise UserError(str(e)) from None
    if args.mp4:
        from stream.mp4_sink import Mp4Sink

        sinks.append(Mp4Sink(args.mp4, args.fps, args.canvas))
    if args.virtual_mic:
        from stream.virtual_mic import VirtualMicSink

        try:
            sinks.append(VirtualMicSink(clock))
        except SinkUnavailable as e:
            print(f"relitcam run: virtual microphone off: {e}", file=sys.stderr)  # optional: carry on without it

    backgrounds = BackgroundSet(args.background, args.canvas)
    if look.background in backgrounds.names:  # a saved picture that is no longer offered is skipped
        backgrounds.select(look.background)
    light_from_background = look.light == BACKGROUND_LIGHT
    base = backgrounds.current_lighting() if light_from_background else resolve_lighting(look.light)
    lighting = LightingState(base, now_s=clock.now_s(), controls=LightingControls(
        yaw_deg=look.yaw_deg, pitch_deg=look.pitch_deg, gain=look.intensity, tint_rgb=look.tint_rgb, shine=look.shine))
    if saved is not None:
        print(f"relitcam: starting from the look saved in {saved_path} (--no-settings for the built-in one)")
    config = PipelineConfig(fps=args.fps, canvas_size_px=args.canvas, realtime=realtime,
                            latency_budget_ms=args.latency_budget_ms, avatar_height_frac=look.avatar_height,
                            voice_gate_db=args.voice_gate_db)
    pipeline = Pipeline(source, renderer, lighting, backgrounds, sinks, config, clock)
    controls = Controls(lighting, backgrounds, clock, hdr_maps,
                        pipeline.compositor, AvatarChoice(pipeline, avatar_name, args.backend))
    controls.light_from_background = light_from_background

    server = None
    if args.web:
        from stream.webrtc import WebRtcServer

        server = WebRtcServer(pipeline, controls, args.host, args.port, args.token, args.max_sessions, browser_mic)
        try:
            await server.start()
        except SinkUnavailable as e:
            for sink in sinks:  # opened above (the MP4 file, the camera): let them go before saying why
                with contextlib.suppress(Exception):  # an MP4 with no frame says so; the port is the news here
                    sink.close()
            raise UserError(str(e)) from None
        print(f"relitcam: open {server.url}")
    hotkeys = [] if args.no_hotkeys else [TerminalHotkeys(controls.handle), GlobalHotkeys(controls.handle)]
    if any([h.start() for h in hotkeys]):
        print(HELP)

    async def quit_on_request():
        await controls.quit_requested.wait()
        pipeline.stop()

    quitter = asyncio.create_task(quit_on_request())
    # Ctrl-C stops the pipeline cleanly (sinks closed, MP4 finalised, stats printed) instead of tearing it down.
    import signal

    with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows event loops
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, pipeline.stop)
    try:
        stats = await pipeline.run()
    finally:
        quitter.cancel()
        for h in hotkeys:
            h.stop()
        if server is not None:
            await server.close()
        remember_look(controls, saved_path)
    report = stats.report()
    print(json.dumps(report, indent=2))
    if args.stats:
        Path(args.stats).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="relitcam: %(message)s")
    try:
        import uvloop  # faster event loop where it exists (not on Windows)

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        return runner(_run(args))
    except KeyboardInterrupt:
        return 130
