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
  // No retries: a test that fails once fails the run. (scrollback.spec.ts was flaky for a
  // while: the view was put back by its distance from the bottom, which moved whenever a
  // line below changed height; it is now anchored on the message at the top of the view.)
  retries: 0,
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
