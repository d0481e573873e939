// Training in the browser: WebTrainer (the wasm build of the native trainer) in headless
// Chromium with WebGPU on SwiftShader, against native `adamatch-wgpu train` and `predict`, and
// the page's Adapt panel driven as a user would.
//
// Run by scripts/test-web.sh with web.test.mjs. Writes target/web/adapt.png (the panel
// mid-run of an AdaMatch run) and target/web/train-report.json (the measured browser-native differences, the
// browser's images/s).

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import {
  BIN,
  WEB,
  OUT,
  env,
  startDemo,
  stopDemo,
  messageText,
  clickSample,
  nativePredict,
  maxAbsDiff,
} from "./harness.mjs";

// Browser (SwiftShader, tiled convolutions) and native (the machine's adapter and its own
// convolution path) sum in different orders. Measured on lavapipe against SwiftShader over the
// parity run below: metrics within 6e-7 and exported weights within 2e-6
// (target/web/train-report.json has each run's numbers); the tolerances leave room for other
// adapters' orders.
const LOSS_TOL = 1e-4;
const WEIGHT_TOL = 1e-4;
// The parity run: the tiny preset with a smaller batch, so that three steps and the export's
// batch-norm calibration take seconds on SwiftShader. The same flags go to native `train`.
const PARITY = { preset: "tiny", steps: 3, seed: 0, batch: 4, uratio: 2, bnCalibration: 4, evalLimit: 100 };
const PARITY_FLAGS = ["--preset", "tiny", "--steps", "3", "--seed", "0", "--batch", "4", "--uratio", "2",
  "--bn-calibration", "4", "--eval-limit", "100"];
// The short run of the panel: source-only on 16x16 images, 40 steps. Measured with native
// `train` (which gives the same losses) over seeds 0-3: the mean source loss of the last 10
// steps is 0.17-0.37 below that of the first 10.
const SHORT_RUN = { steps: "40", batch: "16", uratio: "1", imageSize: "16", algorithm: "source-only" };
const MIN_LOSS_DROP = 0.1;

const report = {};
let demo, tmp, serverUrl, browser, page;

before(async () => {
  demo = await startDemo("adamatch-train-web-");
  ({ tmp, url: serverUrl, browser, page } = demo);
});

after(async () => {
  await stopDemo(demo, "train-report.json", report);
  console.log(`web training: ${JSON.stringify(report)}`);
});

/// A safetensors file: its metadata and each tensor as a Float32Array.
function readSafetensors(bytes) {
  const buf = Buffer.from(bytes);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString("utf8"));
  const tensors = new Map();
  for (const [name, t] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    assert.equal(t.dtype, "F32", name);
    const [a, b] = t.data_offsets;
    const data = buf.subarray(8 + n + a, 8 + n + b);
    tensors.set(name, new Float32Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.length)));
  }
  return { meta: header.__metadata__, tensors };
}

/// Runs `fn(wasm, arg)` in the page with the wasm module initialised (`arg` as JSON); errors come
/// back as `{ error: message }`. The code is evaluated as the test's, not built by `new Function`
/// in the page, which the page's Content-Security-Policy refuses.
function inPage(fn, arg) {
  return page.evaluate(`(async () => {
    const wasm = await import("./pkg/adamatch_wgpu.js");
    await wasm.default();
    return (${fn.toString()})(wasm, ${JSON.stringify(arg)});
  })()`);
}

const panel = () =>
  page.evaluate(() => {
    const d = document.getElementById("adapt").dataset;
    return { state: d.state, step: Number(d.step), history: JSON.parse(d.history || "[]"), ips: Number(d.imagesPerSecond) };
  });

const waitPanel = (condition, arg, timeout = 600_000) =>
  page.waitForFunction(condition, arg, { timeout, polling: 250 });

