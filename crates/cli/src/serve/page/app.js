// mnist serve: the page. Plain JavaScript, no build step; it talks to the
// JSON API documented in docs/serve.md.
"use strict";

const $ = (selector) => document.querySelector(selector);
const SHOWN_AT_ONCE = 100;
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#be185d", "#4d7c0f"];

/** GET or POST the API; throws an Error with the server's message. */
async function api(path, options) {
  const response = await fetch(path, options);
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { /* not JSON */ }
  if (!response.ok) {
    const error = new Error((body && body.error) || `${response.status} ${response.statusText}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

function showError(message) {
  const box = $("#error");
  box.textContent = message || "";
  box.hidden = !message;
}

function element(tag, attributes = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

const percent = (p, digits = 1) => `${(100 * p).toFixed(digits)}%`;

function duration(seconds) {
  if (seconds == null) return "";
  if (seconds < 90) return `${seconds.toFixed(1)} s`;
  if (seconds < 5400) return `${(seconds / 60).toFixed(1)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function date(text) {
  if (!text) return "";
  const d = new Date(text);
  return isNaN(d) ? text : d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

// ---------------------------------------------------------------- routing

let stopPolling = () => {};

function route() {
  stopPolling();
  stopPolling = () => {};
  showError("");
  const hash = location.hash || "#/draw";
  const [, page, arg] = hash.match(/^#\/([a-z]+)\/?(.*)$/) || [null, "draw", ""];
  for (const view of document.querySelectorAll("main > section")) view.hidden = true;
  for (const link of document.querySelectorAll("nav a")) link.removeAttribute("aria-current");
  if (page === "runs" && arg) {
    $("#nav-runs").setAttribute("aria-current", "page");
    showRun(decodeURIComponent(arg));
  } else if (page === "runs") {
    $("#nav-runs").setAttribute("aria-current", "page");
    showRuns();
  } else if (page === "compare") {
    $("#nav-runs").setAttribute("aria-current", "page");
    showCompare(arg.split(",").filter(Boolean).map(decodeURIComponent));
  } else {
    $("#nav-draw").setAttribute("aria-current", "page");
    $("#view-draw").hidden = false;
  }
}

/** Call `work` now and every `ms` until the route changes or it returns false. */
function poll(work, ms) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    const again = await work().catch((e) => { showError(e.message); return true; });
    if (!stopped && again) timer = setTimeout(tick, ms);
  };
  stopPolling = () => { stopped = true; clearTimeout(timer); };
  tick();
}

// ---------------------------------------------------------------- drawing

const pad = $("#pad");
const ctx = pad.getContext("2d");
const strokes = [];
let picture = null;      // an image file shown on the pad, sent as it is
let pictureBlob = null;
let classNames = [];
let inFlight = false;
let dirty = false;

function paint() {
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, pad.width, pad.height);
  if (picture) {
    const scale = Math.min(pad.width / picture.width, pad.height / picture.height);
    const w = picture.width * scale, h = picture.height * scale;
    ctx.drawImage(picture, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
  }
  ctx.strokeStyle = "#fff";
  ctx.fillStyle = "#fff";
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  for (const stroke of strokes) {
    ctx.lineWidth = stroke.width;
    ctx.beginPath();
    ctx.moveTo(stroke.points[0].x, stroke.points[0].y);
    for (const p of stroke.points.slice(1)) ctx.lineTo(p.x, p.y);
    if (stroke.points.length === 1) {
      ctx.arc(stroke.points[0].x, stroke.points[0].y, stroke.width / 2, 0, 2 * Math.PI);
      ctx.fill();
    } else {
      ctx.stroke();
    }
  }
}

function padPoint(event) {
  const box = pad.getBoundingClientRect();
  return {
    x: ((event.clientX - box.left) / box.width) * pad.width,
    y: ((event.clientY - box.top) / box.height) * pad.height,
  };
}

let drawing = null;
pad.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  pictureBlob = null; // drawing over a picture sends the pad from now on
  // Pens report pressure; a mouse or finger draws at the usual width.
  const width = event.pointerType === "pen" && event.pressure > 0 ? 12 + 14 * event.pressure : 20;
  drawing = { points: [padPoint(event)], width };
  strokes.push(drawing);
  paint();
  askSoon();
});
pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  for (const e of event.getCoalescedEvents ? event.getCoalescedEvents() : [event]) {
    drawing.points.push(padPoint(e));
  }
  paint();
  askSoon();
});
const endStroke = () => { if (drawing) { drawing = null; askSoon(); } };
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

