//! Splits message text into plain text and web links.
//!
//! Only `http://` and `https://` URLs become links: the link's address is then the
//! visible text itself, starting with one of those two schemes, so it can never be a
//! `javascript:`, `data:` or `vbscript:` URL. Everything else stays text, which the page
//! renders as text nodes (never as HTML).

/// A piece of message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment<'a> {
    Text(&'a str),
    /// An `http(s)://` URL, exactly as written.
    Link(&'a str),
}

const SCHEMES: [&str; 2] = ["https://", "http://"];

/// Splits `text` into text and links, in order. Concatenating the segments gives `text`
/// back; no segment is empty and no two text segments are adjacent, so each renders as
/// exactly one DOM node (an empty or split text node would not survive the trip through
/// server-rendered HTML and break hydration).
pub fn segments(text: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    // Start of text not yet emitted.
    let mut plain = 0;
    // Where to look for the next URL.
    let mut at = 0;
    while let Some((start, len)) = find_url(text, at) {
        if start > plain {
            out.push(Segment::Text(&text[plain..start]));
        }
        out.push(Segment::Link(&text[start..start + len]));
        plain = start + len;
        at = plain;
    }
    if plain < text.len() {
        out.push(Segment::Text(&text[plain..]));
    }
    out
}

/// The next URL at or after byte `from`: its start and length in bytes.
fn find_url(text: &str, from: usize) -> Option<(usize, usize)> {
    let mut search = from;
    while let Some(offset) = find_scheme(&text[search..]) {
        let start = search + offset;
        // "xhttp://" is not a URL that starts at "h": the scheme must begin a word.
        let word_start = text[..start]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_alphanumeric());
        if word_start {
            let len = url_len(&text[start..]);
            if len > 0 {
                return Some((start, len));
            }
        }
        // Skip past this "h" and look again.
        search = start + 1;
    }
    None
}

/// The byte offset of the first `http://` or `https://`, ignoring ASCII case.
fn find_scheme(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    (0..bytes.len()).find(|&i| {
        SCHEMES.iter().any(|scheme| {
            bytes
                .get(i..i + scheme.len())
                .is_some_and(|b| b.eq_ignore_ascii_case(scheme.as_bytes()))
        })
    })
}

/// The length of the URL at the start of `text` (which starts with a scheme), or 0 if
/// there is no host after the scheme.
fn url_len(text: &str) -> usize {
    let scheme_len = SCHEMES
        .iter()
        .find(|s| {
            text.as_bytes()
                .get(..s.len())
                .is_some_and(|b| b.eq_ignore_ascii_case(s.as_bytes()))
        })
        .map_or(0, |s| s.len());
    let mut end = text
        .char_indices()
        .find(|&(_, c)| ends_url(c))
        .map_or(text.len(), |(i, _)| i);
    // Punctuation at the end belongs to the sentence, not the URL: "see https://x.com."
    // Closing brackets stay only when the URL opened them, as in Wikipedia's
    // ".../Rust_(programming_language)". Bracket counts are kept as characters are
    // dropped, so this is linear however many `)` a hostile text ends with.
    let mut open = [0usize; 3];
    let mut close = [0usize; 3];
    for c in text[..end].chars() {
        if let Some(kind) = bracket(c) {
            match kind {
                (i, true) => open[i] += 1,
                (i, false) => close[i] += 1,
            }
        }
    }
    while let Some(last) = text[..end].chars().next_back() {
        let drop = match last {
            '.' | ',' | ':' | ';' | '!' | '?' | '\'' | '*' | '~' => true,
            c => match bracket(c) {
                Some((i, false)) => close[i] > open[i],
                _ => false,
            },
        };
        if !drop || end <= scheme_len {
            break;
        }
        if let Some((i, false)) = bracket(last) {
            close[i] -= 1;
        }
        end -= last.len_utf8();
    }
    let host = text[scheme_len..end]
        .split(['/', '?', '#'])
        .next()
        .unwrap_or("");
    if host.chars().any(char::is_alphanumeric) {
        end
    } else {
        0
    }
}

/// Characters that cannot be part of a URL in running text: whitespace, controls, the
/// delimiters HTML and prose put around URLs, and invisible or direction-changing
/// characters that would make the address differ from what is shown.
fn ends_url(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || matches!(
            c,
            '"' | '<' | '>' | '`' | '\u{00AD}' | '\u{061C}' | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}'
        )
}

