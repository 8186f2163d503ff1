/**
 * Hostile message text, typed and sent through the real UI by one person and received
 * by another: none of it may run, every message must read exactly as typed (but for
 * the formatting marks of the last few), and only http(s) URLs may become links (with
 * rel="noopener noreferrer nofollow").
 */
import type { Page } from "@playwright/test";
import {
  expect,
  onlineEntry,
  openAndJoin,
  send,
  testWith,
  waitHydrated,
} from "./server";

/**
 * A payload and the hrefs of the links it must render as, in order; for a payload with
 * formatting marks, the text it must show (the marks gone) and the elements it must
 * render as, in document order (otherwise it must show exactly as typed, with nothing
 * but links).
 */
interface Payload {
  text: string;
  links: string[];
  shown?: string;
  tags?: string[];
}

const longUnit = `<img src=x onerror="window.__xss='long'">`;
const longPayload =
  longUnit.repeat(Math.floor(3_900 / longUnit.length)) + " https://example.com/long";

const corpus: Payload[] = [
  { text: `<script>window.__xss=1</script>`, links: [] },
  { text: `<img src=x onerror="window.__xss=2">`, links: [] },
  { text: `<svg onload="window.__xss=3"></svg>`, links: [] },
  { text: `<svg><script>window.__xss=4</script></svg>`, links: [] },
  { text: `"><script>window.__xss=5</script>`, links: [] },
  { text: `'><img src=x onerror=alert(6)>`, links: [] },
  { text: `</p></li></ul><script>window.__xss=7</script>`, links: [] },
  { text: `<iframe srcdoc="<script>parent.__xss=8</script>"></iframe>`, links: [] },
  { text: `<iframe src="javascript:parent.__xss=9"></iframe>`, links: [] },
  { text: `<object data="javascript:window.__xss=10"></object>`, links: [] },
  { text: `<details open ontoggle="window.__xss=11">x</details>`, links: [] },
  { text: `<math><mtext><table><mglyph><style><img src=x onerror=alert(12)>`, links: [] },
  { text: `<!--<script>window.__xss=13</script>-->`, links: [] },
  { text: `<a href="javascript:window.__xss=14">click me</a>`, links: [] },
  { text: `javascript:window.__xss=15`, links: [] },
  { text: `JaVaScRiPt:alert(16)`, links: [] },
  { text: `java&#x09;script:alert(17)`, links: [] },
  { text: `&#106;avascript:alert(18)`, links: [] },
  { text: `data:text/html;base64,PHNjcmlwdD5hbGVydCgxOSk8L3NjcmlwdD4=`, links: [] },
  { text: `vbscript:msgbox(20)`, links: [] },
  { text: `{{constructor.constructor('window.__xss=21')()}}`, links: [] },
  { text: `\${window.__xss=22} {window.__xss=22}`, links: [] },
  { text: `\\u003cscript\\u003ewindow.__xss=23\\u003c/script\\u003e`, links: [] },
  { text: `%3Cscript%3Ewindow.__xss=24%3C/script%3E`, links: [] },
  { text: `\uFF1Cscript\uFF1Ewindow.__xss=25\uFF1C/script\uFF1E`, links: [] },
  { text: `<style>*{display:none}</style><body onload=alert(26)>`, links: [] },
  // Attribute breakouts from inside a URL: the link ends where the breakout starts.
  {
    text: `https://example.com/"onmouseover="window.__xss=27" x="`,
    links: ["https://example.com/"],
  },
  {
    text: `https://example.com/'><img src=x onerror=alert(28)>`,
    links: ["https://example.com/"],
  },
  {
    text: `https://example.com/?q=<script>window.__xss=29</script>`,
    links: ["https://example.com/?q="],
  },
  {
    text: `javascript:https://example.com/%0Aalert(30)`,
    links: ["https://example.com/%0Aalert(30)"],
  },
  // Genuine links, with the punctuation around them left out.
  {
    text: `see (https://example.com/a) and HTTPS://EXAMPLE.COM/UPPER, or http://example.org/x).`,
    links: ["https://example.com/a", "HTTPS://EXAMPLE.COM/UPPER", "http://example.org/x"],
  },
  { text: longPayload, links: ["https://example.com/long"] },
  // Formatting marks around markup: the elements are Banter's own, the markup stays text.
  {
    text: `**<img src=x onerror="window.__xss=31">**`,
    links: [],
    shown: `<img src=x onerror="window.__xss=31">`,
    tags: ["strong"],
  },
  {
    text: `_<script>window.__xss=32</script>_ and \`<svg onload=window.__xss=33>\``,
    links: [],
    shown: `<script>window.__xss=32</script> and <svg onload=window.__xss=33>`,
    tags: ["em", "code"],
  },
  {
    text: [
      `> <iframe src="javascript:parent.__xss=34">`,
      "```html",
      `<script>window.__xss=35</script>`,
      "```",
      `**https://example.com/"onclick="window.__xss=36**`,
    ].join("\n"),
    links: ["https://example.com/"],
    shown:
      `<iframe src="javascript:parent.__xss=34">` +
      `<script>window.__xss=35</script>` +
      `https://example.com/"onclick="window.__xss=36`,
    tags: ["blockquote", "pre", "code", "p", "strong", "a"],
  },
];

/** Sent last: once it shows, every message before it has been rendered. */
const SENTINEL = "end of the corpus";

/** Elements that payloads try to create; none may appear inside the message log. */
const FORBIDDEN = "script, img, iframe, svg, object, embed, style, math, details, body, form, input";

// The corpus goes out faster than anyone types: lift the per-connection and per-address
// message rate limits, so the test is about rendering rather than flood control.
const test = testWith({ args: ["--message-rate", "0", "--ip-message-rate", "0"] });

