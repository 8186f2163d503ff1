/**
 * On a phone the conversation keeps the screen: the room list and the online list are
 * behind two buttons ("Rooms", "N online") that open them as a drawer, Escape closes it
 * and gives focus back, and every control outside the messages is a 44 px touch target.
 */
import { expect, messageItem, openAndJoin, test } from "./server";
import { closeAll, speaker } from "./stock";

test.afterEach(() => closeAll());

test("on a 320x568 phone, rooms and people are in a drawer, and controls are 44 px targets", async ({
  openUser,
  server,
}) => {
  // A busy server: other rooms, and people online in this one.
  for (const room of ["dev", "random", "design", "support"]) await speaker(server.url, `host-${room}`, room);
  const people = ["ann", "cy", "dee", "eli", "fay", "gus"];
  const says = await Promise.all(people.map((name) => speaker(server.url, name, "general")));
  for (let n = 1; n <= 8; n++) await says[n % says.length](`short line ${n}`);

  const bob = await openAndJoin(openUser, "bob", { viewport: { width: 320, height: 568 } });
  const page = bob.page;
  const rooms = page.getByRole("navigation", { name: "Rooms" });
  const online = page.getByRole("list", { name: "Online" });
  const roomsButton = page.getByRole("button", { name: "Rooms", exact: true });
  const peopleButton = page.getByRole("button", { name: "7 online", exact: true });

  // Closed: the conversation has the screen.
  await expect(messageItem(page, "short line 8")).toBeInViewport();
  await expect(rooms).toBeHidden();
  await expect(online).toBeHidden();
  await expect(roomsButton).toHaveAttribute("aria-expanded", "false");
  await expect(peopleButton).toHaveAttribute("aria-expanded", "false");
  const logBox = (await page.getByRole("log").boundingBox())!;
  expect(logBox.height, "the log's share of 568 px").toBeGreaterThan(568 * 0.4);
  let inView = 0;
  for (let n = 1; n <= 8; n++) {
    const box = await messageItem(page, `short line ${n}`).boundingBox();
    if (box && box.y >= logBox.y && box.y + box.height <= logBox.y + logBox.height) inView++;
  }
  expect(inView, "messages wholly in view").toBeGreaterThanOrEqual(4);

  // The people: behind their count.
  await peopleButton.click();
  await expect(peopleButton).toHaveAttribute("aria-expanded", "true");
  await expect(online).toBeVisible();
  for (const name of [...people, "bob"]) await expect(online.getByText(name, { exact: true })).toBeVisible();
  await expect(rooms).toBeHidden();
  await page.keyboard.press("Escape");
  await expect(online).toBeHidden();
  await expect(peopleButton).toBeFocused();
  await expect(peopleButton).toHaveAttribute("aria-expanded", "false");

  // The rooms: the same, and the button toggles.
  await roomsButton.click();
  await expect(rooms).toBeVisible();
  await expect(online).toBeHidden();
  await expect(rooms.getByRole("link", { name: /# support/ })).toBeVisible();

  // Every control outside the messages is a 44 px target, in either state of the drawer;
  // nothing scrolls sideways.
  const small = await page.evaluate(() =>
    Array.from(
      document.querySelectorAll<HTMLElement>(
        "#banter button, #banter a, #banter input, #banter textarea",
      ),
    )
      .filter((el) => el.offsetParent !== null && !el.closest(".actions, .reactions, .quote"))
      .filter((el) => !el.classList.contains("skip-link"))
      .map((el) => ({ what: el.outerHTML.slice(0, 80), box: el.getBoundingClientRect() }))
      .filter(({ box }) => box.height < 43.5 || box.width < 43.5)
      .map(({ what, box }) => `${what}: ${box.width.toFixed(1)}x${box.height.toFixed(1)}`),
  );
  expect(small, "controls under 44 px").toEqual([]);
  const overflow = await page.evaluate(
    () => document.documentElement.scrollWidth - document.documentElement.clientWidth,
  );
  expect(overflow, "horizontal overflow at 320 px").toBeLessThanOrEqual(0);
  await roomsButton.click();
  await expect(rooms).toBeHidden();
  await expect(roomsButton).toHaveAttribute("aria-expanded", "false");

  // A room from the drawer: it opens, and the drawer is closed there.
  await roomsButton.click();
  await rooms.getByRole("link", { name: /# dev/ }).click();
  await expect(page).toHaveURL(/\/r\/dev$/);
  await expect(page.getByRole("heading", { name: /dev/ })).toBeVisible();
  await expect(page.getByLabel("Message", { exact: true })).toBeVisible();
  await expect(rooms).toBeHidden();
  await expect(page.getByRole("button", { name: "2 online", exact: true })).toBeVisible();

  // On a desktop the same page shows both lists, and no drawer buttons.
  await page.setViewportSize({ width: 1100, height: 760 });
  await expect(rooms).toBeVisible();
  await expect(online).toBeVisible();
  await expect(roomsButton).toBeHidden();
});