function clearPad() {
  strokes.length = 0;
  picture = null;
  pictureBlob = null;
  paint();
  resetAnswer();
}

function undo() {
  if (strokes.length) strokes.pop();
  else { picture = null; pictureBlob = null; }
  paint();
  if (strokes.length || picture) askSoon(); else resetAnswer();
}

$("#clear").addEventListener("click", clearPad);
$("#undo").addEventListener("click", undo);
document.addEventListener("keydown", (event) => {
  if ($("#view-draw").hidden) return;
  if (event.key === "Escape") { clearPad(); event.preventDefault(); }
  if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "z") { undo(); event.preventDefault(); }
});

async function usePicture(file) {
  if (!file) return;
  if (!/^image\/(png|jpeg)$/.test(file.type)) {
    showError(`${file.name}: choose a PNG or JPEG picture`);
    return;
  }
  showError("");
  const url = URL.createObjectURL(file);
  const img = new Image();
  img.onload = () => {
    strokes.length = 0;
    picture = img;
    pictureBlob = file;
    paint();
    askSoon();
  };
  img.onerror = () => showError(`${file.name} cannot be shown; is it a PNG or JPEG?`);
  img.src = url;
}

$("#file").addEventListener("change", (event) => usePicture(event.target.files[0]));
pad.addEventListener("dragover", (event) => { event.preventDefault(); pad.classList.add("dropping"); });
pad.addEventListener("dragleave", () => pad.classList.remove("dropping"));
pad.addEventListener("drop", (event) => {
  event.preventDefault();
  pad.classList.remove("dropping");
  usePicture(event.dataTransfer.files[0]);
});

/** Ask for an answer; while one request is out, the newest drawing waits for it. */
function askSoon() {
  dirty = true;
  if (!inFlight) ask();
}

async function ask() {
  if (!strokes.length && !picture) return;
  dirty = false;
  inFlight = true;
  const started = performance.now();
  const fromFile = pictureBlob !== null;
  try {
    const body = fromFile ? pictureBlob : await new Promise((done) => pad.toBlob(done, "image/png"));
    const answer = await api("/api/predict", {
      method: "POST",
      headers: { "content-type": fromFile ? pictureBlob.type : "image/png" },
      body,
    });
    showAnswer(answer, performance.now() - started, fromFile ? "file" : "drawing");
  } catch (e) {
    if (e.status === 400) resetAnswer(e.message.startsWith("no digit") ? "Draw a digit" : e.message);
    else showError(e.message);
  } finally {
    inFlight = false;
    if (dirty) ask();
  }
}

function makeBars() {
  const bars = $("#bars");
  bars.replaceChildren(...classNames.map((name, i) => element("li", { "data-class": i }, [
    element("span", { class: "label", text: name }),
    element("span", { class: "track" }, [element("span", { class: "fill" })]),
    element("span", { class: "value", text: "" }),
  ])));
}

function resetAnswer(message = "Draw a digit") {
  const verdict = $("#verdict");
  verdict.textContent = message;
  delete verdict.dataset.prediction;
  delete verdict.dataset.source;
  for (const li of document.querySelectorAll("#bars li")) {
    li.classList.remove("top");
    li.querySelector(".fill").style.width = "0";
    li.querySelector(".value").textContent = "";
  }
  $("#seen").getContext("2d").clearRect(0, 0, 28, 28);
  $("#members").hidden = true;
  $("#timing").textContent = "";
}

function showAnswer(answer, ms, source) {
  const verdict = $("#verdict");
  verdict.replaceChildren("It looks like ", element("strong", { text: answer.label }),
    ` (${percent(answer.probabilities[answer.prediction])})`);
  verdict.dataset.prediction = answer.prediction;
  verdict.dataset.source = source;
  verdict.dataset.probabilities = JSON.stringify(answer.probabilities);
  document.querySelectorAll("#bars li").forEach((li, i) => {
    const p = answer.probabilities[i];
    li.classList.toggle("top", i === answer.prediction);
    li.querySelector(".fill").style.width = percent(p, 2);
    li.querySelector(".value").textContent = percent(p);
  });
  const seen = $("#seen").getContext("2d");
  const pixels = seen.createImageData(28, 28);
  answer.input.forEach((level, i) => {
    pixels.data.set([level, level, level, 255], 4 * i);
  });
  seen.putImageData(pixels, 0, 0);
  const members = $("#members");
  members.hidden = answer.members.length < 2;
  members.querySelector("tbody").replaceChildren(...answer.members.map((m) => element("tr", {}, [
    element("td", { text: m.weights.split("/").slice(-2).join("/") }),
    element("td", { text: classNames[m.prediction] }),
    element("td", { class: "number", text: percent(m.probabilities[m.prediction]) }),
  ])));
  $("#timing").textContent = `Answered in ${ms.toFixed(0)} ms (${answer.server_ms.toFixed(1)} ms in the server).`;
}

