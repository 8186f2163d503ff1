/**
 * The conversation features of the web UI, with two people in #general: the composer
 * (Enter sends, Shift+Enter is a new line, Escape and ArrowUp), replies with their
 * quote, reactions, edits, deletes, mentions of the reader, and search.
 */
import type { Locator, Page } from "@playwright/test";
import { test, expect, messageItem, onlineEntry, openAndJoin, send, type OpenUser } from "./server";

function composer(page: Page): Locator {
  return page.getByLabel("Message", { exact: true });
}

/** A message's action button ("Reply", "React", "Edit", "Delete"), after hovering it. */
async function action(item: Locator, name: string): Promise<Locator> {
  await item.hover();
  const button = item.getByRole("button", { name, exact: true });
  await expect(button).toBeVisible();
  return button;
}

/** The log item of the message with server id `id`. */
function byId(page: Page, id: string): Locator {
  return page.getByRole("log").locator(`li.message[data-id="${id}"]`);
}

async function alicesMessage(page: Page, text: string): Promise<{ item: Locator; id: string }> {
  const item = messageItem(page, text);
  await expect(item).toHaveAttribute("data-status", "delivered");
  const id = (await item.getAttribute("data-id"))!;
  expect(id).toMatch(/^\d+$/);
  return { item, id };
}

async function two(openUser: OpenUser) {
  const alice = await openAndJoin(openUser, "alice");
  const bob = await openAndJoin(openUser, "bob");
  await expect(onlineEntry(alice.page, "bob")).toBeVisible();
  return { alice: alice.page, bob: bob.page };
}

