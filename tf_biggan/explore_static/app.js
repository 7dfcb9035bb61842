// The explorer page. It asks this server for /api/info once, then for /api/sample.png or
// /api/interpolate.png whenever a control changes: the same endpoints scripts call, so the
// page shows what they return. The page checks no value itself: the server does, and its
// {"error": "..."} message is shown as it is. Nothing is loaded from any other host.
"use strict";

const $ = (id) => document.getElementById(id);
const MAX_MATCHES = 12;

let info = null;        // /api/info
let chosen = [];        // the sample view's classes, one row each (names, or what was typed)
let pending = null;     // the AbortController of the picture being fetched
let shownUrl = null;    // the blob: URL of the picture shown
let drawTimer = null;

function setState(state) {
  // For people (the status line) and for tests (data-state on <body>).
  document.body.dataset.state = state;
  $("status").textContent = state === "drawing" ? "Drawing\u2026" : "";
}

function showError(message) {
  $("message").textContent = message;
  $("message").hidden = false;
  $("figure").hidden = true;
  $("download").hidden = true;
  setState("error");
}

function view() {
  return document.querySelector('input[name="view"]:checked').value;
}

function truncationText() {
  return $("truncate").checked ? $("truncation").value.trim() : null;
}

// The request for the current controls: {url, caption, filename}.
function currentRequest() {
  const params = new URLSearchParams();
  const t = truncationText();
  const truncationWords = t === null ? "no truncation" : `truncation ${t}`;
  let path, caption, filename;
  if (view() === "samples") {
    chosen.forEach((name) => params.append("class", name));
    params.set("n", $("n").value.trim());
    params.set("seed", $("seed").value.trim());
    path = "/api/sample.png";
    caption = `${chosen.join(", ")}: ${params.get("n")} samples per class, seed ${params.get("seed")}, ${truncationWords}`;
    filename = `samples-${chosen.join("+")}-seed${params.get("seed")}`;
  } else {
    params.set("class_a", $("class-a").value.trim());
    params.set("seed_a", $("seed-a").value.trim());
    params.set("class_b", $("class-b").value.trim());
    params.set("seed_b", $("seed-b").value.trim());
    params.set("frames", $("frames").value.trim());
    params.set("mode", $("mode").value);
    path = "/api/interpolate.png";
    const mode = $("mode").selectedOptions[0].textContent;
    caption = `${params.get("class_a")} (seed ${params.get("seed_a")}) \u2192 ${params.get("class_b")} ` +
      `(seed ${params.get("seed_b")}): ${params.get("frames")} frames, ${mode}, ${truncationWords}`;
    filename = `interpolation-${params.get("class_a")}-${params.get("class_b")}-${params.get("mode")}`;
  }
  if (t !== null) {
    params.set("truncation", t);
    filename += `-t${t}`;
  }
  filename = filename.replace(/[^\w.+-]+/g, "_") + ".png";
  return { url: `${path}?${params}`, caption, filename };
}

function scheduleDraw() {
  clearTimeout(drawTimer);
  drawTimer = setTimeout(draw, 250);
}

async function draw() {
  clearTimeout(drawTimer);
  const request = currentRequest();
  if (pending) pending.abort(); // only the latest controls' picture is wanted
  const controller = new AbortController();
  pending = controller;
  setState("drawing");
  try {
    const response = await fetch(request.url, { signal: controller.signal });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      if (pending === controller) showError(body.error || `The server answered ${response.status}.`);
      return;
    }
    const blob = await response.blob();
    if (pending === controller) show(blob, request);
  } catch (error) {
    if (error.name !== "AbortError") showError(`The server did not answer: ${error.message}`);
  } finally {
    if (pending === controller) pending = null;
  }
}

function show(blob, request) {
  if (shownUrl) URL.revokeObjectURL(shownUrl);
  shownUrl = URL.createObjectURL(blob);
  const picture = $("picture");
  picture.onload = () => {
    // Enlarge small pictures by a whole factor (pixelated), up to 4x and the page's width.
    const room = $("figure").clientWidth || 1000;
    const zoom = Math.max(1, Math.min(4, Math.floor(room / picture.naturalWidth)));
    picture.style.width = `${picture.naturalWidth * zoom}px`;
    setState("ready");
  };
  picture.src = shownUrl;
  picture.alt = request.caption;
  picture.dataset.api = request.url;
  $("caption").textContent = request.caption;
  const link = $("api-link");
  link.href = request.url;
  link.textContent = new URL(request.url, location.href).href;
  const download = $("download");
  download.href = shownUrl;
  download.download = request.filename;
  download.hidden = false;
  $("message").hidden = true;
  $("figure").hidden = false;
}

// Class names matching `text` (case ignored): names starting with it first, then names
// containing it; typed digits also match the class of that index. Returns indices.
function matches(text) {
  const needle = text.trim().toLowerCase();
  if (!needle) return [];
  const first = [], then = [];
  if (/^\d+$/.test(needle) && Number(needle) < info.num_classes) first.push(Number(needle));
  info.class_names.forEach((name, index) => {
    const key = name.toLowerCase();
    if (first.includes(index)) return;
    if (key.startsWith(needle)) first.push(index);
    else if (key.includes(needle)) then.push(index);
  });
  return first.concat(then).slice(0, MAX_MATCHES);
}