/** Records dialogs (alert, confirm, prompt) a page opens, and dismisses them. */
function recordDialogs(page: Page): string[] {
  const dialogs: string[] = [];
  page.on("dialog", (dialog) => {
    dialogs.push(`${dialog.type()}: ${dialog.message()}`);
    void dialog.dismiss().catch(() => undefined);
  });
  return dialogs;
}

/**
 * Records every forbidden element ever inserted into the log, even one removed again
 * right away, so a payload that created and cleaned up an element is still caught.
 * Runs in the page.
 */
function watchLog(forbidden: string) {
  const w = window as unknown as { __inserted?: string[] };
  if (w.__inserted) return;
  const inserted: string[] = [];
  w.__inserted = inserted;
  new MutationObserver((mutations) => {
    for (const m of mutations) {
      // Where the node went in, not where it is now: it may be gone again already.
      const parent = m.target instanceof Element ? m.target : null;
      if (!parent?.closest('[role="log"]')) continue;
      m.addedNodes.forEach((node) => {
        if (!(node instanceof Element)) return;
        for (const found of [node, ...Array.from(node.querySelectorAll(forbidden))]) {
          if (found.matches(forbidden)) inserted.push(found.outerHTML.slice(0, 200));
        }
      });
    }
  }).observe(document, { subtree: true, childList: true });
}

interface Rendered {
  text: string;
  /** Tag names of the elements inside `.text`. */
  tags: string[];
  links: { href: string | null; rel: string | null; target: string | null; text: string }[];
}

/** Every message of the log, in order: its text, its elements and its links. */
async function rendered(page: Page): Promise<Rendered[]> {
  return page
    .getByRole("log")
    .locator("li.message .text")
    .evaluateAll((nodes) =>
      nodes.map((node) => ({
        text: node.textContent ?? "",
        tags: Array.from(node.querySelectorAll("*")).map((el) => el.tagName.toLowerCase()),
        links: Array.from(node.querySelectorAll("a")).map((a) => ({
          href: a.getAttribute("href"),
          rel: a.getAttribute("rel"),
          target: a.getAttribute("target"),
          text: a.textContent ?? "",
        })),
      })),
    );
}

/** The whole corpus is on `page`, verbatim and inert. */
async function expectCorpusShownInert(page: Page, dialogs: string[], who: string) {
  const log = page.getByRole("log");
  const messages = log.locator("li.message");
  await expect(messages, `${who}: every message arrived`).toHaveCount(corpus.length + 1);
  await expect(messages.last().locator(".text")).toHaveText(SENTINEL);
  await expect(log.locator('li.message:not([data-status="delivered"])')).toHaveCount(0);

  const shown = await rendered(page);
  expect(shown.map((m) => m.text)).toEqual([...corpus.map((p) => p.shown ?? p.text), SENTINEL]);
  corpus.forEach((payload, i) => {
    const message = shown[i];
    const what = `${who}, message ${i + 1}: ${payload.text.slice(0, 80)}`;
    if (payload.tags) {
      expect(message.tags, `${what}: its formatting`).toEqual(payload.tags);
    } else {
      expect(message.tags.every((tag) => tag === "a"), `${what}: only <a> inside`).toBe(true);
    }
    expect(message.links.map((l) => l.href), `${what}: links`).toEqual(payload.links);
    for (const link of message.links) {
      expect(link.text, `${what}: a link shows its address`).toBe(link.href);
      expect(link.rel, what).toBe("noopener noreferrer nofollow");
      expect(link.target, what).toBe("_blank");
      expect(link.href, what).toMatch(/^https?:\/\//i);
    }
  });

  await expect(log.locator(FORBIDDEN)).toHaveCount(0);
  await expect(log.locator("a:not([href^='http://' i]):not([href^='https://' i])")).toHaveCount(0);
  expect(await page.evaluate(() => (window as { __inserted?: string[] }).__inserted)).toEqual([]);
  expect(await page.evaluate(() => (window as { __xss?: unknown }).__xss)).toBeUndefined();
  expect(dialogs, `${who}: dialogs opened`).toEqual([]);
}

test("an XSS corpus is shown as text, with only http(s) links", async ({ openUser }) => {
  test.setTimeout(120_000);
  const alice = await openAndJoin(openUser, "alice");
  const bob = await openAndJoin(openUser, "bob");
  await expect(onlineEntry(alice.page, "bob")).toBeVisible();
  const aliceDialogs = recordDialogs(alice.page);
  const bobDialogs = recordDialogs(bob.page);
  for (const page of [alice.page, bob.page]) await page.evaluate(watchLog, FORBIDDEN);

  const sent = alice.page.getByRole("log").locator("li.message");
  for (const [i, payload] of corpus.entries()) {
    await send(alice.page, payload.text);
    // One at a time, so a refusal shows up at the message that caused it.
    await expect(sent, payload.text.slice(0, 80)).toHaveCount(i + 1);
    await expect(sent.nth(i), payload.text.slice(0, 80)).toHaveAttribute(
      "data-status",
      "delivered",
    );
  }
  await send(alice.page, SENTINEL);

  await expectCorpusShownInert(bob.page, bobDialogs, "bob");
  await expectCorpusShownInert(alice.page, aliceDialogs, "alice");

  // A reload renders the page again from the server, hydrates it, rejoins and shows the
  // room's history from the server's copy.
  await bob.page.addInitScript(watchLog, FORBIDDEN);
  await bob.page.reload();
  await waitHydrated(bob.page);
  await expectCorpusShownInert(bob.page, bobDialogs, "bob after a reload");
});
