// The web demo in a real browser: Debian's Chromium (headless, WebGPU on SwiftShader) driven by
// playwright-core, the page served by `adamatch-wgpu serve` with a copy of the default weights
// passed as the user's own. Every browser result is compared with the native
// `adamatch-wgpu predict --json` on the same weights and image files.
//
// Run by scripts/test-web.sh (which builds the bundle and the binary first):
//   node --test tests/web/
// Environment: ADAMATCH_BIN (default target/debug/adamatch-wgpu), CHROMIUM (default
// /usr/bin/chromium). Writes target/web/screenshot.png and target/web/report.json.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import {
  BIN,
  ROOT,
  WEB,
  OUT,
  env,
  maxAbsDiff,
  startDemo,
  stopDemo,
  nextResult as nextResultOf,
  currentRun as currentRunOf,
  messageText as messageTextOf,
  clickSample as clickSampleOf,
  nativePredict as nativePredictWith,
} from "./harness.mjs";

// Browser and native run the same kernels on different GPUs (SwiftShader vs the native
// adapter) with different summation orders; probabilities must agree to this.
const PROB_TOL = 1e-4;
// Logits are unnormalised (|l| up to ~10): the same relative precision.
const LOGIT_TOL = 1e-4;

const samples = JSON.parse(fs.readFileSync(path.join(WEB, "samples/samples.json"), "utf8"));
const report = { results: [], maxProbDiff: 0, maxLogitDiff: 0 };

let demo, tmp, userWeights, serverUrl, browser, page;

const nativePredict = (files) => nativePredictWith(userWeights, files);
const nextResult = (previousRun) => nextResultOf(page, previousRun);
const currentRun = () => currentRunOf(page);
const messageText = () => messageTextOf(page);
const clickSample = (file) => clickSampleOf(page, file);

function compare(name, browserResult, native) {
  const dp = maxAbsDiff(browserResult.probs, native.probs);
  const dl = maxAbsDiff(browserResult.logits, native.logits);
  report.results.push({ name, ms: browserResult.ms, maxProbDiff: dp, maxLogitDiff: dl });
  report.maxProbDiff = Math.max(report.maxProbDiff, dp);
  report.maxLogitDiff = Math.max(report.maxLogitDiff, dl);
  assert.ok(dp <= PROB_TOL, `${name}: probabilities differ from native by ${dp} (> ${PROB_TOL})`);
  assert.ok(dl <= LOGIT_TOL, `${name}: logits differ from native by ${dl} (> ${LOGIT_TOL})`);
  assert.equal(browserResult.className, native.class_name, `${name}: class name`);
  assert.equal(browserResult.shown, native.class_name, `${name}: the class name the page shows`);
}

/// A copy of `file` whose safetensors metadata entry `key` is `value` (the header rewritten).
function withMetadata(file, out, key, value) {
  const bytes = fs.readFileSync(file);
  const n = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + n).toString("utf8"));
  header.__metadata__[key] = value;
  // Offsets are relative to the end of the header, so only its length changes.
  let text = JSON.stringify(header);
  text += " ".repeat((8 - (text.length % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(text)));
  fs.writeFileSync(out, Buffer.concat([len, Buffer.from(text, "utf8"), bytes.subarray(8 + n)]));
}

/// Loads a weights file through the page's file input and waits for the model line and for the
/// page's automatic reclassification of the current image with the new weights (so that no stale
/// result reaches a later test).
async function loadWeightsFile(file, modelLine) {
  const run = await currentRun();
  await page.setInputFiles("#weights-file", file);
  await page.waitForFunction((re) => new RegExp(re).test(document.getElementById("model").textContent), modelLine.source, {
    timeout: 60_000,
  });
  return nextResult(run);
}


before(async () => {
  demo = await startDemo("adamatch-web-");
  // The user's own weights (serve --weights): a copy, served at the page's default URL.
  ({ tmp, weights: userWeights, url: serverUrl, browser, page } = demo);
});

after(async () => {
  const times = report.results.map((r) => r.ms).sort((a, b) => a - b);
  report.medianMs = times.length ? times[Math.floor(times.length / 2)] : null;
  await stopDemo(demo, "report.json", report);
  console.log(
    `web: ${report.results.length} browser classifications, median ${report.medianMs?.toFixed(1)} ms, ` +
      `max |p - native| ${report.maxProbDiff.toExponential(2)}, max |logit - native| ` +
      `${report.maxLogitDiff.toExponential(2)}`,
  );
});

