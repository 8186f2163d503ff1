//! What the search index holds for a text, and what a search looks it up by.
//!
//! A message matches a query when its text contains every word of the query (PROTOCOL.md,
//! `search`), compared in lower case. A query word holds no whitespace, so where it
//! occurs in a text it lies inside one of the text's whitespace-separated words, and every
//! three characters of it are three characters of that word. So the index needs, per
//! message, the distinct runs of three characters inside its words ("trigrams") and
//! nothing that spans a space; a candidate that has all of a query's trigrams is then
//! checked against its text (`SqliteStorage::search`), which makes the result exact.
//!
//! Why not SQLite's `trigram` tokenizer: it indexes every run of three characters,
//! across spaces and once per occurrence, which on ordinary sentences cost the mover
//! about 11 µs a message (measured with FTS5 alone on 200,000 60-character sentences);
//! distinct in-word trigrams cost under half. FTS5 takes the terms as text, so each is
//! written as a short token the `ascii` tokenizer keeps whole: 30 bits of a hash of the
//! trigram in base 32 (6 characters of `a-z2-7`; FTS5 reads every character of them, so
//! shorter is cheaper). Two trigrams with one token, about one pair in a billion, only
//! make a candidate that the text check turns away.
//!
//! The hash is part of the database format: the index holds its output, so changing it
//! needs a migration that rebuilds the index (see `Appender::start`).

/// Terms of one text for the index: its distinct in-word trigrams, each as a token, in
/// the order they first occur, separated by spaces. Words shorter than three characters
/// give none.
pub fn index_terms(text: &str) -> String {
    let mut seen = TokenSet::for_at_most(text.len());
    let mut terms = String::with_capacity(text.len() * (TOKEN_CHARS + 1));
    let mut add = |hash: u64| {
        let token = token_of(hash);
        if seen.insert(token) {
            if !terms.is_empty() {
                terms.push(' ');
            }
            push_token(&mut terms, token);
        }
    };
    if text.is_ascii() {
        // Most messages are ASCII: one byte a character, and lower case needs no tables
        // (the same result as `to_lowercase`, which the query side and the text check
        // use), so each byte is lowered as it is read, with no lowered copy. The words
        // are `split_whitespace`'s: its ASCII whitespace includes the vertical tab, which
        // `u8::is_ascii_whitespace` leaves out.
        let whitespace = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
        for word in text.as_bytes().split(whitespace) {
            for trigram in word.windows(3) {
                add(fnv1a(&[
                    trigram[0].to_ascii_lowercase(),
                    trigram[1].to_ascii_lowercase(),
                    trigram[2].to_ascii_lowercase(),
                ]));
            }
        }
    } else {
        for word in text.to_lowercase().split_whitespace() {
            for_each_trigram(word, &mut add);
        }
    }
    terms
}

/// Tokens for one query word, already in lower case (as the check compares it): the
/// trigrams that cover it, starting every third character, and the last one. Empty for a
/// word shorter than three characters.
///
/// Why not every trigram: a candidate is checked against its text anyway, and FTS5 seeks
/// through each token's list for every candidate, so each token more costs every search
/// its share. The trigrams of a common word are each about as common as the word, and the
/// overlapping ones add almost nothing to tell candidates apart ("num" and "ber" say
/// nearly all that "num umb mbe ber" say).
pub fn query_terms(word: &str) -> Vec<String> {
    let mut all = Vec::new();
    for_each_trigram(word, |hash| all.push(token_of(hash)));
    let last = all.len().saturating_sub(1);
    let mut tokens: Vec<u32> = all
        .iter()
        .enumerate()
        .filter(|(at, _)| at % 3 == 0 || *at == last)
        .map(|(_, token)| *token)
        .collect();
    tokens.sort_unstable();
    tokens.dedup();
    tokens
        .into_iter()
        .map(|token| {
            let mut text = String::with_capacity(TOKEN_CHARS);
            push_token(&mut text, token);
            text
        })
        .collect()
}

/// Bits of a trigram's hash a token keeps.
const TOKEN_BITS: u32 = 30;
/// Base-32 characters of a token.
const TOKEN_CHARS: usize = (TOKEN_BITS / 5) as usize;
const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Calls `found` with the hash of every run of three characters of `word`, in order.
fn for_each_trigram(word: &str, mut found: impl FnMut(u64)) {
    let mut starts = word.char_indices().map(|(at, _)| at);
    let mut window: [usize; 3] = match (starts.next(), starts.next(), starts.next()) {
        (Some(a), Some(b), Some(c)) => [a, b, c],
        _ => return,
    };
    loop {
        let end = starts.next();
        let trigram = &word[window[0]..end.unwrap_or(word.len())];
        found(fnv1a(trigram.as_bytes()));
        let Some(end) = end else { return };
        window = [window[1], window[2], end];
    }
}

/// 64-bit FNV-1a: fixed for ever (the index stores its output), fast on 3 to 12 bytes.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The token of a trigram's hash: its top `TOKEN_BITS` bits.
fn token_of(hash: u64) -> u32 {
    (hash >> (64 - TOKEN_BITS)) as u32
}

fn push_token(out: &mut String, token: u32) {
    let mut bits = token;
    for _ in 0..TOKEN_CHARS {
        out.push(char::from(BASE32[(bits & 31) as usize]));
        bits >>= 5;
    }
}

