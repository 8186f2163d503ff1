/**
 * What a reader is told without looking for it: messages that arrive below the view
 * while they are scrolled up are counted on an "N new messages" button that jumps down
 * to them; before the wasm arrives the join button says "Loading…", and a name typed
 * meanwhile survives hydration.
 */
import { expect, messageItem, openAndJoin, test, testWith } from "./server";
import { closeAll, speaker } from "./stock";

test.afterEach(() => closeAll());

/** The seeder sends as fast as acks return: no message rate limits. */
const unlimited = testWith({ args: ["--message-rate", "0", "--ip-message-rate", "0"] });

unlimited("messages arriving while scrolled up are counted, and the button jumps to them", async ({
  openUser,
  server,
}) => {
  const say = await speaker(server.url, "carol", "general");
  for (let n = 1; n <= 40; n++) await say(`earlier ${n}`);

  const bob = await openAndJoin(openUser, "bob");
  const page = bob.page;
  const log = page.getByRole("log");
  await expect(messageItem(page, "earlier 40")).toBeVisible();
  const jump = page.getByRole("button", { name: /new messages? ↓/ });

  // At the bottom, new messages simply show: no button.
  await say("while at the bottom");
  await expect(messageItem(page, "while at the bottom")).toBeInViewport();
  await expect(jump).toHaveCount(0);

  // Scrolled up, they are counted.
  await log.evaluate((el) => {
    el.scrollTop = el.scrollHeight / 3;
  });
  await say("new one");
  await expect(page.getByRole("button", { name: "1 new message ↓" })).toBeVisible();
  await say("new two");
  await expect(page.getByRole("button", { name: "2 new messages ↓" })).toBeVisible();
  await expect(messageItem(page, "new two")).not.toBeInViewport();

  // The button takes the reader down to them, and goes.
  await jump.click();
  await expect(messageItem(page, "new two")).toBeInViewport();
  await expect(jump).toHaveCount(0);

  // Scrolling down by oneself clears it too.
  await log.evaluate((el) => {
    el.scrollTop = 0;
  });
  await expect(log.locator("li.message")).toHaveCount(43);
  await log.evaluate((el) => {
    el.scrollTop = el.scrollHeight / 3;
  });
  await say("new three");
  await expect(page.getByRole("button", { name: "1 new message ↓" })).toBeVisible();
  await log.evaluate((el) => {
    el.scrollTop = el.scrollHeight;
  });
  await expect(jump).toHaveCount(0);
});

test("before the wasm arrives: the button says Loading…, and a name typed then is kept", async ({
  browser,
  server,
}) => {
  const context = await browser.newContext({ baseURL: server.url });
  const page = await context.newPage();
  // Hold the wasm back until the name is typed.
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  await page.route("**/*.wasm", async (route) => {
    await held;
    await route.continue();
  });
  await page.goto("/");
  const button = page.getByRole("button", { name: "Loading…" });
  await expect(button).toBeVisible();
  await expect(button).toBeDisabled();
  await page.getByLabel("Name", { exact: true }).fill("dora");
  release();
  await expect(page.locator("#banter")).toHaveAttribute("data-hydrated", "true");
  await expect(page.getByLabel("Name", { exact: true })).toHaveValue("dora");
  await page.getByRole("button", { name: "Join", exact: true }).click();
  await expect(page.getByLabel("Message", { exact: true })).toBeVisible();
  await expect(page.getByRole("list", { name: "Online" }).getByText("dora")).toBeVisible();
  await context.close();
});
