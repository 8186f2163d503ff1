import { defineConfig, devices } from "@playwright/test";

/**
 * End-to-end tests for Banter.
 *
 * Every test starts its own server from the release binary (see tests/server.ts), so
 * there is no `webServer` block here: build first (`scripts/build-release` at the root), then
 * run `npx playwright test` in this folder. `BANTER_BIN` overrides the binary's path.
 *
 * Chromium is Debian's (/usr/bin/chromium); Playwright's own browser downloads are not
 * used. `CHROMIUM_PATH` overrides the path.
 */
export default defineConfig({
  testDir: "./tests",
  outputDir: "test-results",
  // The machine has 2 cores; the server, the browser and the test runner share them.
  workers: 1,
  fullyParallel: false,
  // One retry, reported as "flaky" in the output: scrollback.spec.ts fails about one run in
  // three since the conversation UI landed (after a "Load older messages" click the view
  // lands about 22 px off, at page 12 to 16; cause not found yet, rate limits ruled out).
  // A test that fails twice in a row still fails the run. Back to 0 once that is fixed.
  retries: 1,
  forbidOnly: !!process.env.CI,
  reporter: "list",
  timeout: 60_000,
  expect: { timeout: 10_000 },
  use: {
    headless: true,
    actionTimeout: 10_000,
    navigationTimeout: 20_000,
    trace: "retain-on-failure",
    screenshot: "only-on-failure",
  },
  projects: [
    {
      name: "chromium",
      use: {
        ...devices["Desktop Chrome"],
        launchOptions: {
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
        },
      },
    },
  ],
});