test.describe("conversations", () => {
  test("messages in a row by one author are grouped, under a divider naming the day", async ({
    openUser,
  }) => {
    const { alice, bob } = await two(openUser);
    await send(alice, "one");
    await send(alice, "two");
    await expect(messageItem(alice, "two")).toHaveAttribute("data-status", "delivered");
    await send(bob, "three");
    const today = await bob.evaluate(() => {
      const d = new Date();
      const days = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
      const months = ["January", "February", "March", "April", "May", "June", "July",
        "August", "September", "October", "November", "December"];
      return `${days[d.getDay()]}, ${d.getDate()} ${months[d.getMonth()]} ${d.getFullYear()}`;
    });
    for (const page of [alice, bob]) {
      const log = page.getByRole("log");
      await expect(log.locator("li.message")).toHaveCount(3);
      // One divider, above everything, named for screen readers too.
      await expect(log.getByRole("separator")).toHaveCount(1);
      await expect(log.getByRole("separator", { name: today })).toBeVisible();
      await expect(log.locator("li").first()).toHaveClass(/\bday\b/);
      // "two" goes on from "one"; bob's "three" starts a group of its own.
      await expect(messageItem(page, "one")).not.toHaveClass(/\bcontinued\b/);
      await expect(messageItem(page, "two")).toHaveClass(/\bcontinued\b/);
      await expect(messageItem(page, "three")).not.toHaveClass(/\bcontinued\b/);
      // Screen readers hear which messages are one's own.
      const own = page === alice ? "one" : "three";
      await expect(messageItem(page, own).locator(".meta")).toContainText("(you)");
      const other = page === alice ? "three" : "one";
      await expect(messageItem(page, other).locator(".meta")).not.toContainText("(you)");
      // The exact time on hover.
      await expect(messageItem(page, "three").locator("time")).toHaveAttribute(
        "title",
        /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}$/,
      );
    }
  });

  test("Enter sends, Shift+Enter adds a line; a reply shows its quote, which shows the original", async ({
    openUser,
  }) => {
    const { alice, bob } = await two(openUser);

    // Shift+Enter is a new line and sends nothing; Enter sends the two lines as one message.
    await composer(alice).click();
    await composer(alice).pressSequentially("first line");
    await composer(alice).press("Shift+Enter");
    await composer(alice).pressSequentially("second line");
    await expect(composer(alice)).toHaveValue("first line\nsecond line");
    await expect(alice.getByRole("log").locator("li.message")).toHaveCount(0);
    // The field grew to show both lines.
    const grown = await composer(alice).evaluate((el) => el.clientHeight);
    await composer(alice).press("Enter");
    await expect(composer(alice)).toHaveValue("");
    for (const page of [alice, bob]) {
      const texts = page.getByRole("log").locator("li.message .text");
      await expect(texts).toHaveCount(1);
      expect(await texts.first().evaluate((el) => el.textContent)).toBe("first line\nsecond line");
    }
    const shrunk = await composer(alice).evaluate((el) => el.clientHeight);
    expect(grown, "the composer grows with a second line").toBeGreaterThan(shrunk);

    // bob replies: the composer says to whom, and Escape cancels it.
    const original = bob.getByRole("log").locator("li.message").first();
    await (await action(original, "Reply")).click();
    const context = bob.locator(".compose-context");
    await expect(context).toContainText("Replying to alice: first line");
    await expect(composer(bob)).toBeFocused();
    await composer(bob).press("Escape");
    await expect(context).toHaveCount(0);

    // Again, sent this time, the cancel button shown meanwhile.
    await (await action(original, "Reply")).click();
    await expect(bob.getByRole("button", { name: "Cancel reply" })).toBeVisible();
    await composer(bob).fill("got it");
    await composer(bob).press("Enter");
    await expect(context).toHaveCount(0);

    for (const page of [bob, alice]) {
      const reply = messageItem(page, "got it");
      await expect(reply).toHaveAttribute("data-status", "delivered");
      const quote = reply.locator(".quote");
      await expect(quote.locator(".quote-author")).toHaveText("alice");
      await expect(quote.locator(".quote-excerpt")).toHaveText("first line…");
    }

    // The quote takes alice to the original (held: it is scrolled to and flashed).
    await messageItem(alice, "got it").locator(".quote").click();
    await expect(alice.getByRole("log").locator("li.message").first()).toHaveClass(/focused/);
  });

  test("a long paste is kept whole: a counter shows near the limit, Send refuses past it", async ({
    openUser,
  }) => {
    const { alice, bob } = await two(openUser);
    const field = composer(alice);
    const count = alice.locator("#message-count");
    // As a paste would, in one go: nothing is cut.
    await field.focus();
    await alice.keyboard.insertText("x".repeat(5_000));
    await expect(field).toHaveValue("x".repeat(5_000));
    await expect(count).toHaveText("1000 characters too many");
    await expect(count).toHaveClass(/\bover\b/);
    await expect(field).toHaveAttribute("aria-invalid", "true");
    await expect(field).toHaveAttribute("aria-describedby", "message-count");
    await field.press("Enter");
    await expect(alice.getByRole("alert")).toHaveText("A message is at most 4000 characters.");
    await expect(field, "the text stays, to be shortened").toHaveValue("x".repeat(5_000));
    // Shortened to the limit: the counter says none are left, and it sends.
    await field.fill("y".repeat(4_000));
    await expect(count).toHaveText("0 characters left");
    await expect(field).not.toHaveAttribute("aria-invalid", /./);
    await field.press("Enter");
    await expect(field).toHaveValue("");
    await expect(count).toHaveCount(0);
    await expect(messageItem(bob, "y".repeat(4_000))).toBeVisible();
    // Far from the limit, no counter.
    await field.fill("hello");
    await expect(count).toHaveCount(0);
    await expect(field).not.toHaveAttribute("aria-describedby", /./);
  });

  test("reactions: counts seen by both, the reader's own pressed, toggled off", async ({
    openUser,
  }) => {
    const { alice, bob } = await two(openUser);
    await send(alice, "lunch at noon?");
    const { id } = await alicesMessage(alice, "lunch at noon?");
    await expect(byId(bob, id)).toHaveCount(1);

    // bob picks 👍 from the palette.
    await (await action(byId(bob, id), "React")).click();
    await bob.getByRole("button", { name: "React with 👍" }).click();
    await expect(bob.getByRole("group", { name: "Reactions" })).toHaveCount(0);
    const chip = (page: Page) => byId(page, id).locator("button.reaction");
    await expect(chip(bob)).toHaveText("👍 1");
    await expect(chip(bob)).toHaveAttribute("aria-pressed", "true");
    await expect(chip(alice)).toHaveText("👍 1");
    await expect(chip(alice)).toHaveAttribute("aria-pressed", "false");

    // alice adds hers with the chip.
    await chip(alice).click();
    for (const page of [alice, bob]) await expect(chip(page)).toHaveText("👍 2");
    await expect(chip(alice)).toHaveAttribute("aria-pressed", "true");
    // Who reacted: on hover, and read out with the count.
    for (const page of [alice, bob]) {
      await expect(chip(page)).toHaveAttribute("title", "bob, alice");
      await expect(chip(page)).toHaveAccessibleName("👍 2 reactions: bob, alice");
    }

    // bob takes his back; then alice hers: the chip is gone for both.
    await byId(bob, id).getByRole("button", { name: "👍 2" }).click();
    for (const page of [alice, bob]) await expect(chip(page)).toHaveText("👍 1");
    await expect(chip(bob)).toHaveAttribute("aria-pressed", "false");
    await expect(chip(alice)).toHaveAttribute("aria-pressed", "true");
    await chip(alice).click();
    for (const page of [alice, bob]) await expect(chip(page)).toHaveCount(0);

    // A second emoji from the palette, then the same one again from the palette takes it back.
    await (await action(byId(alice, id), "React")).click();
    await alice.getByRole("button", { name: "React with 🎉" }).click();
    for (const page of [alice, bob]) await expect(chip(page)).toHaveText("🎉 1");
    await (await action(byId(alice, id), "React")).click();
    await expect(alice.getByRole("button", { name: "React with 🎉" })).toHaveAttribute(
      "aria-pressed",
      "true",
    );
    await alice.getByRole("button", { name: "React with 🎉" }).click();
    for (const page of [alice, bob]) await expect(chip(page)).toHaveCount(0);
  });

  test("edits and deletes: only the author may, the other sees them", async ({ openUser }) => {
    const { alice, bob } = await two(openUser);
    await send(alice, "meet at 3");
    const { item, id } = await alicesMessage(alice, "meet at 3");
    await expect(byId(bob, id).locator(".text")).toHaveText("meet at 3");

    // bob may reply and react to alice's message, not edit or delete it.
    await byId(bob, id).hover();
    await expect(byId(bob, id).getByRole("button", { name: "Reply", exact: true })).toBeVisible();
    await expect(byId(bob, id).getByRole("button", { name: "Edit", exact: true })).toHaveCount(0);
    await expect(byId(bob, id).getByRole("button", { name: "Delete", exact: true })).toHaveCount(0);

    // alice edits it in the composer; bob sees the new text and "(edited)".
    await (await action(item, "Edit")).click();
    await expect(alice.locator(".compose-context")).toContainText("Editing your message");
    await expect(composer(alice)).toHaveValue("meet at 3");
    await composer(alice).fill("meet at 4");
    await composer(alice).press("Enter");
    await expect(composer(alice)).toHaveValue("");
    for (const page of [alice, bob]) {
      await expect(byId(page, id).locator(".text")).toHaveText("meet at 4");
      await expect(byId(page, id).locator(".edited")).toHaveText("(edited)");
      await expect(byId(page, id)).toHaveAttribute("data-status", "delivered");
    }
    await expect(bob.getByRole("log").locator("li.message")).toHaveCount(1);

    // ArrowUp in the empty composer edits her last message; Escape gives up.
    await composer(alice).click();
    await composer(alice).press("ArrowUp");
    await expect(composer(alice)).toHaveValue("meet at 4");
    await expect(alice.locator(".compose-context")).toContainText("Editing your message");
    await composer(alice).press("Escape");
    await expect(composer(alice)).toHaveValue("");
    await expect(alice.locator(".compose-context")).toHaveCount(0);

    // Delete asks first; "Cancel" keeps it.
    await (await action(byId(alice, id), "Delete")).click();
    await alice.getByRole("button", { name: "Cancel", exact: true }).click();
    await expect(byId(alice, id).locator(".text")).toHaveText("meet at 4");
    await (await action(byId(alice, id), "Delete")).click();
    await alice.getByRole("button", { name: "Yes, delete", exact: true }).click();
    for (const page of [alice, bob]) {
      await expect(byId(page, id).locator(".deleted")).toHaveText("This message was deleted");
      await expect(byId(page, id).locator(".text")).toHaveCount(0);
      await expect(byId(page, id).locator(".edited")).toHaveCount(0);
      await expect(byId(page, id).getByRole("button", { name: "Reply", exact: true })).toHaveCount(
        0,
      );
    }
    await expect(byId(bob, id)).not.toContainText("meet at 4");
  });

  test("mentions of the reader are marked", async ({ openUser }) => {
    const { alice, bob } = await two(openUser);
    await send(bob, "@alice can you look? cc @carol");
    const atAlice = messageItem(alice, "@alice can you look? cc @carol");
    await expect(atAlice).toHaveClass(/\bmention\b/);
    await expect(atAlice.locator("mark.mention-me")).toHaveText(["@alice"]);
    const atBob = messageItem(bob, "@alice can you look? cc @carol");
    await expect(atBob).toHaveAttribute("data-status", "delivered");
    await expect(atBob).not.toHaveClass(/\bmention\b/);
    await expect(atBob.locator("mark")).toHaveCount(0);
  });

  test("@ offers the room's members: arrows choose, Enter or Tab inserts, a click picks, Escape closes", async ({
    openUser,
  }) => {
    const { alice, bob } = await two(openUser);
    const mary = (await openAndJoin(openUser, "Mary Jane")).page;
    await expect(onlineEntry(alice, "Mary Jane")).toBeVisible();
    const field = composer(alice);
    const list = alice.getByRole("listbox", { name: "People to mention" });

    // "@" alone offers everyone but oneself; the field points at the chosen one.
    await field.click();
    await field.pressSequentially("hi @");
    await expect(list.getByRole("option")).toHaveText(["bob", "Mary Jane"]);
    await expect(list.getByRole("option", { name: "bob" })).toHaveAttribute("aria-selected", "true");
    await expect(field).toHaveAttribute("aria-activedescendant", "mention-0");
    await field.press("ArrowDown");
    await expect(list.getByRole("option", { name: "Mary Jane" })).toHaveAttribute("aria-selected", "true");
    await expect(field).toHaveAttribute("aria-activedescendant", "mention-1");
    await field.press("ArrowDown");
    await expect(list.getByRole("option", { name: "bob" })).toHaveAttribute("aria-selected", "true");

    // Typing narrows it; Enter inserts (and sends nothing), the caret after the mention.
    await field.pressSequentially("b");
    await expect(list.getByRole("option")).toHaveText(["bob"]);
    await field.press("Enter");
    await expect(list).toHaveCount(0);
    await expect(field).toHaveValue("hi @bob ");
    await expect(alice.getByRole("log").locator("li.message")).toHaveCount(0);
    await field.pressSequentially("and ");

    // A name with a space is inserted in brackets, here with Tab.
    await field.pressSequentially("@ma");
    await expect(list.getByRole("option")).toHaveText(["Mary Jane"]);
    await field.press("Tab");
    await expect(field).toHaveValue("hi @bob and @[Mary Jane] ");
    await expect(field).toBeFocused();

    // Escape closes the list and keeps the text; nothing matches, no list; a click picks.
    await field.pressSequentially("@");
    await expect(list).toBeVisible();
    await field.press("Escape");
    await expect(list).toHaveCount(0);
    await expect(field).toHaveValue("hi @bob and @[Mary Jane] @");
    await field.pressSequentially("zed");
    await expect(list).toHaveCount(0);
    await field.press("Backspace");
    await field.press("Backspace");
    await field.press("Backspace");
    await field.pressSequentially("M");
    await list.getByRole("option", { name: "Mary Jane" }).click();
    await expect(field).toHaveValue("hi @bob and @[Mary Jane] @[Mary Jane] ");
    await expect(field).toBeFocused();
    // An address is not a mention.
    await field.pressSequentially("mail@b");
    await expect(list).toHaveCount(0);

    // Sent: both are mentioned, each sees it marked.
    await field.fill("hi @bob and @[Mary Jane]");
    await field.press("Enter");
    await expect(messageItem(bob, "hi @bob and @[Mary Jane]")).toHaveClass(/\bmention\b/);
    await expect(messageItem(mary, "hi @bob and @[Mary Jane]")).toHaveClass(/\bmention\b/);
  });

  test("search finds messages, pages with More, shows one in the log, and closes", async ({
    openUser,
  }) => {
    const { alice, bob } = await two(openUser);
    for (let i = 1; i <= 22; i++) await send(alice, `release note ${i}`);
    await send(alice, "the quarterly report is ready");
    await expect(alice.getByRole("log").locator('li.message[data-status="delivered"]')).toHaveCount(
      23,
    );
    await expect(bob.getByRole("log").locator("li.message")).toHaveCount(23);

    const results = bob.getByRole("region", { name: "Search results" });
    const found = results.locator(".result");
    await bob.getByLabel("Search messages").fill("quarterly");
    // The server indexes new messages once appends pause (200 ms): ask again until then.
    await expect(async () => {
      await bob.getByRole("button", { name: "Search", exact: true }).click();
      await expect(found).toHaveCount(1, { timeout: 1_500 });
    }).toPass({ intervals: [500], timeout: 15_000 });
    await expect(found.locator(".author")).toHaveText("alice");
    await expect(found.locator(".result-room")).toHaveText("#general");
    await expect(found.locator("time")).toHaveText(/^\d{4}-\d\d-\d\d \d\d:\d\d$/);
    await expect(found.locator(".result-text")).toHaveText("the quarterly report is ready");
    await expect(found.locator(".result-text mark"), "the word searched for is marked").toHaveText([
      "quarterly",
    ]);

    // 22 matches: a first page of 20, then "More".
    await bob.getByLabel("Search messages").fill("release note");
    await bob.getByRole("button", { name: "Search", exact: true }).click();
    await expect(found).toHaveCount(20);
    await expect(found.first().locator(".result-text")).toHaveText("release note 22");
    await expect(found.first().locator(".result-text mark")).toHaveText(["release", "note"]);
    await results.getByRole("button", { name: "More", exact: true }).click();
    await expect(found).toHaveCount(22);
    await expect(found.last().locator(".result-text")).toHaveText("release note 1");
    await expect(results.getByRole("button", { name: "More", exact: true })).toHaveCount(0);

    // A result in this room shows the message in the log.
    await found.last().click();
    await expect(messageItem(bob, "release note 1")).toHaveClass(/focused/);

    // Nothing found; then closed.
    await bob.getByLabel("Search messages").fill("zebra crossing");
    await bob.getByRole("button", { name: "Search", exact: true }).click();
    await expect(results.getByText("No messages found.")).toBeVisible();
    await results.getByRole("button", { name: "Close search" }).click();
    await expect(results).toHaveCount(0);

    // Escape closes it too, from the field (which it empties) or from the results.
    const field = bob.getByLabel("Search messages");
    await field.fill("release");
    await field.press("Enter");
    await expect(found.first()).toBeVisible();
    await field.press("Escape");
    await expect(results).toHaveCount(0);
    await expect(field).toHaveValue("");
    await field.fill("release");
    await field.press("Enter");
    await results.getByRole("button", { name: "More", exact: true }).focus();
    await bob.keyboard.press("Escape");
    await expect(results).toHaveCount(0);
  });

  test("on a 360 px phone: a reply with reactions, a search and a reply in progress fit", async ({
    openUser,
  }) => {
    const alice = (await openAndJoin(openUser, "alice")).page;
    const bob = (await openAndJoin(openUser, "bob", { viewport: { width: 360, height: 740 } })).page;
    await expect(onlineEntry(alice, "bob")).toBeVisible();
    const long = "A rather long first message that surely needs more than one line on a phone";
    await send(alice, long);
    const { id } = await alicesMessage(alice, long);
    await (await action(byId(alice, id), "Reply")).click();
    await composer(alice).fill("and its answer");
    await composer(alice).press("Enter");
    const reply = messageItem(bob, "and its answer");
    await expect(reply.locator(".quote")).toBeVisible();
    await (await action(reply, "React")).click();
    await bob.getByRole("button", { name: "React with 😂" }).click();
    await expect(reply.locator("button.reaction")).toHaveText("😂 1");
    await (await action(byId(bob, id), "Reply")).click();
    await expect(bob.locator(".compose-context")).toContainText("Replying to alice");
    await bob.getByLabel("Search messages").fill("answer");
    await expect(async () => {
      await bob.getByRole("button", { name: "Search", exact: true }).click();
      await expect(bob.locator(".search-results .result")).toHaveCount(1, { timeout: 1_500 });
    }).toPass({ intervals: [500], timeout: 15_000 });

    const overflow = await bob.evaluate(
      () => document.documentElement.scrollWidth - document.documentElement.clientWidth,
    );
    expect(overflow, "horizontal overflow at 360 px, in px").toBeLessThanOrEqual(0);
    for (const el of [
      composer(bob),
      bob.getByRole("button", { name: "Send", exact: true }),
      bob.getByRole("button", { name: "Cancel reply" }),
      bob.getByLabel("Search messages"),
    ]) {
      await expect(el).toBeInViewport();
      const box = (await el.boundingBox())!;
      expect(box.x).toBeGreaterThanOrEqual(0);
      expect(box.x + box.width).toBeLessThanOrEqual(360 + 0.5);
    }
    await test.info().attach("phone-360.png", {
      body: await bob.screenshot({ animations: "disabled", caret: "hide" }),
      contentType: "image/png",
    });
  });
});
