// relitcam page: one RTCPeerConnection receiving the avatar (video + delayed audio), a data channel for controls.
// window.relitcam exposes the connection and the replies so tests (and curious users) can inspect them.
"use strict";

const token = new URLSearchParams(location.search).get("token");
const relitcam = (window.relitcam = { pc: null, channel: null, replies: [], state: null, errors: [] });
const $ = (id) => document.getElementById(id);

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function send(message) {
  if (!relitcam.channel || relitcam.channel.readyState !== "open") return false;
  relitcam.channel.send(typeof message === "string" ? message : JSON.stringify(message));
  return true;
}
relitcam.send = send;

function showState(state) {
  relitcam.state = state;
  const presets = $("presets");
  if (presets.childElementCount !== state.presets.length) {
    presets.replaceChildren(...state.presets.map((name, i) => {
      const b = document.createElement("button");
      b.textContent = `${i + 1} ${name.replace(/_/g, " ")}`;
      b.dataset.preset = name;
      b.onclick = () => send({ type: "preset", name });
      return b;
    }));
  }
  for (const b of presets.children) b.classList.toggle("active", b.dataset.preset === state.base);
  const bg = $("background");
  if (bg.options.length !== state.backgrounds.length) {
    bg.replaceChildren(...state.backgrounds.map((name) => new Option(name.replace(/_/g, " "), name)));
  }
  bg.value = state.background;
  $("bglight").checked = state.light_from_background;
  $("intensity").value = state.intensity;
  $("shine").value = state.shine;
  if (state.avatar_height !== undefined) $("avatarheight").value = state.avatar_height;
  if (state.avatars !== undefined) {
    // Shown only where there is a choice: the shipped avatar and those made with relitcam enroll.
    $("avatarbox").hidden = state.avatars.length < 2;
    const avatar = $("avatar");
    if ([...avatar.options].map((o) => o.value).join() !== state.avatars.join()) {
      avatar.replaceChildren(...state.avatars.map((name) => new Option(name, name)));
    }
    avatar.value = state.avatar ?? "";
  }
  const dot = $("lightdot");
  dot.style.left = `${50 + (state.yaw_deg / 90) * 50}%`;
  dot.style.top = `${50 - (state.pitch_deg / 90) * 50}%`;
  setStatus(`lighting: ${state.base} · background: ${state.background}`);
}

function onReply(event) {
  const reply = JSON.parse(event.data);
  relitcam.replies.push(reply);
  if (reply.type === "state") showState(reply.state);
  else if (reply.type === "error") { relitcam.errors.push(reply.error); setStatus(reply.error, true); }
}

async function connect(withMic) {
  const pc = new RTCPeerConnection();
  relitcam.pc = pc;
  pc.addTransceiver("video", { direction: "recvonly" });
  if (withMic) {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true } });
    pc.addTransceiver(stream.getAudioTracks()[0], { direction: "sendrecv" });
  } else {
    pc.addTransceiver("audio", { direction: "recvonly" });
  }
  const channel = pc.createDataChannel("controls");
  relitcam.channel = channel;
  channel.onopen = () => send({ type: "state" });
  channel.onmessage = onReply;
  const remote = new MediaStream();
  pc.ontrack = (event) => {
    remote.addTrack(event.track);
    $("video").srcObject = remote;
  };
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === "failed") setStatus("connection failed; reload to retry", true);
  };
  await pc.setLocalDescription(await pc.createOffer());
  // Wait for ICE gathering: the server takes one complete offer (no trickle).
  await new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && resolve());
    setTimeout(resolve, 2000);
  });
  const response = await fetch("/offer", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer", token }),
  });
  const answer = await response.json();
  if (!response.ok) { setStatus(answer.error, true); pc.close(); return; }
  await pc.setRemoteDescription(answer);
}

