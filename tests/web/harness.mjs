// What the browser test files share: paths, the `serve` child, Chromium with WebGPU, native
// `predict --json`, and the page's classification result as scripts read it.

import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { createInterface } from "node:readline";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const BIN = process.env.ADAMATCH_BIN || path.join(ROOT, "target/debug/adamatch-wgpu");
export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
export const WEB = path.join(ROOT, "web");
export const OUT = path.join(ROOT, "target/web");
export const env = { ...process.env, XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR || os.tmpdir() };

export function requireFile(file, fix) {
  if (!fs.existsSync(file)) throw new Error(`${file} is missing: ${fix}`);
}

/// Fails early, naming the fix, when the binary, the browser or the bundle is missing.
export function requireSetup() {
  requireFile(BIN, "build it with `cargo build` (or set ADAMATCH_BIN)");
  requireFile(CHROMIUM, "install Debian's chromium (apt-get install -y chromium) or set CHROMIUM");
  requireFile(path.join(WEB, "pkg/adamatch_wgpu_bg.wasm"), "build the web bundle with scripts/build-web.sh");
  requireFile(path.join(WEB, "model.safetensors"), "the default weights are part of the repository");
  fs.mkdirSync(OUT, { recursive: true });
}

/// Native results for image files, keyed by path.
export function nativePredict(weights, files) {
  const r = spawnSync(BIN, ["predict", "--json", "--weights", weights, ...files], { env, encoding: "utf8" });
  assert.equal(r.status, 0, `native predict failed: ${r.stderr}`);
  const out = new Map();
  for (const line of r.stdout.trim().split("\n")) {
    const o = JSON.parse(line);
    out.set(o.file, o);
  }
  return out;
}

export function maxAbsDiff(a, b) {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/// `adamatch-wgpu serve` on a free port with `weights` as the page's default model.
export async function startServer(weights) {
  const child = spawn(BIN, ["serve", "--port", "0", "--weights", weights], {
    env,
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines = createInterface({ input: child.stdout });
  const first = await new Promise((resolve, reject) => {
    lines.once("line", resolve);
    child.once("exit", (code) => reject(new Error(`serve exited with ${code} before listening`)));
  });
  const m = /^serving (http:\/\/\S+)$/.exec(first);
  if (!m) throw new Error(`unexpected first line from serve: ${first}`);
  lines.on("line", () => {}); // keep draining
  return { child, url: m[1] };
}

/// Headless Chromium with WebGPU. Playwright gives every launch a fresh temporary profile
/// (user-data-dir). WebGPU is behind --enable-unsafe-webgpu on Linux; headless Chromium then
/// offers SwiftShader. The rest keeps a closed network quiet.
export function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--enable-unsafe-webgpu",
      "--no-sandbox",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
      "--disable-quic",
      "--disable-default-apps",
    ],
  });
}

/// A page of the demo at `url`, started up (WebGPU device, default weights, first sample
/// classified); uncaught errors and Content-Security-Policy violations go to `pageErrors`.
export async function openDemo(browser, url, pageErrors) {
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    console.log("browser console:", m.text());
    // Anything serve's Content-Security-Policy refused is a failure of the page.
    if (/Content Security Policy|CSP violation/.test(m.text())) pageErrors.push(m.text());
  });
  await page.addInitScript(() =>
    document.addEventListener("securitypolicyviolation", (e) =>
      console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`),
    ),
  );
  await page.goto(url);
  await page.waitForFunction(() => document.body.dataset.ready === "1", null, { timeout: 180_000 });
  const msg = await messageText(page);
  assert.equal(msg, "", `the page reported a problem at start-up: ${msg}`);
  return page;
}

export const currentRun = (page) => page.evaluate(() => Number(document.getElementById("result").dataset.run));

export const messageText = (page) =>
  page.evaluate(() => {
    const m = document.getElementById("message");
    return m.hidden ? "" : m.textContent;
  });

/// The result of the next classification (the #result run counter goes past `previousRun`).
export async function nextResult(page, previousRun) {
  await page.waitForFunction(
    (prev) => Number(document.getElementById("result").dataset.run) > prev,
    previousRun,
    { timeout: 120_000 },
  );
  return page.evaluate(() => {
    const d = document.getElementById("result").dataset;
    return {
      run: Number(d.run),
      source: d.source,
      className: d.className,
      shown: document.getElementById("digit").textContent,
      probs: JSON.parse(d.probs),
      logits: JSON.parse(d.logits),
      ms: Number(d.ms),
    };
  });
}

export async function clickSample(page, file) {
  const run = await currentRun(page);
  await page.click(`#samples button[data-file="${file}"]`);
  return nextResult(page, run);
}

/// The demo served with a copy of the default weights as the user's (`weights`, in a fresh
/// temporary folder `tmp`) and opened in a fresh browser: what each test file starts from.
export async function startDemo(prefix) {
  requireSetup();
  const demo = { pageErrors: [] };
  demo.tmp = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  demo.weights = path.join(demo.tmp, "user.safetensors");
  fs.copyFileSync(path.join(WEB, "model.safetensors"), demo.weights);
  ({ child: demo.server, url: demo.url } = await startServer(demo.weights));
  demo.browser = await launchBrowser();
  demo.page = await openDemo(demo.browser, demo.url, demo.pageErrors);
  return demo;
}

/// Closes what [`startDemo`] opened and writes `report` to target/web/`reportName`.
export async function stopDemo(demo, reportName, report) {
  await demo?.browser?.close();
  demo?.server?.kill();
  if (demo?.tmp) fs.rmSync(demo.tmp, { recursive: true, force: true });
  fs.mkdirSync(OUT, { recursive: true });
  fs.writeFileSync(path.join(OUT, reportName), JSON.stringify(report, null, 2) + "\n");
}