/// The tokens one text gave so far: open addressing over a table at least twice as large
/// as the text has bytes (so at least twice its trigrams), cheaper than sorting them.
struct TokenSet {
    slots: Vec<u32>,
}

impl TokenSet {
    /// Never a token: tokens have `TOKEN_BITS` < 32 bits.
    const EMPTY: u32 = u32::MAX;

    fn for_at_most(tokens: usize) -> Self {
        Self {
            slots: vec![Self::EMPTY; (tokens * 2).max(8).next_power_of_two()],
        }
    }

    /// Whether `token` is new; it is in the set afterwards.
    fn insert(&mut self, token: u32) -> bool {
        let mask = self.slots.len() - 1;
        // The token's low bits are already a hash's; multiplying spreads them further.
        let mut at = (token.wrapping_mul(0x9e37_79b9) >> 7) as usize & mask;
        loop {
            match self.slots[at] {
                Self::EMPTY => {
                    self.slots[at] = token;
                    return true;
                }
                found if found == token => return false,
                _ => at = (at + 1) & mask,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(text: &str) -> Vec<String> {
        index_terms(text)
            .split(' ')
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn a_word_is_found_by_its_trigrams_inside_any_longer_word() {
        let indexed = tokens("We deploy on Friday");
        for word in ["deploy", "ploy", "fri", "friday", "day"] {
            let wanted = query_terms(word);
            assert!(!wanted.is_empty());
            assert!(wanted.iter().all(|t| indexed.contains(t)), "{word}");
        }
        assert!(!query_terms("dep fri").iter().all(|t| indexed.contains(t)));
    }

    #[test]
    fn nothing_spans_a_space_and_each_term_is_there_once() {
        // "abc abc": one word's trigram twice, none across the space.
        assert_eq!(tokens("abc abc"), query_terms("abc"));
        let mut both = query_terms("abc");
        both.extend(query_terms("bcd"));
        let mut abcd = tokens("abcd");
        both.sort();
        abcd.sort();
        assert_eq!(abcd, both);
        assert!(
            tokens("a b cd ef").is_empty(),
            "no word of three characters"
        );
    }

    #[test]
    fn any_script_and_case_give_the_same_terms() {
        let indexed = tokens("Привет, КАК дела; 東京で会いましょう");
        for word in ["как", "привет,", "会いましょう", "東京で"] {
            assert!(
                query_terms(word).iter().all(|t| indexed.contains(t)),
                "{word}"
            );
        }
    }

    #[test]
    fn tokens_are_what_the_ascii_tokenizer_keeps_whole() {
        let terms = index_terms("100%_done \"quoted\" <b>x</b> ∑∫√ \u{0}nul");
        assert!(!terms.is_empty());
        for token in terms.split(' ') {
            assert_eq!(token.len(), TOKEN_CHARS);
            assert!(token
                .bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)));
        }
    }

    #[test]
    fn a_query_word_is_looked_up_by_the_trigrams_that_cover_it() {
        let trigrams = |word: &str| {
            let mut all = Vec::new();
            for_each_trigram(word, |hash| {
                let mut text = String::new();
                push_token(&mut text, token_of(hash));
                all.push(text);
            });
            all
        };
        let sorted = |mut tokens: Vec<String>| {
            tokens.sort();
            tokens
        };
        let number = trigrams("number");
        // num, ber: every character covered, no two overlapping.
        assert_eq!(
            sorted(query_terms("number")),
            sorted(vec![number[0].clone(), number[3].clone()])
        );
        let deployed = trigrams("deployed");
        // dep, loy, and the last, yed.
        assert_eq!(
            sorted(query_terms("deployed")),
            sorted(vec![
                deployed[0].clone(),
                deployed[3].clone(),
                deployed[5].clone()
            ])
        );
        assert_eq!(query_terms("abc"), trigrams("abc"));
        assert!(query_terms("ab").is_empty());
    }

    #[test]
    fn the_ascii_shortcut_gives_what_the_general_path_gives() {
        // The index's 'delete' must get exactly the terms it was given, whichever path
        // computed them.
        for text in [
            "Deploy on FRIDAY, 100% sure",
            "mixed Ünïcode and ascii words",
            "ab abc abcd\tTAB\nnew line",
            "vertical\u{b}tab\u{c}feed\r\nend  two",
            "x",
            "",
        ] {
            let lower = text.to_lowercase();
            let mut general: Vec<u32> = Vec::new();
            for word in lower.split_whitespace() {
                for_each_trigram(word, |hash| {
                    if !general.contains(&token_of(hash)) {
                        general.push(token_of(hash));
                    }
                });
            }
            let mut expected = String::new();
            for token in general {
                if !expected.is_empty() {
                    expected.push(' ');
                }
                push_token(&mut expected, token);
            }
            assert_eq!(index_terms(text), expected, "{text:?}");
        }
    }

    #[test]
    fn the_hash_is_the_one_the_index_was_built_with() {
        // The index on disk holds these; a change here needs a migration (module doc).
        assert_eq!(query_terms("abc"), ["ge2p44"]);
        assert_eq!(query_terms("как"), ["bb4rgc"]);
    }
}
