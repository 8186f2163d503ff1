import { test, expect, join, openAndJoin, send, messageItem, waitHydrated } from "./server";

// The release build puts the room's views in a wasm module of their own
// (app/src/components/room_code.rs, xtask/src/split.rs): a first visit downloads the join
// form's code, and the room's module comes once the visitor starts joining.
const ROOM_MODULE = /\/pkg\/split_room\.wasm$/;

test("a first visit fetches the room's code only once the visitor starts joining", async ({
  openUser,
}) => {
  const alice = await openUser("alice");
  const fetched: string[] = [];
  alice.page.on("request", (request) => {
    if (ROOM_MODULE.test(new URL(request.url()).pathname)) fetched.push(request.url());
  });
  // Hydrated and connected, the join form idle: nothing of the room yet.
  await alice.page.waitForTimeout(500);
  expect(fetched).toEqual([]);

  const roomModule = alice.page.waitForRequest((r) => ROOM_MODULE.test(new URL(r.url()).pathname));
  await alice.page.getByLabel("Name", { exact: true }).focus();
  await roomModule;
  await join(alice.page, "alice");
  await send(alice.page, "the room works");
  await expect(messageItem(alice.page, "the room works")).toHaveAttribute(
    "data-status",
    "delivered",
  );
  expect(fetched).toHaveLength(1);
});

test("a returning visitor's page asks for the room's code beside the main module, once", async ({
  openUser,
}) => {
  const dave = await openAndJoin(openUser, "dave");
  const fetched: string[] = [];
  const preloadWarnings: string[] = [];
  dave.page.on("request", (request) => {
    if (ROOM_MODULE.test(new URL(request.url()).pathname)) fetched.push(request.url());
  });
  dave.page.on("console", (msg) => {
    if (/preload/i.test(msg.text())) preloadWarnings.push(msg.text());
  });
  const response = await dave.page.reload();
  const html = (await response?.text()) ?? "";
  // In the server's page, before any script ran.
  expect(html).toMatch(/<link rel="preload" href="[^"]*\/pkg\/split_room\.wasm" as="fetch" crossorigin="anonymous"/);
  await waitHydrated(dave.page);
  await send(dave.page, "hydrated with the preloaded room");
  await expect(messageItem(dave.page, "hydrated with the preloaded room")).toHaveAttribute(
    "data-status",
    "delivered",
  );
  // The link module's fetch took the preloaded response: one request, and no warning
  // that the preload went unused.
  expect(fetched).toHaveLength(1);
  await dave.page.waitForTimeout(3500);
  expect(preloadWarnings).toEqual([]);
});

test("when the room's code cannot be downloaded the page says so, and Try again brings the room", async ({
  openUser,
}) => {
  const bob = await openUser("bob");
  await bob.page.route(ROOM_MODULE, (route) => route.abort("connectionfailed"));
  await bob.page.getByLabel("Name", { exact: true }).fill("bob");
  await bob.page.getByRole("button", { name: "Join", exact: true }).click();

  // Joined (the chat goes on without the room's views), but the room cannot be drawn.
  await expect(bob.page.getByRole("alert")).toHaveText(
    "The room could not be downloaded. Check the connection and try again, or reload the page if Banter was just updated.",
  );
  await expect(bob.page.getByLabel("Message", { exact: true })).toHaveCount(0);

  await bob.page.unroute(ROOM_MODULE);
  await bob.page.getByRole("button", { name: "Try again" }).click();
  await expect(bob.page.getByLabel("Message", { exact: true })).toBeVisible();
  await send(bob.page, "here after all");
  await expect(messageItem(bob.page, "here after all")).toHaveAttribute(
    "data-status",
    "delivered",
  );
});

test("a returning visitor whose room's code fails to download is told so, and a reload brings the room", async ({
  openUser,
}) => {
  const carol = await openAndJoin(openUser, "carol");
  await send(carol.page, "before the reload");

  // The server draws the room for her; hydrating it needs the room's code, which fails.
  await carol.page.route(ROOM_MODULE, (route) => route.abort("connectionfailed"));
  await carol.page.reload();
  await waitHydrated(carol.page);
  await expect(carol.page.getByRole("alert")).toHaveText(
    "The room could not be downloaded. Check the connection and try again, or reload the page if Banter was just updated.",
  );

  await carol.page.unroute(ROOM_MODULE);
  const reloaded = carol.page.waitForEvent("load");
  await carol.page.getByRole("button", { name: "Reload the page" }).click();
  await reloaded;
  await waitHydrated(carol.page);
  await expect(carol.page.getByLabel("Message", { exact: true })).toBeVisible();
  await expect(messageItem(carol.page, "before the reload")).toHaveAttribute(
    "data-status",
    "delivered",
  );
  await send(carol.page, "and after it");
  await expect(messageItem(carol.page, "and after it")).toHaveAttribute(
    "data-status",
    "delivered",
  );
});
