import {
  test,
  expect,
  messageItem,
  onlineEntry,
  openAndJoin,
  send,
  waitHydrated,
  waitOnline,
} from "./server";

test("after a reload the name, the room, the history and the members are back", async ({
  openUser,
}) => {
  const alice = await openAndJoin(openUser, "alice");
  const bob = await openAndJoin(openUser, "bob");
  await send(alice.page, "first from alice");
  await expect(messageItem(bob.page, "first from alice")).toHaveCount(1);
  await send(bob.page, "and one from bob");
  await expect(messageItem(alice.page, "and one from bob")).toHaveCount(1);
  await expect(messageItem(alice.page, "first from alice")).toHaveAttribute(
    "data-status",
    "delivered",
  );

  expect(await alice.page.evaluate(() => localStorage.getItem("banter.name"))).toBe("alice");

  await alice.page.reload();
  await waitHydrated(alice.page);
  await waitOnline(alice.page);

  // No form to fill: she is back under her name.
  await expect(alice.page.getByLabel("Message", { exact: true })).toBeVisible();
  await expect(alice.page.getByRole("heading", { name: /general/ })).toBeVisible();
  await expect(onlineEntry(alice.page, "alice")).toBeVisible();
  await expect(onlineEntry(alice.page, "bob")).toBeVisible();

  // The history, in order, with authors.
  const texts = alice.page.getByRole("log").locator("li.message .text");
  await expect(texts).toHaveText(["first from alice", "and one from bob"]);
  await expect(messageItem(alice.page, "first from alice").locator(".author")).toHaveText(
    "alice",
  );
  await expect(messageItem(alice.page, "and one from bob").locator(".author")).toHaveText("bob");
  await expect(messageItem(alice.page, "first from alice")).toHaveAttribute(
    "data-status",
    "delivered",
  );

  // bob still sees her as online, and the conversation goes on.
  await expect(onlineEntry(bob.page, "alice")).toBeVisible();
  await send(alice.page, "back after a reload");
  await expect(messageItem(bob.page, "back after a reload").locator(".author")).toHaveText(
    "alice",
  );
  await send(bob.page, "welcome back");
  await expect(messageItem(alice.page, "welcome back")).toHaveCount(1);
});
