// The drawing pad: strokes in, live answers out. No libraries, no network beyond this server.
"use strict";
const $ = id => document.getElementById(id);
const pad = $("pad"), ctx = pad.getContext("2d"), overlay = $("overlay"), octx = overlay.getContext("2d");
const multi = $("multi"), pen = $("pen");
let strokes = [], current = null, photo = null;  // photo: {file, image, x, y, scale} drawn under the strokes
let timer = null, seq = 0, last = null;          // last: {mode, body, blob, source} of the latest answer
// The page's own ?user=NAME tags the corrections sent from it (default "pad") and ?model=NAME picks the
// model that answers (`digitlab serve --models DIR`): /?user=alice&model=alice is alice's pad.
const page = new URLSearchParams(location.search);
const user = page.get("user") || "pad", model = page.get("model");
const withModel = path => model ? path + (path.includes("?") ? "&" : "?") + "model=" + encodeURIComponent(model) : path;

// ---------------------------------------------------------------- drawing
function redraw() {
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, pad.width, pad.height);
  if (photo) ctx.drawImage(photo.image, photo.x, photo.y, photo.image.width * photo.scale, photo.image.height * photo.scale);
  ctx.lineCap = "round"; ctx.lineJoin = "round"; ctx.strokeStyle = "#000";
  for (const s of strokes) drawStroke(s);
}
function drawStroke(s) {
  ctx.lineWidth = s.width; ctx.beginPath(); ctx.moveTo(...s.points[0]);
  for (const p of s.points) ctx.lineTo(...p);
  if (s.points.length === 1) ctx.lineTo(s.points[0][0] + 0.1, s.points[0][1]);
  ctx.stroke();
}
function point(e) {
  const r = pad.getBoundingClientRect();
  return [(e.clientX - r.left) * pad.width / r.width, (e.clientY - r.top) * pad.height / r.height];
}
pad.addEventListener("pointerdown", e => {
  e.preventDefault(); pad.setPointerCapture(e.pointerId);
  current = { width: Number(pen.value), points: [point(e)] }; strokes.push(current); redraw();
});
pad.addEventListener("pointermove", e => {
  if (!current) return;
  const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [e];
  for (const ev of events.length ? events : [e]) current.points.push(point(ev));
  redraw(); schedule(250);
});
for (const type of ["pointerup", "pointercancel"]) pad.addEventListener(type, () => {
  if (current) { current = null; schedule(60); }
});
// Belt and braces for browsers without touch-action: the page must not scroll under a finger that draws.
pad.addEventListener("touchmove", e => e.preventDefault(), { passive: false });

function undo() { strokes.pop(); if (!strokes.length && !photo) return clearAll(); redraw(); schedule(0); }
function clearAll() {
  strokes = []; photo = null; current = null; seq++; clearTimeout(timer); redraw(); showNothing();
}
$("undo").addEventListener("click", undo);
$("clear").addEventListener("click", clearAll);
document.addEventListener("keydown", e => {
  if (e.target.tagName === "INPUT" && e.target.type !== "checkbox" && e.target.type !== "range") return;
  if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "z") { e.preventDefault(); undo(); }
  else if (e.key === "Escape") clearAll();
});
multi.addEventListener("change", () => schedule(0));

// ---------------------------------------------------------------- photos: upload or drop
async function loadPhoto(file) {
  if (!file || !file.type.startsWith("image/")) { showError("that is not an image file"); return; }
  let image;
  try { image = await createImageBitmap(file); }
  catch (err) { showError("the browser cannot show this image; sending it anyway"); image = null; }
  strokes = [];
  if (image) {
    const scale = Math.min(pad.width / image.width, pad.height / image.height);
    photo = { file, image, scale, x: (pad.width - image.width * scale) / 2, y: (pad.height - image.height * scale) / 2 };
  } else {
    photo = { file, image: new OffscreenCanvas(1, 1), scale: 1, x: 0, y: 0 };
  }
  redraw(); schedule(0);
}
$("file").addEventListener("change", e => loadPhoto(e.target.files[0]));
document.addEventListener("dragover", e => { e.preventDefault(); document.body.classList.add("dragging"); });
document.addEventListener("dragleave", () => document.body.classList.remove("dragging"));
document.addEventListener("drop", e => {
  e.preventDefault(); document.body.classList.remove("dragging");
  if (e.dataTransfer.files.length) loadPhoto(e.dataTransfer.files[0]);
});

// ---------------------------------------------------------------- asking the server
function schedule(ms) { clearTimeout(timer); timer = setTimeout(ask, ms); }
function canvasBlob() { return new Promise(resolve => pad.toBlob(resolve, "image/png")); }

async function ask() {
  if (!strokes.length && !photo) return showNothing();
  const mine = ++seq, mode = multi.checked ? "read" : "predict";
  // An untouched photo goes as the original file (full resolution); anything drawn goes as the canvas.
  const fromPhoto = photo && !strokes.length;
  const blob = fromPhoto ? photo.file : await canvasBlob();
  const url = withModel(mode === "read" ? "/v1/read" : "/v1/predict?include_image=true");
  let response, body;
  try {
    response = await fetch(url, { method: "POST", headers: { "Content-Type": blob.type || "image/png" }, body: blob });
    body = await response.json();
  } catch (err) { if (mine === seq) showError(String(err)); return; }
  if (mine !== seq) return;  // a newer drawing was sent meanwhile: its answer wins
  if (!response.ok) return showError(body.detail || body.error);
  last = { mode, body, blob, fromPhoto };
  mode === "read" ? showReading(body, fromPhoto) : showPrediction(body);
}

