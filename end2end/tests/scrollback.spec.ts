/**
 * Scrolling back through a long history: the page starts with the latest 50 messages and
 * loads 50 older ones per `history` request, by scrolling the log to the top or with
 * "Load older messages", until the first message; nothing is missing, doubled or out of
 * order, and the view stays where the reader was when a page is put above.
 */
import type { Locator, Page } from "@playwright/test";
import {
  expect,
  join,
  testWith,
} from "./server";
import { clientId, closeAll, connect, request, type WireMessage } from "./stock";

/** The seeder sends 1,000 messages as fast as acks return: no message rate limits. */
const test = testWith({ args: ["--message-rate", "0", "--ip-message-rate", "0"] });

test.afterEach(() => closeAll());

const ROOM = "scroll";
const TOTAL = 1_000;
const PAGE = 50;
const BATCH = 100;

function seqText(n: number): string {
  return `msg ${String(n).padStart(4, "0")}`;
}

/** Seeds `TOTAL` messages through the stock client, `BATCH` requests in flight at a time.
 * Returns the texts in id order. */
async function seed(url: string): Promise<string[]> {
  const socket = await connect(url, { transports: ["websocket"] });
  const joined = await request(socket, "join", { name: "seeder", room: ROOM });
  expect(joined, "the seeder joins").toMatchObject({ ok: true });
  const stored: WireMessage[] = [];
  for (let start = 1; start <= TOTAL; start += BATCH) {
    const batch: Promise<void>[] = [];
    for (let n = start; n < start + BATCH && n <= TOTAL; n++) {
      const text = seqText(n);
      batch.push(
        request(socket, "message", { room: ROOM, text, client_id: clientId("seed") }).then(
          (reply) => {
            expect(reply, `the ack for "${text}"`).toMatchObject({ ok: true, message: { text } });
            stored.push(reply.message as WireMessage);
          },
        ),
      );
    }
    await Promise.all(batch);
  }
  socket.disconnect();
  expect(new Set(stored.map((m) => m.id)).size, "every message got its own id").toBe(TOTAL);
  return stored.sort((a, b) => a.id - b.id).map((m) => m.text);
}

interface ScrollState {
  top: number;
  height: number;
  client: number;
}

async function scrollState(log: Locator): Promise<ScrollState> {
  return log.evaluate((el) => ({
    top: el.scrollTop,
    height: el.scrollHeight,
    client: el.clientHeight,
  }));
}

/** Whether the `li.message` with this text is (at least partly) inside the log's viewport. */
async function inView(page: Page, text: string): Promise<boolean> {
  return page.getByRole("log").evaluate((log, text) => {
    const item = [...log.querySelectorAll("li.message")].find(
      (li) => li.querySelector(".text")?.textContent?.trim() === text,
    );
    if (!item) return false;
    const a = log.getBoundingClientRect();
    const b = item.getBoundingClientRect();
    return b.bottom > a.top && b.top < a.bottom;
  }, text);
}

/** The first message wholly inside the log's viewport, and its distance from the log's
 * top edge in pixels. With `scrollToTop`, the log is first scrolled to its top in the same
 * task, so the answer is read before the scroll event (and the load it starts) can run. */
async function firstInView(
  page: Page,
  scrollToTop = false,
): Promise<{ text: string; offset: number } | null> {
  return page.getByRole("log").evaluate((log, scrollToTop) => {
    if (scrollToTop) log.scrollTop = 0;
    const a = log.getBoundingClientRect();
    for (const li of log.querySelectorAll("li.message")) {
      const b = li.getBoundingClientRect();
      if (b.top >= a.top && b.bottom <= a.bottom) {
        const text = li.querySelector(".text")?.textContent?.trim() ?? "";
        return { text, offset: b.top - a.top };
      }
    }
    return null;
  }, scrollToTop);
}

/** Where the message with this text is, in pixels from the log's top edge. */
async function offsetOf(page: Page, text: string): Promise<number | null> {
  return page.getByRole("log").evaluate((log, text) => {
    const item = [...log.querySelectorAll("li.message")].find(
      (li) => li.querySelector(".text")?.textContent?.trim() === text,
    );
    if (!item) return null;
    return item.getBoundingClientRect().top - log.getBoundingClientRect().top;
  }, text);
}

