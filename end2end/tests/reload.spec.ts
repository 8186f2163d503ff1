import {
  test,
  expect,
  messageItem,
  notice,
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
  // The reload was not announced: leaving and coming back within the grace is silent
  // (notices arrive in order, so any would be in by now).
  await expect(messageItem(bob.page, "back after a reload")).toHaveCount(1);
  await expect(notice(bob.page, "alice left")).toHaveCount(0);
  await expect(notice(bob.page, "alice joined")).toHaveCount(0);
});

test("a returning visitor is drawn the room by the server, never a join form that goes away", async ({
  openUser,
  server,
}) => {
  const alice = await openAndJoin(openUser, "alice");
  const page = alice.page;
  const cookies = async () => (await alice.context.cookies()).filter((c) => c.name === "banter_returning");
  expect((await cookies()).map((c) => c.value), "the returning cookie, and no name in it").toEqual(["1"]);
  const html = await (await page.request.get("/")).text();
  expect(html, "the server draws the room").toContain('id="message"');
  expect(html).not.toContain('id="name"');
  // Without the cookie (a first visit): the join form.
  const fresh = await (await fetch(server.url)).text();
  expect(fresh).toContain('id="name"');
  expect(fresh).not.toContain('id="message"');

  // With the wasm held back, what the server sent is the room: no join form at any time.
  let release = () => {};
  const held = new Promise<void>((resolve) => (release = resolve));
  await page.route("**/*.wasm", async (route) => {
    await held;
    await route.continue();
  });
  await page.reload({ waitUntil: "domcontentloaded" });
  await expect(page.getByLabel("Message", { exact: true })).toBeVisible();
  await expect(page.getByLabel("Name", { exact: true })).toHaveCount(0);
  release();
  await waitHydrated(page);
  await waitOnline(page);
  await send(page, "back without a form");
  await expect(messageItem(page, "back without a form")).toHaveAttribute("data-status", "delivered");
  await expect(page.getByLabel("Name", { exact: true })).toHaveCount(0);

  // Leaving takes the cookie away: the next visit starts at the join form.
  await page.getByRole("button", { name: "Leave", exact: true }).click();
  await page.getByRole("group", { name: "Leave #general?" }).getByRole("button", { name: "Leave room" }).click();
  await expect(page.getByLabel("Name", { exact: true })).toBeVisible();
  expect(await cookies()).toEqual([]);
  await page.reload();
  await waitHydrated(page);
  await expect(page.getByLabel("Name", { exact: true })).toBeVisible();
  await expect(page.getByLabel("Message", { exact: true })).toHaveCount(0);
});
