// Browser training throughput against native `train` on this machine, in one run: the same
// preset, seed and built-in data, images/s of the steady state (after warm-up steps, which
// include pipeline compilation) on each side, and their ratio. Run by scripts/bench-web.sh:
//
//   scripts/bench-web.sh [--preset tiny] [--steps 6] [--warmup 2] [--conv-path tiled]
//
// --conv-path is passed to the native side only (the browser always runs the tiled path): with
// `tiled` the two sides run the same kernels. Both sides adapt from the first step
// (`--source-steps 0`): the algorithm's own step is timed. Prints one JSON line; writes it to
// target/web/bench-train.json too.

import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { BIN, OUT, WEB, env, requireSetup, startServer, launchBrowser } from "./harness.mjs";

const { values: args } = parseArgs({
  options: {
    preset: { type: "string", default: "tiny" },
    steps: { type: "string", default: "6" },
    warmup: { type: "string", default: "2" },
    "conv-path": { type: "string" },
  },
});
const steps = Number(args.steps);
const warmup = Number(args.warmup);
if (!(steps >= 1 && warmup >= 1)) throw new Error("--steps and --warmup must be at least 1");

requireSetup();
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "adamatch-bench-web-"));
const { child: server, url } = await startServer(path.join(WEB, "model.safetensors"));
const browser = await launchBrowser();
let browserResult;
try {
  const page = await browser.newPage();
  await page.goto(url);
  browserResult = await page.evaluate(
    async ([preset, steps, warmup]) => {
      const wasm = await import("./pkg/adamatch_wgpu.js");
      await wasm.default();
      // The longest the page's main thread went without running a 10 ms timer: while the
      // trainer is created (data generation, pipelines) and while it trains.
      let last = performance.now();
      let gap = 0;
      const ticker = setInterval(() => {
        const now = performance.now();
        gap = Math.max(gap, now - last);
        last = now;
      }, 10);
      const phase = async (f) => {
        gap = 0;
        last = performance.now();
        const r = await f();
        await new Promise((resolve) => setTimeout(resolve, 20));
        return [r, gap];
      };
      const [t, createGap] = await phase(() => wasm.WebTrainer.create({ preset, steps: steps + warmup, sourceSteps: 0 }));
      await t.step(warmup);
      const t0 = performance.now();
      const [m, stepGap] = await phase(() => t.step(steps));
      const s = (performance.now() - t0) / 1e3;
      clearInterval(ticker);
      return {
        adapter: t.adapter,
        images_per_s: m.images_per_s,
        step_ms: (1e3 * s) / steps,
        main_thread_max_block_ms: { create: createGap, steps: stepGap },
      };
    },
    [args.preset, steps, warmup],
  );
} finally {
  await browser.close();
  server.kill();
}

// Native: a log line every `warmup` steps; the first interval holds pipeline compilation, the
// mean of the others is the steady state.
const dir = path.join(tmp, "native");
const total = warmup + steps;
const flags = ["train", "--preset", args.preset, "--steps", String(total), "--log-every", String(warmup),
  "--eval-every", String(10 * total), "--bn-calibration", "0", "--source-steps", "0", "--no-progress", "--out", dir];
if (args["conv-path"]) flags.push("--conv-path", args["conv-path"]);
const r = spawnSync(BIN, flags, { env, encoding: "utf8" });
if (r.status !== 0) throw new Error(`native train failed: ${r.stderr}`);
const lines = fs
  .readFileSync(path.join(dir, "metrics.jsonl"), "utf8")
  .trim()
  .split("\n")
  .map((l) => JSON.parse(l))
  .filter((o) => o.kind === "train");
// Intervals after the first, by time: images/s = all steps / the sum of each interval's
// steps / its rate (the images per step cancel).
let stepCount = 0;
let time = 0;
for (let i = 1; i < lines.length; i++) {
  const n = lines[i].step - lines[i - 1].step;
  stepCount += n;
  time += n / lines[i].images_per_s;
}
const native = {
  images_per_s: stepCount / time,
  steps: lines.at(-1).step - lines[0].step,
  conv_path: args["conv-path"] || "the adapter's default",
};
fs.rmSync(tmp, { recursive: true, force: true });

const result = {
  preset: args.preset,
  steps,
  warmup,
  browser: browserResult,
  native,
  browser_over_native: browserResult.images_per_s / native.images_per_s,
};
fs.mkdirSync(OUT, { recursive: true });
fs.writeFileSync(path.join(OUT, "bench-train.json"), JSON.stringify(result, null, 2) + "\n");
console.log(JSON.stringify(result));
