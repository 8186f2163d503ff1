//! Message formatting: the few marks people type in every team chat, read from text.
//!
//! - `**bold**`, `_italic_` or `*italic*`, `` `code` ``;
//! - a fenced code block: a line starting with ```` ``` ```` (anything after it, such as a
//!   language name, is ignored) up to a line that is only ```` ``` ````;
//! - a quote: lines starting with `> ` (or a line that is only `>`);
//! - `http(s)://` links ([`crate::linkify`]) and mentions of the reader
//!   ([`crate::mentions`]).
//!
//! The result is a tree of [`Block`]s and [`Inline`]s holding text, which the page turns
//! into DOM nodes: text is never parsed as HTML, so no message can add an element or an
//! attribute that this module does not name. The same function renders on the server and
//! in the browser, so hydration finds what the server wrote.
//!
//! What is guaranteed:
//! - Nothing is lost: text that is not a complete mark stays as typed (an unclosed
//!   fence, a lone `**`, `snake_case_names`, `__init__`, `2 * 3 * 4`).
//! - Only the marks are dropped: the text of a message without any is exactly its
//!   visible text.
//! - No [`Inline::Text`] is empty and no two are adjacent (each is one DOM text node, and
//!   an empty or split one would not survive server-rendered HTML); no emphasis is empty.
//! - Linear-ish time on hostile input: closers are found by binary search, and emphasis
//!   nests at most [`MAX_NESTING`] deep (deeper marks stay text).
//!
//! What is not: this is not CommonMark. There are no headings, lists, tables, images or
//! HTML, by design: a chat line that starts with `#` or `1.` means what it says.

use crate::linkify::{self, Segment};

/// How deep bold and italic nest inside each other before further marks stay text.
pub const MAX_NESTING: usize = 3;

/// A block of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    /// Ordinary lines (line breaks kept in the text).
    Paragraph(Vec<Inline>),
    /// Quoted lines, without their `> `.
    Quote(Vec<Inline>),
    /// A fenced code block's lines, verbatim.
    Code(String),
}

/// A run of formatted text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inline {
    Text(String),
    Strong(Vec<Inline>),
    Emphasis(Vec<Inline>),
    Code(String),
    /// An `http(s)://` URL, exactly as written.
    Link(String),
    /// A mention of the reader, as written (`@bob`, `@[Mary Jane]`).
    MentionOfMe(String),
}

/// `text` as blocks; `me` is the reader's name, whose mentions are marked.
pub fn blocks(text: &str, me: Option<&str>) -> Vec<Block> {
    let me_key = me.map(crate::mentions::mention_key);
    let me_key = me_key.as_deref();
    let mut out = Vec::new();
    let lines: Vec<&str> = text.split('\n').collect();
    // Where the current paragraph started, as a byte offset into `text`, and where the
    // next line starts.
    let mut paragraph: Option<usize> = None;
    let mut offset = 0;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let line_start = offset;
        if is_fence(line) {
            if let Some(close) = (i + 1..lines.len()).find(|&j| lines[j].trim_end() == "```") {
                flush_paragraph(&mut out, text, &mut paragraph, line_start, me_key);
                out.push(Block::Code(lines[i + 1..close].join("\n")));
                offset += lines[i..=close].iter().map(|l| l.len() + 1).sum::<usize>();
                i = close + 1;
                continue;
            }
        } else if let Some(first) = line.strip_prefix("> ") {
            let mut quoted = vec![first];
            while let Some(more) = lines.get(i + quoted.len()).and_then(|l| quote_content(l)) {
                quoted.push(more);
            }
            // "> " alone is not a quote of nothing.
            if quoted.iter().any(|q| !q.trim().is_empty()) {
                flush_paragraph(&mut out, text, &mut paragraph, line_start, me_key);
                let mut inlines = Vec::new();
                for (n, q) in quoted.iter().enumerate() {
                    if n > 0 {
                        push_text(&mut inlines, "\n");
                    }
                    for inline in self::inlines(q, me_key) {
                        push_inline(&mut inlines, inline);
                    }
                }
                out.push(Block::Quote(inlines));
                offset += lines[i..i + quoted.len()]
                    .iter()
                    .map(|l| l.len() + 1)
                    .sum::<usize>();
                i += quoted.len();
                continue;
            }
        }
        paragraph.get_or_insert(line_start);
        offset += line.len() + 1;
        i += 1;
    }
    flush_paragraph(&mut out, text, &mut paragraph, text.len() + 1, me_key);
    out
}