test("the page names its adapter and the loaded model", async () => {
  const gpu = await page.textContent("#gpu");
  const model = await page.textContent("#model");
  assert.ok(gpu.length > 0 && !/not|fail/i.test(gpu), gpu);
  assert.match(model, /^model\.safetensors: WRN-\d+-\d+/);
});

test("every sample classified in the browser equals native predict", async () => {
  const files = samples.map((s) => path.join(WEB, "samples", s.file));
  const native = nativePredict(files);
  for (const s of samples) {
    const r = await clickSample(s.file);
    assert.equal(r.source, s.file);
    compare(`sample ${s.file}`, r, native.get(path.join(WEB, "samples", s.file)));
  }
  const top = await page.$$eval("#top3 li", (lis) => lis.length);
  assert.equal(top, 3, "top-3 list");
});

test("images picked with the file chooser equal native predict", async () => {
  const files = [path.join(WEB, "samples/house-number.png"), path.join(WEB, "samples/digit-7.png")];
  const native = nativePredict(files);
  for (const f of files) {
    const run = await currentRun();
    await page.setInputFiles("#image-file", f);
    const r = await nextResult(run);
    assert.equal(r.source, path.basename(f));
    compare(`upload ${path.basename(f)}`, r, native.get(f));
  }
});

test("a crop box classifies just the selected part, as native predict on that crop", async () => {
  const sample = "house-number.png";
  await clickSample(sample);
  // Drag over the second digit of the strip (the view shows the whole 384x128 image).
  const box = await page.locator("#view").boundingBox();
  const run = await currentRun();
  await page.mouse.move(box.x + box.width * 0.36, box.y + box.height * 0.05);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.5, box.y + box.height * 0.5, { steps: 4 });
  await page.mouse.move(box.x + box.width * 0.64, box.y + box.height * 0.95, { steps: 4 });
  await page.mouse.up();
  const r = await nextResult(run);
  const m = /\(crop (\d+)×(\d+) at (\d+),(\d+)\)$/.exec(r.source);
  assert.ok(m, `crop source: ${r.source}`);
  const [w, h, x, y] = m.slice(1).map(Number);
  assert.ok(w > 100 && w < 140 && h > 100, `crop ${w}x${h}`);
  // The same crop as a PNG (lossless) for the native side, cut by the browser from the file.
  const b64 = await page.evaluate(
    async ([url, x, y, w, h]) => {
      const bmp = await createImageBitmap(await (await fetch(url)).blob(), {
        colorSpaceConversion: "none",
        premultiplyAlpha: "none",
      });
      const c = new OffscreenCanvas(w, h);
      c.getContext("2d").drawImage(bmp, x, y, w, h, 0, 0, w, h);
      const bytes = new Uint8Array(await (await c.convertToBlob({ type: "image/png" })).arrayBuffer());
      let s = "";
      for (const v of bytes) s += String.fromCharCode(v);
      return btoa(s);
    },
    ["samples/" + sample, x, y, w, h],
  );
  const cropFile = path.join(tmp, "crop.png");
  fs.writeFileSync(cropFile, Buffer.from(b64, "base64"));
  compare(`crop ${w}x${h} of ${sample}`, r, nativePredict([cropFile]).get(cropFile));
  assert.equal(await page.isEnabled("#reset-crop"), true);

  // The screenshot: a photo-like sample with a crop box and its prediction.
  await page.screenshot({ path: path.join(OUT, "screenshot.png"), fullPage: true });

  const run2 = await currentRun();
  await page.click("#reset-crop");
  const whole = await nextResult(run2);
  assert.equal(whole.source, sample);
});

