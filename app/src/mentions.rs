//! Mentions: `@name` in a message's text.
//!
//! A name without spaces or brackets is mentioned as `@name`; any name can be written
//! `@[Mary Jane]`, which is what the composer's autocompletion inserts for names with
//! spaces. A mention starts a word (`mail@example.com` mentions nobody) and ends at white
//! space or trailing punctuation. Names are matched by [`mention_key`]: case and runs of
//! spaces do not matter.
//!
//! The server uses the same rules to count unread mentions; the browser uses them to
//! highlight mentions of the reader. Neither needs the name tables of [`crate::names`].

/// Mentions one message counts at most.
pub const MAX_MENTIONS: usize = 20;

/// The form mentions and names are compared in: lower case, runs of white space as one
/// space, trimmed.
pub fn mention_key(name: &str) -> String {
    name.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// How to mention `name` in a message.
pub fn mention_for(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| !c.is_whitespace() && !ends_bare_mention(c) && c != '[' && c != ']');
    if bare {
        format!("@{name}")
    } else {
        format!("@[{name}]")
    }
}

fn ends_bare_mention(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            ',' | '.'
                | ';'
                | ':'
                | '!'
                | '?'
                | '('
                | ')'
                | '{'
                | '}'
                | '"'
                | '\''
                | '<'
                | '>'
                | '`'
                | '*'
                | '@'
        )
}

/// Where a mention sits in the text: its byte range (the `@` included) and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mention {
    pub start: usize,
    pub end: usize,
    pub key: String,
}

/// Every mention in `text`, in order (at most [`MAX_MENTIONS`]).
pub fn find(text: &str) -> Vec<Mention> {
    let mut found = Vec::new();
    let mut previous: Option<char> = None;
    let mut iter = text.char_indices().peekable();
    while let Some((at, c)) = iter.next() {
        let starts_word = previous.is_none_or(|p| !p.is_alphanumeric() && p != '@');
        previous = Some(c);
        if c != '@' || !starts_word {
            continue;
        }
        let rest = &text[at + 1..];
        let (name, len) = if let Some(bracketed) = rest.strip_prefix('[') {
            match bracketed.find(']') {
                Some(close)
                    if close > 0
                        && !bracketed[..close].contains('\n')
                        && bracketed[..close].chars().count() <= crate::names::MAX_NAME_CHARS =>
                {
                    (&bracketed[..close], close + 2)
                }
                _ => continue,
            }
        } else {
            let end = rest.find(ends_bare_mention).unwrap_or(rest.len());
            // "@bob." and "@bob's": the sentence's punctuation is not the name's.
            (&rest[..end], end)
        };
        if name.trim().is_empty() {
            continue;
        }
        found.push(Mention {
            start: at,
            end: at + 1 + len,
            key: mention_key(name),
        });
        if found.len() == MAX_MENTIONS {
            break;
        }
        // Skip what the mention covered.
        while iter.peek().is_some_and(|(i, _)| *i < at + 1 + len) {
            previous = iter.next().map(|(_, c)| c);
        }
    }
    found
}

/// The distinct keys `text` mentions, in order.
pub fn keys(text: &str) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for mention in find(text) {
        if !keys.contains(&mention.key) {
            keys.push(mention.key);
        }
    }
    keys
}

/// Whether `text` mentions `name`.
pub fn mentions(text: &str, name: &str) -> bool {
    let key = mention_key(name);
    find(text).iter().any(|m| m.key == key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_and_bracketed_mentions_are_found() {
        assert_eq!(
            keys("hi @bob and @[Mary  Jane], see @Carol."),
            vec!["bob", "mary jane", "carol"]
        );
        assert!(mentions("ping @BOB!", "bob"));
        assert!(mentions("@[mary jane] look", "Mary Jane"));
        assert!(!mentions("@bobby", "bob"));
        assert!(!mentions("mail me at bob@example.com", "example.com"));
        assert_eq!(keys("@bob @bob @@bob @ alone @[]"), vec!["bob"]);
    }

    #[test]
    fn ranges_cover_the_mention() {
        let text = "yo @[Ann Lee]!";
        let found = find(text);
        assert_eq!(found.len(), 1);
        assert_eq!(&text[found[0].start..found[0].end], "@[Ann Lee]");
        let text = "é@x (@zoë)";
        let found = find(text);
        assert_eq!(found.len(), 1);
        assert_eq!(&text[found[0].start..found[0].end], "@zoë");
    }

    #[test]
    fn mention_for_brackets_names_that_need_it() {
        assert_eq!(mention_for("bob"), "@bob");
        assert_eq!(mention_for("Mary Jane"), "@[Mary Jane]");
        assert_eq!(mention_for("a.b"), "@[a.b]");
        for name in ["bob", "Mary Jane", "a.b", "日本"] {
            assert!(mentions(&mention_for(name), name), "{name}");
        }
    }

    #[test]
    fn many_mentions_are_capped() {
        let text: String = (0..50).map(|i| format!("@u{i} ")).collect();
        assert_eq!(find(&text).len(), MAX_MENTIONS);
    }
}