fn is_fence(line: &str) -> bool {
    line.starts_with("```")
}

/// The text of a quoted line after the first, or `None` for a line that is not quoted:
/// a quote goes on with `> ` lines and lines that are only `>`.
fn quote_content(line: &str) -> Option<&str> {
    if line.trim_end() == ">" {
        Some("")
    } else {
        line.strip_prefix("> ")
    }
}

/// Ends the paragraph that started at `start` just before the line that starts at
/// `next_line` (the newline between them belongs to neither).
fn flush_paragraph(
    out: &mut Vec<Block>,
    text: &str,
    paragraph: &mut Option<usize>,
    next_line: usize,
    me_key: Option<&str>,
) {
    if let Some(start) = paragraph.take() {
        let body = &text[start..next_line - 1];
        if !body.is_empty() {
            out.push(Block::Paragraph(inlines(body, me_key)));
        }
    }
}

/// Code spans, links and mentions: atoms that emphasis cannot look inside.
#[derive(Debug, Clone, Copy)]
struct Atom {
    start: usize,
    end: usize,
    kind: AtomKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AtomKind {
    /// The backticks are part of the range; the code is inside them.
    Code,
    Link,
    MentionOfMe,
}

/// One line's (or paragraph's) formatting.
pub fn inlines(text: &str, me_key: Option<&str>) -> Vec<Inline> {
    let atoms = atoms(text, me_key);
    let mut out = Vec::new();
    emphasis(text, &atoms, 0, text.len(), 0, &mut out);
    out
}

fn atoms(text: &str, me_key: Option<&str>) -> Vec<Atom> {
    let bytes = text.as_bytes();
    let mut atoms = Vec::new();
    // Code spans first: nothing inside them is a mark, a link or a mention.
    let mut code = Vec::new();
    let mut at = 0;
    while let Some(open) = text[at..].find('`').map(|o| at + o) {
        match text[open + 1..].find('`').map(|c| open + 1 + c) {
            Some(close) if close > open + 1 => {
                code.push((open, close + 1));
                at = close + 1;
            }
            // "``" is two backticks, not an empty span; a lone one stays as typed.
            Some(close) => at = close + 1,
            None => break,
        }
    }
    let outside_code = |start: usize, end: usize| code.iter().all(|&(s, e)| end <= s || start >= e);
    // Links, in the text between code spans.
    let mut from = 0;
    let mut gaps: Vec<(usize, usize)> = Vec::new();
    for &(s, e) in &code {
        gaps.push((from, s));
        from = e;
    }
    gaps.push((from, bytes.len()));
    let mut links = Vec::new();
    for (s, e) in gaps {
        let mut base = s;
        for segment in linkify::segments(&text[s..e]) {
            let len = match segment {
                Segment::Text(t) => t.len(),
                Segment::Link(l) => {
                    links.push((base, base + l.len()));
                    l.len()
                }
            };
            base += len;
        }
    }
    for &(start, end) in &code {
        atoms.push(Atom {
            start,
            end,
            kind: AtomKind::Code,
        });
    }
    for &(start, end) in &links {
        atoms.push(Atom {
            start,
            end,
            kind: AtomKind::Link,
        });
    }
    if let Some(key) = me_key {
        for mention in crate::mentions::find(text) {
            let (start, end) = (mention.start, mention.end);
            let clear =
                outside_code(start, end) && links.iter().all(|&(s, e)| end <= s || start >= e);
            if mention.key == key && clear {
                atoms.push(Atom {
                    start,
                    end,
                    kind: AtomKind::MentionOfMe,
                });
            }
        }
    }
    atoms.sort_by_key(|a| a.start);
    atoms
}

/// An emphasis mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    /// `**`
    Strong,
    /// `_`
    Underscore,
    /// `*`
    Star,
}

impl Mark {
    const ALL: [Mark; 3] = [Mark::Strong, Mark::Underscore, Mark::Star];