async function setPanel(opts) {
  await page.evaluate((o) => {
    document.querySelector("#adapt details").open = true;
    const set = (id, v) => {
      const el = document.getElementById(id);
      el.value = v;
      el.dispatchEvent(new Event("change"));
    };
    set("adapt-steps", o.steps);
    set("adapt-batch", o.batch);
    set("adapt-uratio", o.uratio);
    set("adapt-image-size", o.imageSize);
    set("adapt-algorithm", o.algorithm);
    if (o.evalEvery) set("adapt-eval-every", o.evalEvery);
    document.querySelector(`input[name="adapt-target"][value="${o.target || "builtin"}"]`).checked = true;
  }, opts);
}

/// Trains `opts` in the browser (with `photos`, a folder of PNG/JPEG files, as the target when
/// given) and with native `train` and the same flags (`--target images:FOLDER`), and compares
/// the configuration, every step's metrics, the final evaluation and the exported weights.
async function parity(name, opts, flags, photos) {
  const files = photos ? fs.readdirSync(photos).sort() : [];
  const images = files.map((f) => ({ name: f, bytes: fs.readFileSync(path.join(photos, f)).toString("base64") }));
  const r = await inPage(async (wasm, [opts, images]) => {
    const t = await wasm.WebTrainer.create(opts);
    if (images.length) {
      const decoded = images.map((i) => ({ name: i.name, bytes: Uint8Array.from(atob(i.bytes), (c) => c.charCodeAt(0)) }));
      await t.setTargetImages(decoded);
    }
    const metrics = [];
    for (let i = 0; i < opts.steps; i++) metrics.push(await t.step(1));
    const evaluation = await t.evaluate();
    const bytes = await t.exportWeights();
    let s = "";
    for (const v of bytes) s += String.fromCharCode(v);
    const out = { metrics, evaluation, weights: btoa(s), stepsDone: t.stepsDone, ips: t.imagesPerSecond, config: t.config };
    t.free();
    return out;
  }, [opts, images]);
  assert.equal(r.stepsDone, opts.steps);

  const dir = path.join(tmp, `native-${name}`);
  const target = photos ? ["--target", `images:${photos}`] : [];
  const run = spawnSync(BIN, ["train", ...flags, ...target, "--log-every", "1", "--no-progress", "--out", dir], {
    env,
    encoding: "utf8",
  });
  assert.equal(run.status, 0, `native train failed: ${run.stderr}`);
  const lines = fs
    .readFileSync(path.join(dir, "metrics.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l));
  const native = lines.filter((o) => o.kind === "train").map((o) => o.metrics);
  assert.equal(native.length, opts.steps);
  const nativeEval = lines.find((o) => o.kind === "eval" && o.step === opts.steps);
  assert.ok(nativeEval, "native train evaluates at its last step");
  // The same step configuration, as f32 (config.json widens f32 values to f64 digits); the
  // loop's intervals (logging, evaluation, checkpoints) are the native loop's own.
  const asF32 = (v) =>
    typeof v === "number"
      ? Math.fround(v)
      : v && typeof v === "object"
        ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, asF32(x)]))
        : v;
  const stepConfig = (c) => {
    for (const k of ["log_every", "eval_every", "checkpoint_every"]) delete c[k];
    return asF32(c);
  };
  const nativeConfig = JSON.parse(fs.readFileSync(path.join(dir, "config.json"), "utf8")).config;
  assert.deepEqual(stepConfig(JSON.parse(r.config)), stepConfig(nativeConfig), "the browser run's configuration");

  let metricDiff = 0;
  for (const [b, n] of r.metrics.map((m, i) => [m, native[i]])) {
    assert.equal(b.step, n.step);
    for (const key of ["total_loss", "source_loss", "target_loss", "mask_rate", "c_tau", "mu", "lr", "grad_norm"]) {
      const d = Math.abs(b[key] - n[key]);
      metricDiff = Math.max(metricDiff, d);
      assert.ok(d <= LOSS_TOL * Math.max(1, Math.abs(n[key])), `step ${n.step} ${key}: browser ${b[key]}, native ${n[key]}`);
    }
  }

  // The same test images (the built-in test splits with the same --eval-limit sample, or the
  // photos themselves), the same calibrated weights: the same predictions.
  for (const side of ["source", "target"]) {
    const [b, n] = [r.evaluation[side], nativeEval[side]];
    assert.deepEqual(
      [b.images, b.labeled, b.confusion, b.predicted],
      [n.images, n.labeled, n.confusion, n.predicted],
      `${side} test: labels, confusion matrix, predicted classes`,
    );
    assert.ok(Math.abs(b.mean_confidence - n.mean_confidence) <= LOSS_TOL, `${side} test: mean confidence`);
  }

  const browserW = readSafetensors(Buffer.from(r.weights, "base64"));
  const nativeW = readSafetensors(fs.readFileSync(path.join(dir, "model.safetensors")));
  assert.deepEqual(browserW.meta, nativeW.meta, "the weights files' metadata");
  assert.deepEqual([...browserW.tensors.keys()].sort(), [...nativeW.tensors.keys()].sort());
  let weightDiff = 0;
  for (const [tensor, b] of browserW.tensors) {
    const d = maxAbsDiff(b, nativeW.tensors.get(tensor));
    weightDiff = Math.max(weightDiff, d);
    assert.ok(d <= WEIGHT_TOL, `${tensor}: browser and native weights differ by ${d}`);
  }
  report[name] = { steps: opts.steps, maxMetricDiff: metricDiff, maxWeightDiff: weightDiff, browserImagesPerSecond: r.ips };
}

