// node scripts/hydrates.cjs <url>: opens the page in Debian's Chromium (Playwright from
// end2end/node_modules) and waits until the wasm client has hydrated it and connected
// (`#banter[data-hydrated="true"][data-connection="online"]`). Exits 1 otherwise, with the
// page's errors. Used by scripts/check-watch.
const path = require("node:path");
const { chromium } = require(path.join(__dirname, "..", "end2end", "node_modules", "@playwright/test"));

const url = process.argv[2];
if (!url) {
  console.error("usage: node scripts/hydrates.cjs <url>");
  process.exit(2);
}

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const problems = [];
  try {
    const page = await browser.newPage();
    page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
    page.on("console", (m) => m.type() === "error" && problems.push(`console: ${m.text()}`));
    page.on("requestfailed", (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
    await page.goto(url, { timeout: 60_000 });
    await page.waitForSelector('#banter[data-hydrated="true"][data-connection="online"]', {
      timeout: 60_000,
    });
    console.log(`hydrated and connected: ${url}`);
  } catch (e) {
    console.error(`${url}: ${e.message}`);
    for (const p of problems) console.error(p);
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
})();
