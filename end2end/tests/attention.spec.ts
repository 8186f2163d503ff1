/**
 * What a reader is told without looking for it: messages that arrive below the view
 * while they are scrolled up are counted on an "N new messages" button that jumps down
 * to them; coming back to a room, a "new since you left" line marks the first message that
 * arrived meanwhile; before the wasm arrives the join button says "Loading…", and a name
 * typed meanwhile survives hydration.
 */
import type { Locator } from "@playwright/test";
import { expect, join, messageItem, openAndJoin, send, test, testWith } from "./server";
import { clientId, closeAll, connect, request, speaker, type WireMessage } from "./stock";

test.afterEach(() => closeAll());

/** Scrolls the log to `fraction` of its height, and waits two frames for the page's
 * scroll handler. */
async function scrollLog(log: Locator, fraction: number): Promise<void> {
  await log.evaluate((el, f) => {
    el.scrollTop = el.scrollHeight * f;
    return new Promise<void>((done) => requestAnimationFrame(() => requestAnimationFrame(() => done())));
  }, fraction);
}

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

  // Scrolled up, they are counted. (The page learns of a scroll from its scroll event, at
  // the next frame: a message may otherwise arrive first, as it could not for a person.)
  await scrollLog(log, 1 / 3);
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
  await scrollLog(log, 1 / 3);
  await say("new three");
  await expect(page.getByRole("button", { name: "1 new message ↓" })).toBeVisible();
  await log.evaluate((el) => {
    el.scrollTop = el.scrollHeight;
  });
  await expect(jump).toHaveCount(0);
});

