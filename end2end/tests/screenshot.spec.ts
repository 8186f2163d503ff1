/**
 * A realistic two-person conversation on a phone and on a desktop: the phone layout must
 * fit (no sideways scrolling, composer on screen). Both views are attached to the test's
 * results. Only `scripts/screenshots` (BANTER_DOCS_SCREENSHOTS=1) writes them to the
 * README's ../docs/screenshot.png and ../docs/screenshot-mobile.png: a test run never
 * rewrites tracked files.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { test, expect, messageItem, onlineEntry, openAndJoin, send } from "./server";

const DOCS = path.resolve(__dirname, "..", "..", "docs");
const writeDocs = process.env.BANTER_DOCS_SCREENSHOTS === "1";

const conversation: [who: "alice" | "bob", text: string][] = [
  ["alice", "Morning Bob! Did the 2.3 release go out?"],
  ["bob", "Yep, shipped at 9:40. No errors in the logs so far."],
  ["alice", "Great work. Can you post the changelog in #announcements?"],
  ["bob", "On it. Lunch at the usual place afterwards?"],
  ["alice", "Sounds good, 12:30 then."],
];

test("screenshots of a conversation, on a phone and on a desktop", async ({ openUser }) => {
  const alice = await openAndJoin(openUser, "alice", { viewport: { width: 1280, height: 800 } });
  const bob = await openAndJoin(openUser, "bob", {
    viewport: { width: 390, height: 844 },
    deviceScaleFactor: 2,
  });
  await expect(onlineEntry(alice.page, "bob")).toBeVisible();

  for (const [who, text] of conversation) {
    const from = who === "alice" ? alice.page : bob.page;
    const to = who === "alice" ? bob.page : alice.page;
    await send(from, text);
    await expect(messageItem(to, text)).toHaveCount(1);
    await expect(messageItem(from, text)).toHaveAttribute("data-status", "delivered");
  }

  // The phone layout fits the phone: no sideways scrolling, composer on screen.
  const phone = bob.page;
  const overflow = await phone.evaluate(
    () => document.documentElement.scrollWidth - document.documentElement.clientWidth,
  );
  expect(overflow, "horizontal overflow at 390 px, in px").toBeLessThanOrEqual(0);
  for (const el of [
    phone.getByLabel("Message", { exact: true }),
    phone.getByRole("button", { name: "Send", exact: true }),
    messageItem(phone, conversation[conversation.length - 1][1]),
  ]) {
    await expect(el).toBeInViewport();
    const box = (await el.boundingBox())!;
    expect(box.x).toBeGreaterThanOrEqual(0);
    expect(box.x + box.width).toBeLessThanOrEqual(390 + 0.5);
  }

  // bob starts an answer, so the desktop view shows the typing indicator.
  await bob.page.getByLabel("Message", { exact: true }).pressSequentially("See you th", {
    delay: 30,
  });
  await expect(alice.page.locator(".typing")).toContainText("bob is typing…");
  // No focus ring on the desktop composer.
  await alice.page.evaluate(() => (document.activeElement as HTMLElement | null)?.blur());

  const desktopShot = await alice.page.screenshot({ animations: "disabled", caret: "hide" });
  const phoneShot = await phone.screenshot({ animations: "disabled", caret: "hide" });
  await test.info().attach("desktop.png", { body: desktopShot, contentType: "image/png" });
  await test.info().attach("phone.png", { body: phoneShot, contentType: "image/png" });
  if (writeDocs) {
    fs.mkdirSync(DOCS, { recursive: true });
    fs.writeFileSync(path.join(DOCS, "screenshot.png"), desktopShot);
    fs.writeFileSync(path.join(DOCS, "screenshot-mobile.png"), phoneShot);
  }
});
