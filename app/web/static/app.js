// The page: voices, speaking (streamed playback and a download), the API key, errors as the server words them.
// Its state is window.voicePage.state, for people curious about the numbers and for tests.

import { getJson, postJson, remove, storeKey, whenUnauthorized } from "./api.js";
import { setupClone } from "./clone.js";
import { makePlayer, playbackOf } from "./player.js";

const $ = (id) => document.getElementById(id);
const CLONED_ONLY = new Set(["zero_shot", "cross_lingual"]);
const PLAYBACK_HINTS = {
  "web audio": "plays while it is synthesized (Web Audio)",
  "media source": "plays while it is synthesized (MediaSource)",
  "after download": "plays once the whole file has arrived",
};

export const state = {
  voices: { builtin: [], cloned: [] },
  speaking: false, // a request is under way
  playing: false, // audio is coming out of the speakers
  done: false, // the last request has ended (audio all received and handed to the player, or failed)
  firstAudioMs: null, // from the click to the first audio bytes
  playingFromMs: null, // from the click to the start of playback
  receivedAllMs: null, // from the click to the end of the answer
  decodedSeconds: 0, // audio the page decoded or scheduled itself
  bytes: 0,
  sampleRate: null, // X-Sample-Rate of the last answer
  format: null,
  playback: null, // "web audio", "media source" or "after download"
  download: null, // {name, bytes, url} of the last answer
  lastError: null, // the server's message, as it worded it
  needsKey: false,
  report: null, // the last /web/prompt_check answer
  problems: [], // its problems, or the server's message when it could not check
};

// -- errors ---------------------------------------------------------------------------------------------

export function showError(error) {
  const message = error && error.message ? error.message : String(error);
  state.lastError = message;
  $("error").textContent = message;
  $("error").hidden = false;
}

export function clearError() {
  state.lastError = null;
  $("error").hidden = true;
  $("error").textContent = "";
}

// -- voices ---------------------------------------------------------------------------------------------

function optionGroup(label, names) {
  const group = document.createElement("optgroup");
  group.label = label;
  for (const name of names) group.append(new Option(name, name));
  return group;
}

export async function refreshVoices(select) {
  const data = await getJson("get_available_spks");
  state.voices = { builtin: data.builtin || [], cloned: data.cloned || [] };
  const voice = $("voice");
  const wanted = select || voice.value;
  voice.replaceChildren(optionGroup("Built-in", state.voices.builtin), optionGroup("Cloned", state.voices.cloned));
  if ([...voice.options].some((option) => option.value === wanted)) voice.value = wanted;
  applyMode();
  renderCloned();
}

function renderCloned() {
  const list = $("cloned-list");
  list.replaceChildren(
    ...state.voices.cloned.map((name) => {
      const item = document.createElement("li");
      const label = document.createElement("span");
      label.className = "name";
      label.textContent = name;
      const button = document.createElement("button");
      button.type = "button";
      button.className = "secondary";
      button.textContent = "Delete";
      button.setAttribute("aria-label", `Delete the voice ${name}`);
      button.addEventListener("click", () => deleteVoice(name));
      item.append(label, button);
      return item;
    }),
  );
  $("no-cloned").hidden = state.voices.cloned.length > 0;
}

async function deleteVoice(name) {
  if (!window.confirm(`Delete the voice ${name}? This cannot be undone.`)) return;
  clearError();
  try {
    await remove(`voices/${encodeURIComponent(name)}`);
    await refreshVoices();
  } catch (err) {
    showError(err);
  }
}

// Zero-shot and cross-lingual speak with cloned voices only; instruct needs its instruction.
function applyMode() {
  const mode = $("mode").value;
  const voice = $("voice");
  const [builtin] = voice.getElementsByTagName("optgroup");
  if (builtin) builtin.disabled = CLONED_ONLY.has(mode);
  if (voice.selectedOptions[0]?.parentElement.disabled || voice.selectedIndex < 0) {
    const first = [...voice.options].find((option) => !option.parentElement.disabled);
    voice.value = first ? first.value : "";
  }
  $("instruction-field").hidden = mode !== "instruct";
  const needsClone = CLONED_ONLY.has(mode) && !state.voices.cloned.length;
  $("format-hint").textContent = needsClone
    ? "This mode speaks with a cloned voice: clone one below first."
    : `${$("format").value}: ${PLAYBACK_HINTS[playbackOf($("format").value)]}.`;
}

// -- speaking -------------------------------------------------------------------------------------------

let current = null; // {controller, player} of the request under way

function size(bytes) {
  return bytes < 1024 ? `${bytes} B` : `${(bytes / 1024).toFixed(1)} kB`;
}

