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

/// A mention being typed: the `@` that starts it, at byte `start`, and what follows it up
/// to the caret (`partial`, without a `[`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partial {
    pub start: usize,
    pub partial: String,
}

/// The mention being typed just before byte `caret` of `text`, if any: `@` at the start
/// of a word, then a bare name so far (`@bo`) or a bracketed one not yet closed
/// (`@[Mary J`).
pub fn typing_at(text: &str, caret: usize) -> Option<Partial> {
    let before = text.get(..caret)?;
    let at = before.rfind('@')?;
    let starts_word = before[..at]
        .chars()
        .next_back()
        .is_none_or(|p| !p.is_alphanumeric() && p != '@');
    let typed = &before[at + 1..];
    let partial = match typed.strip_prefix('[') {
        Some(open) if !open.contains([']', '\n']) => open,
        Some(_) => return None,
        None if typed.contains(ends_bare_mention) || typed.contains(['[', ']']) => return None,
        None => typed,
    };
    (starts_word && partial.chars().count() <= crate::names::MAX_NAME_CHARS).then(|| Partial {
        start: at,
        partial: partial.to_owned(),
    })
}

/// The names to offer for `partial`: those whose key starts with its key, not `me`, in
/// the order of their keys, at most `limit`.
pub fn candidates<'a>(
    names: &'a [String],
    partial: &str,
    me: Option<&str>,
    limit: usize,
) -> Vec<&'a String> {
    let wanted = mention_key(partial);
    let me = me.map(mention_key);
    let mut found: Vec<(String, &String)> = names
        .iter()
        .map(|name| (mention_key(name), name))
        .filter(|(key, _)| key.starts_with(&wanted) && me.as_ref() != Some(key))
        .collect();
    found.sort();
    found
        .into_iter()
        .take(limit)
        .map(|(_, name)| name)
        .collect()
}

/// `text` with the mention being typed (`start..caret`) replaced by one of `name` and a
/// space, and where the caret goes after it.
pub fn complete(text: &str, start: usize, caret: usize, name: &str) -> (String, usize) {
    let inserted = format!("{} ", mention_for(name));
    let rest = text.get(caret..).unwrap_or_default();
    // A space already there is not doubled.
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    let head = text.get(..start).unwrap_or(text);
    (format!("{head}{inserted}{rest}"), start + inserted.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mention_being_typed_is_found_before_the_caret() {
        let at = |text: &str| typing_at(text, text.len()).map(|p| (p.start, p.partial));
        assert_eq!(at("hi @bo"), Some((3, "bo".to_owned())));
        assert_eq!(at("@"), Some((0, String::new())));
        assert_eq!(at("(@car"), Some((1, "car".to_owned())));
        assert_eq!(at("hi @[Mary J"), Some((3, "Mary J".to_owned())));
        assert_eq!(at("mail@exa"), None, "not at the start of a word");
        assert_eq!(at("@bob done"), None, "the mention was finished");
        assert_eq!(at("@[Mary] x"), None);
        assert_eq!(at("no mention"), None);
        // The caret in the middle of the text.
        assert_eq!(
            typing_at("@al and more", 3).map(|p| p.partial),
            Some("al".to_owned())
        );
        assert_eq!(typing_at("é@x", 1), None, "not a char boundary");
    }

    #[test]
    fn candidates_match_by_key_and_leave_out_the_writer() {
        let names: Vec<String> = ["Alice", "alan", "Bob", "Mary Jane", "me"]
            .map(String::from)
            .to_vec();
        let offer = |partial: &str, limit| -> Vec<&str> {
            candidates(&names, partial, Some("ME"), limit)
                .into_iter()
                .map(String::as_str)
                .collect()
        };
        assert_eq!(
            offer("al", 8),
            vec!["alan", "Alice"],
            "by key, whatever the case"
        );
        assert_eq!(offer("AL", 1), vec!["alan"]);
        assert_eq!(offer("mary  j", 8), vec!["Mary Jane"]);
        assert_eq!(offer("m", 8), vec!["Mary Jane"], "not oneself");
        assert_eq!(offer("", 8), vec!["alan", "Alice", "Bob", "Mary Jane"]);
        assert!(offer("zed", 8).is_empty());
    }

    #[test]
    fn completing_replaces_what_was_typed_with_a_mention_and_a_space() {
        assert_eq!(complete("hi @bo", 3, 6, "Bob"), ("hi @Bob ".to_owned(), 8));
        assert_eq!(
            complete("hi @[Ma, there", 3, 7, "Mary Jane"),
            ("hi @[Mary Jane] , there".to_owned(), 16)
        );
        assert_eq!(
            complete("@al now", 0, 3, "alan"),
            ("@alan now".to_owned(), 6)
        );
        // What completion inserts is found as a mention of that name.
        let (text, _) = complete("ping @ma", 5, 8, "Mary Jane");
        assert!(mentions(&text, "mary jane"));
    }

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
