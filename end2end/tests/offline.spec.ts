/**
 * Messages written while the connection is down: the outbox keeps them as pending, in
 * order, and delivers each exactly once when the connection comes back, also across a
 * reload of the page (the outbox lives in localStorage `banter.outbox.<room>`).
 */
import {
  test,
  expect,
  messageItem,
  onlineEntry,
  openAndJoin,
  reconnectBanner,
  recordStatuses,
  recordedStatuses,
  send,
  waitHydrated,
  waitOnline,
  type User,
} from "./server";
import type { BrowserContext, Page } from "@playwright/test";

// A stop, a restart, the client's back-off (up to ~15 s with jitter) and a reload fit in this.
test.describe.configure({ timeout: 150_000 });

const OUTBOX_KEY = "banter.outbox.general";

/** The texts of every `li.message` in the log, top to bottom. */
function logTexts(page: Page) {
  return page.getByRole("log").locator("li.message .text");
}

/** The texts kept in alice's localStorage outbox (empty when the key is absent). */
async function outboxTexts(page: Page): Promise<string[] | "unreadable"> {
  return page.evaluate((key) => {
    const raw = localStorage.getItem(key);
    if (raw === null) return [];
    try {
      return (JSON.parse(raw) as { text: string }[]).map((m) => m.text);
    } catch {
      return "unreadable" as const;
    }
  }, OUTBOX_KEY);
}

interface Attempt {
  at: number;
  error?: string;
  /** Frames received. */
  frames: number;
  /** Socket.IO events sent, by name. */
  sent: string[];
  /** Whether a `join` sent on this socket carried `since`. */
  joinedWithSince: boolean;
}

/** Records every WebSocket the page opens: when, whether it failed, what went over it. */
function trackSockets(page: Page): Attempt[] {
  const attempts: Attempt[] = [];
  page.on("websocket", (ws) => {
    const attempt: Attempt = { at: Date.now(), frames: 0, sent: [], joinedWithSince: false };
    attempts.push(attempt);
    ws.on("socketerror", (error) => (attempt.error = error));
    ws.on("framereceived", () => (attempt.frames += 1));
    ws.on("framesent", (frame) => {
      const match = /^42\d*\["([^"]+)",(.*)\]$/s.exec(String(frame.payload));
      if (!match) return;
      attempt.sent.push(match[1]);
      if (match[1] === "join" && /"since"/.test(match[2])) attempt.joinedWithSince = true;
    });
  });
  return attempts;
}

/**
 * Before every document of the context loads, starts recording each `data-status` value
 * of each `li.message` (the same record as `recordStatuses`, read by `recordedStatuses`),
 * so the first state of rows restored right after a reload is seen too; and keeps the
 * texts the outbox held as the document started (`outboxAtLoad`).
 */
async function recordStatusesFromLoad(context: BrowserContext): Promise<void> {
  await context.addInitScript((key) => {
    const w = window as unknown as {
      __statusLog?: { el: Element; status: string | null }[];
      __outboxAtLoad?: string[];
    };
    try {
      const raw = localStorage.getItem(key);
      w.__outboxAtLoad = raw === null ? [] : (JSON.parse(raw) as { text: string }[]).map((m) => m.text);
    } catch {
      w.__outboxAtLoad = [];
    }
    const entries: { el: Element; status: string | null }[] = [];
    w.__statusLog = entries;
    const record = (el: Element) => entries.push({ el, status: el.getAttribute("data-status") });
    new MutationObserver((mutations) => {
      for (const m of mutations) {
        if (m.type === "attributes") {
          const el = m.target as Element;
          if (el.matches("li.message")) record(el);
          continue;
        }
        m.addedNodes.forEach((node) => {
          if (!(node instanceof Element)) return;
          if (node.matches("li.message")) record(node);
          node.querySelectorAll("li.message").forEach(record);
        });
      }
    }).observe(document, {
      subtree: true,
      childList: true,
      attributes: true,
      attributeFilter: ["data-status"],
    });
  }, OUTBOX_KEY);
}

/** The texts the outbox held when the current document started (`recordStatusesFromLoad`). */
async function outboxAtLoad(page: Page): Promise<string[]> {
  return page.evaluate(
    () => (window as unknown as { __outboxAtLoad?: string[] }).__outboxAtLoad ?? [],
  );
}

