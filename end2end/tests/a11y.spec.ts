/**
 * Accessibility as a screen-reader or keyboard user meets it: an axe-core audit of the
 * join page and of a busy room (replies, reactions, a mention, a reply in progress, search
 * results, the phone layout) finds no serious or critical violation; after joining, focus
 * is in the composer and a skip link leads there; the log is reachable by keyboard and
 * PageUp/PageDown from the composer scroll it; "Load older messages" loads on a deliberate
 * press only, never because it got focus, and keeps focus.
 */
import { readFileSync } from "node:fs";
import type { Page } from "@playwright/test";
import { expect, messageItem, onlineEntry, openAndJoin, send, test, testWith } from "./server";
import { clientId, closeAll, connect, request, speaker } from "./stock";

test.afterEach(() => closeAll());

interface Violation {
  id: string;
  impact: string | null;
  help: string;
  nodes: { target: string[]; failureSummary?: string }[];
}

/** Runs axe-core (the npm package's browser build, injected into the page) and returns
 * its serious and critical violations, one readable line per element. */
async function seriousViolations(page: Page): Promise<string[]> {
  // The page as it settles: a message's actions fade in and out over 0.1 s as the pointer
  // or focus comes and goes, and axe measures colours as they are at that moment (a
  // button caught fading was once reported at a contrast of 1.02). Wait for every running
  // transition and animation to end (at most 3 s: the longest, a found message's flash,
  // lasts 2).
  await page.evaluate(() =>
    Promise.race([
      Promise.all(document.getAnimations().map((a) => a.finished.catch(() => undefined))),
      new Promise((settled) => setTimeout(settled, 3_000)),
    ]),
  );
  // Evaluated rather than added as a <script>: the page's Content-Security-Policy refuses
  // inline scripts, and it should stay that way.
  await page.evaluate(readFileSync(require.resolve("axe-core/axe.min.js"), "utf8"));
  const violations: Violation[] = await page.evaluate(async () => {
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const result = await (window as any).axe.run(document, {
      resultTypes: ["violations"],
    });
    return result.violations;
  });
  return violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .flatMap((v) =>
      v.nodes.map((n) => `${v.impact} ${v.id} (${v.help}) at ${n.target.join(" ")}: ${n.failureSummary}`),
    );
}

test("no serious axe violations on the join page or in a busy room, on a desktop and a phone", async ({
  openUser,
  server,
}) => {
  const guest = await openUser("guest");
  await expect(guest.page.locator("#banter")).toHaveAttribute("data-hydrated", "true");
  expect(await seriousViolations(guest.page), "the join page").toEqual([]);

  const alice = await openAndJoin(openUser, "alice");
  const bob = await openAndJoin(openUser, "bob");
  await expect(onlineEntry(alice.page, "bob")).toBeVisible();
  // Another room with unread messages, so the room list has a badge.
  const other = await connect(server.url, { transports: ["websocket"] });
  await request(other, "join", { name: "carol", room: "random" });
  for (const text of ["over here", "anyone?"]) {
    await request(other, "message", { room: "random", text, client_id: clientId("c") });
  }
  await send(alice.page, "hello @bob, see **this** and `code`");
  await send(bob.page, "> quoted\nthanks");
  const first = messageItem(bob.page, "hello @bob, see this and code");
  await expect(first).toHaveAttribute("data-status", "delivered");
  await first.hover();
  await first.getByRole("button", { name: "React", exact: true }).click();
  await bob.page.getByRole("button", { name: /👍/ }).first().click();
  await first.hover();
  await first.getByRole("button", { name: "Reply", exact: true }).click();
  await bob.page.getByLabel("Message", { exact: true }).fill("a reply in progress");
  expect(await seriousViolations(bob.page), "a room, replying").toEqual([]);

  await bob.page.getByRole("searchbox").fill("hello");
  await bob.page.getByRole("searchbox").press("Enter");
  await expect(bob.page.locator(".result-text").first()).toBeVisible();
  expect(await seriousViolations(bob.page), "search results").toEqual([]);

  await alice.page.setViewportSize({ width: 360, height: 740 });
  expect(await seriousViolations(alice.page), "a room on a phone").toEqual([]);
});

