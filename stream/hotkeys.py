"""Hotkeys: keys in the terminal running relitcam, and (where a desktop session allows) global ones via pynput.

Both turn keys into the same control messages the web page sends, so there is one code path for every action:

    1-9 preset   arrows turn the light   + / - intensity   [ / ] less / more shine   c colour   b background
    l light from the background (on / off)   h next HDR map   q quit

Global hotkeys use Ctrl+Alt+<key>: bare keys would be stolen from whatever the user is typing into.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Awaitable, Callable

from stream.controls import ROTATE_STEP_DEG

log = logging.getLogger(__name__)

Handler = Callable[[dict], Awaitable[dict]]

_ARROWS = {
    "\x1b[A": {"type": "rotate", "dyaw_deg": 0.0, "dpitch_deg": ROTATE_STEP_DEG},
    "\x1b[B": {"type": "rotate", "dyaw_deg": 0.0, "dpitch_deg": -ROTATE_STEP_DEG},
    "\x1b[C": {"type": "rotate", "dyaw_deg": ROTATE_STEP_DEG, "dpitch_deg": 0.0},
    "\x1b[D": {"type": "rotate", "dyaw_deg": -ROTATE_STEP_DEG, "dpitch_deg": 0.0},
}
_KEYS = {
    "+": {"type": "intensity_step", "steps": 1},
    "=": {"type": "intensity_step", "steps": 1},  # + without shift on most layouts
    "-": {"type": "intensity_step", "steps": -1},
    "[": {"type": "shine_step", "steps": -1},
    "]": {"type": "shine_step", "steps": 1},
    "c": {"type": "next_colour"},
    "b": {"type": "next_background"},
    "l": {"type": "background_light"},
    "h": {"type": "next_hdr"},
    "q": {"type": "quit"},
}
HELP = ("keys: 1-9 preset · arrows move light · +/- intensity · [/] shine · c colour · b background · "
        "l light from background · h HDR map · q quit")


def key_message(key: str) -> dict | None:
    """The control message for one key ('1', 'c', or an arrow's escape sequence); None for keys with no action."""
    if len(key) == 1 and "1" <= key <= "9":
        return {"type": "preset", "index": int(key)}
    return _ARROWS.get(key) or _KEYS.get(key.lower() if len(key) == 1 else key)


def split_keys(data: str) -> list[str]:
    """Split what a terminal delivered in one read into keys (arrow keys arrive as 3-character sequences)."""
    keys, i = [], 0
    while i < len(data):
        if data.startswith("\x1b[", i) and i + 2 < len(data):
            keys.append(data[i : i + 3])
            i += 3
        else:
            keys.append(data[i])
            i += 1
    return keys


class TerminalHotkeys:
    """Reads keys from a TTY stdin in cbreak mode (no Enter needed); restores the terminal on stop."""

    def __init__(self, handle: Handler) -> None:
        self.handle = handle
        self._saved = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> bool:
        if not sys.stdin.isatty():
            log.info("stdin is not a terminal: terminal hotkeys off (use the web page)")
            return False
        import termios
        import tty

        fd = sys.stdin.fileno()
        self._saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(fd, self._on_input)
        return True

    def _on_input(self) -> None:
        import os

        data = os.read(sys.stdin.fileno(), 64).decode("utf-8", "ignore")
        for key in split_keys(data):
            message = key_message(key)
            if message is not None:
                asyncio.ensure_future(self._apply(message))

    async def _apply(self, message: dict) -> None:
        reply = await self.handle(message)
        if reply.get("type") == "error":
            print(f"\r{reply['error']}", file=sys.stderr)

    def stop(self) -> None:
        if self._saved is None:
            return
        import termios

        fd = sys.stdin.fileno()
        with contextlib.suppress(Exception):
            self._loop.remove_reader(fd)
        termios.tcsetattr(fd, termios.TCSADRAIN, self._saved)
        self._saved = None


class GlobalHotkeys:
    """Ctrl+Alt+<key> anywhere on the desktop, through pynput; silently absent where there is no desktop."""

    def __init__(self, handle: Handler) -> None:
        self.handle = handle
        self._listener = None

    def start(self) -> bool:
        try:
            from pynput import keyboard  # needs an X/Wayland/macOS/Windows session; import fails on a bare server
        except Exception as e:
            log.info("global hotkeys unavailable (%s); terminal and web controls still work", str(e).splitlines()[0])
            return False
        loop = asyncio.get_running_loop()

        def bind(message: dict):
            return lambda: loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self.handle(message)))

        combos = {f"<ctrl>+<alt>+{n}": bind(key_message(str(n))) for n in range(1, 10)}
        combos.update({
            "<ctrl>+<alt>+<up>": bind(_ARROWS["\x1b[A"]), "<ctrl>+<alt>+<down>": bind(_ARROWS["\x1b[B"]),
            "<ctrl>+<alt>+<right>": bind(_ARROWS["\x1b[C"]), "<ctrl>+<alt>+<left>": bind(_ARROWS["\x1b[D"]),
            "<ctrl>+<alt>+=": bind(_KEYS["+"]), "<ctrl>+<alt>+-": bind(_KEYS["-"]),
            "<ctrl>+<alt>+[": bind(_KEYS["["]), "<ctrl>+<alt>+]": bind(_KEYS["]"]),
            "<ctrl>+<alt>+c": bind(_KEYS["c"]), "<ctrl>+<alt>+b": bind(_KEYS["b"]), "<ctrl>+<alt>+h": bind(_KEYS["h"]),
            "<ctrl>+<alt>+l": bind(_KEYS["l"]),
        })
        try:
            self._listener = keyboard.GlobalHotKeys(combos)
            self._listener.start()
        except Exception as e:
            log.info("global hotkeys unavailable (%s)", e)
            return False
        return True

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.stop()
