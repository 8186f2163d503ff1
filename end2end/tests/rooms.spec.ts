import { test, expect, messageItem, onlineEntry, openAndJoin, send } from "./server";
import { closeAll, connect, request } from "./stock";

test.afterEach(() => closeAll());

test("a room is its own URL, and its messages stay in it", async ({ openUser }) => {
  const dev = await openAndJoin(openUser, "alice", { path: "/r/dev-team" });
  await expect(dev.page.getByRole("heading", { name: /dev-team/ })).toContainText("dev-team");
  await expect(dev.page.getByRole("heading", { name: /general/ })).toHaveCount(0);

  const dev2 = await openAndJoin(openUser, "carol", { path: "/r/dev-team" });
  const general = await openAndJoin(openUser, "bob", { path: "/" });
  await expect(general.page.getByRole("heading", { name: /general/ })).toContainText("general");

  await expect(onlineEntry(dev.page, "carol")).toBeVisible();

  await send(dev.page, "only for the dev team");
  await expect(messageItem(dev2.page, "only for the dev team")).toHaveCount(1);
  await expect(messageItem(dev2.page, "only for the dev team").locator(".author")).toHaveText(
    "alice",
  );

  // Something sent in #general after it arrives in #general; by then the dev-team
  // message would have arrived too, had it leaked.
  const other = await openAndJoin(openUser, "dave", { path: "/" });
  await send(other.page, "general chatter");
  await expect(messageItem(general.page, "general chatter")).toHaveCount(1);
  await expect(messageItem(general.page, "only for the dev team")).toHaveCount(0);
  await expect(messageItem(dev.page, "general chatter")).toHaveCount(0);
  await expect(messageItem(dev2.page, "general chatter")).toHaveCount(0);

  // Presence is per room too.
  await expect(onlineEntry(general.page, "dave")).toBeVisible();
  await expect(onlineEntry(dev.page, "bob")).toHaveCount(0);
  await expect(onlineEntry(dev.page, "dave")).toHaveCount(0);
  await expect(onlineEntry(general.page, "alice")).toHaveCount(0);
  await expect(onlineEntry(general.page, "carol")).toHaveCount(0);

  // A newcomer to #general gets #general's history only.
  const late = await openAndJoin(openUser, "erin", { path: "/" });
  await expect(messageItem(late.page, "general chatter")).toHaveCount(1);
  await expect(messageItem(late.page, "only for the dev team")).toHaveCount(0);
});

test("moving between rooms from the room list keeps the name and the page; Back and Forward move too", async ({
  openUser,
}) => {
  const alice = await openAndJoin(openUser, "alice");
  const page = alice.page;
  // Gone if the page is loaded again: rooms change in place.
  await page.evaluate(() => ((window as unknown as { samePage: boolean }).samePage = true));
  const samePage = () =>
    page.evaluate(() => (window as unknown as { samePage?: boolean }).samePage === true);
  await send(page, "said in general");
  const rooms = page.getByRole("navigation", { name: "Rooms" });
  await expect(rooms.getByRole("link", { name: /general/ })).toBeVisible();

  // A new room from the form: alice is in it at once, under her name.
  await rooms.getByLabel("Room name", { exact: true }).fill("dev-team");
  await rooms.getByRole("button", { name: "Create", exact: true }).click();
  await expect(page).toHaveURL(/\/r\/dev-team$/);
  await expect(page.getByRole("heading", { name: /dev-team/ })).toBeVisible();
  await expect(page.getByLabel("Message", { exact: true })).toBeVisible();
  await expect(onlineEntry(page, "alice")).toBeVisible();
  await expect(messageItem(page, "said in general")).toHaveCount(0);
  await send(page, "said in dev-team");
  await expect(messageItem(page, "said in dev-team")).toHaveAttribute("data-status", "delivered");
  await expect(rooms.getByRole("link", { name: /dev-team/ })).toBeVisible();

  // Back to #general through its link: its history, not dev-team's.
  await rooms.getByRole("link", { name: /general/ }).click();
  await expect(page.getByRole("heading", { name: /general/ })).toBeVisible();
  await expect(page.getByLabel("Message", { exact: true })).toBeVisible();
  await expect(messageItem(page, "said in general")).toHaveCount(1);
  await expect(messageItem(page, "said in dev-team")).toHaveCount(0);
  expect(await samePage(), "the room list's link changed the room in place").toBe(true);

  // Back: dev-team again, with its history; Forward: general.
  await page.goBack();
  await expect(page).toHaveURL(/\/r\/dev-team$/);
  await expect(page.getByRole("heading", { name: /dev-team/ })).toBeVisible();
  await expect(messageItem(page, "said in dev-team")).toHaveCount(1);
  await expect(messageItem(page, "said in general")).toHaveCount(0);
  await page.goForward();
  await expect(page).toHaveURL(/\/r\/general$/);
  await expect(page.getByRole("heading", { name: /general/ })).toBeVisible();
  await expect(messageItem(page, "said in general")).toHaveCount(1);
  expect(await samePage(), "Back and Forward changed the room in place").toBe(true);

  // An invalid room name is refused in place.
  await rooms.getByLabel("Room name", { exact: true }).fill("Not a room!");
  await rooms.getByRole("button", { name: "Create", exact: true }).click();
  await expect(rooms.getByRole("alert")).toBeVisible();
  await expect(page.getByRole("heading", { name: /general/ })).toBeVisible();
});

test("after leaving, the join form links the other rooms, and the name goes along", async ({
  openUser,
  server,
}) => {
  const elsewhere = await connect(server.url, { transports: ["websocket"] });
  const joined = await request(elsewhere, "join", { name: "carol", room: "random" });
  expect(joined.ok).toBe(true);

  const bob = await openAndJoin(openUser, "bob");
  const page = bob.page;
  await expect(
    page.getByRole("navigation", { name: "Rooms" }).getByRole("link", { name: /random/ }),
  ).toBeVisible();
  await page.getByRole("button", { name: "Leave", exact: true }).click();
  await page
    .getByRole("group", { name: "Leave #general?" })
    .getByRole("button", { name: "Leave room" })
    .click();
  await expect(page.getByLabel("Name", { exact: true })).toHaveValue("bob");

  const others = page.getByRole("navigation", { name: "Or go to another room" });
  const random = others.getByRole("listitem").filter({ hasText: "# random" });
  await expect(random).toContainText("1 online");
  await expect(others.getByRole("link", { name: /general/ }), "not the room just left").toHaveCount(0);
  await random.getByRole("link").click();
  await expect(page).toHaveURL(/\/r\/random$/);
  await expect(page.getByRole("heading", { name: /random/ })).toBeVisible();
  // A new page state, but the same tab: the name is offered there too.
  await expect(page.getByLabel("Name", { exact: true })).toHaveValue("bob");
  await page.getByRole("button", { name: "Join", exact: true }).click();
  await expect(page.getByLabel("Message", { exact: true })).toBeFocused();
  await expect(onlineEntry(page, "carol")).toBeVisible();
});