    fn token(self) -> &'static str {
        match self {
            Mark::Strong => "**",
            Mark::Underscore => "_",
            Mark::Star => "*",
        }
    }

    /// The character the mark is made of: an opener may not follow one, nor a closer
    /// precede one, so `__init__` and `***` stay text.
    fn char(self) -> char {
        match self {
            Mark::Strong | Mark::Star => '*',
            Mark::Underscore => '_',
        }
    }
}

/// Formats `text[start..end]` into `out`, with emphasis nested `depth` deep already.
fn emphasis(
    text: &str,
    atoms: &[Atom],
    start: usize,
    end: usize,
    depth: usize,
    out: &mut Vec<Inline>,
) {
    if depth >= MAX_NESTING {
        plain(text, atoms, start, end, out);
        return;
    }
    // Every place a mark could close, per mark, in order; an opener's closer is the first
    // one after it.
    let closers: Vec<Vec<usize>> = Mark::ALL
        .iter()
        .map(|&mark| {
            positions(text, atoms, start, end, mark)
                .filter(|&at| closes(text, at, mark, start, end))
                .collect()
        })
        .collect();
    let mut done = start;
    let mut at = start;
    // The next atom at or after `at`.
    let mut next_atom = atoms.partition_point(|a| a.start < start);
    while at < end {
        if let Some(atom) = atoms.get(next_atom).filter(|a| a.start == at) {
            at = atom.end;
            next_atom += 1;
            continue;
        }
        let opened = Mark::ALL.iter().enumerate().find_map(|(k, &mark)| {
            let token = mark.token();
            if !text[at..end].starts_with(token) || !opens(text, at, mark, start, end) {
                return None;
            }
            let inner = at + token.len();
            let list = &closers[k];
            let first = list.partition_point(|&c| c <= inner);
            list.get(first).map(|&close| (mark, inner, close))
        });
        match opened {
            Some((mark, inner, close)) => {
                plain(text, atoms, done, at, out);
                let mut children = Vec::new();
                emphasis(text, atoms, inner, close, depth + 1, &mut children);
                out.push(match mark {
                    Mark::Strong => Inline::Strong(children),
                    Mark::Underscore | Mark::Star => Inline::Emphasis(children),
                });
                at = close + mark.token().len();
                done = at;
                next_atom = atoms.partition_point(|a| a.start < at);
            }
            None => at += text[at..].chars().next().map_or(1, char::len_utf8),
        }
    }
    plain(text, atoms, done, end, out);
}

/// Where `mark` is written in `text[start..end]`, outside atoms.
fn positions<'a>(
    text: &'a str,
    atoms: &'a [Atom],
    start: usize,
    end: usize,
    mark: Mark,
) -> impl Iterator<Item = usize> + 'a {
    let token = mark.token();
    text[start..end]
        .match_indices(token)
        .map(move |(i, _)| start + i)
        .filter(move |&at| at + token.len() <= end)
        .filter(move |&at| !overlaps_atom(atoms, at, at + token.len()))
}

/// Whether `start..end` overlaps an atom (atoms are sorted and do not overlap).
fn overlaps_atom(atoms: &[Atom], start: usize, end: usize) -> bool {
    let starting_before_end = atoms.partition_point(|a| a.start < end);
    starting_before_end > 0 && atoms[starting_before_end - 1].end > start
}

fn before(text: &str, at: usize, start: usize) -> Option<char> {
    text[start..at].chars().next_back()
}

fn after(text: &str, at: usize, end: usize) -> Option<char> {
    text[at..end].chars().next()
}

/// Whether `mark` at `at` can open: it starts a word and text follows it.
fn opens(text: &str, at: usize, mark: Mark, start: usize, end: usize) -> bool {
    let next = after(text, at + mark.token().len(), end);
    let prev = before(text, at, start);
    next.is_some_and(|c| !c.is_whitespace() && c != mark.char())
        && prev.is_none_or(|c| !c.is_alphanumeric() && c != mark.char())
}

