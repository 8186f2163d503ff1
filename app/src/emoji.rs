//! What counts as "one emoji" for a reaction.
//!
//! A reaction is a single emoji as people pick it from an emoji keyboard: one pictograph
//! (optionally with a variation selector and a skin tone), a flag (two regional
//! indicators, or a tag sequence such as the flag of Scotland), a keycap (`1️⃣`), or a
//! zero-width-joiner sequence of those (`👩‍💻`, `🏳️‍🌈`). The check is structural (UTS #51's
//! grammar over the Extended_Pictographic property), not a lookup in the list of
//! recommended sequences, so newer emoji pass on an older server; what it refuses is
//! text, several emoji in a row, and invisible or combining characters on their own.
//!
//! Shared by the server (which decides) and the browser (which only offers what the
//! server would take); the table is a few hundred bytes of wasm.

/// Bytes one reaction may take: the longest recommended sequences (families, flags of
/// regions) are under 40.
pub const MAX_EMOJI_BYTES: usize = 64;

const ZWJ: char = '\u{200D}';
const VS16: char = '\u{FE0F}';
const KEYCAP: char = '\u{20E3}';

/// Code point ranges with the Extended_Pictographic property (Unicode 15.1
/// emoji-data.txt), merged.
const PICTOGRAPHIC: &[(u32, u32)] = &[
    (0x00A9, 0x00A9),
    (0x00AE, 0x00AE),
    (0x203C, 0x203C),
    (0x2049, 0x2049),
    (0x2122, 0x2122),
    (0x2139, 0x2139),
    (0x2194, 0x2199),
    (0x21A9, 0x21AA),
    (0x231A, 0x231B),
    (0x2328, 0x2328),
    (0x2388, 0x2388),
    (0x23CF, 0x23CF),
    (0x23E9, 0x23F3),
    (0x23F8, 0x23FA),
    (0x24C2, 0x24C2),
    (0x25AA, 0x25AB),
    (0x25B6, 0x25B6),
    (0x25C0, 0x25C0),
    (0x25FB, 0x25FE),
    (0x2600, 0x2605),
    (0x2607, 0x2612),
    (0x2614, 0x2685),
    (0x2690, 0x2705),
    (0x2708, 0x2712),
    (0x2714, 0x2714),
    (0x2716, 0x2716),
    (0x271D, 0x271D),
    (0x2721, 0x2721),
    (0x2728, 0x2728),
    (0x2733, 0x2734),
    (0x2744, 0x2744),
    (0x2747, 0x2747),
    (0x274C, 0x274C),
    (0x274E, 0x274E),
    (0x2753, 0x2755),
    (0x2757, 0x2757),
    (0x2763, 0x2767),
    (0x2795, 0x2797),
    (0x27A1, 0x27A1),
    (0x27B0, 0x27B0),
    (0x27BF, 0x27BF),
    (0x2934, 0x2935),
    (0x2B05, 0x2B07),
    (0x2B1B, 0x2B1C),
    (0x2B50, 0x2B50),
    (0x2B55, 0x2B55),
    (0x3030, 0x3030),
    (0x303D, 0x303D),
    (0x3297, 0x3297),
    (0x3299, 0x3299),
    (0x1F000, 0x1F0FF),
    (0x1F10D, 0x1F10F),
    (0x1F12F, 0x1F12F),
    (0x1F16C, 0x1F171),
    (0x1F17E, 0x1F17F),
    (0x1F18E, 0x1F18E),
    (0x1F191, 0x1F19A),
    (0x1F1AD, 0x1F1E5),
    (0x1F201, 0x1F20F),
    (0x1F21A, 0x1F21A),
    (0x1F22F, 0x1F22F),
    (0x1F232, 0x1F23A),
    (0x1F23C, 0x1F23F),
    (0x1F249, 0x1F3FA),
    (0x1F400, 0x1F53D),
    (0x1F546, 0x1F64F),
    (0x1F680, 0x1F6FF),
    (0x1F774, 0x1F77F),
    (0x1F7D5, 0x1F7FF),
    (0x1F80C, 0x1F80F),
    (0x1F848, 0x1F84F),
    (0x1F85A, 0x1F85F),
    (0x1F888, 0x1F88F),
    (0x1F8AE, 0x1F8FF),
    (0x1F90C, 0x1F93A),
    (0x1F93C, 0x1F945),
    (0x1F947, 0x1FAFF),
    (0x1FC00, 0x1FFFD),
];