/** Each text is shown exactly once on `page`. */
async function expectOnceEach(page: Page, texts: string[], timeout = 10_000) {
  for (const text of texts) {
    await expect(messageItem(page, text), `"${text}" shown exactly once`).toHaveCount(1, {
      timeout,
    });
  }
}

/** A message from `from` that `to` receives proves the room is live again; duplicates of
 * anything sent earlier would have arrived before it. */
async function roundTrip(from: User, to: User, text: string) {
  await send(from.page, text);
  await expect(messageItem(from.page, text)).toHaveAttribute("data-status", "delivered", {
    timeout: 20_000,
  });
  await expect(messageItem(to.page, text)).toHaveCount(1, { timeout: 20_000 });
}

test("messages written offline are delivered once, in order", async ({ openUser, server }) => {
  const alice = await openAndJoin(openUser, "alice");
  const bob = await openAndJoin(openUser, "bob");
  await expect(onlineEntry(alice.page, "bob")).toBeVisible();
  await roundTrip(alice, bob, "before");
  const aliceSockets = trackSockets(alice.page);

  // Make the connection really drop (offline emulation alone may keep an open WebSocket),
  // and keep alice's browser offline so she cannot come back before we say so.
  await server.stop();
  await alice.context.setOffline(true);
  await expect(reconnectBanner(alice.page)).toBeVisible({ timeout: 15_000 });
  await expect(alice.page.locator("#banter")).not.toHaveAttribute("data-connection", "online");

  await recordStatuses(alice.page);
  const texts = ["one", "two", "three"];
  for (const text of texts) await send(alice.page, text);

  // Shown at once, in the order written, all pending.
  await expect(logTexts(alice.page)).toHaveText(["before", ...texts]);
  for (const text of texts) {
    await expect(messageItem(alice.page, text)).toHaveAttribute("data-status", "pending");
    await expect(messageItem(alice.page, text).locator(".author")).toHaveText("alice");
  }
  expect(await outboxTexts(alice.page), "the outbox is persisted, in order").toEqual(texts);

  // The server comes back; bob reconnects by himself, alice is still offline.
  await server.restart();
  const restartedAt = Date.now();
  await expect(reconnectBanner(bob.page)).toBeHidden({ timeout: 30_000 });
  await waitOnline(bob.page, 5_000);
  await expect(onlineEntry(bob.page, "bob")).toBeVisible();
  await expect(onlineEntry(bob.page, "alice")).toHaveCount(0, { timeout: 15_000 });
  // alice's client tries again meanwhile, and fails: her browser is offline.
  await expect
    .poll(() => aliceSockets.some((a) => a.at >= restartedAt && a.error !== undefined), {
      message: "a reconnection attempt by alice fails while her browser is offline",
      timeout: 30_000,
    })
    .toBe(true);
  await expect(reconnectBanner(alice.page)).toBeVisible();
  for (const text of texts) {
    await expect(messageItem(alice.page, text)).toHaveAttribute("data-status", "pending");
    await expect(messageItem(bob.page, text)).toHaveCount(0);
  }

  // alice's network comes back: her client reconnects, rejoins and empties the outbox.
  await alice.context.setOffline(false);
  await expect(reconnectBanner(alice.page)).toBeHidden({ timeout: 30_000 });
  await waitOnline(alice.page, 5_000);
  for (const text of texts) {
    await expect(messageItem(alice.page, text)).toHaveAttribute("data-status", "delivered", {
      timeout: 20_000,
    });
  }
  await expect(logTexts(alice.page)).toHaveText(["before", ...texts]);
  for (const text of texts) {
    const seen = await recordedStatuses(alice.page, text);
    expect(seen, `statuses of "${text}"`).toEqual(["pending", "delivered"]);
  }
  // The server's ids follow the order of writing.
  const ids = await alice.page
    .getByRole("log")
    .locator("li.message")
    .evaluateAll((items) => items.map((li) => Number(li.getAttribute("data-id"))));
  expect(
    ids.every((id, i) => Number.isInteger(id) && id > 0 && (i === 0 || id > ids[i - 1])),
    `ids in log order: ${JSON.stringify(ids)}`,
  ).toBe(true);

  await expectOnceEach(bob.page, texts, 20_000);
  for (const text of texts) {
    await expect(messageItem(bob.page, text).locator(".author")).toHaveText("alice");
  }
  await expect(onlineEntry(bob.page, "alice")).toBeVisible();

  // Anything sent twice would have reached bob before this.
  await roundTrip(alice, bob, "after");
  await roundTrip(bob, alice, "welcome back");
  const all = ["before", ...texts, "after", "welcome back"];
  await expect(logTexts(bob.page)).toHaveText(all);
  await expect(logTexts(alice.page)).toHaveText(all);
  expect(await outboxTexts(alice.page)).toEqual([]);

  // Someone new sees the same history, once and in order.
  const carol = await openAndJoin(openUser, "carol");
  await expect(logTexts(carol.page)).toHaveText(all);
});

