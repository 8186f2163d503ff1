/**
 * Abuse limits as a person sees them: the web client slows down when the server says
 * so, shows it, and loses nothing; a name stays with its owner across a reconnect.
 */
import {
  expect,
  join,
  messageItem,
  onlineEntry,
  openAndJoin,
  send,
  testWith,
  waitHydrated,
  waitOnline,
} from "./server";

/**
 * A server allowing one message per second after a burst of two, and announcing a
 * dropped connection as gone 200 ms after it drops (10 s by default).
 */
const test = testWith({
  args: ["--message-rate", "1", "--message-burst", "2", "--departure-grace-ms", "200"],
});

test("sending faster than allowed: the client waits as told, says so, and delivers all in order", async ({
  openUser,
}) => {
  const alice = await openAndJoin(openUser, "alice");
  const bob = await openAndJoin(openUser, "bob");
  const texts = ["one", "two", "three", "four", "five", "six"];
  for (const text of texts) await send(alice.page, text);

  const banner = alice.page.locator(".banner.throttled");
  await expect(banner).toBeVisible();
  await expect(banner).toContainText("faster than this server allows");
  // Still-pending messages show as such, not as failed.
  await expect(alice.page.locator('li.message[data-status="failed"]')).toHaveCount(0);

  for (const page of [alice.page, bob.page]) {
    await expect(page.getByRole("log").locator("li.message .text")).toHaveText(texts, {
      timeout: 20_000,
    });
  }
  for (const text of texts) {
    await expect(messageItem(alice.page, text)).toHaveAttribute("data-status", "delivered");
  }
  await expect(banner).toBeHidden();
  // Sent once each.
  await expect(bob.page.getByRole("log").locator("li.message")).toHaveCount(texts.length);
});

test("a name is kept for its owner while she reconnects, and nobody else can take it", async ({
  openUser,
}) => {
  const alice = await openAndJoin(openUser, "alice");
  const bob = await openAndJoin(openUser, "bob");
  await expect(onlineEntry(bob.page, "alice")).toBeVisible();

  // alice's tab goes away; her name stays hers for a while.
  const context = alice.context;
  await alice.page.close();
  await expect(onlineEntry(bob.page, "alice")).toBeHidden();

  const impostor = await openUser("impostor");
  await impostor.page.getByLabel("Name", { exact: true }).fill("ALICE");
  await impostor.page.getByRole("button", { name: "Join", exact: true }).click();
  await expect(impostor.page.getByRole("alert")).toContainText("already using the name");
  await expect(impostor.page.getByLabel("Message", { exact: true })).toBeHidden();

  // Back in the same browser: she is alice again at once, and can speak.
  const page = await context.newPage();
  await page.goto("/");
  await waitHydrated(page);
  await waitOnline(page);
  await expect(page.getByLabel("Message", { exact: true })).toBeVisible();
  await expect(onlineEntry(bob.page, "alice")).toBeVisible();
  await send(page, "it is still me");
  await expect(messageItem(bob.page, "it is still me").locator(".author")).toHaveText("alice");

  // The impostor picks another name and is fine.
  await join(impostor.page, "not-alice");
  await expect(onlineEntry(bob.page, "not-alice")).toBeVisible();
});