test("three steps in the browser give native train's losses, evaluation and weights", async () => {
  await parity("parity", PARITY, PARITY_FLAGS);
});

test("with the user's photos as the target, the browser trains as native train on that folder", async () => {
  // The page's samples as "photos": PNGs of two sizes (32x32 digits, a 384x128 strip), decoded
  // by the image crate in wasm and natively, fitted to the side the same way.
  const photos = path.join(tmp, "photos");
  fs.mkdirSync(photos);
  for (const f of fs.readdirSync(path.join(WEB, "samples")).filter((f) => f.endsWith(".png"))) {
    fs.copyFileSync(path.join(WEB, "samples", f), path.join(photos, f));
  }
  const steps = ["--steps", "2"];
  await parity("photosParity", { ...PARITY, steps: 2 }, [...PARITY_FLAGS.slice(0, 2), ...steps, ...PARITY_FLAGS.slice(4)], photos);
});

test("the API takes the user's photos, refuses bad input and a busy or finished run", async () => {
  const png = fs.readFileSync(path.join(WEB, "samples/digit-3.png")).toString("base64");
  const r = await inPage(async (wasm, png) => {
    const err = async (p) => {
      try {
        await p;
        return "no error";
      } catch (e) {
        return e.message;
      }
    };
    const out = {};
    out.unknownOption = await err(wasm.WebTrainer.create({ preset: "tiny", stepz: 3 }));
    out.badPreset = await err(wasm.WebTrainer.create({ preset: "huge" }));
    out.zeroSteps = await err(wasm.WebTrainer.create({ steps: 0 }));
    out.badAlgorithm = await err(wasm.WebTrainer.create({ algorithm: "magic" }));
    const t = await wasm.WebTrainer.create({ preset: "tiny", steps: 3, batch: 2, uratio: 1, imageSize: 16, bnCalibration: 1, evalLimit: 50 });
    const bytes = Uint8Array.from(atob(png), (c) => c.charCodeAt(0));
    out.undecodable = await err(t.setTargetImages([{ name: "broken.png", bytes: new TextEncoder().encode("not a PNG") }]));
    out.badPixels = await err(t.setTargetImages([{ data: new Uint8Array(10), width: 4, height: 4 }]));
    out.empty = await err(t.setTargetImages([]));
    const rgba = new Uint8Array(40 * 24 * 4).map((_, i) => (i * 37) % 256);
    out.count = await t.setTargetImages([bytes, { name: "pixels", data: rgba, width: 40, height: 24 }]);
    const first = t.step(1);
    out.busy = await err(t.step(1));
    out.first = (await first).step;
    out.lateTarget = await err(t.setTargetImages([bytes]));
    out.last = (await t.step(10)).step;
    out.finished = await err(t.step(1));
    out.stepsDone = t.stepsDone;
    out.classes = t.classes;
    const e = await t.evaluate();
    out.eval = { sourceLabeled: e.source.labeled, targetLabeled: e.target.labeled, predicted: e.target.predicted, images: e.target.images };
    t.free();
    return out;
  }, png);
  assert.match(r.unknownOption, /option stepz: unknown field `stepz`, expected one of `preset`, `algorithm`, `steps`/);
  assert.match(r.badPreset, /unknown preset 'huge'/);
  assert.match(r.zeroSteps, /steps 0: must be from 1 to/);
  assert.match(r.badAlgorithm, /option algorithm: unknown variant `magic`, expected one of `adamatch`/);
  assert.match(r.undecodable, /target image “broken\.png”: not a readable image/);
  assert.match(r.badPixels, /target image 1: 10 bytes of RGBA pixels for a 4x4 image \(expected 64\)/);
  assert.match(r.empty, /no images given/);
  assert.equal(r.count, 2);
  assert.match(r.busy, /busy/);
  assert.equal(r.first, 1);
  assert.match(r.lateTarget, /already trained/);
  assert.equal(r.last, 3, "step(10) stops at the run's 3 steps");
  assert.match(r.finished, /the run is finished \(3 steps\)/);
  assert.equal(r.stepsDone, 3);
  assert.deepEqual(r.classes, ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"], "the source's classes");
  assert.deepEqual(
    [r.eval.sourceLabeled, r.eval.targetLabeled, r.eval.images, r.eval.predicted.reduce((a, b) => a + b)],
    [true, false, 2, 2],
    "the photos are evaluated without labels: a histogram of the predicted classes",
  );
});

test("the Adapt panel: a short run's loss falls and its weights classify as native predict", async () => {
  await setPanel(SHORT_RUN);
  await page.click("#adapt-start");
  await waitPanel(() => ["finished", "error"].includes(document.getElementById("adapt").dataset.state));
  assert.equal(await messageText(page), "");
  const p = await panel();
  assert.equal(p.state, "finished");
  const loss = p.history.map((m) => m.source_loss);
  assert.equal(p.history.at(-1).step, 40);
  const mean = (a) => a.reduce((x, y) => x + y, 0) / a.length;
  // Points are per step(n) call; on this adapter each call is one step.
  const early = mean(loss.slice(0, 10));
  const late = mean(loss.slice(-10));
  report.shortRun = { steps: 40, earlySourceLoss: early, lateSourceLoss: late, browserImagesPerSecond: p.ips };
  assert.ok(late <= early - MIN_LOSS_DROP, `source loss ${early.toFixed(3)} -> ${late.toFixed(3)}`);

  // The classifier switched to the new weights (16x16 inputs).
  assert.match(await page.textContent("#model"), /^adapted-step40\.safetensors: WRN-10-1, .*16x16 input/);
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("#adapt-download")]);
  assert.equal(download.suggestedFilename(), "adapted-step40.safetensors");
  const file = path.join(tmp, "adapted.safetensors");
  await download.saveAs(file);
  const names = ["digit-1.png", "digit-5.png", "house-number.png"];
  const native = nativePredict(file, names.map((n) => path.join(WEB, "samples", n)));
  for (const n of names) {
    const r = await clickSample(page, n);
    const want = native.get(path.join(WEB, "samples", n));
    const d = maxAbsDiff(r.probs, want.probs);
    assert.ok(d <= 1e-4, `${n}: the page's probabilities differ from native predict by ${d}`);
    assert.equal(r.className, want.class_name, n);
  }
});