// ---------------------------------------------------------------- showing answers
function showNothing() { last = null; resetView(); }
function resetView() {
  $("prediction").textContent = ""; $("status").textContent = ""; $("confidence").textContent = "";
  $("advice").textContent = "";
  $("bars").innerHTML = ""; $("seen-box").hidden = true; $("correct").hidden = true; $("thanks").textContent = "";
  octx.clearRect(0, 0, overlay.width, overlay.height); overlay.dataset.boxes = "0";
}
function showError(text) { showNothing(); $("status").textContent = "error: " + text; }
const pct = p => (100 * p).toFixed(1) + "%";

function showPrediction(body) {
  resetView();
  $("prediction").textContent = body.label === null ? "" : String(body.label);
  // abstained: say why, and the best guess where the reader gives one
  const guess = body.guess !== undefined && body.guess !== null ? ` (perhaps a ${body.guess})` : "";
  $("status").textContent = body.label === null ? body.status + guess : "";
  // the API's several-digits hint, said the pad's way
  if (body.hint && !multi.checked) $("advice").textContent = "this looks like several digits: tick “Read a number”";
  $("confidence").textContent = body.probabilities ? `confidence ${pct(body.confidence)}` : "";
  if (body.image) { $("seen").src = body.image; $("seen-box").hidden = false; }
  const top = body.probabilities ? body.probabilities.indexOf(Math.max(...body.probabilities)) : -1;
  (body.probabilities || []).forEach((p, digit) => {
    const row = document.createElement("div");
    row.className = "bar" + (digit === top ? " top" : "");
    row.setAttribute("aria-label", `${digit}: ${pct(p)}`);
    row.innerHTML = `<span>${digit}</span><span class="track"><span class="fill" style="width:${(100 * p).toFixed(1)}%"></span></span><span>${pct(p)}</span>`;
    $("bars").appendChild(row);
  });
  $("correct").hidden = body.status === "no digit";
}

function toCanvas(box, fromPhoto) {  // a box in the sent image's pixels -> pad pixels
  const [l, t, r, b] = box;
  if (!fromPhoto) return [l, t, r - l, b - t];
  const s = photo.scale;
  return [photo.x + l * s, photo.y + t * s, (r - l) * s, (b - t) * s];
}
function showReading(body, fromPhoto) {
  resetView();
  $("prediction").textContent = body.text;
  const count = `${body.digits.length} digit${body.digits.length === 1 ? "" : "s"}`;
  $("status").textContent = body.text === "" ? "no digit" : body.status === "unsure" ? `${count}, unsure` : count;
  if (body.doubt) $("status").title = body.doubt;  // why the number is unsure although each digit is sure
  else $("status").removeAttribute("title");
  $("confidence").textContent = body.digits.map(d => `${d.guess}${d.label === null ? "?" : ""}: ${pct(d.confidence)}`).join("   ");
  octx.clearRect(0, 0, overlay.width, overlay.height);
  octx.lineWidth = 2; octx.font = "bold 18px system-ui, sans-serif";
  for (const d of body.digits) {
    const [x, y, w, h] = toCanvas(d.box, fromPhoto);
    octx.strokeStyle = "#2a7"; octx.strokeRect(x, y, w, h);
    const label = d.label === null ? `${d.guess}?` : String(d.label);  // unsure: the guess, marked
    octx.fillStyle = "#2a7"; octx.fillRect(x, Math.max(0, y - 22), 16 + 10 * label.length, 22);
    octx.fillStyle = "#fff"; octx.fillText(label, x + 4, Math.max(16, y - 5));
  }
  overlay.dataset.boxes = String(body.digits.length);
  $("correct").hidden = body.text === "";
}

// ---------------------------------------------------------------- corrections
async function crop(blob, box) {  // one digit of a reading, with a margin, as a PNG
  const image = await createImageBitmap(blob);
  const [l, t, r, b] = box, m = Math.round(0.15 * Math.max(r - l, b - t));
  const x = Math.max(0, l - m), y = Math.max(0, t - m);
  const w = Math.min(image.width, r + m) - x, h = Math.min(image.height, b + m) - y;
  const c = new OffscreenCanvas(w, h), cc = c.getContext("2d");
  cc.fillStyle = "#fff"; cc.fillRect(0, 0, w, h); cc.drawImage(image, x, y, w, h, 0, 0, w, h);
  return c.convertToBlob({ type: "image/png" });
}
async function sendCorrection(blob, label, predicted) {
  const form = new FormData();
  form.append("image", blob, "correction.png"); form.append("label", String(label)); form.append("user", user);
  if (predicted !== null && predicted !== undefined) form.append("predicted", String(predicted));
  const response = await fetch("/v1/feedback", { method: "POST", body: form });
  if (!response.ok) throw new Error((await response.json()).detail);
}
$("correct").addEventListener("submit", async e => {
  e.preventDefault();
  const value = $("right").value.trim(), thanks = $("thanks");
  if (!last || !/^[0-9]+$/.test(value)) { thanks.textContent = "type the right digit(s)"; return; }
  try {
    if (last.mode === "predict") {
      if (value.length !== 1) { thanks.textContent = "type one digit"; return; }
      await sendCorrection(last.blob, Number(value), last.body.label);
    } else {
      const digits = last.body.digits;
      if (value.length !== digits.length) { thanks.textContent = `type one digit per box (${digits.length})`; return; }
      for (let i = 0; i < digits.length; i++) {
        await sendCorrection(await crop(last.blob, digits[i].box), Number(value[i]), digits[i].label);
      }
    }
    thanks.textContent = "thanks, saved"; $("right").value = "";
  } catch (err) { thanks.textContent = "not saved: " + err.message; }
});

redraw();