/// Whether `mark` at `at` can close: it ends a word.
fn closes(text: &str, at: usize, mark: Mark, start: usize, end: usize) -> bool {
    let prev = before(text, at, start);
    let next = after(text, at + mark.token().len(), end);
    prev.is_some_and(|c| !c.is_whitespace() && c != mark.char())
        && next.is_none_or(|c| !c.is_alphanumeric() && c != mark.char())
}

/// `text[start..end]` without emphasis: text, with its atoms.
fn plain(text: &str, atoms: &[Atom], start: usize, end: usize, out: &mut Vec<Inline>) {
    let mut at = start;
    let first = atoms.partition_point(|a| a.start < start);
    let last = atoms.partition_point(|a| a.start < end);
    for atom in atoms[first..last].iter().filter(|a| a.end <= end) {
        push_text(out, &text[at..atom.start]);
        let inside = &text[atom.start..atom.end];
        out.push(match atom.kind {
            AtomKind::Code => Inline::Code(inside[1..inside.len() - 1].to_owned()),
            AtomKind::Link => Inline::Link(inside.to_owned()),
            AtomKind::MentionOfMe => Inline::MentionOfMe(inside.to_owned()),
        });
        at = atom.end;
    }
    push_text(out, &text[at..end]);
}

/// Appends text, joined to the text before it.
fn push_text(out: &mut Vec<Inline>, text: &str) {
    if text.is_empty() {
        return;
    }
    if let Some(Inline::Text(last)) = out.last_mut() {
        last.push_str(text);
    } else {
        out.push(Inline::Text(text.to_owned()));
    }
}

fn push_inline(out: &mut Vec<Inline>, inline: Inline) {
    match inline {
        Inline::Text(text) => push_text(out, &text),
        other => out.push(other),
    }
}