test("a run paused, resumed, stopped and started again", async () => {
  await setPanel({ steps: "40", batch: "4", uratio: "1", imageSize: "16", algorithm: "adamatch", evalEvery: "1000" });
  await page.click("#adapt-start");
  await waitPanel(() => Number(document.getElementById("adapt").dataset.step) >= 20);
  // The panel mid-run, for the README.
  await page.locator("#adapt").screenshot({ path: path.join(OUT, "adapt.png") });
  await page.click("#adapt-pause");
  await waitPanel(() => document.getElementById("adapt").dataset.state === "paused");
  const paused = (await panel()).step;
  await page.waitForTimeout(1500);
  assert.equal((await panel()).step, paused, "no step while paused");
  assert.equal(await page.textContent("#adapt-pause"), "Resume");
  await page.click("#adapt-pause");
  await waitPanel((s) => Number(document.getElementById("adapt").dataset.step) > s, paused);
  await page.click("#adapt-stop");
  await waitPanel(() => ["finished", "error"].includes(document.getElementById("adapt").dataset.state));
  const stopped = await panel();
  assert.equal(stopped.state, "finished", await messageText(page));
  assert.ok(stopped.step > paused && stopped.step < 40, `stopped at ${stopped.step}`);
  assert.match(await page.textContent("#model"), new RegExp(`^adapted-step${stopped.step}\\.safetensors: WRN-10-1`));

  // Start again: a new run from step 1.
  await page.click("#adapt-start");
  await waitPanel(() => {
    const d = document.getElementById("adapt").dataset;
    return d.state === "running" && JSON.parse(d.history || "[]").length >= 1;
  });
  assert.equal((await panel()).history[0].step, 1, "the new run starts at step 1");
  await page.click("#adapt-stop");
  await waitPanel(() => ["finished", "error"].includes(document.getElementById("adapt").dataset.state));
  assert.equal((await panel()).state, "finished", await messageText(page));
});