async function loadModel() {
  const model = await api("/api/model");
  $("#no-model").hidden = model.loaded;
  for (const id of ["#pad", "#undo", "#clear", "#file"]) $(id).toggleAttribute("disabled", !model.loaded);
  classNames = model.loaded ? model.class_names : [...Array(10).keys()].map(String);
  makeBars();
  $("#model-info").textContent = model.loaded
    ? `${model.members.length > 1 ? `An ensemble of ${model.members.length}` : "Model"}: ${model.members.join(", ")} (${model.dataset}).`
    : "";
  paint();
}

// ---------------------------------------------------------------- charts

/**
 * Draw `series` ([{name, color, points: [[x, y], ...]}]) as lines on
 * `canvas`, with axes; `asPercent` labels the y axis in percent.
 */
function drawChart(canvas, series, { asPercent = false } = {}) {
  const scale = window.devicePixelRatio || 1;
  const cssWidth = canvas.clientWidth || 480;
  const cssHeight = Math.round(cssWidth * 0.54);
  canvas.width = cssWidth * scale;
  canvas.height = cssHeight * scale;
  const g = canvas.getContext("2d");
  g.setTransform(scale, 0, 0, scale, 0, 0);
  g.clearRect(0, 0, cssWidth, cssHeight);
  const all = series.flatMap((s) => s.points);
  g.font = "12px system-ui, sans-serif";
  g.fillStyle = "#5b6675";
  if (!all.length) {
    g.fillText("No finished epoch yet", 16, cssHeight / 2);
    return;
  }
  const left = 56, right = 12, top = 10, bottom = 28;
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  let y0 = Math.min(...ys), y1 = Math.max(...ys);
  if (y1 - y0 < 1e-9) { y0 -= 0.5 * Math.abs(y0 || 1) * 0.01 + 1e-3; y1 += 1e-3; }
  const pad = (y1 - y0) * 0.08;
  y0 -= pad; y1 += pad;
  const X = (x) => left + ((x - x0) / (x1 - x0)) * (cssWidth - left - right);
  const Y = (y) => top + (1 - (y - y0) / (y1 - y0)) * (cssHeight - top - bottom);
  g.strokeStyle = "#d7dce3";
  g.lineWidth = 1;
  g.textAlign = "right";
  g.textBaseline = "middle";
  for (let i = 0; i <= 4; i++) {
    const y = y0 + ((y1 - y0) * i) / 4;
    g.beginPath(); g.moveTo(left, Y(y)); g.lineTo(cssWidth - right, Y(y)); g.stroke();
    g.fillText(asPercent ? `${(100 * y).toFixed(2)}%` : y.toPrecision(3), left - 6, Y(y));
  }
  g.textAlign = "center";
  g.textBaseline = "top";
  const step = Math.max(1, Math.ceil((x1 - x0) / 8));
  for (let x = Math.ceil(x0); x <= x1; x += step) g.fillText(String(x), X(x), cssHeight - bottom + 6);
  for (const s of series) {
    g.strokeStyle = s.color;
    g.fillStyle = s.color;
    g.lineWidth = 2;
    g.setLineDash(s.dashed ? [6, 4] : []);
    g.beginPath();
    s.points.forEach(([x, y], i) => (i ? g.lineTo(X(x), Y(y)) : g.moveTo(X(x), Y(y))));
    g.stroke();
    g.setLineDash([]);
    for (const [x, y] of s.points) { g.beginPath(); g.arc(X(x), Y(y), 2.5, 0, 2 * Math.PI); g.fill(); }
  }
}

function history(detail) {
  return (detail.metrics && detail.metrics.history) || (detail.progress && detail.progress.history) || [];
}

function curves(details, lossCanvas, accuracyCanvas) {
  const series = (field) => details.map((d, i) => ({
    name: d.id,
    color: COLORS[i % COLORS.length],
    points: history(d).map((h) => [h.epoch, h[field]]),
  }));
  drawChart(lossCanvas, series("train_loss"));
  // Runs that held out a validation split also show it, dashed.
  const validation = series("val_accuracy")
    .map((s) => ({ ...s, name: `${s.name} validation`, dashed: true, points: s.points.filter(([, y]) => y != null) }))
    .filter((s) => s.points.length);
  drawChart(accuracyCanvas, [...series("test_accuracy"), ...validation], { asPercent: true });
}

