// Cloning a voice: a prompt from a file or the microphone, its problems from the server before it is saved,
// then POST /clone.

import { postForm } from "./api.js";

const $ = (id) => document.getElementById(id);
const MAX_RECORDING_SECONDS = 30; // the server's default prompt limit (COSYVOICE_PROMPT_MAX_SECONDS)
const RECORDING_TYPES = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/mp4", "audio/webm"];

function extension(type) {
  if (type.includes("ogg")) return "ogg";
  if (type.includes("mp4")) return "m4a";
  return "webm";
}

function dbfs(peak) {
  return peak > 0 ? `${(20 * Math.log10(peak)).toFixed(1)} dBFS` : "silence";
}

export function setupClone({ state, showError, clearError, voicesChanged }) {
  let prompt = null; // {blob, name}: what will be sent as prompt_audio
  let checks = 0; // the newest check wins when several are in flight
  let recorder = null;
  let timer = null;

  function renderReport(report, problems) {
    const box = $("report");
    box.hidden = false;
    box.classList.toggle("bad", problems.length > 0);
    if (report) {
      const figures = `${report.speech_seconds.toFixed(2)} s of sound in ${report.seconds.toFixed(2)} s, peak ${dbfs(report.peak)}`;
      $("report-summary").textContent = problems.length ? `Problems (${figures}):` : `Looks good: ${figures}.`;
    } else {
      $("report-summary").textContent = problems.length ? "The server could not check this audio:" : "Checking…";
    }
    $("problems").replaceChildren(
      ...problems.map((problem) => {
        const item = document.createElement("li");
        item.textContent = problem;
        return item;
      }),
    );
  }

  // the shown report belongs to the prompt being replaced: gone at once (a check still running is ignored)
  function forgetReport() {
    const mine = ++checks;
    state.report = null;
    state.problems = [];
    renderReport(null, []);
    return mine;
  }

  async function check() {
    if (!prompt) return;
    const mine = forgetReport();
    const form = new FormData();
    form.append("prompt_audio", prompt.blob, prompt.name);
    form.append("prompt_text", $("clone-text").value);
    try {
      const report = await postForm("web/prompt_check", form);
      if (mine !== checks) return;
      state.report = report;
      state.problems = report.problems;
      renderReport(report, report.problems);
    } catch (err) {
      if (mine !== checks) return;
      state.lastError = err.message;
      state.problems = [err.message];
      renderReport(null, state.problems);
    }
  }

  function usePrompt(blob, name) {
    prompt = { blob, name };
    const preview = $("prompt-preview");
    if (preview.src) URL.revokeObjectURL(preview.src);
    preview.src = URL.createObjectURL(blob);
    preview.hidden = false;
    check();
  }

  $("clone-file").addEventListener("change", () => {
    const file = $("clone-file").files[0];
    if (file) usePrompt(file, file.name);
  });

  function stopRecording() {
    if (recorder && recorder.state !== "inactive") recorder.stop();
  }

  async function record() {
    if (recorder) return stopRecording();
    clearError();
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: false, noiseSuppression: false } });
    } catch (err) {
      showError(new Error(`the microphone is not available (${err.message})`));
      return;
    }
    const type = RECORDING_TYPES.find((t) => MediaRecorder.isTypeSupported(t)) || "";
    const parts = [];
    recorder = new MediaRecorder(stream, type ? { mimeType: type } : {});
    recorder.ondataavailable = (event) => {
      if (event.data.size) parts.push(event.data);
    };
    recorder.onstop = () => {
      for (const track of stream.getTracks()) track.stop();
      clearInterval(timer);
      const blobType = recorder.mimeType || type || "audio/webm";
      recorder = null;
      $("record").textContent = "Record";
      $("record").classList.remove("recording");
      $("clone-file").value = "";
      usePrompt(new Blob(parts, { type: blobType }), `recording.${extension(blobType)}`);
    };
    const started = performance.now();
    prompt = null;
    forgetReport();
    recorder.start(250);
    $("record").textContent = "Stop recording";
    $("record").classList.add("recording");
    $("record-time").textContent = "0.0 s";
    timer = setInterval(() => {
      const seconds = (performance.now() - started) / 1000;
      $("record-time").textContent = `${seconds.toFixed(1)} s`;
      if (seconds >= MAX_RECORDING_SECONDS) stopRecording();
    }, 100);
  }

  async function save(event) {
    event.preventDefault();
    clearError();
    const form = new FormData();
    form.append("spk_id", $("clone-name").value.trim());
    form.append("prompt_text", $("clone-text").value);
    form.append("overwrite", "false");
    if (prompt) form.append("prompt_audio", prompt.blob, prompt.name);
    $("clone-save").disabled = true;
    $("clone-status").textContent = "Cloning…";
    try {
      const result = await postForm("clone", form);
      $("clone-status").textContent = `Saved: ${result.spk_id}. It is in the voice list now.`;
      await voicesChanged(result.spk_id);
    } catch (err) {
      $("clone-status").textContent = "";
      showError(err);
    } finally {
      $("clone-save").disabled = false;
    }
  }

  const canRecord = Boolean(navigator.mediaDevices && navigator.mediaDevices.getUserMedia && window.MediaRecorder);
  $("record").disabled = !canRecord;
  if (!canRecord) $("record-time").textContent = "recording needs https (or localhost) and a microphone";
  $("record").addEventListener("click", record);
  $("clone-form").addEventListener("submit", save);
  $("clone-text").addEventListener("change", () => prompt && check());
}