unlimited("coming back to a room, a line marks what is new since one left, and the view starts there", async ({
  openUser,
  server,
}) => {
  const say = await speaker(server.url, "carol", "general");
  for (let n = 1; n <= 3; n++) await say(`before ${n}`);

  const bob = await openAndJoin(openUser, "bob");
  const page = bob.page;
  const line = page.getByRole("separator", { name: "New since you left" });
  await expect(messageItem(page, "before 3")).toBeVisible();
  await expect(line, "a first visit has nothing to mark").toHaveCount(0);
  // The read mark is saved (it is written a moment after the messages are seen).
  await page.waitForFunction(() => /"read":3\b/.test(localStorage.getItem("banter.rooms") ?? ""));

  // Away: more arrives than the log shows at once.
  await page.goto("about:blank");
  for (let n = 1; n <= 40; n++) await say(`while away ${n}`);
  await page.goto("/");
  await expect(messageItem(page, "while away 40")).toBeAttached({ timeout: 20_000 });
  await expect(line).toHaveCount(1);
  // Right above the first message that arrived while away, below the last one seen.
  const around = await page.locator("li.new-since").evaluate((li) => [
    li.previousElementSibling?.textContent ?? "",
    li.nextElementSibling?.textContent ?? "",
  ]);
  expect(around[0]).toContain("before 3");
  expect(around[1]).toContain("while away 1");
  expect(around[1]).not.toContain("while away 10");
  // The view starts at the line, and the newest message is below it.
  await expect(line).toBeInViewport();
  await expect(messageItem(page, "while away 40")).not.toBeInViewport();
  await expect(page.getByLabel("Message", { exact: true })).toBeFocused();

  // A message arriving now goes below, with no second line.
  await say("live");
  await expect(page.getByRole("button", { name: "1 new message ↓" })).toBeVisible();
  await expect(line).toHaveCount(1);

  // Having seen all of it, a reload has nothing new to mark.
  await page.waitForFunction(() => /"read":44\b/.test(localStorage.getItem("banter.rooms") ?? ""));
  await page.reload();
  await expect(messageItem(page, "live")).toBeVisible({ timeout: 20_000 });
  await expect(page.locator("#banter")).toHaveAttribute("data-connection", "online");
  await expect(line).toHaveCount(0);
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

unlimited("a reply's quote opens its original though it is far back and not loaded, with its neighbours", async ({
  openUser,
  server,
}) => {
  const socket = await connect(server.url, { transports: ["websocket"] });
  expect((await request(socket, "join", { name: "carol", room: "general" })).ok).toBe(true);
  const say = async (text: string, reply_to?: number) => {
    const reply = await request(socket, "message", { room: "general", text, client_id: clientId("c"), reply_to });
    expect(reply.ok, text).toBe(true);
    return (reply.message as WireMessage).id;
  };
  const original = await say("the plan, far back");
  for (let n = 1; n <= 30; n++) await say(`after the plan ${n}`);
  for (let n = 1; n <= 60; n++) await say(`filler ${n}`);
  await say("about that plan", original);

  const bob = await openAndJoin(openUser, "bob");
  const page = bob.page;
  const reply = messageItem(page, "about that plan");
  await expect(reply.locator(".quote-excerpt")).toHaveText("the plan, far back");
  await expect(messageItem(page, "the plan, far back"), "not loaded yet").toHaveCount(0);

  await reply.locator(".quote").click();
  const found = messageItem(page, "the plan, far back");
  await expect(found).toHaveClass(/focused/, { timeout: 10_000 });
  await expect(found).toBeInViewport();
  // Its neighbours came with it, and the log still ends with the newest message.
  await expect(messageItem(page, "after the plan 1")).toHaveCount(1);
  await expect(messageItem(page, "after the plan 5")).toHaveCount(1);
  await expect(page.getByRole("log").locator("li.message").last()).toContainText("about that plan");
});

test("a mention while the tab is hidden: a desktop notification, asked for on a click; @ counts in the title and room list", async ({
  browser,
  openUser,
  server,
}) => {
  const alice = await openAndJoin(openUser, "alice");
  const context = await browser.newContext({ baseURL: server.url });
  // A stand-in for the browser's Notification API and page visibility, recording use.
  await context.addInitScript(() => {
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const w = window as any;
    w.__notes = [];
    w.__asked = 0;
    w.__hidden = false;
    class FakeNotification {
      static permission = "default";
      static requestPermission() {
        w.__asked++;
        FakeNotification.permission = "granted";
        return Promise.resolve("granted");
      }
      onclick: unknown = null;
      constructor(title: string, options?: { body?: string; tag?: string }) {
        w.__notes.push({ title, body: options?.body, tag: options?.tag });
      }
      close() {}
    }
    w.Notification = FakeNotification;
    Object.defineProperty(document, "hidden", { get: () => w.__hidden });
    Object.defineProperty(document, "visibilityState", {
      get: () => (w.__hidden ? "hidden" : "visible"),
    });
  });
  const page = await context.newPage();
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const probe = (what: "__notes" | "__asked") => page.evaluate((key) => (window as any)[key], what);
  const setHidden = (hidden: boolean) =>
    page.evaluate((h) => {
      // eslint-disable-next-line @typescript-eslint/no-explicit-any
      (window as any).__hidden = h;
      document.dispatchEvent(new Event("visibilitychange", { bubbles: true }));
    }, hidden);
  await page.goto("/");
  await join(page, "bob");

  // Never asked on load: a button asks, on a click, and goes once answered.
  expect(await probe("__asked")).toBe(0);
  const optIn = page.getByRole("button", { name: "Notify me when mentioned" });
  await optIn.click();
  await expect(optIn).toHaveCount(0);
  expect(await probe("__asked")).toBe(1);

  // Visible: a mention is marked in the log, and notifies nobody.
  await send(alice.page, "@bob while you look");
  await expect(messageItem(page, "@bob while you look")).toHaveClass(/\bmention\b/);
  expect(await probe("__notes")).toEqual([]);

  // Hidden: the mention notifies, once; another message does not; both are counted.
  await setHidden(true);
  await send(alice.page, "just chatting");
  await send(alice.page, "@bob can you review?");
  await expect(page).toHaveTitle("(2 · @1) #general · Banter");
  await expect.poll(() => probe("__notes")).toEqual([
    { title: "alice in #general", body: "@bob can you review?", tag: expect.stringMatching(/^general\/\d+$/) },
  ]);
  const current = page.getByRole("navigation", { name: "Rooms" }).locator("li.current");
  await expect(current.locator(".mention-count")).toHaveText("@1, 1 mentioning you");

  // Back: read, the counts go.
  await setHidden(false);
  await expect(page).toHaveTitle("#general · Banter");
  await expect(current.locator(".mention-count")).toHaveCount(0);
  await context.close();
});

unlimited("a search result in another room opens that room at the message, with its neighbours", async ({
  openUser,
  server,
}) => {
  const say = await speaker(server.url, "carol", "ops");
  await say("the deploy key is in the vault");
  for (let n = 1; n <= 80; n++) await say(`ops filler ${n}`);

  // bob has been in #ops; he searches from #general.
  const bob = await openAndJoin(openUser, "bob", { path: "/r/ops" });
  const page = bob.page;
  await expect(messageItem(page, "ops filler 80")).toBeVisible();
  await page.goto("/");
  await expect(page.getByRole("heading", { name: /general/ })).toBeVisible();
  await expect(page.getByLabel("Message", { exact: true })).toBeVisible();

  const found = page.getByRole("region", { name: "Search results" }).locator(".result");
  await page.getByLabel("Search messages").fill("vault");
  await expect(async () => {
    await page.getByRole("button", { name: "Search", exact: true }).click();
    await expect(found).toHaveCount(1, { timeout: 1_500 });
  }).toPass({ intervals: [500], timeout: 15_000 });
  await expect(found.locator(".result-room")).toHaveText("#ops");
  await found.click();

  await expect(page).toHaveURL(/\/r\/ops\?at=\d+$/);
  const message = messageItem(page, "the deploy key is in the vault");
  await expect(message).toHaveClass(/focused/, { timeout: 10_000 });
  await expect(message).toBeInViewport();
  await expect(messageItem(page, "ops filler 1")).toHaveCount(1);
  // The newest messages are there too, below a gap that fills on scrolling.
  await expect(messageItem(page, "ops filler 80")).toHaveCount(1);
});