// -- controls -------------------------------------------------------------------------------------------------
const pad = $("lightpad");
function dragLight(event) {
  const r = pad.getBoundingClientRect();
  const x = Math.max(-1, Math.min(1, ((event.clientX - r.left) / r.width) * 2 - 1));
  const y = Math.max(-1, Math.min(1, 1 - ((event.clientY - r.top) / r.height) * 2));
  send({ type: "direction", yaw_deg: x * 90, pitch_deg: y * 89 });
}
pad.addEventListener("pointerdown", (e) => { pad.setPointerCapture(e.pointerId); dragLight(e); });
pad.addEventListener("pointermove", (e) => { if (pad.hasPointerCapture(e.pointerId)) dragLight(e); });
$("intensity").addEventListener("input", (e) => send({ type: "intensity", value: Number(e.target.value) }));
$("shine").addEventListener("input", (e) => send({ type: "shine", value: Number(e.target.value) }));
$("avatarheight").addEventListener("input", (e) => send({ type: "avatar_height", value: Number(e.target.value) }));
$("colour").addEventListener("input", (e) => send({ type: "colour", rgb: e.target.value }));
$("background").addEventListener("change", (e) => send({ type: "background", name: e.target.value }));
$("avatar").addEventListener("change", (e) => {
  if (send({ type: "avatar", name: e.target.value })) setStatus(`loading avatar ${e.target.value}…`);
});
$("bglight").addEventListener("change", (e) => send({ type: "background_light", on: e.target.checked }));
$("nexthdr").addEventListener("click", () => send({ type: "next_hdr" }));
async function upload(path, e) {
  const file = e.target.files[0];
  if (!file) return;
  setStatus(`uploading ${file.name}…`);
  const query = new URLSearchParams({ name: file.name, ...(token ? { token } : {}) });
  const response = await fetch(`${path}?${query}`, { method: "POST", body: file });
  const reply = await response.json();
  if (reply.type === "state") showState(reply.state); else setStatus(reply.error, true);
}
$("hdrfile").addEventListener("change", (e) => upload("/hdr", e));
$("bgfile").addEventListener("change", (e) => upload("/background", e));
$("usemic").addEventListener("change", async (e) => {
  if (relitcam.pc) relitcam.pc.close();
  await connect(e.target.checked).catch((err) => setStatus(String(err), true));
});
document.addEventListener("keydown", (e) => {
  if (e.target.tagName === "INPUT" || e.target.tagName === "SELECT") return;
  const keys = {
    ArrowLeft: { type: "rotate", dyaw_deg: -15, dpitch_deg: 0 }, ArrowRight: { type: "rotate", dyaw_deg: 15, dpitch_deg: 0 },
    ArrowUp: { type: "rotate", dyaw_deg: 0, dpitch_deg: 15 }, ArrowDown: { type: "rotate", dyaw_deg: 0, dpitch_deg: -15 },
    "+": { type: "intensity_step", steps: 1 }, "=": { type: "intensity_step", steps: 1 }, "-": { type: "intensity_step", steps: -1 },
    "[": { type: "shine_step", steps: -1 }, "]": { type: "shine_step", steps: 1 },
    c: { type: "next_colour" }, b: { type: "next_background" }, h: { type: "next_hdr" }, l: { type: "background_light" },
  };
  const message = /^[1-9]$/.test(e.key) ? { type: "preset", index: Number(e.key) } : keys[e.key];
  if (message) { send(message); e.preventDefault(); }
});

// -- recording yourself, and making the avatar from it -------------------------------------------------------
const rec = (relitcam.recording = { recorder: null, chunks: [], reply: null, job: null, timer: null });
const MAX_RECORDING_S = 300;
function recStatus(text, isError = false) {
  $("recstatus").textContent = text;
  $("recstatus").className = isError ? "error" : "";
}
const withToken = (path) => (token ? `${path}${path.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}` : path);