test("scrollback through 1,000 messages", async ({ openUser, server }) => {
  test.setTimeout(240_000);

  const expected = await seed(server.url);
  // Requests on one socket are handled in order, so ids follow the sequence numbers.
  expect(expected, "ids follow the order of sending").toEqual(
    Array.from({ length: TOTAL }, (_, i) => seqText(i + 1)),
  );

  const reader = await openUser("reader", { path: `/r/${ROOM}` });
  const page = reader.page;
  await join(page, "reader");

  const log = page.getByRole("log");
  const items = log.locator("li.message");
  const texts = log.locator("li.message .text");
  const older = page.getByRole("button", { name: "Load older messages", exact: true });

  // The latest 50, the newest at the bottom and in view.
  await expect(texts).toHaveText(expected.slice(-PAGE), { timeout: 20_000 });
  await expect(items.last()).toHaveAttribute("data-status", "delivered");
  await expect(older).toHaveCount(1);
  await expect
    .poll(async () => {
      const s = await scrollState(log);
      return s.height - s.client - s.top;
    }, { message: "the log starts scrolled to the bottom" })
    .toBeLessThan(2);
  expect(await inView(page, seqText(TOTAL)), "the newest message is in view").toBe(true);

  // Older pages are history, not news: the log is no live region while they go in (a
  // screen reader would otherwise read out fifty old messages at a time). What the log's
  // aria-live was at each insertion of messages is recorded here.
  await log.evaluate((el) => {
    const seen: (string | null)[] = [];
    (window as unknown as { liveAtInsert: (string | null)[] }).liveAtInsert = seen;
    new MutationObserver((records) => {
      const added = records.some((r) =>
        [...r.addedNodes].some((n) => n instanceof Element && n.matches("li.message")),
      );
      if (added) seen.push(el.getAttribute("aria-live"));
    }).observe(el, { childList: true, subtree: true });
  });

  let shown = PAGE;
  let pages = 0;
  while (shown < TOTAL) {
    pages += 1;
    expect(pages, "pages needed").toBeLessThanOrEqual(TOTAL / PAGE);
    const byScrolling = pages % 2 === 1;
    let anchor: { text: string; offset: number } | null;
    if (byScrolling) {
      // The reader scrolls to the top of the log, which loads the page before; what was in
      // view is read before that page can come in above it.
      anchor = await firstInView(page, true);
    } else {
      // The reader, scrolled up but not at the top, clicks "Load older messages" (as a
      // DOM click: Playwright's click() would scroll the button, at the very top of the
      // log, into view first, and each such scroll to the top loads a page by itself).
      await expect(older).toBeEnabled();
      expect((await scrollState(log)).top, "not at the top before clicking").toBeGreaterThan(100);
      // What the reader is looking at now.
      anchor = await firstInView(page);
    }
    expect(anchor, "a message is in view").not.toBeNull();
    if (byScrolling) {
      expect(anchor!.text, "at the top, the oldest message shown is in view").toBe(
        expected[TOTAL - shown],
      );
    } else {
      await older.dispatchEvent("click");
    }

    const next = Math.min(TOTAL, shown + PAGE);
    await expect(items, `page ${pages}: ${next} messages shown`).toHaveCount(next, {
      timeout: 20_000,
    });
    await expect(texts.first()).toHaveText(expected[TOTAL - next]);
    shown = next;

    // The page went in above what the reader was looking at without moving it, and the
    // view did not jump down to the newest message.
    await expect
      .poll(() => offsetOf(page, anchor!.text), {
        message:
          `page ${pages}: "${anchor!.text}" stays where it was in the log's viewport ` +
          `(${Math.round(anchor!.offset)} px from its top) after older messages load`,
      })
      .toBeCloseTo(anchor!.offset, -1);
    const s = await scrollState(log);
    expect(
      s.height - s.client - s.top,
      `page ${pages}: distance from the bottom (scrollTop ${s.top}, ` +
        `scrollHeight ${s.height}, clientHeight ${s.client})`,
    ).toBeGreaterThan(s.client);
    expect(await inView(page, seqText(TOTAL)), "the newest message is out of view").toBe(false);
    // Exactly one page per request: nothing more arrives by itself.
    if (shown < TOTAL) {
      await expect(older).toBeEnabled();
      await expect(items).toHaveCount(shown);
    }
  }
  expect(pages).toBe(TOTAL / PAGE - 1);

  // The first message is there: nothing older to load.
  await expect(older).toHaveCount(0, { timeout: 20_000 });

  const liveAtInsert = await page.evaluate(
    () => (window as unknown as { liveAtInsert: (string | null)[] }).liveAtInsert,
  );
  expect(liveAtInsert.length, "older pages were inserted").toBeGreaterThanOrEqual(pages);
  expect(
    liveAtInsert.every((live) => live === "off"),
    `the log was quiet at every insertion of older messages (${JSON.stringify(liveAtInsert)})`,
  ).toBe(true);
  // And it is a live region again afterwards, for what is said next.
  await expect(log).not.toHaveAttribute("aria-live", "off");

  // All 1,000, each once, in order, all delivered, with increasing ids.
  expect(await texts.allTextContents().then((all) => all.map((t) => t.trim()))).toEqual(
    expected,
  );
  const ids = await items.evaluateAll((lis) =>
    lis.map((li) => Number(li.getAttribute("data-id"))),
  );
  expect(ids.length).toBe(TOTAL);
  expect(
    ids.every((id, i) => Number.isInteger(id) && id > 0 && (i === 0 || id > ids[i - 1])),
    "ids strictly increase down the log",
  ).toBe(true);
  await expect(log.locator('li.message:not([data-status="delivered"])')).toHaveCount(0);

  // Scrolling to the top again asks for nothing more and changes nothing.
  await log.evaluate((el) => {
    el.scrollTop = 10;
  });
  await log.evaluate((el) => {
    el.scrollTop = 0;
  });
  await expect(older).toHaveCount(0);
  await expect(items).toHaveCount(TOTAL);
  await expect(texts.first()).toHaveText(expected[0]);
});
