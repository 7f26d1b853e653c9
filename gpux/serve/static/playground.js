"use strict";
const data = JSON.parse(document.getElementById("data").textContent);
const $ = (id) => document.getElementById(id);
function el(tag, props, ...children) {
  const node = Object.assign(document.createElement(tag), props || {});
  node.append(...children);
  return node;
}
let current = null;

function choose(model) {
  current = model;
  for (const b of $("models").children) b.setAttribute("aria-pressed", b.dataset.model === model.name);
  $("title").textContent = `${model.name}:${model.version}`;
  $("description").textContent = model.description;
  $("fields").replaceChildren(...model.inputs.map(field));
  $("output").hidden = true;
  history.replaceState(null, "", "#" + encodeURIComponent(model.name));
}

function field(input) {
  let control;
  if (input.kind === "image" || input.kind === "audio") {
    control = el("input", {type: "file", accept: input.kind + "/*"});
  } else if (input.kind === "text" && !input.pairs) {
    control = el("textarea", {rows: 3, placeholder: "Type some text"});
  } else {
    const example = input.pairs ? ["first text", "second text"] : input.example;
    control = el("textarea", {rows: 4, className: "mono", value: JSON.stringify(example ?? null)});
  }
  Object.assign(control, {name: input.name, id: "input-" + input.name});
  if (input.kind === "tensor" || input.kind === "value" || input.pairs) control.dataset.json = "yes";
  const shape = input.shape ? ` ${input.dtype} [${input.shape.join(", ")}]` : "";
  return el("label", {}, el("span", {textContent: `${input.name} (${input.kind}${shape})`}), control);
}

function fileBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

// Files go as multipart; a model with tensor inputs gets JSON (files as base64).
async function requestBody(model) {
  const controls = [...$("fields").querySelectorAll("[name]")];
  if (!controls.some((c) => c.dataset.json)) {
    const form = new FormData();
    for (const c of controls) {
      if (c.type !== "file") form.append(c.name, c.value);
      else if (c.files.length) form.append(c.name, c.files[0]);
    }
    return [form, {}];
  }
  const item = {};
  for (const c of controls) {
    if (c.type === "file") { if (c.files.length) item[c.name] = await fileBase64(c.files[0]); }
    else if (!c.dataset.json) item[c.name] = c.value;
    else {
      try { item[c.name] = JSON.parse(c.value); }
      catch (e) { throw {error: `input '${c.name}' is not valid JSON: ${e.message}`}; }
    }
  }
  return [JSON.stringify(item), {"Content-Type": "application/json"}];
}

// A readable line per result: labels with scores, segments, or an embedding's size.
function summarize(name, value) {
  const num = (x) => typeof x === "number";
  const fixed = (x) => (num(x) ? x.toFixed(4) : String(x));
  if (!Array.isArray(value) || !value.length) {
    return value && num(value.score) ? [`${name}: ${value.label ?? value.index} — ${fixed(value.score)}`] : [];
  }
  if (value.every(num)) {
    const more = value.length > 4 ? ", …" : "";
    return [`${name}: ${value.length} dimensions [${value.slice(0, 4).map(fixed).join(", ")}${more}]`];
  }
  if (value.every((v) => v && num(v.score))) {
    return value.map((v) => `${v.label ?? v.index ?? JSON.stringify(v.box)} — ${fixed(v.score)}`);
  }
  if (value.every((v) => v && num(v.start) && num(v.end))) {
    return value.map((v) => `${v.start.toFixed(2)}–${v.end.toFixed(2)} s`);
  }
  return [];
}

// JSON with flat arrays on one line: an embedding is one line, not 384.
function pretty(value, pad = "") {
  const inner = pad + "  ";
  if (Array.isArray(value)) {
    if (value.every((x) => x === null || typeof x !== "object")) return JSON.stringify(value);
    return "[\n" + value.map((x) => inner + pretty(x, inner)).join(",\n") + "\n" + pad + "]";
  }
  if (value && typeof value === "object") {
    const keys = Object.keys(value);
    if (!keys.length) return "{}";
    const lines = keys.map((k) => inner + JSON.stringify(k) + ": " + pretty(value[k], inner));
    return "{\n" + lines.join(",\n") + "\n" + pad + "}";
  }
  return JSON.stringify(value);
}

function show(answer, failure) {
  $("output").hidden = false;
  $("error").textContent = failure ? failure.error : "";
  $("hint").textContent = failure && failure.hint ? "hint: " + failure.hint : "";
  $("meta").textContent = answer ? `${answer.model} · ${answer.backend} · ${answer.latency_ms} ms` : "";
  const results = answer ? (answer.results || [answer.result]) : [];
  const lines = results.flatMap((r) => Object.entries(r || {}).flatMap(([k, v]) => summarize(k, v)));
  $("summary").replaceChildren(...lines.map((line) => el("li", {textContent: line})));
  $("json").textContent = answer ? pretty(answer) : "";
  $("json").hidden = !answer;
}

async function run(event) {
  event.preventDefault();
  if (!current) return;
  $("run").disabled = true;
  $("status").textContent = "running…";
  try {
    const [body, headers] = await requestBody(current);
    const token = $("token").value.trim();
    if (token) headers["Authorization"] = "Bearer " + token;
    const raw = $("raw").checked ? "?raw=1" : "";
    const url = `v1/models/${encodeURIComponent(current.name)}/predict${raw}`;
    const response = await fetch(url, {method: "POST", body, headers});
    const text = await response.text();
    let answer = null;
    try { answer = JSON.parse(text); } catch (e) { /* not JSON: shown as text below */ }
    if (response.ok && answer) show(answer);
    else show(null, answer && answer.error ? answer : {error: `HTTP ${response.status}: ${text.slice(0, 300)}`});
  } catch (e) {
    show(null, e && e.error ? e : {error: String(e)});
  } finally {
    $("run").disabled = false;
    $("status").textContent = "";
  }
}

for (const model of data.models) {
  const button = el("button", {type: "button"},
    el("strong", {textContent: `${model.name}:${model.version}`}),
    el("span", {className: "badge", textContent: model.backend}),
    el("small", {textContent: model.description}));
  button.dataset.model = model.name;
  button.addEventListener("click", () => choose(model));
  $("models").append(button);
}
$("token-field").hidden = !data.token_required;
$("token").value = sessionStorage.getItem("gpux-token") || "";
$("token").addEventListener("change", () => sessionStorage.setItem("gpux-token", $("token").value));
$("form").addEventListener("submit", run);
const wanted = decodeURIComponent(location.hash.slice(1));
const first = data.models.find((m) => m.name === wanted) || data.models[0];
if (first) choose(first);