test("photos that cannot be decoded stop the start with their name", async () => {
  const bad = path.join(tmp, "broken.png");
  fs.writeFileSync(bad, "this is not a PNG file\n");
  await setPanel({ steps: "5", batch: "2", uratio: "1", imageSize: "16", algorithm: "adamatch", target: "photos" });
  await page.setInputFiles("#adapt-files", [path.join(WEB, "samples/digit-2.png"), bad]);
  assert.equal(await page.textContent("#adapt-photo-count"), "(2 chosen)");
  await page.click("#adapt-start");
  await waitPanel(() => document.getElementById("adapt").dataset.state === "error");
  assert.match(await messageText(page), /^Training: target image “broken\.png”: not a readable image/);
  assert.equal(await page.isEnabled("#adapt-start"), true, "a new start is possible");
});

test("without WebGPU the trainer and the panel say so", async () => {
  const ctx = await browser.newContext();
  await ctx.addInitScript(() => {
    delete Object.getPrototypeOf(navigator).gpu;
  });
  const p = await ctx.newPage();
  await p.goto(serverUrl);
  await p.waitForFunction(() => document.getElementById("message").dataset.kind === "error", null, { timeout: 60_000 });
  const apiError = await p.evaluate(async () => {
    const wasm = await import("./pkg/adamatch_wgpu.js");
    await wasm.default();
    try {
      await wasm.WebTrainer.create({ preset: "tiny" });
      return "no error";
    } catch (e) {
      return e.message;
    }
  });
  assert.match(apiError, /WebGPU is not available in this browser/);
  await p.click("#adapt-start");
  await p.waitForFunction(() => document.getElementById("adapt").dataset.state === "error");
  assert.match(await p.textContent("#message"), /Training: WebGPU is not available in this browser/);
  await ctx.close();
});

