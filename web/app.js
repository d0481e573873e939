// The demo page: picks an image (file, drop or sample), lets the user crop it, and classifies
// the RGBA pixels with the wasm build of adamatch-wgpu (pkg/, built by scripts/build-web.sh).
// All URLs are relative, so any static file server works. The Adapt panel (training in the
// page) is adapt.js.

import { setupAdapt } from "./adapt.js";
import { acceptDrops } from "./drop.js";

const $ = (id) => document.getElementById(id);
const view = $("view");
const viewCtx = view.getContext("2d");
const VIEW_MAX_W = 480;
const VIEW_MAX_H = 320;

const state = {
  wasm: null, // the wasm-bindgen module
  clf: null, // WebClassifier, once WebGPU is up
  modelName: "", // what the loaded weights are called, for messages
  image: null, // { name, canvas (full resolution), crop: {x, y, w, h} | null }
  queue: Promise.resolve(), // classifications and weight loads run one at a time
  runs: 0,
};

// ---- messages -------------------------------------------------------------------------------

function showMessage(text, kind = "info") {
  const m = $("message");
  m.textContent = text;
  m.dataset.kind = kind;
  m.hidden = false;
}

function clearMessage() {
  const m = $("message");
  m.hidden = true;
  m.textContent = "";
  delete m.dataset.kind;
}

function errorText(e) {
  if (e instanceof Error) return e.message;
  return String(e);
}

// Runs `job` after every earlier one; errors are shown, never thrown, so the page keeps working.
function enqueue(job) {
  state.queue = state.queue.then(job).catch((e) => showMessage(errorText(e), "error"));
  return state.queue;
}

// ---- start-up -------------------------------------------------------------------------------

async function main() {
  setupInputs();
  setupAdapt({
    wasm: () => state.wasm,
    showMessage,
    clearMessage,
    errorText,
    // Weights trained in the page: the classifier switches to them and reclassifies.
    useWeights: (bytes, name) =>
      enqueue(() => loadWeights(bytes, name)).then(() => {
        if (state.image && $("message").dataset.kind !== "error") return classifyCurrent();
      }),
  });
  // Independent of WebGPU: the samples and the 32x32 preview work without it.
  const samplesLoaded = loadSamples();

  try {
    state.wasm = await import("./pkg/adamatch_wgpu.js");
    await state.wasm.default();
  } catch (e) {
    $("gpu").textContent = "not started";
    $("model").textContent = "not loaded";
    showMessage(
      "The WebAssembly bundle (pkg/) is missing or failed to load: build it with " +
        "scripts/build-web.sh, then reload. (" + errorText(e) + ")",
      "error",
    );
    return;
  }

  if (!navigator.gpu) {
    $("gpu").textContent = "WebGPU not available";
    $("model").textContent = "not loaded";
    showMessage(
      "WebGPU is not available in this browser, so the network cannot run here. Use a recent " +
        "Chrome, Edge or Safari (or Firefox with WebGPU enabled), over https or localhost. " +
        "Images still show the 32×32 input the network would see.",
      "error",
    );
    return;
  }
  try {
    state.clf = await state.wasm.WebClassifier.create();
    $("gpu").textContent = await adapterName();
  } catch (e) {
    $("gpu").textContent = "WebGPU failed to start";
    $("model").textContent = "not loaded";
    showMessage(errorText(e), "error");
    return;
  }

  await enqueue(async () => {
    let bytes;
    try {
      const resp = await fetch("model.safetensors");
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      bytes = new Uint8Array(await resp.arrayBuffer());
    } catch (e) {
      $("model").textContent = "none loaded";
      throw new Error(
        "Could not fetch the default weights (model.safetensors: " + errorText(e) + "). " +
          "Load a .safetensors file with “Load weights…”.",
      );
    }
    await loadWeights(bytes, "model.safetensors");
  });
  // Something to look at: the image picked meanwhile, else the first sample.
  await samplesLoaded;
  const first = $("samples").querySelector("button");
  if (state.image) await classifyCurrent();
  else if (first && state.clf.loaded) await openSample(JSON.parse(first.dataset.sample), first);
  document.body.dataset.ready = "1";
}

// The adapter as the browser describes it (wgpu only passes on the description, which
// browsers usually leave empty).
async function adapterName() {
  try {
    const info = (await navigator.gpu.requestAdapter())?.info;
    const parts = [info?.vendor, info?.architecture, info?.description].filter((s) => s);
    if (parts.length) return parts.join(" ") + (info.isFallbackAdapter ? " (software fallback)" : "");
  } catch {
    // Only a label: fall through.
  }
  return state.clf.adapter;
}

async function loadWeights(bytes, name) {
  $("model").textContent = "loading " + name + "…";
  try {
    const about = await state.clf.loadWeights(bytes);
    state.modelName = name;
    $("model").textContent = name + ": " + about;
  } catch (e) {
    $("model").textContent = state.modelName ? state.modelName + ": " + state.clf.about : "none loaded";
    const still = state.modelName ? " Still using " + state.modelName + "." : "";
    throw new Error("Could not load “" + name + "”: " + errorText(e) + still);
  }
}