// A search box over the class names: typing lists matches, a click or Enter picks one.
// Enter with no match picks the text as typed, so the server says what is wrong with it.
function classPicker(input, list, onPick) {
  let shown = [];
  let selected = 0;
  const hide = () => { list.hidden = true; };
  const highlight = () => list.querySelectorAll("li").forEach((li, k) => {
    li.setAttribute("aria-selected", String(k === selected));
  });
  const pick = (name) => { hide(); onPick(name); };
  input.addEventListener("input", () => {
    shown = matches(input.value);
    selected = 0;
    list.replaceChildren(...shown.map((index) => {
      const li = document.createElement("li");
      li.setAttribute("role", "option");
      li.textContent = info.class_names[index];
      const number = document.createElement("span");
      number.className = "index";
      number.textContent = `#${index}`;
      li.append(number);
      // mousedown, not click: it comes before the input's blur hides the list.
      li.addEventListener("mousedown", (event) => { event.preventDefault(); pick(info.class_names[index]); });
      return li;
    }));
    highlight();
    list.hidden = shown.length === 0;
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      if (!shown.length) return;
      selected = (selected + (event.key === "ArrowDown" ? 1 : shown.length - 1)) % shown.length;
      highlight();
    } else if (event.key === "Enter") {
      event.preventDefault();
      const text = input.value.trim();
      if (text || !list.hidden) pick(!list.hidden && shown.length ? info.class_names[shown[selected]] : text);
    } else if (event.key === "Escape") {
      hide();
    }
  });
  input.addEventListener("blur", hide);
}

function renderChips() {
  $("chosen").replaceChildren(...chosen.map((name, k) => {
    const chip = document.createElement("span");
    chip.className = "chip";
    chip.textContent = name;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "\u00d7";
    remove.setAttribute("aria-label", `Remove ${name}`);
    remove.addEventListener("click", () => { chosen.splice(k, 1); renderChips(); draw(); });
    chip.append(remove);
    return chip;
  }));
}

function describeModel() {
  const parts = [`${info.resolution}\u00d7${info.resolution} px`, `${info.num_classes} classes`];
  if (!info.class_names_recorded) parts.push("no class names recorded: classes by index");
  parts.push(info.step === null ? "training step unknown" : `step ${info.step}`);
  parts.push(info.precision);
  parts.push(info.has_standing_stats
    ? `truncation-indexed statistics (${info.standing_stats_entries} entries)`
    : "no truncation-indexed statistics");
  $("model").textContent = `${parts.join(" \u00b7 ")} \u2014 ${info.source}`;
}

function setUpTruncation() {
  const slider = $("truncation-slider");
  const text = $("truncation");
  slider.min = "0.02";
  slider.step = "0.02";
  slider.max = String(info.max_truncation ?? 2);
  slider.value = "0.5";
  text.value = "0.5";
  $("truncation-note").textContent = info.has_standing_stats
    ? "this model has statistics for 0 < t \u2264 1"
    : "any t > 0 (the threshold on |z|)";
  slider.addEventListener("input", () => {
    text.value = slider.value;
    $("truncate").checked = true;
    scheduleDraw();
  });
  text.addEventListener("input", () => {
    const t = Number(text.value);
    if (text.value.trim() && Number.isFinite(t)) slider.value = String(t);
    $("truncate").checked = true;
    scheduleDraw();
  });
  $("truncate").addEventListener("change", draw);
}

function setUpControls() {
  const names = info.class_names;
  chosen = [names[0]];
  renderChips();
  $("n").value = String(info.default_n);
  $("frames").value = String(info.default_frames);
  $("class-a").value = names[0];
  $("class-b").value = names[Math.min(1, names.length - 1)];
  classPicker($("class-search"), $("class-matches"), (name) => {
    chosen.push(name);
    renderChips();
    $("class-search").value = "";
    draw();
  });
  for (const id of ["class-a", "class-b"]) {
    let picked = $(id).value;
    classPicker($(id), $(`${id}-matches`), (name) => { $(id).value = picked = name; draw(); });
    // Typed and left without picking: the server judges the text.
    $(id).addEventListener("change", () => { if ($(id).value !== picked) draw(); });
  }
  for (const id of ["n", "seed", "seed-a", "seed-b", "frames"]) {
    $(id).addEventListener("input", scheduleDraw);
  }
  $("mode").addEventListener("change", draw);
  document.querySelectorAll('input[name="view"]').forEach((radio) => radio.addEventListener("change", () => {
    $("samples-controls").hidden = view() !== "samples";
    $("interpolation-controls").hidden = view() !== "interpolation";
    draw();
  }));
  $("controls").addEventListener("submit", (event) => { event.preventDefault(); draw(); });
}

async function start() {
  try {
    const response = await fetch("/api/info");
    info = await response.json();
    if (!response.ok) throw new Error(info.error);
  } catch (error) {
    showError(`Could not read the model's description: ${error.message}`);
    return;
  }
  describeModel();
  setUpTruncation();
  setUpControls();
  draw();
}

start();
