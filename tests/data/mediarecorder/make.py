"""Record tests/data/mediarecorder/canvas10_uneven.webm with Chromium's MediaRecorder, as browsers record people.

A 96x64 canvas drawn every 100 ms (now and then 50 or 150 ms) and a 440 Hz tone, recorded for 3 s into WebM
(VP8 + Opus). MediaRecorder writes a live-stream WebM: no duration, no cues, no DefaultDuration, so FFmpeg has no
declared rate, and from these uneven frame times it guesses about 20 fps for what is a 10 fps video; that is what
models.media must cope with (a browser's camera under load delivers frames just as unevenly). Needs Debian's chromium and playwright; the
committed file was made with the versions printed when this runs. Run from the repository root:

    .venv/bin/python tests/data/mediarecorder/make.py
"""

import base64
from pathlib import Path

from playwright.sync_api import sync_playwright

OUT = Path(__file__).with_name("canvas10_uneven.webm")
CHROMIUM = "/usr/bin/chromium"

RECORD_JS = """
async () => {
  const canvas = document.createElement('canvas');
  canvas.width = 96; canvas.height = 64;
  const g = canvas.getContext('2d');
  let n = 0;
  const draw = () => { g.fillStyle = `rgb(${(n * 10) % 256}, 90, 160)`; g.fillRect(0, 0, 96, 64);
                       g.fillStyle = 'white'; g.fillRect((n * 3) % 96, 20, 12, 24); n++; };
  // Drawn every 100 ms, with now and then a frame late (150 ms) or early (50 ms), as a busy camera delivers them;
  // captureStream() without a rate takes a frame whenever the canvas changes.
  const gaps = [100, 100, 100, 150, 100, 100, 50, 100, 100, 100];
  let timer = null;
  const tick = () => { draw(); timer = setTimeout(tick, gaps[n % gaps.length]); };
  tick();
  const audio = new AudioContext();
  const tone = audio.createOscillator(); tone.frequency.value = 440;
  const sink = audio.createMediaStreamDestination(); tone.connect(sink); tone.start();
  const stream = new MediaStream([...canvas.captureStream().getVideoTracks(), ...sink.stream.getAudioTracks()]);
  const recorder = new MediaRecorder(stream, {mimeType: 'video/webm;codecs=vp8,opus', videoBitsPerSecond: 200000});
  const chunks = [];
  recorder.ondataavailable = (e) => chunks.push(e.data);
  const stopped = new Promise((resolve) => recorder.onstop = resolve);
  recorder.start(500);  // chunks every 0.5 s, as the page streams them to the server
  await new Promise((r) => setTimeout(r, 3000));
  recorder.stop(); await stopped; clearTimeout(timer); tone.stop();
  const bytes = new Uint8Array(await new Blob(chunks).arrayBuffer());
  let text = ''; for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text);
}
"""


def main() -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
        try:
            page = browser.new_page()
            data = base64.b64decode(page.evaluate(RECORD_JS))
            print("chromium", browser.version)
        finally:
            browser.close()
    OUT.write_bytes(data)
    print(f"wrote {OUT} ({len(data)} bytes)")


if __name__ == "__main__":
    main()
