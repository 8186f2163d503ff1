import {
  test,
  expect,
  messageItem,
  onlineEntry,
  openAndJoin,
  reconnectBanner,
  send,
  waitOnline,
} from "./server";

// A stop, a restart and the client's back-off fit in this.
test.describe.configure({ timeout: 120_000 });

test("the client shows the outage, reconnects and rejoins by itself", async ({
  openUser,
  server,
}) => {
  const alice = await openAndJoin(openUser, "alice");
  const bob = await openAndJoin(openUser, "bob");
  await send(alice.page, "before the restart");
  await expect(messageItem(bob.page, "before the restart")).toHaveCount(1);
  await expect(reconnectBanner(alice.page)).toBeHidden();

  const stopped = await server.stop();
  expect(stopped.forced, "the server exits on SIGTERM within 10 s").toBe(false);

  for (const user of [alice, bob]) {
    await expect(reconnectBanner(user.page)).toBeVisible({ timeout: 15_000 });
    await expect(reconnectBanner(user.page)).toContainText("Reconnecting");
    await expect(user.page.locator("#banter")).not.toHaveAttribute("data-connection", "online");
  }

  await server.restart();

  for (const user of [alice, bob]) {
    await expect(reconnectBanner(user.page)).toBeHidden({ timeout: 30_000 });
    await waitOnline(user.page, 5_000);
  }
  // Both are back in the room under their names, without touching the join form.
  for (const user of [alice, bob]) {
    await expect(
      user.page.getByLabel("Message", { exact: true }),
      `${user.name} is back in the room`,
    ).toBeVisible();
    for (const name of ["alice", "bob"]) {
      await expect(onlineEntry(user.page, name), `${user.name} sees ${name} online`).toBeVisible();
    }
  }

  await send(alice.page, "after the restart");
  await expect(messageItem(alice.page, "after the restart")).toHaveAttribute(
    "data-status",
    "delivered",
  );
  const atBob = messageItem(bob.page, "after the restart");
  await expect(atBob).toHaveCount(1);
  await expect(atBob.locator(".author")).toHaveText("alice");

  await send(bob.page, "got it");
  await expect(messageItem(alice.page, "got it").locator(".author")).toHaveText("bob");
});

test("a message written during the outage is not lost and not doubled", async ({
  openUser,
  server,
}) => {
  const alice = await openAndJoin(openUser, "alice");
  const bob = await openAndJoin(openUser, "bob");
  await expect(onlineEntry(alice.page, "bob")).toBeVisible();

  await server.stop();
  await expect(reconnectBanner(alice.page)).toBeVisible({ timeout: 15_000 });

  const sendButton = alice.page.getByRole("button", { name: "Send", exact: true });
  const text = "written while offline";
  await alice.page.getByLabel("Message", { exact: true }).fill(text);
  const canSend = await sendButton.isEnabled();
  if (!canSend) {
    // A client may refuse to send while offline; then the draft must survive.
    test.info().annotations.push({ type: "note", description: "Send is disabled while offline" });
  } else {
    await sendButton.click();
    const item = messageItem(alice.page, text);
    await expect(item).toHaveCount(1);
    // Never shown as delivered while the server is down.
    await expect(item).toHaveAttribute("data-status", /^(pending|failed)$/);
    await alice.page.waitForTimeout(1_000);
    await expect(item).toHaveAttribute("data-status", /^(pending|failed)$/);
    if ((await item.getAttribute("data-status")) === "failed") {
      await expect(item.getByRole("button", { name: "Retry", exact: true })).toBeVisible();
      await expect(item.getByRole("button", { name: "Discard", exact: true })).toBeVisible();
    }
  }

  await server.restart();
  await expect(reconnectBanner(alice.page)).toBeHidden({ timeout: 30_000 });
  await waitOnline(alice.page, 5_000);
  await waitOnline(bob.page, 30_000);
  await expect(onlineEntry(alice.page, "bob"), "alice sees bob online again").toBeVisible();

  const item = messageItem(alice.page, text);
  if (!canSend) {
    await expect(alice.page.getByLabel("Message", { exact: true })).toHaveValue(text);
    await expect(sendButton).toBeEnabled();
    await sendButton.click();
  }
  // Delivered by itself once online again, or after "Retry" if it had failed.
  await expect
    .poll(
      async () => {
        const status = await item.getAttribute("data-status");
        if (status === "failed") {
          await item.getByRole("button", { name: "Retry", exact: true }).click();
        }
        return status;
      },
      { timeout: 30_000, intervals: [250, 500, 1_000] },
    )
    .toBe("delivered");
  await expect(item).toHaveCount(1);

  const atBob = messageItem(bob.page, text);
  await expect(atBob).toHaveCount(1);
  await expect(atBob.locator(".author")).toHaveText("alice");
  // Give a duplicate time to show up, then check there is none.
  await send(alice.page, "a later message");
  await expect(messageItem(bob.page, "a later message")).toHaveCount(1);
  await expect(atBob).toHaveCount(1);
});

test("the history is still there after the server restarts", async ({ openUser, server }) => {
  const alice = await openAndJoin(openUser, "alice");
  await send(alice.page, "kept across restarts");
  await expect(messageItem(alice.page, "kept across restarts")).toHaveAttribute(
    "data-status",
    "delivered",
  );

  await server.stop();
  await expect(reconnectBanner(alice.page)).toBeVisible({ timeout: 15_000 });
  await server.restart();
  await expect(reconnectBanner(alice.page)).toBeHidden({ timeout: 30_000 });
  await expect(onlineEntry(alice.page, "alice")).toBeVisible();
  // Catching up after the rejoin adds nothing twice.
  await send(alice.page, "and after");
  await expect(messageItem(alice.page, "and after")).toHaveAttribute("data-status", "delivered");
  await expect(alice.page.getByRole("log").locator("li.message .text")).toHaveText([
    "kept across restarts",
    "and after",
  ]);

  // Someone new sees what was said before the restart.
  const carol = await openAndJoin(openUser, "carol");
  await expect(carol.page.getByRole("log").locator("li.message .text")).toHaveText([
    "kept across restarts",
    "and after",
  ]);
  await expect(messageItem(carol.page, "kept across restarts").locator(".author")).toHaveText(
    "alice",
  );
});
