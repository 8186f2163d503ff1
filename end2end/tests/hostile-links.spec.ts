/**
 * Hostile text cannot freeze the page: a room flooded with messages built to make link
 * detection slow (`https://a` followed by thousands of `)`, which took 1.7 s to render
 * 30 of with a quadratic detector) renders, the page stays usable while they keep coming,
 * and the log keeps a bounded number of messages in the DOM (older ones leave and come
 * back as history when the reader scrolls up).
 */
import {
  expect,
  messageItem,
  openAndJoin,
  send,
  testWith,
} from "./server";
import { clientId, closeAll, connect, request } from "./stock";

/** The flooder sends as fast as acks return: no message rate limits. */
const test = testWith({ args: ["--message-rate", "0", "--ip-message-rate", "0"] });

test.afterEach(() => closeAll());

/** 4,000 characters: the longest text a message may have. */
const HOSTILE = "https://a" + ")".repeat(3_991);
/** Past the page's bound (400 messages, cut back once 100 more have arrived). */
const FLOOD = 600;
const MAX_IN_DOM = 500;

test("a room flooded with hostile links stays usable and bounded", async ({ openUser, server }) => {
  test.setTimeout(120_000);
  const flooder = await connect(server.url, { transports: ["websocket"] });
  expect(await request(flooder, "join", { name: "flooder", room: "general" })).toMatchObject({
    ok: true,
  });
  // A history of them first: what the page renders when it opens.
  for (let n = 0; n < 40; n++) {
    const reply = await request(flooder, "message", {
      room: "general",
      text: `${HOSTILE.slice(0, 3_990)} ${n}`,
      client_id: clientId("history"),
    });
    expect(reply, `history message ${n}`).toMatchObject({ ok: true });
  }

  const alice = await openAndJoin(openUser, "alice");
  const page = alice.page;
  await expect(page.locator("li.message").first(), "the history renders").toBeVisible();
  await expect(page.locator("li.message a").first()).toHaveAttribute("href", "https://a");

  // Then a flood while she is there, 20 in flight at a time.
  for (let start = 0; start < FLOOD; start += 20) {
    await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        request(flooder, "message", {
          room: "general",
          text: `${HOSTILE.slice(0, 3_990)} live ${start + i}`,
          client_id: clientId("flood"),
        }).then((reply) => expect(reply).toMatchObject({ ok: true })),
      ),
    );
  }
  const last = `${HOSTILE.slice(0, 3_990)} live ${FLOOD - 1}`;
  await expect(messageItem(page, last), "the last of the flood is shown").toBeVisible({
    timeout: 20_000,
  });

  // The page answers at once: a message typed now goes out and comes back delivered.
  await send(page, "still here");
  await expect(messageItem(page, "still here")).toHaveAttribute("data-status", "delivered");
  const count = await page.locator("li.message").count();
  expect(count, "older messages left the DOM").toBeLessThanOrEqual(MAX_IN_DOM);
  expect(count, "the newest stay").toBeGreaterThanOrEqual(400);

  // Scrolling up brings the older ones back, page by page. The reader's own scrolling,
  // not a click on "Load older messages": to click it Playwright scrolls it into view,
  // which loads a page by itself and moves the button away from under the pointer (the
  // log keeps the reader's place), so the click raced the page it had just asked for
  // (a11y.spec.ts presses the button from the keyboard).
  await expect(page.getByRole("button", { name: "Load older messages" })).toBeVisible();
  await page.getByRole("log").evaluate((log) => {
    log.scrollTop = 0;
  });
  await expect
    .poll(() => page.locator("li.message").count(), { message: "a page came back" })
    .toBeGreaterThan(count);
});