/// The text a reader sees of `blocks`, with blocks on lines of their own: what
/// `textContent` gives, but for the line breaks between blocks.
pub fn visible_text(blocks: &[Block]) -> String {
    fn inline_text(inlines: &[Inline], out: &mut String) {
        for inline in inlines {
            match inline {
                Inline::Text(t) | Inline::Code(t) | Inline::Link(t) | Inline::MentionOfMe(t) => {
                    out.push_str(t)
                }
                Inline::Strong(children) | Inline::Emphasis(children) => inline_text(children, out),
            }
        }
    }
    let mut out = String::new();
    for (i, block) in blocks.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        match block {
            Block::Paragraph(inlines) | Block::Quote(inlines) => inline_text(inlines, &mut out),
            Block::Code(code) => out.push_str(code),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::Block::{Code as CodeBlock, Paragraph, Quote};
    use super::Inline::{Code, Emphasis, Link, MentionOfMe, Strong, Text};
    use super::*;

    fn text(s: &str) -> Inline {
        Text(s.to_owned())
    }

    fn one(s: &str) -> Vec<Inline> {
        match blocks(s, None).as_slice() {
            [Paragraph(inlines)] => inlines.clone(),
            other => panic!("{s:?} is not one paragraph: {other:?}"),
        }
    }

    #[test]
    fn plain_text_is_one_text_node() {
        assert_eq!(one("hello there"), vec![text("hello there")]);
        assert_eq!(
            one("first line\nsecond line"),
            vec![text("first line\nsecond line")]
        );
        assert!(blocks("", None).is_empty());
    }

    #[test]
    fn bold_italic_and_code() {
        assert_eq!(
            one("a **b** _c_ *d* `e` f"),
            vec![
                text("a "),
                Strong(vec![text("b")]),
                text(" "),
                Emphasis(vec![text("c")]),
                text(" "),
                Emphasis(vec![text("d")]),
                text(" "),
                Code("e".into()),
                text(" f"),
            ]
        );
        assert_eq!(
            one("**bold _and italic_**!"),
            vec![
                Strong(vec![text("bold "), Emphasis(vec![text("and italic")])]),
                text("!")
            ]
        );
        assert_eq!(
            one("(_yes_)"),
            vec![text("("), Emphasis(vec![text("yes")]), text(")")]
        );
    }

    #[test]
    fn what_is_not_a_mark_stays_as_typed() {
        for s in [
            "snake_case_name and __init__ and a_b",
            "2 * 3 * 4 = 24",
            "a ** b",
            "**unclosed",
            "_ spaced _",
            "***",
            "``",
            "a lone ` backtick",
            "price: $5*",
            "<b>not html</b> & <script>",
            "<style>*{display:none}</style>",
            "window.__xss=1",
            "```",
            "```rust\nunclosed fence",
            ">not a quote",
            "> ",
            ">",
            "# not a heading\n1. not a list",
        ] {
            assert_eq!(one(s), vec![text(s)], "{s:?}");
        }
    }

    #[test]
    fn code_hides_marks_links_and_mentions() {
        assert_eq!(
            blocks("`**x** https://a.com @bob`", Some("bob")),
            vec![Paragraph(vec![Code("**x** https://a.com @bob".into())])]
        );
    }

    #[test]
    fn links_keep_their_underscores_and_can_be_bold() {
        assert_eq!(
            one("see https://x.com/a_b_c_ now"),
            vec![
                text("see "),
                Link("https://x.com/a_b_c_".into()),
                text(" now")
            ]
        );
        assert_eq!(
            one("**https://x.com**"),
            vec![Strong(vec![Link("https://x.com".into())])]
        );
    }

    #[test]
    fn mentions_of_the_reader_inside_marks() {
        assert_eq!(
            blocks("**hey @bob** and @alice", Some("Bob")),
            vec![Paragraph(vec![
                Strong(vec![text("hey "), MentionOfMe("@bob".into())]),
                text(" and @alice"),
            ])]
        );
    }

    #[test]
    fn fences_and_quotes_are_blocks() {
        assert_eq!(
            blocks("look:\n```rust\nfn main() {\n    **x**\n}\n```\nnice", None),
            vec![
                Paragraph(vec![text("look:")]),
                CodeBlock("fn main() {\n    **x**\n}".into()),
                Paragraph(vec![text("nice")]),
            ]
        );
        assert_eq!(
            blocks("> she said\n> **twice**\n>\nand I agree", None),
            vec![
                Quote(vec![
                    text("she said\n"),
                    Strong(vec![text("twice")]),
                    text("\n")
                ]),
                Paragraph(vec![text("and I agree")]),
            ]
        );
        assert_eq!(blocks("```\n```", None), vec![CodeBlock(String::new())]);
    }

    #[test]
    fn visible_text_is_the_text_without_marks() {
        let shown = |s: &str| visible_text(&blocks(s, None));
        assert_eq!(shown("a **b** `c` _d_"), "a b c d");
        assert_eq!(shown("> q\n```\ncode\n```\nafter"), "q\ncode\nafter");
        assert_eq!(shown("no marks at all, **"), "no marks at all, **");
    }

    /// Every text node is non-empty and no two are adjacent; no emphasis is empty.
    fn well_formed(inlines: &[Inline]) -> bool {
        inlines.windows(2).all(|w| !matches!(w, [Text(_), Text(_)]))
            && inlines.iter().all(|i| match i {
                Text(t) => !t.is_empty(),
                Strong(c) | Emphasis(c) => !c.is_empty() && well_formed(c),
                _ => true,
            })
    }

    #[test]
    fn hostile_input_is_well_formed() {
        let inputs = [
            "_a ".repeat(1_300),
            "**a ".repeat(1_000),
            "*_**".repeat(1_000),
            "`".repeat(4_000),
            "> ".repeat(2_000),
            "```\n".repeat(1_000),
            "**_*".repeat(250) + &"*_**".repeat(250),
            "_(".repeat(2_000) + &")_".repeat(2_000),
        ];
        for input in &inputs {
            let parsed = blocks(input, Some("a"));
            for block in &parsed {
                if let Paragraph(i) | Quote(i) = block {
                    assert!(well_formed(i), "{}", &input[..20]);
                }
            }
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = "**a _b *c **d** c* b_ a**";
        let parsed = one(deep);
        fn depth(inlines: &[Inline]) -> usize {
            inlines
                .iter()
                .map(|i| match i {
                    Strong(c) | Emphasis(c) => 1 + depth(c),
                    _ => 0,
                })
                .max()
                .unwrap_or(0)
        }
        assert!(depth(&parsed) <= MAX_NESTING);
        assert!(visible_text(&[Paragraph(parsed)]).len() <= deep.len());
    }
}