/// Which bracket pair a character belongs to, and whether it opens.
fn bracket(c: char) -> Option<(usize, bool)> {
    match c {
        '(' => Some((0, true)),
        ')' => Some((0, false)),
        '[' => Some((1, true)),
        ']' => Some((1, false)),
        '{' => Some((2, true)),
        '}' => Some((2, false)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::Segment::{Link, Text};
    use super::*;

    #[test]
    fn text_without_urls_is_one_segment() {
        assert_eq!(segments("hello there"), vec![Text("hello there")]);
        assert_eq!(segments(""), vec![]);
        assert_eq!(
            segments("<script>alert(1)</script>"),
            vec![Text("<script>alert(1)</script>")]
        );
    }

    #[test]
    fn http_and_https_urls_become_links() {
        assert_eq!(
            segments("see https://x.com/a?b=1#c now"),
            vec![Text("see "), Link("https://x.com/a?b=1#c"), Text(" now")]
        );
        assert_eq!(segments("http://x.com"), vec![Link("http://x.com")]);
        assert_eq!(
            segments("https://a.com https://b.com"),
            vec![Link("https://a.com"), Text(" "), Link("https://b.com")]
        );
    }

    #[test]
    fn scheme_case_is_ignored() {
        assert_eq!(
            segments("go HTTPS://X.COM/Path"),
            vec![Text("go "), Link("HTTPS://X.COM/Path")]
        );
        assert_eq!(segments("HtTp://x.com"), vec![Link("HtTp://x.com")]);
    }

    #[test]
    fn trailing_punctuation_is_not_part_of_the_link() {
        assert_eq!(
            segments("https://x.com/a)."),
            vec![Link("https://x.com/a"), Text(").")]
        );
        assert_eq!(
            segments("(https://x.com)"),
            vec![Text("("), Link("https://x.com"), Text(")")]
        );
        assert_eq!(
            segments("is it https://x.com/?!"),
            vec![Text("is it "), Link("https://x.com/"), Text("?!")]
        );
        assert_eq!(
            segments("'https://x.com/it's'"),
            vec![Text("'"), Link("https://x.com/it's"), Text("'")]
        );
        // Brackets the URL itself opened are kept.
        assert_eq!(
            segments("https://en.wikipedia.org/wiki/Rust_(programming_language)."),
            vec![
                Link("https://en.wikipedia.org/wiki/Rust_(programming_language)"),
                Text(".")
            ]
        );
    }

    #[test]
    fn other_schemes_stay_text() {
        for text in [
            "javascript:alert(1)",
            "JavaScript:alert(document.cookie)",
            "data:text/html,<script>alert(1)</script>",
            "vbscript:msgbox(1)",
            "ftp://x.com/file",
            "//x.com/protocol-relative",
        ] {
            assert_eq!(segments(text), vec![Text(text)], "{text:?}");
        }
        // A scheme glued to a word is not a URL start.
        assert_eq!(segments("xhttps://x.com"), vec![Text("xhttps://x.com")]);
        // A javascript: URL that embeds an https one: only the https part is a link.
        assert_eq!(
            segments("javascript:https://x.com"),
            vec![Text("javascript:"), Link("https://x.com")]
        );
    }

    #[test]
    fn quotes_and_angle_brackets_end_a_url() {
        assert_eq!(
            segments("https://x.com\"onmouseover=alert(1)"),
            vec![Link("https://x.com"), Text("\"onmouseover=alert(1)")]
        );
        assert_eq!(
            segments("<a href=\"https://x.com\">x</a>"),
            vec![Text("<a href=\""), Link("https://x.com"), Text("\">x</a>")]
        );
        assert_eq!(
            segments("https://x.com/<script>"),
            vec![Link("https://x.com/"), Text("<script>")]
        );
    }

    #[test]
    fn invisible_characters_end_a_url() {
        assert_eq!(
            segments("https://x.com\u{202E}moc.live"),
            vec![Link("https://x.com"), Text("\u{202E}moc.live")]
        );
        assert_eq!(
            segments("https://x.com\u{200B}.evil"),
            vec![Link("https://x.com"), Text("\u{200B}.evil")]
        );
    }

    #[test]
    fn a_scheme_without_a_host_is_text() {
        for text in ["https://", "http:// x", "https://.", "see https:///path"] {
            assert!(
                segments(text).iter().all(|s| matches!(s, Text(_))),
                "{text:?}: {:?}",
                segments(text)
            );
        }
    }

    #[test]
    fn segments_reassemble_the_text() {
        let text = "a https://x.com/(b) c\nhttp://y.org, https://z.net/é?q=\"1\" end";
        let joined: String = segments(text)
            .iter()
            .map(|s| match s {
                Text(t) | Link(t) => *t,
            })
            .collect();
        assert_eq!(joined, text);
        let links: Vec<_> = segments(text)
            .into_iter()
            .filter(|s| matches!(s, Link(_)))
            .collect();
        assert_eq!(
            links,
            vec![
                Link("https://x.com/(b)"),
                Link("http://y.org"),
                Link("https://z.net/é?q=")
            ]
        );
    }
}

#[cfg(test)]
mod hostile {
    use super::Segment::{Link, Text};
    use super::*;

    #[test]
    fn a_url_followed_by_thousands_of_closing_brackets() {
        // This took seconds per message to render when each dropped `)` recounted the
        // brackets of the whole URL.
        let text = format!("https://a{}", ")".repeat(4_000));
        assert_eq!(
            segments(&text),
            vec![Link("https://a"), Text(&text["https://a".len()..])]
        );
        let balanced = format!("https://a/{}{}", "(".repeat(2_000), ")".repeat(2_001));
        let link_len = balanced.len() - 1;
        assert_eq!(segments(&balanced)[0], Link(&balanced[..link_len]));
    }
}