test("a corrupt weights file shows its message and the page keeps working", async () => {
  const bad = path.join(tmp, "corrupt.safetensors");
  // A real file cut short: the header promises more bytes than there are.
  fs.writeFileSync(bad, fs.readFileSync(userWeights).subarray(0, 5000));
  await page.setInputFiles("#weights-file", bad);
  await page.waitForFunction(() => document.getElementById("message").dataset.kind === "error", null, {
    timeout: 60_000,
  });
  const msg = await messageText();
  assert.match(msg, /Could not load “corrupt\.safetensors”: not a valid adamatch-wgpu weights file/);
  assert.match(msg, /Still using model\.safetensors/);
  assert.match(await page.textContent("#model"), /^model\.safetensors: WRN/);

  // The previous model still answers, exactly as before.
  const native = nativePredict([path.join(WEB, "samples/digit-2.png")]);
  const r = await clickSample("digit-2.png");
  compare("after corrupt weights", r, native.get(path.join(WEB, "samples/digit-2.png")));
  assert.equal(await messageText(), "");

  // Loading good weights again works too.
  await loadWeightsFile(userWeights, /^user\.safetensors: WRN/);
});

test("class names from the weights reach the page, as predict prints them", async () => {
  const names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "<b>nine</b>"];
  const named = path.join(tmp, "named.safetensors");
  withMetadata(userWeights, named, "classes", JSON.stringify(names));
  await loadWeightsFile(named, /^named\.safetensors: WRN.*10 classes/);
  const file = path.join(WEB, "samples/digit-7.png");
  const r = await clickSample("digit-7.png");
  const spawned = spawnSync(BIN, ["predict", "--json", "--weights", named, file], { env, encoding: "utf8" });
  assert.equal(spawned.status, 0, spawned.stderr);
  const native = JSON.parse(spawned.stdout.trim());
  assert.ok(names.includes(native.class_name), native.class_name);
  compare("named classes", r, native);
  // Names are text, never markup; the probability table lists every one.
  const cells = await page.evaluate(() =>
    Array.from(document.querySelectorAll("#all-probs tbody tr td:first-child"), (td) => td.textContent),
  );
  assert.deepEqual(cells, names);
  assert.equal(await page.evaluate(() => document.querySelectorAll("#all-probs b").length), 0);

  await loadWeightsFile(userWeights, /^user\.safetensors: WRN/);
});

test("weights of another image size classify at their own side, as native predict", async () => {
  // The network is size-free up to its global pooling: the same tensors declared for 48x48
  // inputs are a valid model that reads images at 48x48.
  const bytes = fs.readFileSync(userWeights);
  const header = JSON.parse(bytes.subarray(8, 8 + Number(bytes.readBigUInt64LE(0))).toString("utf8"));
  const config = JSON.parse(header.__metadata__.config);
  config.image_size = 48;
  const sized = path.join(tmp, "sized48.safetensors");
  withMetadata(userWeights, sized, "config", JSON.stringify(config));
  await loadWeightsFile(sized, /^sized48\.safetensors: WRN/);
  const file = path.join(WEB, "samples/house-number.png");
  const r = await clickSample("house-number.png");
  const spawned = spawnSync(BIN, ["predict", "--json", "--weights", sized, file], { env, encoding: "utf8" });
  assert.equal(spawned.status, 0, spawned.stderr);
  compare("48x48 weights", r, JSON.parse(spawned.stdout.trim()));
  const shown = await page.evaluate(() => [
    document.getElementById("input").width,
    document.getElementById("input-caption").textContent,
  ]);
  assert.deepEqual(shown, [48, "48×48 network input"]);

  await loadWeightsFile(userWeights, /^user\.safetensors: WRN/);
  assert.equal(await page.evaluate(() => document.getElementById("input").width), 32);
});

test("an undecodable image shows its message and the page keeps working", async () => {
  const bad = path.join(tmp, "broken.png");
  fs.writeFileSync(bad, "this is not a PNG file\n");
  await page.setInputFiles("#image-file", bad);
  await page.waitForFunction(() => document.getElementById("message").dataset.kind === "error", null, {
    timeout: 60_000,
  });
  assert.match(await messageText(), /Could not decode “broken\.png” as an image/);

  const native = nativePredict([path.join(WEB, "samples/digit-9.png")]);
  const r = await clickSample("digit-9.png");
  compare("after undecodable image", r, native.get(path.join(WEB, "samples/digit-9.png")));
  assert.equal(await messageText(), "");
});