fn is_pictographic(c: char) -> bool {
    let c = c as u32;
    PICTOGRAPHIC
        .binary_search_by(|&(low, high)| {
            if high < c {
                std::cmp::Ordering::Less
            } else if low > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

fn is_regional_indicator(c: char) -> bool {
    ('\u{1F1E6}'..='\u{1F1FF}').contains(&c)
}

fn is_skin_tone(c: char) -> bool {
    ('\u{1F3FB}'..='\u{1F3FF}').contains(&c)
}

fn is_tag(c: char) -> bool {
    ('\u{E0020}'..='\u{E007E}').contains(&c)
}

/// Whether `text` is exactly one emoji (see the module docs).
pub fn is_single_emoji(text: &str) -> bool {
    if text.is_empty() || text.len() > MAX_EMOJI_BYTES {
        return false;
    }
    let chars: Vec<char> = text.chars().collect();
    // A flag: two regional indicators and nothing else.
    if chars.len() == 2 && chars.iter().all(|&c| is_regional_indicator(c)) {
        return true;
    }
    // A keycap: 0-9, # or *, an optional VS16, then U+20E3.
    if let [base, rest @ ..] = chars.as_slice() {
        if base.is_ascii_digit() || *base == '#' || *base == '*' {
            return matches!(rest, [KEYCAP] | [VS16, KEYCAP]);
        }
    }
    // ZWJ sequence of elements: pictograph, then VS16 and/or a skin tone, or a tag run.
    let mut i = 0;
    loop {
        let Some(&first) = chars.get(i) else {
            return false;
        };
        if !is_pictographic(first) {
            return false;
        }
        i += 1;
        if chars.get(i) == Some(&VS16) {
            i += 1;
        }
        if chars.get(i).copied().is_some_and(is_skin_tone) {
            i += 1;
        }
        if chars.get(i).copied().is_some_and(is_tag) {
            while chars.get(i).copied().is_some_and(is_tag) {
                i += 1;
            }
            if chars.get(i) != Some(&'\u{E007F}') {
                return false;
            }
            i += 1;
        }
        match chars.get(i) {
            None => return true,
            Some(&ZWJ) => i += 1,
            Some(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_emoji_of_every_shape_pass() {
        for emoji in [
            "👍",
            "❤️",
            "❤",
            "😂",
            "🎉",
            "👍🏽",
            "👩‍💻",
            "👨‍👩‍👧‍👦",
            "🏳️‍🌈",
            "🇫🇷",
            "1️⃣",
            "#⃣",
            "🏴󠁧󠁢󠁳󠁣󠁴󠁿",
            "🫠",
            "☕",
        ] {
            assert!(is_single_emoji(emoji), "{emoji:?}");
        }
    }

    #[test]
    fn text_and_several_emoji_are_refused() {
        for not_one in [
            "",
            "a",
            "ok",
            "👍👍",
            "👍 ",
            " 👍",
            "🇫",
            "🇫🇷🇩🇪",
            "1",
            "\u{200D}",
            "\u{FE0F}",
            "👍\u{200D}",
            "\u{200D}👍",
            "🏽",
            "<b>",
            "👍a",
            "a👍",
            "1️⃣2️⃣",
        ] {
            assert!(!is_single_emoji(not_one), "{not_one:?}");
        }
        assert!(!is_single_emoji(&"👍\u{200D}".repeat(20)));
    }
}
