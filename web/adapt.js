// The "Adapt" panel: trains the tiny preset with AdaMatch in this page (WebTrainer, the same
// Rust trainer and WGSL kernels as `adamatch-wgpu train`) from the built-in synth-digits to
// synth-house or to the user's own photos, plots the run, and at the end hands the weights to
// the classifier above and offers them as a download.

import { acceptDrops } from "./drop.js";

const $ = (id) => document.getElementById(id);

// Aim for about this long per `step(n)` call, so the plot and the buttons stay live on fast and
// slow GPUs alike.
const CALL_MS = 800;

export function setupAdapt(page) {
  const panel = $("adapt");
  const run = {
    trainer: null,
    // idle | starting | running | pausing | paused | stopping | finishing | finished | error;
    // pausing and stopping last until the step call in flight returns.
    state: "idle",
    history: [], // per step(n) call: the metrics of its last step
    evals: [], // { step, accuracy } of the target, when it has labels
    photos: [], // File objects of the user's target images
    perCall: 1,
    weights: null, // the last exported .safetensors bytes
    evalEvery: 200,
  };

  const setState = (s) => {
    run.state = s;
    panel.dataset.state = s;
    const busy = ["starting", "running", "pausing", "stopping", "finishing"].includes(s);
    $("adapt-start").disabled = busy || s === "paused";
    $("adapt-pause").disabled = !(s === "running" || s === "paused");
    $("adapt-pause").textContent = s === "paused" ? "Resume" : "Pause";
    $("adapt-stop").disabled = !(s === "running" || s === "paused");
    $("adapt-download").disabled = !run.weights || busy;
    for (const el of panel.querySelectorAll(".adapt-setup input, .adapt-setup select")) {
      el.disabled = busy || s === "paused";
    }
  };

  const photoTarget = () => panel.querySelector('input[name="adapt-target"]:checked').value === "photos";

  function addPhotos(files) {
    const images = Array.from(files).filter((f) => !f.name.toLowerCase().endsWith(".safetensors"));
    if (!images.length) return;
    run.photos = images;
    $("adapt-photo-count").textContent = `(${images.length} chosen)`;
    panel.querySelector('input[name="adapt-target"][value="photos"]').checked = true;
  }
  $("adapt-files").addEventListener("change", (ev) => {
    addPhotos(ev.target.files);
    ev.target.value = "";
  });
  acceptDrops($("adapt-drop"), addPhotos);

  const number = (id) => Number($(id).value);
  function options() {
    const o = {
      preset: "tiny",
      algorithm: $("adapt-algorithm").value,
      steps: number("adapt-steps"),
      seed: number("adapt-seed"),
      batch: number("adapt-batch"),
      uratio: number("adapt-uratio"),
      imageSize: number("adapt-image-size"),
    };
    // Blank: the preset's share of the steps (as `train` without --source-steps).
    if ($("adapt-source-steps").value.trim() !== "") o.sourceSteps = number("adapt-source-steps");
    return o;
  }

  function fail(e) {
    setState("error");
    $("adapt-status").textContent = `Stopped by an error at step ${run.trainer ? run.trainer.stepsDone : 0}.`;
    page.showMessage("Training: " + page.errorText(e), "error");
  }

  async function start() {
    page.clearMessage();
    if (!page.wasm()) return page.showMessage("The WebAssembly bundle is not loaded.", "error");
    if (!navigator.gpu) {
      return fail(new Error("WebGPU is not available in this browser, so training cannot run here."));
    }
    if (photoTarget() && !run.photos.length) {
      return page.showMessage("Choose some photos for the target first (or pick synth-house).", "error");
    }
    run.trainer?.free();
    run.trainer = null;
    run.history = [];
    run.evals = [];
    run.perCall = 1;
    panel.dataset.history = "[]";
    panel.dataset.step = "0";
    panel.dataset.eval = "";
    $("adapt-eval").textContent = "";
    setState("starting");
    const opts = options();
    run.sourceOnly = opts.algorithm === "source-only";
    run.totalSteps = opts.steps;
    run.evalEvery = Math.max(1, number("adapt-eval-every"));
    draw();
    $("adapt-status").textContent = "Building the network and compiling the kernels…";
    try {
      run.trainer = await page.wasm().WebTrainer.create(opts);
      if (photoTarget()) {
        $("adapt-status").textContent = `Reading ${run.photos.length} photos…`;
        const list = [];
        for (const f of run.photos) list.push({ name: f.name, bytes: new Uint8Array(await f.arrayBuffer()) });
        await run.trainer.setTargetImages(list);
      }
    } catch (e) {
      run.trainer?.free();
      run.trainer = null;
      return fail(e);
    }
    setState("running");
    loop();
  }

  async function loop() {
    const t = run.trainer;
    try {
      while (run.state === "running" && t.stepsDone < t.steps) {
        const t0 = performance.now();
        const prev = t.stepsDone;
        const m = await t.step(run.perCall);
        const ms = performance.now() - t0;
        run.perCall = Math.max(1, Math.min(50, Math.round((run.perCall * CALL_MS) / Math.max(ms, 1))));
        run.history.push({
          step: m.step,
          total_loss: m.total_loss,
          source_loss: m.source_loss,
          target_loss: m.target_loss,
          mask_rate: m.mask_rate,
          phase: m.phase,
        });
        panel.dataset.history = JSON.stringify(run.history);
        panel.dataset.step = String(m.step);
        showStatus();
        draw();
        // Evaluate when this call passed a multiple of the interval (the end evaluates anyway).
        if (m.step < t.steps && Math.floor(m.step / run.evalEvery) > Math.floor(prev / run.evalEvery)) {
          await evaluate();
        }
      }
      if (run.state === "pausing") {
        setState("paused");
        $("adapt-status").textContent += " · paused";
        return;
      }
      if (run.state === "running" || run.state === "stopping") await finish();
    } catch (e) {
      fail(e);
    }
  }

  function showStatus() {
    const t = run.trainer;
    const s = Math.round(t.elapsedSeconds);
    const time = `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
    const m = run.history.at(-1);
    let loss = "";
    if (m && (run.sourceOnly || m.phase === "source-only")) loss = ` · loss ${m.total_loss.toFixed(3)}`;
    else if (m) {
      loss = ` · loss ${m.total_loss.toFixed(3)} (source ${m.source_loss.toFixed(3)}, target ` +
        `${m.target_loss.toFixed(3)}) · mask ${m.mask_rate.toFixed(2)}`;
    }
    $("adapt-status").textContent =
      `Step ${t.stepsDone} / ${t.steps}${m ? ` (${m.phase})` : ""} · ${t.imagesPerSecond.toFixed(1)} images/s · ` +
      `${time} training${loss}`;
    panel.dataset.imagesPerSecond = String(t.imagesPerSecond);
  }

  async function evaluate() {
    $("adapt-eval").textContent = "Evaluating…";
    const e = await run.trainer.evaluate();
    panel.dataset.eval = JSON.stringify(e);
    const pct = (a) => (100 * a).toFixed(1) + "%";
    if (e.target.accuracy !== undefined) {
      run.evals.push({ step: e.step, accuracy: e.target.accuracy });
      $("adapt-eval").textContent =
        `Step ${e.step}: source test ${pct(e.source.accuracy)}, target test ${pct(e.target.accuracy)}.`;
    } else {
      const shares = e.target.predicted.map((n, c) => `${c}: ${n}`).join(", ");
      $("adapt-eval").textContent =
        `Step ${e.step}: source test ${pct(e.source.accuracy)}; your photos (no labels): mean confidence ` +
        `${e.target.mean_confidence.toFixed(2)}, predicted classes ${shares}.`;
    }
    draw();
  }

  // The end of a run (its last step, or Stop): evaluate, export, switch the classifier over.
  async function finish() {
    setState("finishing");
    await evaluate();
    $("adapt-status").textContent += " · exporting the weights…";
    run.weights = await run.trainer.exportWeights();
    const name = `adapted-step${run.trainer.stepsDone}.safetensors`;
    run.weightsName = name;
    showStatus();
    await page.useWeights(run.weights, name);
    setState("finished");
    $("adapt-status").textContent += " · done: the classifier above now uses these weights.";
  }

  $("adapt-start").addEventListener("click", start);
  $("adapt-pause").addEventListener("click", () => {
    if (run.state === "running") {
      setState("pausing");
    } else if (run.state === "paused") {
      setState("running");
      loop();
    }
  });
  $("adapt-stop").addEventListener("click", () => {
    if (run.state === "paused") {
      setState("stopping");
      finish().catch(fail);
    } else if (run.state === "running") {
      setState("stopping");
    }
  });
  $("adapt-download").addEventListener("click", () => {
    if (!run.weights) return;
    const url = URL.createObjectURL(new Blob([run.weights], { type: "application/octet-stream" }));
    const a = document.createElement("a");
    a.href = url;
    a.download = run.weightsName;
    a.click();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  });

  // ---- the plot -----------------------------------------------------------------------------

  const SERIES = [
    { key: "total_loss", label: "loss", color: "#1d2330", axis: "loss" },
    { key: "source_loss", label: "source", color: "#2f6fde", axis: "loss" },
    { key: "target_loss", label: "target", color: "#e07b1a", axis: "loss" },
    { key: "mask_rate", label: "mask rate", color: "#2e9d5b", axis: "rate", dash: [5, 4] },
  ];

  function draw() {
    // A source-only run has no target loss, mask rate or alignment: its loss is the source's.
    const series = run.sourceOnly ? SERIES.slice(0, 1) : SERIES;
    const c = $("adapt-plot");
    const g = c.getContext("2d");
    const W = c.width;
    const H = c.height;
    const pad = { l: 40, r: 40, t: 24, b: 24 };
    g.clearRect(0, 0, W, H);
    g.font = "11px system-ui, sans-serif";
    const steps = run.totalSteps || 1;
    const maxLoss = Math.max(1, ...run.history.flatMap((m) => [m.total_loss, m.source_loss, m.target_loss]));
    const x = (s) => pad.l + ((W - pad.l - pad.r) * s) / steps;
    const y = (v, max) => H - pad.b - ((H - pad.t - pad.b) * Math.min(v, max)) / max;
    g.strokeStyle = "#dfe3ea";
    g.fillStyle = "#647087";
    g.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const yy = pad.t + ((H - pad.t - pad.b) * i) / 4;
      g.beginPath();
      g.moveTo(pad.l, yy);
      g.lineTo(W - pad.r, yy);
      g.stroke();
      g.textAlign = "right";
      g.fillText((maxLoss * (1 - i / 4)).toFixed(2), pad.l - 4, yy + 4);
      g.textAlign = "left";
      g.fillText((1 - i / 4).toFixed(2), W - pad.r + 4, yy + 4);
    }
    // The end of the source-only phase: the adaptation starts from its model.
    const adapting = run.history.findIndex((m) => m.phase !== "source-only");
    if (adapting > 0) {
      const bx = x(run.history[adapting - 1].step);
      g.setLineDash([2, 3]);
      g.beginPath();
      g.moveTo(bx, pad.t);
      g.lineTo(bx, H - pad.b);
      g.stroke();
      g.setLineDash([]);
      g.textAlign = "left";
      g.fillText("adapting", bx + 4, pad.t + 12);
    }
    g.textAlign = "center";
    g.fillText(`step (of ${steps})`, (W + pad.l - pad.r) / 2, H - 6);
    for (const s of series) {
      if (!run.history.length) break;
      g.strokeStyle = s.color;
      g.lineWidth = 1.5;
      g.setLineDash(s.dash || []);
      g.beginPath();
      run.history.forEach((m, i) => {
        const v = s.axis === "loss" ? y(m[s.key], maxLoss) : y(m[s.key], 1);
        if (i === 0) g.moveTo(x(m.step), v);
        else g.lineTo(x(m.step), v);
      });
      g.stroke();
    }
    g.setLineDash([]);
    g.fillStyle = "#8a3ffc";
    for (const e of run.evals) {
      g.beginPath();
      g.arc(x(e.step), y(e.accuracy, 1), 4, 0, 2 * Math.PI);
      g.fill();
    }
    // Legend.
    let lx = pad.l;
    g.textAlign = "left";
    for (const s of [...series, { label: "target accuracy", color: "#8a3ffc" }]) {
      g.fillStyle = s.color;
      g.fillRect(lx, 8, 10, 3);
      g.fillStyle = "#1d2330";
      g.fillText(s.label, lx + 14, 13);
      lx += g.measureText(s.label).width + 30;
    }
  }

  // A run in progress lives only in this tab: the browser asks before a reload or close drops it.
  window.addEventListener("beforeunload", (ev) => {
    if (["starting", "running", "pausing", "paused", "stopping", "finishing"].includes(run.state)) {
      ev.preventDefault();
      ev.returnValue = "";
    }
  });

  setState("idle");
  draw();
}