test("without WebGPU the page says so and still shows the network input", async () => {
  const ctx = await browser.newContext();
  await ctx.addInitScript(() => {
    delete Object.getPrototypeOf(navigator).gpu;
  });
  const p = await ctx.newPage();
  await p.goto(serverUrl);
  await p.waitForFunction(() => document.getElementById("message").dataset.kind === "error", null, {
    timeout: 60_000,
  });
  assert.match(await p.textContent("#message"), /WebGPU is not available in this browser/);
  await p.click('#samples button[data-file="digit-4.png"]');
  // The 32x32 preview is drawn without a GPU: some pixel is not black.
  await p.waitForFunction(() => {
    const d = document.getElementById("input").getContext("2d").getImageData(0, 0, 32, 32).data;
    return d.some((v, i) => i % 4 !== 3 && v > 0);
  });
  await ctx.close();
});

test("every WGSL entry point compiles into a pipeline in the browser at WebGPU's default limits", async () => {
  // naga (tests/shaders.rs) is more lenient than browsers' compilers: this catches WGSL only a
  // browser rejects, and workgroup memory beyond the 16 KiB default, in training kernels too.
  // The modules as the engine makes them (src/shaders.rs: Rust's constants prepended): one per
  // shaders/*.wgsl file, and conv2d.wgsl once more per other tile candidate of the tiled path
  // ("conv2d.wgsl#tilesN"), of which only the tiled entry points (the ones the tiles change)
  // are compiled here.
  const files = JSON.parse(await page.evaluate(async () => (await import("./pkg/adamatch_wgpu.js")).shaderSources()));
  const onDisk = fs.readdirSync(path.join(ROOT, "shaders")).filter((f) => f.endsWith(".wgsl")).sort();
  const plain = Object.keys(files).filter((f) => !f.includes("#")).sort();
  assert.deepEqual(plain, onDisk, "one module per shaders/*.wgsl file");
  const variants = Object.keys(files).filter((f) => f.includes("#"));
  assert.ok(variants.length >= 1 && variants.every((f) => f.startsWith("conv2d.wgsl#tiles")), variants.join(", "));
  // conv2d_subgroup.wgsl (appended to conv2d.wgsl by src/shaders.rs, needs the subgroup
  // feature) is the native CPU-adapter path only: the wasm32 build takes the tiled conv path and
  // never creates it. Chromium's Tint rejects its subgroupBroadcast calls outside subgroup-uniform
  // control flow, and with that diagnostic off SwiftShader's pipeline creation drops the device,
  // so it is left out here; tests/shaders.rs validates it with naga and tests/kernels checks it.
  const SUBGROUP_FILE = "conv2d_subgroup.wgsl";
  const untiled = (code) =>
    [...code.matchAll(/@compute[^{]*?fn\s+(\w+)/g)].filter(([, e]) => e.includes("_direct_") || e.endsWith("_reduce")).length;
  const problems = await page.evaluate(async ([files, subgroupFile]) => {
    const device = await (await navigator.gpu.requestAdapter()).requestDevice();
    const out = [];
    let entries = 0;
    const skipped = [];
    for (const [file, code] of Object.entries(files)) {
      if (file === subgroupFile) {
        skipped.push(file);
        continue;
      }
      const module = device.createShaderModule({ code });
      for (const m of (await module.getCompilationInfo()).messages) {
        if (m.type === "error") out.push(`${file}:${m.lineNum}:${m.linePos}: ${m.message}`);
      }
      for (const [, entryPoint] of code.matchAll(/@compute[^{]*?fn\s+(\w+)/g)) {
        if (file.includes("#") && (entryPoint.includes("_direct_") || entryPoint.endsWith("_reduce"))) continue;
        entries += 1;
        device.pushErrorScope("validation");
        try {
          await device.createComputePipelineAsync({ layout: "auto", compute: { module, entryPoint } });
        } catch (e) {
          out.push(`${file} ${entryPoint}: ${e.message}`);
        }
        const err = await device.popErrorScope();
        if (err) out.push(`${file} ${entryPoint}: ${err.message}`);
      }
    }
    device.destroy();
    return { out, entries, skipped };
  }, [files, SUBGROUP_FILE]);
  assert.deepEqual(problems.out, []);
  const expected = Object.entries(files)
    .filter(([file]) => !problems.skipped.includes(file))
    .reduce((n, [file, code]) => n + (code.match(/@compute/g) || []).length - (file.includes("#") ? untiled(code) : 0), 0);
  assert.equal(problems.entries, expected, "every @compute entry point found (a tile variant's direct and reduce ones left out)");
});

test("no uncaught errors in the page", () => {
  assert.deepEqual(demo.pageErrors, []);
});