// ---------------------------------------------------------------- runs

const selected = new Set();

function statusBadge(status) {
  return element("span", { class: `status ${status}`, text: status });
}

async function showRuns() {
  $("#view-runs").hidden = false;
  poll(async () => {
    const { runs } = await api("/api/runs");
    $("#runs-empty").hidden = runs.length > 0;
    $("#runs-table tbody").replaceChildren(...runs.map((run) => {
      const box = element("input", { type: "checkbox", "aria-label": `Compare ${run.id}` });
      box.checked = selected.has(run.id);
      box.addEventListener("change", () => {
        if (box.checked) selected.add(run.id); else selected.delete(run.id);
        $("#compare").disabled = selected.size < 2;
      });
      const epochs = run.epochs == null ? "" : `${run.epochs}${run.epochs_planned && run.epochs_planned !== run.epochs ? ` / ${run.epochs_planned}` : ""}`;
      return element("tr", { "data-run": run.id }, [
        element("td", {}, [box]),
        element("td", {}, [element("a", { href: `#/runs/${encodeURIComponent(run.id)}`, text: run.id })]),
        element("td", {}, [statusBadge(run.status)]),
        element("td", { text: run.model || "" }),
        element("td", { text: run.recipe || (run.evaluation ? "(eval)" : "") }),
        element("td", { text: run.dataset || "" }),
        element("td", { class: "number", text: epochs }),
        element("td", { class: "number", text: run.test_accuracy == null ? "" : percent(run.test_accuracy, 2) }),
        element("td", { class: "number", text: duration(run.train_seconds) }),
        element("td", { text: date(run.date) }),
      ]);
    }));
    $("#compare").disabled = selected.size < 2;
    return true; // live runs appear and move on without a reload
  }, 5000);
}

$("#compare").addEventListener("click", () => {
  location.hash = `#/compare/${[...selected].map(encodeURIComponent).join(",")}`;
});

async function showCompare(ids) {
  $("#view-compare").hidden = false;
  $("#compare-names").textContent = ids.join(", ");
  const details = await Promise.all(ids.map((id) => api(`/api/runs/${encodeURIComponent(id)}`)))
    .catch((e) => { showError(e.message); return []; });
  curves(details, $("#compare-loss"), $("#compare-accuracy"));
  $("#compare-legend").replaceChildren(...details.map((d, i) => element("li", {}, [
    element("span", { style: `background:${COLORS[i % COLORS.length]}` }), d.id,
  ])));
}

let shownRun = null;

async function showRun(id) {
  $("#view-run").hidden = false;
  if (shownRun !== id) {
    $("#cases").hidden = true;
    $("#confusion").replaceChildren();
  }
  shownRun = id;
  poll(async () => {
    const detail = await api(`/api/runs/${encodeURIComponent(id)}`);
    renderRun(detail);
    return detail.status === "training";
  }, 2000);
}

function renderRun(detail) {
  $("#run-title").textContent = `${detail.id}: ${detail.model || "run"} on ${detail.dataset || "?"}`;
  const status = $("#run-status");
  const p = detail.progress;
  const parts = [statusBadge(detail.status)];
  if (detail.status === "training" && p) {
    parts.push(` epoch ${p.epoch} of ${p.epochs}, step ${p.step} of ${p.steps}` +
      (p.loss == null ? "" : `, loss ${p.loss.toFixed(4)}`) + ` (updated ${date(p.updated)})`);
  } else if (detail.test_accuracy != null) {
    parts.push(` test accuracy ${percent(detail.test_accuracy, 2)} after ${detail.epochs} epoch${detail.epochs === 1 ? "" : "s"}, ${duration(detail.train_seconds)} of training`);
  } else if (detail.status === "stopped") {
    parts.push(` stopped after ${detail.epochs ?? 0} epochs; continue it with mnist train --resume runs/${detail.id}`);
  }
  status.replaceChildren(...parts);
  const problems = $("#run-problems");
  problems.hidden = !detail.problems.length;
  problems.replaceChildren(...detail.problems.map((text) => element("li", { text })));
  curves([detail], $("#run-loss"), $("#run-accuracy"));
  renderConfusion(detail);
  renderHyper(detail.hyper_parameters);
}

