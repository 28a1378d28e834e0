"use strict";
// The playground: a streaming request read with fetch, one SSE frame at a
// time, in the API chosen (the gateway's native /v1/stream, OpenAI's chat
// completions or Anthropic's Messages). Stop aborts the fetch; the gateway
// sees the connection close and cancels the upstream request.

const $ = (id) => document.getElementById(id);
const state = { history: [], ctrl: null };

const keyInput = $("key");
keyInput.value = sessionStorage.getItem("gateway.key") || "";
keyInput.addEventListener("change", () => {
  sessionStorage.setItem("gateway.key", keyInput.value);
  loadModels();
});
$("model").addEventListener("change", () => localStorage.setItem("gateway.model", $("model").value));
$("api").value = localStorage.getItem("gateway.api") || "native";
$("api").addEventListener("change", () => localStorage.setItem("gateway.api", $("api").value));

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

// dialects are the APIs the playground can speak: each says where to send
// a conversation and how, and turns the stream's frames into
// {reasoning}, {text} and, last, {end: {error} or {usage, finish, ...}}.
const dialects = {
  native: {
    url: "/v1/stream",
    headers,
    body: (model, system, history) => ({ model, messages: system ? [{ role: "system", content: system }, ...history] : history }),
    error: (body) => body.error,
    parser: () => (frame) => {
      const out = [];
      for (const line of frame.split("\n")) {
        if (!line.startsWith("data: ")) continue; // ": ping", "id: N"
        const ev = JSON.parse(line.slice(6));
        if (ev.type === "reasoning") out.push({ reasoning: ev.content });
        else if (ev.type === "delta") out.push({ text: ev.content });
        else if (ev.type === "error") out.push({ end: { error: ev.error } });
        else if (ev.type === "done") {
          const u = ev.usage;
          out.push({ end: { usage: { prompt: u.prompt_tokens, completion: u.completion_tokens }, estimated: ev.usage_estimated,
            finish: ev.finish_reason, ttft_ms: ev.ttft_ms, duration_ms: ev.duration_ms } });
        }
      }
      return out;
    },
  },
  chat: {
    url: "/v1/chat/completions",
    headers,
    body: (model, system, history) => ({ model, stream: true, stream_options: { include_usage: true },
      messages: system ? [{ role: "system", content: system }, ...history] : history }),
    error: (body) => body.error,
    parser: () => {
      let finish = "", usage = null;
      return (frame) => {
        const out = [];
        for (const line of frame.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          if (line === "data: [DONE]") {
            out.push({ end: { usage: usage || { prompt: 0, completion: 0 }, finish } });
            continue;
          }
          const ev = JSON.parse(line.slice(6));
          if (ev.error) { out.push({ end: { error: ev.error } }); continue; }
          if (ev.usage) usage = { prompt: ev.usage.prompt_tokens, completion: ev.usage.completion_tokens };
          const c = ev.choices && ev.choices[0];
          if (!c) continue;
          if (c.delta.reasoning_content) out.push({ reasoning: c.delta.reasoning_content });
          if (c.delta.content) out.push({ text: c.delta.content });
          if (c.finish_reason) finish = c.finish_reason;
        }
        return out;
      };
    },
  },
  responses: {
    url: "/v1/responses",
    headers,
    body: (model, system, history) => {
      const b = { model, stream: true, store: false, input: history };
      if (system) b.instructions = system;
      return b;
    },
    error: (body) => body.error,
    parser: () => (frame) => {
      const data = frame.split("\n").find((l) => l.startsWith("data: "));
      if (!data) return [];
      const ev = JSON.parse(data.slice(6));
      switch (ev.type) {
        case "response.reasoning_text.delta":
        case "response.reasoning_summary_text.delta":
          return [{ reasoning: ev.delta }];
        case "response.output_text.delta":
          return [{ text: ev.delta }];
        case "response.completed":
        case "response.incomplete": {
          const r = ev.response;
          const u = r.usage || { input_tokens: 0, output_tokens: 0 };
          const finish = r.status + (r.incomplete_details ? ` (${r.incomplete_details.reason})` : "");
          return [{ end: { usage: { prompt: u.input_tokens, completion: u.output_tokens }, finish, estimated: r.usage_estimated } }];
        }
        case "response.failed":
          return [{ end: { error: ev.response.error || { code: "failed", message: "the response failed" } } }];
        case "error":
          return [{ end: { error: { code: ev.code || "error", message: ev.message } } }];
      }
      return [];
    },
  },
  messages: {
    url: "/v1/messages",
    // As Anthropic's SDKs send it: the key in x-api-key.
    headers: () => {
      const h = { "Content-Type": "application/json", "anthropic-version": "2023-06-01" };
      if (keyInput.value) h["x-api-key"] = keyInput.value;
      return h;
    },
    body: (model, system, history) => {
      const b = { model, max_tokens: 4096, stream: true, messages: history };
      if (system) b.system = system;
      return b;
    },
    error: (body) => body.error && { code: body.error.type, message: body.error.message },
    parser: () => {
      const usage = { prompt: 0, completion: 0 };
      let finish = "";
      return (frame) => {
        const data = frame.split("\n").find((l) => l.startsWith("data: "));
        if (!data) return [];
        const ev = JSON.parse(data.slice(6));
        switch (ev.type) {
          case "message_start": {
            const u = ev.message.usage;
            usage.prompt = u.input_tokens + (u.cache_read_input_tokens || 0) + (u.cache_creation_input_tokens || 0);
            return [];
          }
          case "content_block_delta":
            if (ev.delta.type === "thinking_delta") return [{ reasoning: ev.delta.thinking }];
            if (ev.delta.type === "text_delta") return [{ text: ev.delta.text }];
            return [];
          case "message_delta":
            finish = ev.delta.stop_reason || "";
            usage.completion = ev.usage.output_tokens;
            if (ev.usage.input_tokens !== undefined) {
              usage.prompt = ev.usage.input_tokens + (ev.usage.cache_read_input_tokens || 0) + (ev.usage.cache_creation_input_tokens || 0);
            }
            usage.estimated = ev.usage_estimated;
            return [];
          case "message_stop":
            return [{ end: { usage, finish, estimated: usage.estimated } }];
          case "error":
            return [{ end: { error: { code: ev.error.type, message: ev.error.message } } }];
        }
        return []; // ping, content_block_start, content_block_stop
      };
    },
  },
};

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

  const api = dialects[$("api").value] || dialects.native;
  const system = $("system").value.trim();
  try {
    const res = await fetch(api.url, {
      method: "POST", headers: api.headers(), body: JSON.stringify(api.body(model, system, state.history)), signal: ctrl.signal,
    });
    if (!res.ok) {
      const body = await res.json().catch(() => ({}));
      throw new APIError(api.error(body) || { code: String(res.status), message: res.statusText });
    }
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    const parse = api.parser();
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
        for (const ev of parse(frame)) {
          if (ev.reasoning) {
            // Thinking, shown apart from the answer as it arrives.
            if (!first) first = performance.now();
            deltas++;
            thinking = thinking || addThinking(msg, content);
            thought += ev.reasoning;
            thinking.querySelector(".reasoning").textContent = thought;
            msg.scrollIntoView({ block: "end" });
          } else if (ev.text) {
            if (!first) first = performance.now();
            deltas++;
            if (thinking && !text) thinking.open = false; // the answer begins
            text += ev.text;
            content.textContent = text;
            msg.scrollIntoView({ block: "end" });
          } else if (ev.end) {
            end = ev.end;
          }
        }
      }
    }
    if (!end) throw new APIError({ code: "connection_lost", message: "the connection ended before the answer did" });
    if (end.error) throw new APIError(end.error);
    const u = end.usage;
    const took = performance.now() - started;
    $("usage").textContent = `${u.prompt} + ${u.completion} = ${u.prompt + u.completion}` + (end.estimated ? " (estimated)" : "");
    note(msg, "meta", `${end.finish} · ${u.completion} tokens · first token ${ms(end.ttft_ms ?? (first ? first - started : took))} · ${ms(end.duration_ms ?? took)} in all`);
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
