import {
  test,
  expect,
  join,
  messageItem,
  notice,
  onlineEntry,
  onlineList,
  openAndJoin,
  recordStatuses,
  recordedStatuses,
  send,
  sleep,
} from "./server";

test.describe("two people chatting in #general", () => {
  test("join, presence, messages both ways, typing, leave", async ({ openUser }) => {
    const alice = await openAndJoin(openUser, "alice");
    await expect(alice.page.getByRole("heading", { name: /general/ })).toBeVisible();
    await expect(onlineEntry(alice.page, "alice")).toBeVisible();

    const bob = await openAndJoin(openUser, "bob");

    // Presence: both see each other, and alice is told that bob joined.
    await expect(onlineEntry(alice.page, "bob")).toBeVisible();
    await expect(onlineEntry(bob.page, "alice")).toBeVisible();
    await expect(onlineEntry(bob.page, "bob")).toBeVisible();
    await expect(notice(alice.page, "bob joined")).toBeVisible();

    // alice → bob: pending first, then delivered.
    await recordStatuses(alice.page);
    await send(alice.page, "hello bob");
    const mine = messageItem(alice.page, "hello bob");
    await expect(mine).toHaveCount(1);
    await expect(mine).toHaveAttribute("data-status", "delivered");
    await expect(mine.locator(".author")).toHaveText("alice");
    await expect(mine.locator("time")).toHaveCount(1);
    // A relative time within the hour; the exact one on hover.
    await expect(mine.locator("time")).toHaveText("just now");
    await expect(mine.locator("time")).toHaveAttribute("title", /^\d{4}-\d\d-\d\d \d\d:\d\d$/);
    const statuses = await recordedStatuses(alice.page, "hello bob");
    expect(statuses[0], `statuses seen: ${JSON.stringify(statuses)}`).toBe("pending");
    expect(statuses[statuses.length - 1]).toBe("delivered");
    expect(statuses).not.toContain("failed");
    await expect(alice.page.getByLabel("Message", { exact: true })).toHaveValue("");

    const atBob = messageItem(bob.page, "hello bob");
    await expect(atBob).toHaveCount(1);
    await expect(atBob.locator(".author")).toHaveText("alice");
    await expect(atBob.locator(".text")).toHaveText("hello bob");
    await expect(atBob).toHaveAttribute("data-status", "delivered");
    await expect(atBob.locator("time")).toHaveCount(1);

    // Typing: bob types without sending; alice sees it; it goes when he sends.
    const typing = alice.page.locator(".typing");
    await bob.page.getByLabel("Message", { exact: true }).pressSequentially("hi alice, good ", {
      delay: 20,
    });
    await expect(typing).toContainText("bob is typing…");
    // bob does not see himself typing.
    await expect(bob.page.getByText("bob is typing…")).toBeHidden();
    await bob.page.getByLabel("Message", { exact: true }).pressSequentially("to see you", {
      delay: 20,
    });
    await bob.page.getByRole("button", { name: "Send", exact: true }).click();

    const reply = messageItem(alice.page, "hi alice, good to see you");
    await expect(reply).toHaveCount(1);
    await expect(reply.locator(".author")).toHaveText("bob");
    await expect(alice.page.getByText("bob is typing…")).toBeHidden();
    await expect(messageItem(bob.page, "hi alice, good to see you")).toHaveAttribute(
      "data-status",
      "delivered",
    );

    // Order in the log is the order of sending, for both.
    for (const page of [alice.page, bob.page]) {
      await expect(page.getByRole("log").locator("li.message .text")).toHaveText([
        "hello bob",
        "hi alice, good to see you",
      ]);
    }

    // Leave asks first: "Stay" (focused, or Escape) keeps bob in the room.
    const leave = bob.page.getByRole("button", { name: "Leave", exact: true });
    await leave.click();
    const question = bob.page.getByRole("group", { name: "Leave #general?" });
    await expect(question).toBeVisible();
    await expect(question.getByRole("button", { name: "Stay" })).toBeFocused();
    await bob.page.keyboard.press("Escape");
    await expect(question).toHaveCount(0);
    await expect(bob.page.getByLabel("Message", { exact: true })).toBeFocused();
    await leave.click();
    await question.getByRole("button", { name: "Stay" }).click();
    await expect(question).toHaveCount(0);
    await expect(onlineEntry(alice.page, "bob")).toBeVisible();

    // Leave for real: alice is told, and bob is gone from her Online list; bob's join form
    // offers his name again.
    await leave.click();
    await question.getByRole("button", { name: "Leave room" }).click();
    await expect(notice(alice.page, "bob left")).toBeVisible();
    await expect(onlineEntry(alice.page, "bob")).toHaveCount(0);
    await expect(onlineEntry(alice.page, "alice")).toBeVisible();
    await expect(bob.page.getByLabel("Message", { exact: true })).toBeHidden();
    await expect(bob.page.getByLabel("Name")).toHaveValue("bob");
  });

  test("markup in messages is shown as text, never run", async ({ openUser }) => {
    const alice = await openAndJoin(openUser, "alice");
    const bob = await openAndJoin(openUser, "bob");
    await expect(onlineEntry(alice.page, "bob")).toBeVisible();

    const img = `<img src=x onerror="window.__xss=1">`;
    const script = `<script>window.__xss=1</script>`;
    const mixed = `<b>bold?</b> & "quotes" 'single' <a href="javascript:window.__xss=1">x</a>`;
    for (const text of [img, script, mixed]) await send(alice.page, text);

    for (const page of [bob.page, alice.page]) {
      for (const text of [img, script, mixed]) {
        const item = messageItem(page, text);
        await expect(item).toHaveCount(1);
        await expect(item.locator(".text")).toHaveText(text);
      }
      const log = page.getByRole("log");
      await expect(log.locator("img")).toHaveCount(0);
      await expect(log.locator("script")).toHaveCount(0);
      await expect(log.locator("b")).toHaveCount(0);
      await expect(log.locator("a[href^='javascript']")).toHaveCount(0);
    }
    // Give a broken <img> time to fire onerror, had one been created.
    await sleep(500);
    for (const page of [alice.page, bob.page]) {
      expect(await page.evaluate(() => (window as { __xss?: unknown }).__xss)).toBeUndefined();
    }

    // The same history rendered again after a reload (server render + hydration).
    await bob.page.reload();
    await expect(bob.page.locator("#banter")).toHaveAttribute("data-hydrated", "true", {
      timeout: 20_000,
    });
    for (const text of [img, script, mixed]) {
      await expect(messageItem(bob.page, text).locator(".text")).toHaveText(text);
    }
    await expect(bob.page.getByRole("log").locator("img")).toHaveCount(0);
    await sleep(500);
    expect(await bob.page.evaluate(() => (window as { __xss?: unknown }).__xss)).toBeUndefined();
  });

  test("two people who join at the same moment both see each other", async ({ openUser }) => {
    // A restart makes every client rejoin at once; this is the same race, on purpose.
    for (let round = 1; round <= 6; round++) {
      const path = `/r/together-${round}`;
      const a = await openUser(`ann-${round}`, { path });
      const b = await openUser(`ben-${round}`, { path });
      // Names are server-wide and held a while after their owner leaves: new ones each round.
      const [ann, ben] = [`ann${round}`, `ben${round}`];
      await a.page.getByLabel("Name", { exact: true }).fill(ann);
      await b.page.getByLabel("Name", { exact: true }).fill(ben);
      await Promise.all(
        [a, b].map((u) => u.page.getByRole("button", { name: "Join", exact: true }).click()),
      );
      for (const [u, who] of [
        [a, ann],
        [b, ben],
      ] as const) {
        await expect(u.page.getByLabel("Message", { exact: true })).toBeVisible();
        for (const name of [ann, ben]) {
          await expect(
            onlineEntry(u.page, name),
            `round ${round}: ${who} sees ${name} in Online`,
          ).toBeVisible();
        }
      }
      await a.context.close();
      await b.context.close();
    }
  });

  test("a name already in the room is refused with an alert", async ({ openUser }) => {
    const alice = await openAndJoin(openUser, "alice");
    const impostor = await openUser("impostor");
    // Names collide regardless of case.
    await impostor.page.getByLabel("Name", { exact: true }).fill("Alice");
    await impostor.page.getByRole("button", { name: "Join", exact: true }).click();
    const alert = impostor.page.getByRole("alert");
    await expect(alert).toBeVisible();
    await expect(alert).not.toHaveText(/^\s*$/);
    await expect(impostor.page.getByLabel("Message", { exact: true })).toBeHidden();
    // The name can still be changed and used.
    await join(impostor.page, "alice2");
    await expect(onlineEntry(alice.page, "alice2")).toBeVisible();
    await expect(onlineList(alice.page).locator("li")).toHaveCount(2);
  });
});
