// Drives the gateway's live page in headless Chromium at 1280 px, as a user would, and prints
// what it saw as one JSON object on stdout; tests/it/ui.rs starts the gateway and the worker,
// stores the failed job, and checks the report. Any step that does not happen in time throws,
// and the process exits non-zero with the reason on stderr.
//
// Environment: OFFLOAD_UI_URL (the gateway, http://host:port), OFFLOAD_UI_JOB (the id of a
// failed job that succeeds when retried), OFFLOAD_UI_TOKEN (the gateway's admin token),
// OFFLOAD_UI_SCREENSHOT (where to write the PNG), CHROMIUM (the browser's executable).

import { chromium } from "playwright-core";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const base = env("OFFLOAD_UI_URL");
const job = env("OFFLOAD_UI_JOB");
const token = env("OFFLOAD_UI_TOKEN");
const screenshot = env("OFFLOAD_UI_SCREENSHOT");

// Long enough for a debug build on a busy two-core machine; each step usually takes ~1 s.
const STEP = 30_000;

const browser = await chromium.launch({
  executablePath: env("CHROMIUM"),
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  const consoleErrors = [];
  page.on("console", (m) => {
    if (m.type() === "error") consoleErrors.push({ text: m.text(), url: m.location().url });
  });
  page.on("pageerror", (e) => consoleErrors.push({ text: String(e), url: "pageerror" }));

  await page.goto(`${base}/ui`, { waitUntil: "load", timeout: STEP });
  await page.waitForFunction(() => document.getElementById("strategy").textContent !== "…",
    null, { timeout: STEP });
  const strategy = await page.textContent("#strategy");
  // Filled on the first read: the backlog in seconds of work.
  await page.waitForFunction(() => document.getElementById("q-timed").textContent !== "—",
    null, { timeout: STEP });
  const backlog = await page.textContent("#q-backlog");

  // Every chart has drawn samples: rates need two reads, so a few seconds.
  await page.waitForFunction(() => [...document.querySelectorAll("canvas")]
    .every((c) => Number(c.dataset.points) >= 3), null, { timeout: STEP });
  // Pixels painted at all (grid, scale, lines), and those in a colour of the chart's series.
  const colours = { throughput: ["--done", "--answered", "--accepted", "--refused"], health: ["--health"] };
  const canvases = await page.evaluate((colours) => Object.fromEntries(
    [...document.querySelectorAll("canvas")].map((c) => {
      const css = getComputedStyle(document.documentElement);
      const rgb = colours[c.id].map((v) => {
        const hex = css.getPropertyValue(v).trim().slice(1);
        return [0, 2, 4].map((i) => parseInt(hex.slice(i, i + 2), 16));
      });
      const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      let painted = 0, line = 0;
      for (let i = 0; i < data.length; i += 4) {
        if (data[i + 3] === 0) continue;
        painted++;
        const near = rgb.some(([r, g, b]) =>
          Math.abs(data[i] - r) + Math.abs(data[i + 1] - g) + Math.abs(data[i + 2] - b) < 24);
        if (near && data[i + 3] > 200) line++;
      }
      return [c.id, { points: Number(c.dataset.points), painted, line, width: c.width }];
    })), colours);

  // The failed job is listed on the default tab, with its Retry button.
  const row = page.locator(`tr[data-id="${job}"]`);
  await row.waitFor({ state: "visible", timeout: STEP });
  const listed = {
    status: await row.locator("td.status").textContent(),
    error: await row.locator("td.error").textContent(),
  };

  // No token entered: the server's 401 message is shown, and the job stays failed.
  await row.locator('button[data-action="retry"]').click();
  await page.waitForFunction(() => document.getElementById("message").textContent.includes("401"),
    null, { timeout: STEP });
  const refused = await page.textContent("#message");
  const afterRefusal = await page.evaluate(async (id) =>
    (await (await fetch(`/jobs/${id}`)).json()).status, job);

  // With the token: requeued, and the page follows it until it is done.
  await page.fill("#token", token);
  await row.locator('button[data-action="retry"]').click();
  await page.waitForFunction(() => document.getElementById("message").textContent.startsWith("Requeued"),
    null, { timeout: STEP });
  const requeued = await page.textContent("#message");
  await page.waitForSelector('#tracked[data-status="done"]', { timeout: STEP });
  const tracked = await page.textContent("#tracked");

  // A look at the done jobs, then the picture.
  await page.click('.tabs button[data-status="done"]');
  await page.locator(`tr[data-id="${job}"]`).waitFor({ state: "visible", timeout: STEP });
  const tokenKept = await page.evaluate(() => sessionStorage.getItem("offload-admin-token"));
  await page.screenshot({ path: screenshot, fullPage: true });

  const report = {
    strategy,
    backlog,
    canvases,
    listed,
    refused,
    after_refusal: afterRefusal,
    requeued,
    tracked,
    token_kept: tokenKept === token,
    console_errors: consoleErrors,
    screenshot,
  };
  process.stdout.write(JSON.stringify(report) + "\n");
} finally {
  await browser.close();
}