test("a reload while messages are pending still sends them", async ({ openUser, server }) => {
  const alice = await openAndJoin(openUser, "alice");
  const bob = await openAndJoin(openUser, "bob");
  await expect(onlineEntry(alice.page, "bob")).toBeVisible();
  await roundTrip(alice, bob, "before");
  const aliceSockets = trackSockets(alice.page);
  await recordStatusesFromLoad(alice.context);

  await server.stop();
  await expect(reconnectBanner(alice.page)).toBeVisible({ timeout: 15_000 });

  const texts = ["first while down", "second while down"];
  for (const text of texts) await send(alice.page, text);
  await expect(logTexts(alice.page)).toHaveText(["before", ...texts]);
  for (const text of texts) {
    await expect(messageItem(alice.page, text)).toHaveAttribute("data-status", "pending");
  }
  expect(await outboxTexts(alice.page), "the outbox is persisted, in order").toEqual(texts);

  // Back up, and alice reloads at once: the old page may or may not have reconnected
  // (and sent, and been acknowledged) by then; either way each message must end up
  // stored exactly once.
  await server.restart();
  await alice.page.reload();
  await waitHydrated(alice.page);
  // What the reloaded page found in the outbox is what the old page had not had
  // acknowledged. (The old page's sockets are a hint only: a frame sent just before the
  // reload may never be reported.)
  const restored = await outboxAtLoad(alice.page);
  const oldPageSent = aliceSockets.some((a) => a.joinedWithSince && a.sent.includes("message"));
  test.info().annotations.push({
    type: "race",
    description: `the reloaded page found ${JSON.stringify(restored)} in the outbox${
      oldPageSent ? "; the old page had reconnected and sent" : ""
    }`,
  });
  await waitOnline(alice.page, 30_000);

  // She is back under her name, without the join form, and the outbox went out.
  await expect(alice.page.getByLabel("Message", { exact: true })).toBeVisible({
    timeout: 30_000,
  });
  await expect(onlineEntry(alice.page, "alice")).toBeVisible();
  for (const text of texts) {
    await expect(messageItem(alice.page, text)).toHaveAttribute("data-status", "delivered", {
      timeout: 30_000,
    });
  }
  await expectOnceEach(alice.page, texts);
  await expect(logTexts(alice.page)).toHaveText(["before", ...texts]);
  // What the reloaded page restored from the outbox it showed as pending first, then
  // delivered; what the old page had delivered it shows as delivered from the start.
  for (const text of texts) {
    const seen = await recordedStatuses(alice.page, text);
    expect(seen, `statuses of "${text}" on the reloaded page`).toEqual(
      restored.includes(text) ? ["pending", "delivered"] : ["delivered"],
    );
  }

  await expect(reconnectBanner(bob.page)).toBeHidden({ timeout: 30_000 });
  await expectOnceEach(bob.page, texts, 30_000);
  for (const text of texts) {
    await expect(messageItem(bob.page, text).locator(".author")).toHaveText("alice");
  }

  // Anything sent twice would have reached bob before this.
  await roundTrip(alice, bob, "after the reload");
  const all = ["before", ...texts, "after the reload"];
  await expect(logTexts(bob.page)).toHaveText(all);
  await expect(logTexts(alice.page)).toHaveText(all);

  // Nothing is left in the outbox, so another reload sends nothing again.
  await expect
    .poll(() => outboxTexts(alice.page), { message: `localStorage["${OUTBOX_KEY}"]` })
    .toEqual([]);
  await alice.page.reload();
  await waitHydrated(alice.page);
  await waitOnline(alice.page);
  await expect(logTexts(alice.page)).toHaveText(all, { timeout: 20_000 });
  await expect(
    alice.page.getByRole("log").locator('li.message:not([data-status="delivered"])'),
  ).toHaveCount(0);
  await roundTrip(alice, bob, "and once more");
  await expect(logTexts(bob.page)).toHaveText([...all, "and once more"]);
});
