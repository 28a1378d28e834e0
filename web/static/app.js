"use strict";
// The playground: POST /v1/stream read with fetch, one SSE frame at a time.
// Stop aborts the fetch; the gateway sees the connection close and cancels
// the upstream request.

const $ = (id) => document.getElementById(id);
const state = { history: [], ctrl: null };

const keyInput = $("key");
keyInput.value = sessionStorage.getItem("gateway.key") || "";
keyInput.addEventListener("change", () => {
  sessionStorage.setItem("gateway.key", keyInput.value);
  loadModels();
});
$("model").addEventListener("change", () => localStorage.setItem("gateway.model", $("model").value));

function headers() {
  const h = { "Content-Type": "application/json" };
  if (keyInput.value) h.Authorization = "Bearer " + keyInput.value;
  return h;
}

async function loadModels() {
  const sel = $("model");
  try {
    const res = await fetch("/v1/models", { headers: headers() });
    const body = await res.json();
    if (!res.ok) throw new Error(body.error ? body.error.message : res.statusText);
    const want = sel.value || localStorage.getItem("gateway.model");
    sel.replaceChildren(...body.data.map((m) => new Option(m.id, m.id)));
    if (want && body.data.some((m) => m.id === want)) sel.value = want;
    if (!body.data.length) sel.replaceChildren(new Option("no models for this key", ""));
  } catch (e) {
    sel.replaceChildren(new Option("models unavailable: " + e.message, ""));
  }
}

function addMessage(role, text) {
  const el = document.createElement("div");
  el.className = "msg";
  el.dataset.role = role;
  const content = document.createElement("span");
  content.className = "content";
  content.textContent = text;
  el.append(content);
  $("transcript").append(el);
  el.scrollIntoView({ block: "end" });
  return el;
}

// addThinking puts a collapsible "Thinking" block before the answer.
function addThinking(msg, content) {
  const el = document.createElement("details");
  el.className = "thinking";
  el.open = true;
  const summary = document.createElement("summary");
  summary.textContent = "Thinking";
  const body = document.createElement("span");
  body.className = "reasoning";
  el.append(summary, body);
  msg.insertBefore(el, content);
  return el;
}

function note(msg, cls, text) {
  const el = document.createElement("span");
  el.className = cls;
  el.textContent = text;
  msg.append(el);
}

const ms = (v) => (v < 1000 ? v.toFixed(0) + " ms" : (v / 1000).toFixed(2) + " s");

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
  $("prompt").readOnly = busy;
}

class APIError extends Error {
  constructor(e) {
    super(e.message || "unknown error");
    this.code = e.code || "error";
  }
}

async function send(prompt) {
  const hint = $("hint");
  if (hint) hint.remove();
  const model = $("model").value;
  if (!model) return;
  state.history.push({ role: "user", content: prompt });
  addMessage("user", prompt);
  const msg = addMessage("assistant", "");
  msg.dataset.state = "streaming";
  const content = msg.querySelector(".content");

  const ctrl = new AbortController();
  state.ctrl = ctrl;
  setBusy(true);
  const started = performance.now();
  let first = 0;
  let deltas = 0;
  let text = "";
  let thought = "";
  let thinking = null;
  const live = () => {
    const now = performance.now();
    $("ttft").textContent = first ? ms(first - started) : ms(now - started) + "…";
    if (first && deltas > 1) $("tps").textContent = (deltas / ((now - first) / 1000)).toFixed(1) + " tok/s";
  };
  $("usage").textContent = "–";
  $("tps").textContent = "–";
  const timer = setInterval(live, 100);

  const messages = [];
  const system = $("system").value.trim();
  if (system) messages.push({ role: "system", content: system });
  messages.push(...state.history);
  try {
    const res = await fetch("/v1/stream", {
      method: "POST", headers: headers(), body: JSON.stringify({ model, messages }), signal: ctrl.signal,
    });
    if (!res.ok) {
      const body = await res.json().catch(() => ({}));
      throw new APIError(body.error || { code: String(res.status), message: res.statusText });
    }
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    let end = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const frame = buf.slice(0, i);
        buf = buf.slice(i + 2);
        for (const line of frame.split("\n")) {
          if (!line.startsWith("data: ")) continue; // ": ping", "id: N"
          const ev = JSON.parse(line.slice(6));
          if (ev.type === "reasoning" && ev.content) {
            // Thinking, shown apart from the answer as it arrives.
            if (!first) first = performance.now();
            deltas++;
            thinking = thinking || addThinking(msg, content);
            thought += ev.content;
            thinking.querySelector(".reasoning").textContent = thought;
            msg.scrollIntoView({ block: "end" });
          } else if (ev.type === "delta") {
            if (!first) first = performance.now();
            deltas++;
            if (thinking && !text) thinking.open = false; // the answer begins
            text += ev.content;
            content.textContent = text;
            msg.scrollIntoView({ block: "end" });
          } else if (ev.type === "done" || ev.type === "error") {
            end = ev;
          }
        }
      }
    }
    if (!end) throw new APIError({ code: "connection_lost", message: "the connection ended before the answer did" });
    if (end.type === "error") throw new APIError(end.error);
    const u = end.usage;
    $("usage").textContent = `${u.prompt_tokens} + ${u.completion_tokens} = ${u.total_tokens}` + (end.usage_estimated ? " (estimated)" : "");
    note(msg, "meta", `${end.finish_reason} · ${u.completion_tokens} tokens · first token ${ms(end.ttft_ms)} · ${ms(end.duration_ms)} in all`);
    msg.dataset.state = "done";
    state.history.push({ role: "assistant", content: text });
  } catch (e) {
    if (ctrl.signal.aborted) {
      note(msg, "meta", "stopped: the upstream request was cancelled");
      msg.dataset.state = "stopped";
    } else {
      note(msg, "error", `${e.code || "error"}: ${e.message}`);
      msg.dataset.state = "error";
    }
    if (text) state.history.push({ role: "assistant", content: text });
    else state.history.pop(); // the question was not answered
  } finally {
    clearInterval(timer);
    live();
    setBusy(false);
    state.ctrl = null;
  }
}

$("form").addEventListener("submit", (e) => {
  e.preventDefault();
  const prompt = $("prompt").value.trim();
  if (!prompt || state.ctrl) return;
  $("prompt").value = "";
  send(prompt);
});
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    $("form").requestSubmit();
  }
});
$("stop").addEventListener("click", () => state.ctrl && state.ctrl.abort());
$("clear").addEventListener("click", () => {
  state.history = [];
  $("transcript").replaceChildren();
});

loadModels();