function renderConfusion(detail) {
  const m = detail.metrics;
  const block = $("#confusion-block");
  block.hidden = !(m && m.confusion_matrix);
  if (block.hidden || $("#confusion").childElementCount) return;
  const names = m.class_names || m.confusion_matrix.map((_, i) => String(i));
  const max = Math.max(1, ...m.confusion_matrix.flatMap((row, t) => row.filter((_, p) => p !== t)));
  const head = element("tr", {}, [element("th", { class: "corner", text: "true ↓ answer →" }),
    ...names.map((n) => element("th", { scope: "col", text: n }))]);
  const rows = m.confusion_matrix.map((row, t) => element("tr", {}, [
    element("th", { scope: "row", text: names[t] }),
    ...row.map((count, p) => {
      // Correct answers in green, mistakes in red, darker for more.
      const strength = t === p ? count / Math.max(1, ...row) : Math.min(1, count / max);
      const color = t === p ? `rgba(21,128,61,${0.1 + 0.8 * strength})` : `rgba(185,28,28,${count ? 0.08 + 0.85 * strength : 0})`;
      const button = element("button", {
        type: "button",
        "aria-label": `${count} images of ${names[t]} answered ${names[p]}`,
        text: String(count),
      });
      button.style.background = color;
      button.style.color = strength > 0.55 ? "#fff" : "inherit";
      button.addEventListener("click", () => showCases(detail.id, t, p, names));
      return element("td", { "data-truth": t, "data-predicted": p, "data-count": count }, [button]);
    }),
  ]));
  $("#confusion").replaceChildren(element("thead", {}, [head]), element("tbody", {}, rows));
}

async function showCases(id, truth, predicted, names) {
  document.querySelectorAll("#confusion td.selected").forEach((td) => td.classList.remove("selected"));
  const cell = $(`#confusion td[data-truth="${truth}"][data-predicted="${predicted}"]`);
  if (cell) cell.classList.add("selected");
  const cases = $("#cases");
  cases.hidden = false;
  $("#cases-title").textContent = `True ${names[truth]}, answered ${names[predicted]}: loading…`;
  $("#thumbs").replaceChildren();
  let result;
  try {
    result = await api(`/api/runs/${encodeURIComponent(id)}/confusion/${truth}/${predicted}`);
  } catch (e) {
    $("#cases-title").textContent = `True ${names[truth]}, answered ${names[predicted]}`;
    showError(e.message);
    return;
  }
  $("#cases-title").textContent = `True ${names[truth]}, answered ${names[predicted]}: ${result.count} test image${result.count === 1 ? "" : "s"}`;
  let shown = 0;
  const more = $("#more");
  const showMore = () => {
    const next = result.images.slice(shown, shown + SHOWN_AT_ONCE);
    $("#thumbs").append(...next.map((c) => thumbnail(id, c, truth, predicted, names)));
    shown += next.length;
    more.hidden = shown >= result.images.length;
    more.textContent = `Show more (${result.images.length - shown} left)`;
  };
  more.onclick = showMore;
  showMore();
}

function thumbnail(id, c, truth, predicted, names) {
  const ranked = c.probabilities.map((p, i) => [p, i]).sort((a, b) => b[0] - a[0]).slice(0, 3);
  const caption = element("figcaption", {}, [
    `${names[predicted]} ${percent(c.probabilities[predicted])}`,
    element("br"),
    `true ${names[truth]} ${percent(c.probabilities[truth])}`,
  ]);
  return element("figure", { title: `Test image #${c.index}: ${ranked.map(([p, i]) => `${names[i]} ${percent(p)}`).join(", ")}` }, [
    element("img", { src: `/api/runs/${encodeURIComponent(id)}/images/${c.index}.png`, alt: `test image ${c.index}`, loading: "lazy", width: 56, height: 56 }),
    caption,
  ]);
}

function renderHyper(hyper) {
  const rows = [];
  const add = (prefix, value) => {
    if (value && typeof value === "object") {
      for (const [k, v] of Object.entries(value)) add(prefix ? `${prefix}.${k}` : k, v);
    } else {
      rows.push(element("tr", {}, [element("th", { scope: "row", text: prefix }), element("td", { text: String(value) })]));
    }
  };
  if (hyper) add("", hyper);
  else rows.push(element("tr", {}, [element("td", { text: "none recorded (an evaluation of existing weights)" })]));
  $("#hyper").replaceChildren(element("tbody", {}, rows));
}

// ---------------------------------------------------------------- start

window.addEventListener("hashchange", route);
loadModel().catch((e) => showError(e.message)).finally(route);