test("autotuning in the browser times each pass once, keeps its choices in localStorage and changes no bit", async () => {
  const r = await inPage(async (wasm) => {
    const KEY = "autotune-conv-tiles.json";
    localStorage.removeItem(KEY);
    // Source-only without calibration, evaluated in batches of the main pass's 4 images: the
    // fewest passes to time (timing on SwiftShader takes most of this test's time).
    const opts = { preset: "tiny", steps: 2, seed: 0, algorithm: "source-only", batch: 2, imageSize: 16, bnCalibration: 0, evalLimit: 4 };
    const train = async (autotune) => {
      const t = await wasm.WebTrainer.create({ ...opts, autotune });
      const tuning = t.tuning;
      // Everything but the speed.
      const metrics = [await t.step(1), await t.step(1)].map(({ images_per_s, ...m }) => m);
      const evaluation = await t.evaluate();
      const weights = Array.from(await t.exportWeights());
      t.free();
      return { tuning, metrics, evaluation, weights };
    };
    const model = new Uint8Array(await (await fetch("./model.safetensors")).arrayBuffer());
    const rgba = new Uint8Array(32 * 32 * 4).map((_, i) => (i * 53) % 256);
    const classify = async (autotune) => {
      const c = await wasm.WebClassifier.create({ autotune });
      await c.loadWeights(model);
      const logits = Array.from((await c.classifyRgba(rgba, 32, 32)).logits);
      const tuning = c.tuning;
      c.free();
      return { tuning, logits };
    };
    const err = async (p) => {
      try {
        await p;
        return "no error";
      } catch (e) {
        return e.message;
      }
    };
    const off = await train(false);
    const first = await train(true);
    const stored = JSON.parse(localStorage.getItem(KEY));
    const classifiedOff = await classify(false);
    const classifiedOn = await classify("on");
    const classifiedAgain = await classify(true);
    const badOption = await err(wasm.WebTrainer.create({ ...opts, autotune: "sometimes" }));
    localStorage.removeItem(KEY);
    return { off, first, stored, classifiedOff, classifiedOn, classifiedAgain, badOption };
  });
  assert.equal(r.error, undefined, r.error);
  const { off, first, stored, classifiedOn, classifiedAgain } = r;
  assert.deepEqual([off.tuning.tiles, off.tuning.timed, off.tuning.cached], ["144x32x16", 0, 0], "off: the default tiles");
  assert.equal(first.tuning.tiles, "autotuned per layer");
  assert.ok(first.tuning.timed > 0 && first.tuning.cached === 0, JSON.stringify(first.tuning));
  assert.ok(["gpu timestamps", "wall clock"].includes(first.tuning.clock), first.tuning.clock);
  const adapters = Object.keys(stored);
  assert.equal(adapters.length, 1, "one adapter's entry");
  const choices = Object.values(stored[adapters[0]]);
  assert.equal(choices.length, first.tuning.timed);
  const candidates = ["144x32x16", "64x32x16", "128x32x16", "128x16x16", "256x16x8", "64x32x32", "128x64x16-8x8", "64x64x16-8x8"];
  for (const c of choices) assert.ok(candidates.includes(c), c);
  assert.deepEqual(first.metrics, off.metrics, "tuned tiles give the default tiles' metrics");
  assert.deepEqual(first.evaluation, off.evaluation);
  assert.ok(first.weights.length === off.weights.length && first.weights.every((v, i) => v === off.weights[i]), "the same weights, byte for byte");
  assert.equal(classifiedOn.tuning.tiles, "autotuned per layer");
  assert.ok(classifiedOn.tuning.timed > 0 && classifiedOn.tuning.cached === 0, JSON.stringify(classifiedOn.tuning));
  assert.deepEqual(classifiedOn.logits, r.classifiedOff.logits, "the classifier's logits, bit for bit");
  assert.deepEqual([classifiedAgain.tuning.timed, classifiedAgain.tuning.cached], [0, classifiedOn.tuning.timed], "a new device reads every choice back");
  assert.deepEqual(classifiedAgain.logits, r.classifiedOff.logits);
  assert.match(r.badOption, /option autotune: 'sometimes': expected on or off/);
  const histogram = {};
  for (const c of choices) histogram[c] = (histogram[c] || 0) + 1;
  report.browserTuning = {
    trainPasses: first.tuning.timed,
    trainSeconds: first.tuning.seconds,
    clock: first.tuning.clock,
    classifierPasses: classifiedOn.tuning.timed,
    classifierSeconds: classifiedOn.tuning.seconds,
    choices: histogram,
  };
});

test("no uncaught errors in the training page", () => {
  assert.deepEqual(demo.pageErrors, []);
});
