/**
 * Unread counts as a new user and a regular meet them: rooms never joined carry no badge;
 * a joined room's badge comes as soon as a message arrives there (pushed, not polled), in
 * the room list and the tab title; visiting the room reads it.
 */
import { expect, openAndJoin, test } from "./server";
import { closeAll, speaker } from "./stock";

test.afterEach(() => closeAll());

test("badges only for joined rooms, pushed at once, read by a visit", async ({ openUser, server }) => {
  const carol = await speaker(server.url, "carol", "dev");
  for (const text of ["one", "two", "three"]) await carol(text);

  const bob = await openAndJoin(openUser, "bob");
  const page = bob.page;
  const rooms = page.getByRole("navigation", { name: "Rooms" });
  const dev = rooms.getByRole("listitem").filter({ hasText: "# dev" });
  await expect(dev).toBeVisible({ timeout: 15_000 });
  // Never joined: three messages there, and no badge, no count in the title.
  await expect(dev.locator(".unread")).toHaveCount(0);
  await expect(page).toHaveTitle("#general · Banter");

  // Joined once, then back in #general: a new message in #dev shows at once.
  await dev.getByRole("link").click();
  await expect(page).toHaveURL(/\/r\/dev$/);
  await expect(page.getByLabel("Message", { exact: true })).toBeVisible();
  await rooms.getByRole("link", { name: /# general/ }).click();
  await expect(page.getByRole("heading", { name: /general/ })).toBeVisible();
  await expect(page.getByLabel("Message", { exact: true })).toBeVisible();
  await expect(dev.locator(".unread")).toHaveCount(0);
  await carol("four");
  // Rooms are polled every 10 s as a fallback; the push is what brings it within 3 s.
  await expect(dev.locator(".unread")).toHaveText("1, 1 unread", { timeout: 3_000 });
  await expect(page).toHaveTitle("(1) #general · Banter");
  await carol("five");
  await expect(dev.locator(".unread")).toHaveText("2, 2 unread", { timeout: 3_000 });

  // Visiting reads them.
  await dev.getByRole("link").click();
  await expect(page.getByRole("log").locator("li.message").last()).toContainText("five");
  await expect(page).toHaveTitle("#dev · Banter");
  await rooms.getByRole("link", { name: /# general/ }).click();
  await expect(page.getByLabel("Message", { exact: true })).toBeVisible();
  await expect(dev.locator(".unread")).toHaveCount(0);
});