function renderStats() {
  $("first-audio").textContent = state.firstAudioMs === null ? "–" : `${state.firstAudioMs} ms`;
  $("audio-seconds").textContent = state.decodedSeconds ? `${state.decodedSeconds.toFixed(2)} s` : "–";
  $("received").textContent = state.bytes ? size(state.bytes) : "–";
  let now = "idle";
  if (state.playing) now = state.speaking ? "playing, receiving" : "playing";
  else if (state.speaking) now = "waiting for audio";
  else if (state.done && state.bytes) now = "done";
  $("play-state").textContent = now;
  $("speak").disabled = state.speaking;
  $("stop").disabled = !state.speaking && !state.playing;
}

function offerDownload(blob, format) {
  const link = $("download");
  if (state.download) URL.revokeObjectURL(state.download.url);
  const name = `speech.${format}`;
  state.download = { name, bytes: blob.size, url: URL.createObjectURL(blob) };
  link.href = state.download.url;
  link.download = name;
  link.textContent = `Download ${name} (${size(blob.size)})`;
  link.hidden = false;
}

function stop() {
  if (!current) return;
  current.controller.abort();
  current.player.stop();
}

async function speak(event) {
  event.preventDefault();
  stop();
  clearError();
  const started = performance.now();
  const format = $("format").value;
  const audio = $("player");
  const playback = playbackOf(format);
  audio.hidden = playback !== "media source";
  $("download").hidden = true; // the link comes back with this answer's bytes
  Object.assign(state, {
    speaking: true, playing: false, done: false, firstAudioMs: null, playingFromMs: null, receivedAllMs: null,
    decodedSeconds: 0, bytes: 0, sampleRate: null, format, playback,
  });
  const mine = { controller: new AbortController() };
  // made here, inside the click: browsers let audio start only from a user's gesture
  mine.player = makePlayer(format, audio, (change) => {
    if (current !== mine) return;
    if (change.playing && state.playingFromMs === null) state.playingFromMs = Math.round(performance.now() - started);
    Object.assign(state, change);
    renderStats();
  });
  current = mine;
  renderStats();
  const body = {
    text: $("text").value,
    voice: $("voice").value,
    mode: $("mode").value,
    instruction: $("instruction").value,
    speed: Number($("speed").value),
    format,
  };
  try {
    const response = await postJson("web/speak", body, { signal: mine.controller.signal });
    state.sampleRate = Number(response.headers.get("X-Sample-Rate")) || null;
    mine.player.begin(response);
    const reader = response.body.getReader();
    const chunks = [];
    for (;;) {
      let next;
      try {
        next = await reader.read();
      } catch (err) {
        if (err.name === "AbortError") throw err;
        throw new Error(`the audio stream broke off after ${size(state.bytes)} (${err.message})`);
      }
      if (next.done) break;
      if (!next.value.length) continue;
      if (state.firstAudioMs === null) state.firstAudioMs = Math.round(performance.now() - started);
      chunks.push(next.value);
      state.bytes += next.value.length;
      mine.player.push(next.value);
      renderStats();
    }
    state.receivedAllMs = Math.round(performance.now() - started);
    const blob = new Blob(chunks, { type: response.headers.get("Content-Type") || "" });
    offerDownload(blob, format);
    await mine.player.end(blob);
    if (current === mine) state.decodedSeconds = mine.player.decodedSeconds;
  } catch (err) {
    if (err.name !== "AbortError" && current === mine) {
      mine.player.stop();
      showError(err);
    }
  } finally {
    if (current === mine) {
      state.speaking = false;
      state.done = true;
      renderStats();
    }
  }
}

// -- the API key ------------------------------------------------------------------------------------------

function askForKey(message) {
  state.needsKey = true;
  $("key-reason").textContent = message;
  $("key-panel").hidden = false;
  $("key").focus();
}

async function useKey(event) {
  event.preventDefault();
  const key = $("key").value.trim();
  if (key && !/^[\x21-\x7e]+$/.test(key)) {
    showError(new Error("key: an API key is printable ASCII, without spaces"));
    return;
  }
  storeKey(key);
  $("key").value = "";
  state.needsKey = false;
  $("key-panel").hidden = true;
  clearError();
  try {
    await refreshVoices();
  } catch (err) {
    showError(err);
  }
}

// -- start ------------------------------------------------------------------------------------------------

function start() {
  whenUnauthorized(askForKey);
  $("speak-form").addEventListener("submit", speak);
  $("stop").addEventListener("click", stop);
  $("mode").addEventListener("change", applyMode);
  $("format").addEventListener("change", applyMode);
  $("speed").addEventListener("input", () => {
    $("speed-value").textContent = `${Number($("speed").value).toFixed(2)}×`;
  });
  $("key-form").addEventListener("submit", useKey);
  $("key-forget").addEventListener("click", () => {
    storeKey("");
    $("key").value = "";
  });
  setupClone({ state, showError, clearError, voicesChanged: refreshVoices });
  renderStats();
  applyMode();
  refreshVoices().catch(showError);
}

window.voicePage = { state, refreshVoices };
start();