/** The seeder sends as fast as acks return: no message rate limits. */
const unlimited = testWith({ args: ["--message-rate", "0", "--ip-message-rate", "0"] });

unlimited("keyboard: focus starts in the composer, a skip link leads there, PageUp scrolls the log, Load older keeps focus", async ({
  openUser,
  server,
}) => {
  // Enough history for older pages and for PageUp to have somewhere to go.
  const say = await speaker(server.url, "seeder", "general");
  for (let n = 1; n <= 130; n++) await say(`history ${n}`);

  const alice = await openAndJoin(openUser, "alice");
  const page = alice.page;
  const composer = page.getByLabel("Message", { exact: true });
  const log = page.getByRole("log");
  await expect(composer, "focus is in the composer after joining").toBeFocused();
  await expect(log.locator("li.message")).toHaveCount(50);

  // The skip link: the first thing Tab reaches, and it leads to the composer.
  // From the top of the document, as on arriving at the page.
  await page.evaluate(() => {
    document.body.tabIndex = -1;
    document.body.focus();
    document.body.removeAttribute("tabindex");
  });
  await page.keyboard.press("Tab");
  const skip = page.getByRole("link", { name: "Skip to the message field" });
  await expect(skip).toBeFocused();
  await page.keyboard.press("Enter");
  await expect(composer).toBeFocused();

  // PageUp and PageDown from the composer scroll the log, and focus stays.
  const bottom = await log.evaluate((el) => el.scrollTop);
  await composer.press("PageUp");
  await expect.poll(() => log.evaluate((el) => el.scrollTop)).toBeLessThan(bottom - 100);
  await expect(composer).toBeFocused();
  await composer.press("PageDown");
  await expect.poll(() => log.evaluate((el) => el.scrollTop)).toBeGreaterThan(bottom - 10);

  // The log itself takes focus, to be scrolled with the arrow keys.
  await expect(log).toHaveAttribute("tabindex", "0");

  // Tabbing onto "Load older messages" loads nothing; pressing it loads one page and
  // focus stays on it.
  const older = page.getByRole("button", { name: "Load older messages", exact: true });
  await older.focus();
  await page.waitForTimeout(500);
  await expect(log.locator("li.message"), "focus alone loads nothing").toHaveCount(50);
  await page.keyboard.press("Enter");
  await expect(log.locator("li.message")).toHaveCount(100);
  await expect(log.locator("li.message").first()).toContainText("history 31");
  await expect(older, "focus stays on the button").toBeFocused();
  await expect(older).toBeEnabled();
  await page.keyboard.press("Enter");
  await expect(log.locator("li.message")).toHaveCount(130);
  await expect(log.locator("li.message").first()).toContainText("history 1");
});

test("a refused name stays in the field, which is tied to its error; a look-alike of a name online and mixed alphabets are refused", async ({
  openUser,
}) => {
  await openAndJoin(openUser, "Gwen");
  const mallory = await openUser("mallory");
  const page = mallory.page;
  const field = page.getByLabel("Name", { exact: true });
  await expect(field).not.toHaveAttribute("aria-invalid", /.*/);
  await field.fill("Gvven");
  await page.getByRole("button", { name: "Join", exact: true }).click();
  const error = page.getByRole("alert");
  await expect(error).toContainText("looks too much like");
  await expect(field, "what was typed is kept, to be corrected").toHaveValue("Gvven");
  await expect(field).toHaveAttribute("aria-invalid", "true");
  await expect(field).toHaveAccessibleDescription(/looks too much like/);
  // Mixed alphabets (a Cyrillic "а" in a Latin name): the server's refusal, at the field.
  await field.fill("m\u0430llory");
  await page.getByRole("button", { name: "Join", exact: true }).click();
  await expect(error).toContainText(/cannot mix (Latin and Cyrillic|Cyrillic and Latin) letters/);
  await expect(field).toHaveValue("m\u0430llory");
  await expect(field).toHaveAccessibleDescription(/cannot mix (Latin and Cyrillic|Cyrillic and Latin)/);
  // Corrected, it joins, and the field's error goes with the form.
  await field.fill("Gwendolyn");
  await page.getByRole("button", { name: "Join", exact: true }).click();
  await expect(page.getByLabel("Message", { exact: true })).toBeFocused();
});