async function startRecording() {
  if (!navigator.mediaDevices || !window.MediaRecorder) {
    // Browsers give pages the camera only on https or on this machine's own address.
    recStatus(`this browser gives the camera only to http://127.0.0.1:${location.port}/ on the machine running ` +
              "relitcam (or https): open the page there to record", true);
    return;
  }
  const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 1280, height: 720 }, audio: true });
  $("selfview").srcObject = stream;
  $("selfview").hidden = false;
  $("selfview").play().catch(() => {});
  const type = ["video/webm;codecs=vp8,opus", "video/webm", "video/mp4"].find((t) => MediaRecorder.isTypeSupported(t));
  const recorder = new MediaRecorder(stream, type ? { mimeType: type } : {});
  rec.recorder = recorder;
  rec.chunks = [];
  recorder.ondataavailable = (e) => { if (e.data.size) rec.chunks.push(e.data); };
  recorder.onstop = () => {
    stream.getTracks().forEach((t) => t.stop());
    $("selfview").hidden = true;
    uploadRecording(recorder.mimeType || type || "video/webm").catch((err) => recStatus(String(err), true));
  };
  recorder.start(1000);
  const t0 = Date.now();
  rec.timer = setInterval(() => {
    const s = (Date.now() - t0) / 1000;
    recStatus(`recording: ${s.toFixed(0)} s (talk naturally; at least 20 s, 30 s to 2 min is best)`);
    if (s >= MAX_RECORDING_S) stopRecording();
  }, 500);
  $("record").textContent = "Stop recording";
}

function stopRecording() {
  clearInterval(rec.timer);
  if (rec.recorder && rec.recorder.state !== "inactive") rec.recorder.stop();
  $("record").textContent = "Record";
}

async function uploadRecording(mimeType) {
  const blob = new Blob(rec.chunks, { type: mimeType.split(";")[0] });
  rec.chunks = [];
  recStatus(`checking the recording (${(blob.size / 1e6).toFixed(1)} MB)…`);
  const query = new URLSearchParams({ name: $("recname").value.trim() || "me" });
  const response = await fetch(withToken(`/recording?${query}`), { method: "POST", body: blob,
                                                                   headers: { "Content-Type": blob.type } });
  const reply = (rec.reply = await response.json());
  if (reply.type !== "recording") { recStatus(reply.error, true); return; }
  const warnings = reply.warnings.length ? ` Warning: ${reply.warnings.join(" ")}` : "";
  recStatus(`Kept ${reply.seconds} s.${warnings} To make the avatar (tens of minutes on a CPU), press below or run: ` +
            reply.command, reply.warnings.length > 0);
  $("enroll").hidden = false;
}

async function followEnroll() {
  const job = (rec.job = await (await fetch(withToken("/enroll"))).json());
  const running = job.state === "running" || job.state === "stopping";
  $("enroll").hidden = running || !rec.reply;
  $("enrollstop").hidden = !running;
  if (running) {
    recStatus(`making avatar ${job.name}: ${job.stage ?? "starting"}`);
    setTimeout(followEnroll, 2000);
  } else if (job.state === "done") {
    recStatus(`avatar ${job.name} is ready; next time: relitcam run --avatar ${job.name}`);
    $("useavatar").hidden = false;
    send({ type: "state" });  // the avatar list now has it
  } else if (job.state === "failed") {
    recStatus(`making the avatar stopped: ${job.error}`, true);
  } else if (job.state === "stopped") {
    recStatus("stopped; press again to go on from where it was");
  }
}

$("record").addEventListener("click", () => {
  if (rec.recorder && rec.recorder.state === "recording") stopRecording();
  else startRecording().catch((err) => recStatus(`cannot record: ${err}`, true));
});
$("enroll").addEventListener("click", async () => {
  const response = await fetch(withToken("/enroll"), { method: "POST", headers: { "Content-Type": "application/json" },
                                                       body: JSON.stringify({ file: rec.reply.file, name: rec.reply.name }) });
  const reply = await response.json();
  if (reply.type === "error") { recStatus(reply.error, true); return; }
  followEnroll();
});
$("enrollstop").addEventListener("click", () => fetch(withToken("/enroll/stop"), { method: "POST" }));
$("useavatar").addEventListener("click", () => {
  if (send({ type: "avatar", name: rec.job.name })) setStatus(`loading avatar ${rec.job.name}…`);
});
followEnroll().catch(() => {});  // an enrollment started earlier from this page is shown again

connect(new URLSearchParams(location.search).get("mic") === "1").catch((err) => setStatus(String(err), true));