// ---- inputs ---------------------------------------------------------------------------------

function setupInputs() {
  $("image-file").addEventListener("change", (ev) => {
    const f = ev.target.files[0];
    ev.target.value = ""; // picking the same file again fires change again
    if (f) openFile(f);
  });
  $("weights-file").addEventListener("change", (ev) => {
    const f = ev.target.files[0];
    ev.target.value = "";
    if (f) openWeightsFile(f);
  });
  $("reset-crop").addEventListener("click", () => {
    if (!state.image) return;
    state.image.crop = null;
    drawView();
    classifyCurrent();
  });

  acceptDrops($("drop"), (files) => {
    const f = files[0];
    if (!f) return;
    if (f.name.toLowerCase().endsWith(".safetensors")) openWeightsFile(f);
    else openFile(f);
  });
  setupCrop();
}

function openWeightsFile(file) {
  clearMessage();
  if (!state.clf) {
    showMessage("WebGPU is not running, so weights cannot be loaded.", "error");
    return;
  }
  enqueue(async () => {
    const bytes = new Uint8Array(await file.arrayBuffer());
    await loadWeights(bytes, file.name);
  }).then(() => {
    if (state.image && $("message").dataset.kind !== "error") classifyCurrent();
  });
}

async function openFile(file) {
  clearMessage();
  let bitmap;
  try {
    // No colour management and no premultiplication: the pixels as stored, like `predict`.
    bitmap = await createImageBitmap(file, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  } catch (e) {
    showMessage(
      "Could not decode “" + file.name + "” as an image (" + errorText(e) + "). Try a PNG or JPEG " +
        "photo.",
      "error",
    );
    return;
  }
  setImage(file.name, bitmap);
  markSample(null);
  await classifyCurrent();
}

async function openSample(sample, button) {
  clearMessage();
  try {
    const resp = await fetch("samples/" + sample.file);
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    const bitmap = await createImageBitmap(await resp.blob(), {
      colorSpaceConversion: "none",
      premultiplyAlpha: "none",
    });
    setImage(sample.file, bitmap);
  } catch (e) {
    showMessage("Could not load the sample " + sample.file + ": " + errorText(e), "error");
    return;
  }
  markSample(button);
  await classifyCurrent();
}

async function loadSamples() {
  const box = $("samples");
  try {
    const resp = await fetch("samples/samples.json");
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    const samples = await resp.json();
    for (const s of samples) {
      const b = document.createElement("button");
      b.type = "button";
      b.title = s.file + (s.label !== undefined ? " (label " + s.label + ")" : "");
      b.dataset.file = s.file;
      b.dataset.sample = JSON.stringify(s);
      b.setAttribute("aria-pressed", "false");
      const img = document.createElement("img");
      img.src = "samples/" + s.file;
      img.alt = "sample " + s.file;
      b.append(img);
      b.addEventListener("click", () => openSample(s, b));
      box.append(b);
    }
  } catch (e) {
    box.textContent = "No samples (" + errorText(e) + ").";
  }
}

function markSample(button) {
  for (const b of $("samples").querySelectorAll("button")) {
    b.setAttribute("aria-pressed", b === button ? "true" : "false");
  }
}

// ---- the image view and the crop box --------------------------------------------------------

function setImage(name, bitmap) {
  const canvas = document.createElement("canvas");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  state.image = { name, canvas, ctx, crop: null };
  $("drop-hint").hidden = true;
  const scale = Math.min(VIEW_MAX_W / canvas.width, VIEW_MAX_H / canvas.height);
  view.width = Math.max(1, Math.round(canvas.width * scale));
  view.height = Math.max(1, Math.round(canvas.height * scale));
  drawView();
}

function drawView(drag) {
  const img = state.image;
  if (!img) return;
  const s = view.width / img.canvas.width;
  // Small images (like the 32x32 samples) are shown as pixels, photos smoothly.
  viewCtx.imageSmoothingEnabled = s < 2;
  viewCtx.clearRect(0, 0, view.width, view.height);
  viewCtx.drawImage(img.canvas, 0, 0, view.width, view.height);
  const c = drag || img.crop;
  if (c) {
    const [x, y, w, h] = [c.x * s, c.y * s, c.w * s, c.h * s];
    viewCtx.fillStyle = "rgba(0, 0, 0, 0.45)";
    viewCtx.beginPath();
    viewCtx.rect(0, 0, view.width, view.height);
    viewCtx.rect(x, y, w, h);
    viewCtx.fill("evenodd");
    viewCtx.strokeStyle = "#ffd54a";
    viewCtx.lineWidth = 2;
    viewCtx.strokeRect(x + 1, y + 1, Math.max(0, w - 2), Math.max(0, h - 2));
  }
  $("reset-crop").disabled = !img.crop;
}

function setupCrop() {
  let start = null;
  let current = null;
  // Pointer position in source-image pixels, clamped to the image.
  const toImage = (ev) => {
    const r = view.getBoundingClientRect();
    const img = state.image.canvas;
    const x = ((ev.clientX - r.left) / r.width) * img.width;
    const y = ((ev.clientY - r.top) / r.height) * img.height;
    return { x: Math.min(Math.max(x, 0), img.width), y: Math.min(Math.max(y, 0), img.height) };
  };
  const rect = (a, b) => {
    const x = Math.floor(Math.min(a.x, b.x));
    const y = Math.floor(Math.min(a.y, b.y));
    return { x, y, w: Math.ceil(Math.max(a.x, b.x)) - x, h: Math.ceil(Math.max(a.y, b.y)) - y };
  };
  view.addEventListener("pointerdown", (ev) => {
    if (!state.image) return;
    start = toImage(ev);
    current = null;
    view.setPointerCapture(ev.pointerId);
  });
  view.addEventListener("pointermove", (ev) => {
    if (!start) return;
    current = rect(start, toImage(ev));
    drawView(current);
  });
  view.addEventListener("pointerup", () => {
    if (!start) return;
    start = null;
    // A click (or a sliver) is not a crop.
    const minSide = Math.max(2, Math.min(state.image.canvas.width, state.image.canvas.height) / 40);
    if (current && current.w >= minSide && current.h >= minSide) {
      state.image.crop = current;
      drawView();
      classifyCurrent();
    } else {
      drawView();
    }
  });
}

// ---- classification -------------------------------------------------------------------------

function classifyCurrent() {
  const img = state.image;
  if (!img || !state.wasm) return Promise.resolve();
  const c = img.crop || { x: 0, y: 0, w: img.canvas.width, h: img.canvas.height };
  const data = img.ctx.getImageData(c.x, c.y, c.w, c.h).data;
  const rgba = new Uint8Array(data.buffer, data.byteOffset, data.length);
  const source = img.name + (img.crop ? ` (crop ${c.w}×${c.h} at ${c.x},${c.y})` : "");
  if (!state.clf) {
    // No GPU: still show what the network would see.
    drawInput(state.wasm.prepareInput(rgba, c.w, c.h));
    return Promise.resolve();
  }
  return enqueue(async () => {
    if (!state.clf.loaded) throw new Error("No weights are loaded: use “Load weights…”.");
    const t0 = performance.now();
    const r = await state.clf.classifyRgba(rgba, c.w, c.h);
    const ms = performance.now() - t0;
    showResult(r, ms, source);
    r.free();
  });
}

function drawInput(rgb) {
  const canvas = $("input");
  // The network's own input side (32 unless the weights were trained with --image-size).
  const side = Math.round(Math.sqrt(rgb.length / 3));
  if (canvas.width !== side) {
    canvas.width = side;
    canvas.height = side;
    canvas.setAttribute("aria-label", `the ${side}x${side} network input`);
    $("input-caption").textContent = `${side}×${side} network input`;
  }
  const ctx = canvas.getContext("2d");
  const out = ctx.createImageData(side, side);
  for (let i = 0, j = 0; i < rgb.length; i += 3, j += 4) {
    out.data[j] = rgb[i];
    out.data[j + 1] = rgb[i + 1];
    out.data[j + 2] = rgb[i + 2];
    out.data[j + 3] = 255;
  }
  ctx.putImageData(out, 0, 0);
}

function showResult(r, ms, source) {
  const probs = Array.from(r.probs);
  const logits = Array.from(r.logits);
  drawInput(r.input);
  const names = state.clf.classes;
  $("digit").textContent = r.className;
  $("confidence").textContent = (100 * probs[r.predicted]).toFixed(1) + "% · " + source;

  const order = probs.map((p, i) => [p, i]).sort((a, b) => b[0] - a[0]);
  const top3 = $("top3");
  top3.replaceChildren(
    ...order.slice(0, 3).map(([p, i]) => {
      const li = document.createElement("li");
      li.innerHTML =
        `<span class="cls"></span><span class="bar"><span></span></span>` +
        `<span class="pct">${(100 * p).toFixed(1)}%</span>`;
      // Through the CSSOM: the server's Content-Security-Policy refuses inline style attributes.
      li.querySelector(".bar > span").style.width = `${(100 * p).toFixed(2)}%`;
      li.querySelector(".cls").textContent = names[i]; // class names come from folder names
      return li;
    }),
  );
  $("all-probs").tBodies[0].replaceChildren(
    ...probs.map((p, i) => {
      const tr = document.createElement("tr");
      tr.innerHTML = `<td></td><td>${p.toFixed(6)}</td><td>${logits[i].toFixed(4)}</td>`;
      tr.cells[0].textContent = names[i];
      return tr;
    }),
  );
  $("timing").textContent = `Inference ${ms.toFixed(1)} ms (resize, upload, network, readback) on ${$("gpu").textContent}.`;

  // Full-precision results for scripts (the tests compare them with `predict --json`).
  const res = $("result");
  state.runs += 1;
  res.dataset.source = source;
  res.dataset.className = r.className;
  res.dataset.probs = JSON.stringify(probs);
  res.dataset.logits = JSON.stringify(logits);
  res.dataset.ms = ms.toFixed(3);
  res.dataset.run = String(state.runs);
}

main();
