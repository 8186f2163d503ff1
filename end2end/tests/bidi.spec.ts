/**
 * Right-to-left text reads right to left: a message in Arabic or Hebrew, and the composer
 * while one is typed, take their direction from their first strong character
 * (`dir="auto"`), so `مرحبا! 123 (test)` keeps its punctuation and numbers in place;
 * a message in English next to it stays left to right.
 */
import { expect, messageItem, openAndJoin, send, test } from "./server";

const direction = (el: Element) => getComputedStyle(el).direction;

test("messages and the composer take their direction from their text", async ({ openUser }) => {
  const alice = await openAndJoin(openUser, "alice");
  const bob = await openAndJoin(openUser, "bob");
  const composer = alice.page.getByLabel("Message", { exact: true });
  await composer.fill("שלום, מה שלומך?");
  await expect.poll(() => composer.evaluate(direction), { message: "the composer" }).toBe("rtl");
  await composer.fill("");

  for (const [text, dir] of [
    ["مرحبا! 123 (test)", "rtl"],
    ["שלום, מה שלומך?", "rtl"],
    ["hello (123) مرحبا", "ltr"],
  ] as const) {
    await send(alice.page, text);
    const line = messageItem(bob.page, text).locator(".text");
    await expect(line, `${text} reaches bob`).toBeVisible();
    await expect(line).toHaveAttribute("dir", "auto");
    expect(await line.evaluate(direction), text).toBe(dir);
  }

  // Each block of a formatted message takes its own direction; code stays left to right.
  await send(alice.page, "> שלום, מה שלומך?\nfine, thanks\n```\nlet x = 1;\n```");
  const formatted = bob.page
    .getByRole("log")
    .locator("li.message", { hasText: "fine, thanks" })
    .locator(".text");
  await expect(formatted.locator("blockquote")).toHaveText("שלום, מה שלומך?");
  expect(await formatted.locator("blockquote").evaluate(direction), "the quote").toBe("rtl");
  expect(await formatted.locator("p").evaluate(direction), "the reply under it").toBe("ltr");
  expect(await formatted.locator("pre").evaluate(direction), "the code").toBe("ltr");
});
